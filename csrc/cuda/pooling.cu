#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "embengine/pooling.h"
#include "embengine/pooling_cuda.h"

namespace embengine::cuda {
namespace {

constexpr int kThreads = 128;

__device__ inline float to_float(float v) { return v; }
__device__ inline float to_float(__half v) { return __half2float(v); }
__device__ inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

// Sum of `v` over the block, returned to every thread.
__device__ float block_sum(float v, float* scratch) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < blockDim.x / 32 ? scratch[lane] : 0.0f;
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
    if (lane == 0) scratch[0] = v;
  }
  __syncthreads();
  const float total = scratch[0];
  __syncthreads();
  return total;
}

// One block per row; the row's partial means live in `out` until the final scale.
template <typename T>
__global__ void mean_pool_normalize_kernel(const T* __restrict__ states,
                                           const int32_t* __restrict__ mask,
                                           float* __restrict__ out, int64_t t, int64_t d,
                                           float eps) {
  __shared__ float scratch[kThreads / 32];
  const int64_t row = blockIdx.x;
  const T* base = states + row * t * d;
  const int32_t* row_mask = mask + row * t;
  float* dst = out + row * d;

  float count = 0.0f;
  for (int64_t s = threadIdx.x; s < t; s += blockDim.x) count += row_mask[s] != 0 ? 1.0f : 0.0f;
  count = block_sum(count, scratch);

  float sum_sq = 0.0f;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    float acc = 0.0f;
    for (int64_t s = 0; s < t; ++s) {
      if (row_mask[s] != 0) acc += to_float(base[s * d + j]);
    }
    dst[j] = acc;
    sum_sq += acc * acc;
  }
  const float scale = pooled_unit_scale(block_sum(sum_sq, scratch), count, eps);
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) dst[j] *= scale;
}

__global__ void normalize_rows_kernel(float* __restrict__ x, int64_t d, float eps) {
  __shared__ float scratch[kThreads / 32];
  float* row = x + static_cast<int64_t>(blockIdx.x) * d;
  float sum_sq = 0.0f;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) sum_sq += row[j] * row[j];
  const float scale = unit_scale(block_sum(sum_sq, scratch), eps);
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) row[j] *= scale;
}

}  // namespace

void mean_pool_normalize(const void* states, DType dtype, const int32_t* mask, float* out,
                         int64_t b, int64_t t, int64_t d, float eps, cudaStream_t stream) {
  if (b == 0) return;
  switch (dtype) {
    case DType::f32:
      mean_pool_normalize_kernel<<<b, kThreads, 0, stream>>>(static_cast<const float*>(states),
                                                             mask, out, t, d, eps);
      break;
    case DType::f16:
      mean_pool_normalize_kernel<<<b, kThreads, 0, stream>>>(static_cast<const __half*>(states),
                                                             mask, out, t, d, eps);
      break;
    case DType::bf16:
      mean_pool_normalize_kernel<<<b, kThreads, 0, stream>>>(
          static_cast<const __nv_bfloat16*>(states), mask, out, t, d, eps);
      break;
  }
  check(cudaGetLastError(), "mean_pool_normalize");
}

void normalize_rows_f32(float* x, int64_t n, int64_t d, float eps, cudaStream_t stream) {
  if (n == 0) return;
  normalize_rows_kernel<<<n, kThreads, 0, stream>>>(x, d, eps);
  check(cudaGetLastError(), "normalize_rows");
}

}  // namespace embengine::cuda
