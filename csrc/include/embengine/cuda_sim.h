// CUDA on the CPU, for tests: the kernels of csrc/cuda compiled by the host compiler and run
// by a block/warp emulator (the `_cuda_sim` module), so a machine without a GPU runs the very
// kernel code the GPU runs, not a model of it.
//
// How it runs a launch: blocks one after another; the threads of a block as cooperative
// fibers (one stack each) on one OS thread. A thread runs until it reaches __syncthreads or a
// warp operation (shuffle, ballot) or returns; when every thread has stopped, the waiting
// warps are released first, then the block barrier once every live thread waits at it. The
// order in which threads run between barriers is a fresh pseudo-random permutation each time,
// so a read that is missing its barrier sees another thread's write early or late and the
// test comparing against the CPU fails. A barrier that can never be released (__syncthreads in
// divergent code, a warp operation that some lanes skip) raises instead of hanging.
//
// What it does not model: timing, memory coherence between concurrently running blocks (one
// block runs at a time), warp lock-step execution between explicit warp operations, and the
// contents of shared memory left by an earlier block (dynamic shared memory is filled with
// 0xff bytes, i.e. NaN / -1, at every block). Launches are serialised by a mutex.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>

#include "embengine/common.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static  // one block runs at a time: a static array is the block's memory

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// The running thread's coordinates, set by the scheduler before it resumes a thread.
extern dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace embengine::sim {

/// Run `body` as every thread of every block of a grid (see the file comment).
void run_grid(dim3 grid, dim3 block, size_t shared_bytes, const std::function<void()>& body);

/// The running block's dynamic shared memory.
void* dynamic_shared();

/// Block barrier; returns how many threads passed a nonzero `vote`.
int block_barrier(int vote);

/// Warp exchange: this lane's value in, the 32 lanes' values out (valid until this lane's
/// next warp operation). Lanes outside `mask`, or exited, are refused.
const uint64_t* warp_exchange(unsigned mask, uint64_t value);

/// Index of the running thread's lane in its warp.
inline int lane_id() { return static_cast<int>(threadIdx.x % 32); }

template <class F>
struct Launch {
  dim3 grid, block;
  size_t shared;
  F kernel;
  template <class... Args>
  void operator()(Args... args) const {
    run_grid(grid, block, shared, [&] { kernel(args...); });
  }
};

template <class F>
Launch<F> launch(dim3 grid, dim3 block, size_t shared, F kernel) {
  return Launch<F>{grid, block, shared, kernel};
}

template <class T>
uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= sizeof(uint64_t), "warp values are at most 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  return bits;
}

template <class T>
T from_bits(uint64_t bits) {
  T v;
  std::memcpy(&v, &bits, sizeof(T));
  return v;
}

}  // namespace embengine::sim

#define EMB_LAUNCH(kernel, grid, block, shared, stream) \
  ::embengine::sim::launch(dim3(grid), dim3(block), (shared), [](auto... a) { kernel(a...); })
#define EMB_DYNAMIC_SHARED(type, name) \
  type* name = static_cast<type*>(::embengine::sim::dynamic_shared())

// ---- device functions ----

inline void __syncthreads() { embengine::sim::block_barrier(0); }
inline int __syncthreads_or(int vote) { return embengine::sim::block_barrier(vote != 0) != 0; }
inline int __syncthreads_count(int vote) { return embengine::sim::block_barrier(vote != 0); }

template <class T>
T __shfl_sync(unsigned mask, T v, int src) {
  const uint64_t* lanes = embengine::sim::warp_exchange(mask, embengine::sim::to_bits(v));
  return embengine::sim::from_bits<T>(lanes[src & 31]);
}

template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask) {
  const uint64_t* lanes = embengine::sim::warp_exchange(mask, embengine::sim::to_bits(v));
  return embengine::sim::from_bits<T>(lanes[(embengine::sim::lane_id() ^ lane_mask) & 31]);
}

template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta) {
  const uint64_t* lanes = embengine::sim::warp_exchange(mask, embengine::sim::to_bits(v));
  const unsigned src = static_cast<unsigned>(embengine::sim::lane_id()) + delta;
  return src < 32 ? embengine::sim::from_bits<T>(lanes[src]) : v;
}

inline unsigned __ballot_sync(unsigned mask, int predicate) {
  const uint64_t* lanes = embengine::sim::warp_exchange(mask, predicate != 0);
  unsigned out = 0;
  for (int lane = 0; lane < 32; ++lane) {
    if (((mask >> lane) & 1u) && lanes[lane] != 0) out |= 1u << lane;
  }
  return out;
}

// One fiber runs at a time and never in the middle of these: plain arithmetic is atomic.
template <class T>
T atomicAdd(T* address, T value) {
  const T old = *address;
  *address = old + value;
  return old;
}

inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline int __popcll(unsigned long long v) { return __builtin_popcountll(v); }
inline int __ffs(int v) { return __builtin_ffs(v); }
template <class T>
T __ldg(const T* p) {
  return *p;
}

/// Four signed bytes of a times those of b, summed into c.
inline int __dp4a(int a, int b, int c) {
  for (int i = 0; i < 4; ++i) {
    c += static_cast<int>(static_cast<int8_t>(a >> (8 * i))) *
         static_cast<int>(static_cast<int8_t>(b >> (8 * i)));
  }
  return c;
}

inline float __int_as_float(int v) {
  return embengine::sim::from_bits<float>(static_cast<uint32_t>(v));
}
inline float __uint_as_float(unsigned v) { return embengine::sim::from_bits<float>(v); }

// ---- vector types (16-byte loads) ----

struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

// ---- half types: storage and exact conversion to float ----

struct __half {
  uint16_t bits;
};
struct __nv_bfloat16 {
  uint16_t bits;
};
inline float __half2float(__half h) { return embengine::half_bits_to_float(h.bits); }
inline float __bfloat162float(__nv_bfloat16 h) {
  return embengine::sim::from_bits<float>(static_cast<uint32_t>(h.bits) << 16);
}

// ---- the runtime API the bindings call: one simulated device, host memory as device memory ----

struct CUstream_st;
using cudaStream_t = CUstream_st*;
enum cudaError_t { cudaSuccess = 0 };
enum cudaMemoryType {
  cudaMemoryTypeUnregistered = 0,
  cudaMemoryTypeHost = 1,
  cudaMemoryTypeDevice = 2,
  cudaMemoryTypeManaged = 3
};
struct cudaPointerAttributes {
  cudaMemoryType type;
  int device;
};
struct cudaDeviceProp {
  char name[256];
  int major, minor;
  size_t totalGlobalMem;
  int multiProcessorCount;
};

inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorName(cudaError_t) { return "cudaSuccess"; }
inline const char* cudaGetErrorString(cudaError_t) { return "no error"; }
inline cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attributes, const void*) {
  attributes->type = cudaMemoryTypeDevice;
  attributes->device = 0;
  return cudaSuccess;
}
inline cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
inline cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int) {
  std::memset(prop, 0, sizeof(*prop));
  std::strncpy(prop->name, "embengine CUDA simulator (CPU)", sizeof(prop->name) - 1);
  prop->multiProcessorCount = 132;  // an H100 / H200's count: the drivers' splits as there
  return cudaSuccess;
}
inline cudaError_t cudaRuntimeGetVersion(int* version) {
  *version = 0;
  return cudaSuccess;
}
inline cudaError_t cudaDriverGetVersion(int* version) {
  *version = 0;
  return cudaSuccess;
}
