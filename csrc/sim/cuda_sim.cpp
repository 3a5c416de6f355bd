// The block/warp emulator behind cuda_sim.h: threads as fibers, one block at a time.
#include "embengine/cuda_sim.h"

#if !(defined(__x86_64__) && defined(__linux__))
#include <ucontext.h>
#endif

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace embengine::sim {
namespace {

constexpr size_t kStackBytes = 256 * 1024;  // kernels keep a few hundred bytes of locals
constexpr unsigned kMaxThreads = 1024;

void enter();

// Switching between fibers: a few instructions on x86-64 Linux; elsewhere ucontext, which is
// about 20 times slower (it saves the signal mask with a system call at every switch).
#if defined(__x86_64__) && defined(__linux__)
extern "C" void embengine_sim_switch(void** save_sp, void* load_sp);
// Saves the callee-saved registers, MXCSR and the x87 control word on the current stack,
// stores the stack pointer, and resumes the other stack the same way (System V ABI).
asm(R"(
  .text
  .p2align 4
  .globl embengine_sim_switch
  .hidden embengine_sim_switch
  .type embengine_sim_switch, @function
embengine_sim_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size embengine_sim_switch, .-embengine_sim_switch
)");

struct Context {
  void* sp = nullptr;
};

void switch_context(Context& from, Context& to) { embengine_sim_switch(&from.sp, to.sp); }

// A stack that "returns" into enter() on its first switch, aligned as a call would leave it.
void prepare(Context& c, char* stack, size_t size) {
  const uintptr_t top = (reinterpret_cast<uintptr_t>(stack) + size) & ~uintptr_t{15};
  uint64_t* sp = reinterpret_cast<uint64_t*>(top) - 9;
  uint32_t control[2] = {__builtin_ia32_stmxcsr(), 0};
  asm volatile("fnstcw %0" : "=m"(control[1]));
  std::memcpy(&sp[0], control, sizeof(uint64_t));  // MXCSR, x87 control word
  for (int r = 1; r <= 6; ++r) sp[r] = 0;           // r15 r14 r13 r12 rbx rbp
  sp[7] = reinterpret_cast<uint64_t>(&enter);       // the return address
  sp[8] = 0;
  c.sp = sp;
}
#else
struct Context {
  ucontext_t uc;
};

void switch_context(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }

void prepare(Context& c, char* stack, size_t size) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = size;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, enter, 0);
}
#endif

enum class State { ready, at_barrier, at_warp, done };

struct Fiber {
  Context context;
  std::unique_ptr<char[]> stack;
  State state = State::done;
};

// Everything below belongs to the one grid running (launches hold `launch_mutex`).
std::mutex launch_mutex;
std::vector<Fiber> fibers;
Context scheduler;
unsigned running = 0;                     // index of the fiber now running
const std::function<void()>* body = nullptr;
std::vector<unsigned char> shared_memory;  // dynamic shared memory of the running block
int barrier_votes[2] = {0, 0};             // __syncthreads_count, by barrier generation parity
unsigned barrier_generation = 0;
std::vector<unsigned> warp_generation;      // per warp
std::vector<uint64_t> warp_values;          // [warp][parity][lane]
std::vector<unsigned> warp_masks;           // [warp][parity][lane]: the mask each lane passed
std::mt19937_64 order_rng;
std::string fault;  // set by a thread that broke a rule; the scheduler raises it

void set_thread(unsigned t) {
  running = t;
  threadIdx = dim3(t % blockDim.x, (t / blockDim.x) % blockDim.y, t / (blockDim.x * blockDim.y));
}

// Back to the scheduler until this thread is released.
void wait(State why) {
  fibers[running].state = why;
  switch_context(fibers[running].context, scheduler);
}

// A fiber's whole life: the kernel, then back to the scheduler for good.
void enter() {
  (*body)();
  wait(State::done);
}

[[noreturn]] void stuck(const std::string& why) {
  throw std::runtime_error("CUDA simulator: block (" + std::to_string(blockIdx.x) + ", " +
                           std::to_string(blockIdx.y) + ") " + why);
}

// Release the warps whose live lanes all wait at a warp operation; true if any was released.
bool release_warps(unsigned threads) {
  bool released = false;
  for (unsigned w = 0; w * 32 < threads; ++w) {
    const unsigned first = w * 32, last = std::min(threads, first + 32);
    unsigned waiting = 0, live = 0;
    for (unsigned t = first; t < last; ++t) {
      if (fibers[t].state != State::done) ++live;
      if (fibers[t].state == State::at_warp) ++waiting;
    }
    if (waiting == 0) continue;
    if (waiting != live) {
      stuck("deadlocks: some lanes of warp " + std::to_string(w) +
            " wait at a warp operation, others at __syncthreads");
    }
    const unsigned parity = warp_generation[w] & 1;
    for (unsigned t = first; t < last; ++t) {
      const unsigned lane = t - first;
      const unsigned mask = warp_masks[(w * 2 + parity) * 32 + lane];
      for (unsigned other = 0; other < 32; ++other) {
        const bool in_mask = (mask >> other) & 1u;
        const bool waits = first + other < last && fibers[first + other].state == State::at_warp;
        if (fibers[t].state == State::at_warp && in_mask && !waits) {
          stuck("warp " + std::to_string(w) + ": lane " + std::to_string(lane) +
                " names lane " + std::to_string(other) +
                " in its mask, but that lane exited or skipped the warp operation");
        }
      }
    }
    for (unsigned t = first; t < last; ++t) {
      if (fibers[t].state == State::at_warp) fibers[t].state = State::ready;
    }
    ++warp_generation[w];
    released = true;
  }
  return released;
}

void run_block(unsigned threads) {
  if (fibers.size() < threads) fibers.resize(threads);
  std::fill(shared_memory.begin(), shared_memory.end(), 0xff);
  barrier_votes[0] = barrier_votes[1] = 0;
  barrier_generation = 0;
  const unsigned warps = (threads + 31) / 32;
  warp_generation.assign(warps, 0);
  warp_values.assign(static_cast<size_t>(warps) * 64, 0);
  warp_masks.assign(static_cast<size_t>(warps) * 64, 0);
  for (unsigned t = 0; t < threads; ++t) {
    Fiber& f = fibers[t];
    if (!f.stack) f.stack.reset(new char[kStackBytes]);  // not zeroed: pages come as used
    prepare(f.context, f.stack.get(), kStackBytes);
    f.state = State::ready;
  }
  std::vector<unsigned> order(threads);
  std::iota(order.begin(), order.end(), 0u);
  while (true) {
    std::shuffle(order.begin(), order.end(), order_rng);
    for (unsigned t : order) {
      if (fibers[t].state != State::ready) continue;
      set_thread(t);
      switch_context(scheduler, fibers[t].context);
      if (!fault.empty()) stuck(fault);
    }
    if (release_warps(threads)) continue;
    unsigned live = 0, at_barrier = 0;
    for (unsigned t = 0; t < threads; ++t) {
      if (fibers[t].state != State::done) ++live;
      if (fibers[t].state == State::at_barrier) ++at_barrier;
    }
    if (live == 0) return;
    if (at_barrier != live) stuck("deadlocks: threads wait at different barriers");
    for (unsigned t = 0; t < threads; ++t) {
      if (fibers[t].state == State::at_barrier) fibers[t].state = State::ready;
    }
    ++barrier_generation;
    barrier_votes[barrier_generation & 1] = 0;  // its readers all passed the barrier before
  }
}

}  // namespace

void run_grid(dim3 grid, dim3 block, size_t shared_bytes, const std::function<void()>& kernel) {
  const unsigned threads = block.x * block.y * block.z;
  if (threads == 0 || threads > kMaxThreads) {
    throw std::invalid_argument("CUDA simulator: a block of " + std::to_string(threads) +
                                " threads (1 to 1024 allowed)");
  }
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535) {
    throw std::invalid_argument("CUDA simulator: invalid grid");
  }
  std::lock_guard<std::mutex> lock(launch_mutex);
  const char* seed = std::getenv("EMBENGINE_CUDA_SIM_SEED");
  order_rng.seed(seed == nullptr ? 0 : std::strtoull(seed, nullptr, 10));
  fault.clear();
  body = &kernel;
  gridDim = grid;
  blockDim = block;
  shared_memory.assign(shared_bytes, 0xff);
  for (unsigned z = 0; z < grid.z; ++z) {
    for (unsigned y = 0; y < grid.y; ++y) {
      for (unsigned x = 0; x < grid.x; ++x) {
        blockIdx = dim3(x, y, z);
        run_block(threads);
      }
    }
  }
  body = nullptr;
}

void* dynamic_shared() { return shared_memory.data(); }

int block_barrier(int vote) {
  const unsigned parity = barrier_generation & 1;
  if (vote) ++barrier_votes[parity];
  wait(State::at_barrier);
  return barrier_votes[parity];
}

const uint64_t* warp_exchange(unsigned mask, uint64_t value) {
  const unsigned warp = running / 32, lane = running % 32;
  const unsigned parity = warp_generation[warp] & 1;
  const size_t slot = (static_cast<size_t>(warp) * 2 + parity) * 32;
  if (((mask >> lane) & 1u) == 0) {
    fault = "thread " + std::to_string(running) + " called a warp operation outside its mask";
    wait(State::done);  // never resumed: the scheduler raises the fault
  }
  warp_values[slot + lane] = value;
  warp_masks[slot + lane] = mask;
  wait(State::at_warp);
  return &warp_values[slot];
}

}  // namespace embengine::sim
