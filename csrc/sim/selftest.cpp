// Kernels that break CUDA's rules on purpose, so the tests can show that the emulator notices
// (a kernel test that passes under an emulator blind to these would prove little).
#include <pybind11/pybind11.h>

#include "embengine/cuda_sim.h"

namespace embengine::sim {
namespace {

constexpr int kThreads = 256;

// Thread 0 sums what every thread stored: correct only with the barrier.
__global__ void block_sum_kernel(float value, float* out, bool barrier) {
  __shared__ float partial[kThreads];
  partial[threadIdx.x] = value;
  if (barrier) __syncthreads();
  if (threadIdx.x == 0) {
    float sum = 0.0f;
    for (int i = 0; i < kThreads; ++i) sum += partial[i];
    *out = sum;
  }
}

// Half of each warp waits at the block barrier, the other half at a full-warp shuffle: each
// half waits for the other forever (on a GPU, a hang).
__global__ void divergent_warp_kernel(float* out) {
  if (threadIdx.x % 32 < 16) {
    __syncthreads();
  } else {
    out[threadIdx.x] = __shfl_sync(0xffffffffu, 1.0f, 0);
  }
}

// Threads that return early do not hold a barrier up, as on a GPU.
__global__ void early_exit_barrier_kernel(float* out) {
  if (threadIdx.x >= kThreads / 2) return;
  out[threadIdx.x] = 1.0f;
  __syncthreads();
  out[kThreads / 2 + threadIdx.x] = out[threadIdx.x] + out[kThreads / 2 - 1 - threadIdx.x];
}

// Lane 5 leaves, then its warp shuffles with a full mask.
__global__ void exited_lane_shuffle_kernel(float* out) {
  if (threadIdx.x % 32 == 5) return;
  out[threadIdx.x] = __shfl_down_sync(0xffffffffu, 1.0f, 1);
}

}  // namespace

void add_selftests(pybind11::module_& m) {
  m.def(
      "selftest_block_sum",
      [](float value, bool barrier) {
        float out = 0.0f;
        EMB_LAUNCH(block_sum_kernel, 1, kThreads, 0, nullptr)(value, &out, barrier);
        return out;
      },
      "256 threads store `value`, thread 0 sums them (with or without the barrier between).");
  m.def("selftest_divergent_warp", [] {
    float out[kThreads] = {};
    EMB_LAUNCH(divergent_warp_kernel, 1, kThreads, 0, nullptr)(out);
  });
  m.def("selftest_early_exit_barrier", [] {
    float out[kThreads] = {};
    EMB_LAUNCH(early_exit_barrier_kernel, 1, kThreads, 0, nullptr)(out);
    float sum = 0.0f;
    for (float v : out) sum += v;
    return sum;  // 128 ones, then 128 twos
  });
  m.def("selftest_exited_lane_shuffle", [] {
    float out[kThreads] = {};
    EMB_LAUNCH(exited_lane_shuffle_kernel, 1, kThreads, 0, nullptr)(out);
  });
}

}  // namespace embengine::sim
