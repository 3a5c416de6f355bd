#include "embengine/cuda_compat.h"
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
    v = lane < static_cast<int>(blockDim.x / 32) ? scratch[lane] : 0.0f;
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
    if (lane == 0) scratch[0] = v;
  }
  __syncthreads();
  const float total = scratch[0];
  __syncthreads();
  return total;
}

// Max of `v` over the block (v >= 0), returned to every thread.
__device__ float block_max(float v, float* scratch) {
  for (int offset = 16; offset > 0; offset /= 2) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, offset));
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < static_cast<int>(blockDim.x / 32) ? scratch[lane] : 0.0f;
    for (int offset = 16; offset > 0; offset /= 2) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, offset));
    if (lane == 0) scratch[0] = v;
  }
  __syncthreads();
  const float total = scratch[0];
  __syncthreads();
  return total;
}

// The block's scale for a row (its elements strided over the threads) whose sum of squares
// is `sum_sq`, for rows whose sum of squares overflowed: see rescaled_unit_scale. Returns 0
// (and leaves the row) when the row holds NaN / inf. Block-uniform: every thread calls it.
__device__ bool scale_large_row(float* row, int64_t d, float* scratch) {
  float bad = 0.0f, max_abs = 0.0f;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    if (!finite_value(row[j])) bad = 1.0f;
    else max_abs = fmaxf(max_abs, fabsf(row[j]));
  }
  if (block_sum(bad, scratch) > 0.0f) return false;
  const float inv = 1.0f / block_max(max_abs, scratch);
  float scaled = 0.0f;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) scaled += (row[j] * inv) * (row[j] * inv);
  const float scale = rescaled_unit_scale(block_sum(scaled, scratch));
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) row[j] = (row[j] * inv) * scale;
  return true;
}

// One block per row; the row's partial means live in `out` until the final scale.
template <typename T>
__global__ void mean_pool_normalize_kernel(const T* __restrict__ states,
                                           const int32_t* __restrict__ mask,
                                           float* __restrict__ out, int64_t t, int64_t d,
                                           float eps, unsigned long long* not_finite) {
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
  const float total = block_sum(sum_sq, scratch);
  if (!finite_value(total)) {
    __syncthreads();  // dst written by other threads is read below
    if (!scale_large_row(dst, d, scratch) && threadIdx.x == 0 && not_finite != nullptr) {
      atomicAdd(not_finite, 1ull);
    }
    return;
  }
  const float scale = pooled_unit_scale(total, count, eps);
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) dst[j] *= scale;
}

// Pass 1 of normalize_rows: each row's scale (NaN for a non-finite row, which is counted).
__global__ void row_scales_kernel(const float* __restrict__ x, int64_t d, float eps,
                                  float* scales, unsigned long long* not_finite) {
  __shared__ float scratch[kThreads / 32];
  const int64_t r = blockIdx.x;
  const float* row = x + r * d;
  float sum_sq = 0.0f, bad = 0.0f, max_abs = 0.0f;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    sum_sq += row[j] * row[j];
    if (!finite_value(row[j])) bad = 1.0f;
    else max_abs = fmaxf(max_abs, fabsf(row[j]));
  }
  const float total = block_sum(sum_sq, scratch);
  if (block_sum(bad, scratch) > 0.0f) {
    if (threadIdx.x == 0) {
      scales[r] = __int_as_float(0x7fc00000);  // NaN: this row is not finite
      atomicAdd(not_finite, 1ull);
    }
    return;
  }
  if (finite_value(total)) {
    if (threadIdx.x == 0) scales[r] = unit_scale(total, eps);
    return;
  }
  // overflowed: the scale is (1 / max) * rescaled scale, stored negated to mark the branch
  const float inv = 1.0f / block_max(max_abs, scratch);
  float scaled = 0.0f;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) scaled += (row[j] * inv) * (row[j] * inv);
  const float scale = rescaled_unit_scale(block_sum(scaled, scratch));
  if (threadIdx.x == 0) {
    scales[r] = -scale;
    scales[gridDim.x + r] = inv;
  }
}

// Pass 2: apply the scales, unless any row was not finite (then nothing changes).
__global__ void apply_scales_kernel(float* __restrict__ x, int64_t d, const float* scales,
                                    const unsigned long long* not_finite) {
  if (*not_finite != 0) return;
  const int64_t r = blockIdx.x;
  float* row = x + r * d;
  const float s = scales[r];
  if (s >= 0.0f) {
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) row[j] *= s;
  } else {
    const float inv = scales[gridDim.x + r];
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) row[j] = (row[j] * inv) * -s;
  }
}

}  // namespace

void mean_pool_normalize(const void* states, DType dtype, const int32_t* mask, float* out,
                         int64_t b, int64_t t, int64_t d, float eps,
                         unsigned long long* not_finite, cudaStream_t stream) {
  if (b == 0 || d == 0) return;
  clear_stale_error("mean_pool_normalize");
  switch (dtype) {
    case DType::f32:
      EMB_LAUNCH(mean_pool_normalize_kernel, b, kThreads, 0, stream)(
          static_cast<const float*>(states), mask, out, t, d, eps, not_finite);
      break;
    case DType::f16:
      EMB_LAUNCH(mean_pool_normalize_kernel, b, kThreads, 0, stream)(
          static_cast<const __half*>(states), mask, out, t, d, eps, not_finite);
      break;
    case DType::bf16:
      EMB_LAUNCH(mean_pool_normalize_kernel, b, kThreads, 0, stream)(
          static_cast<const __nv_bfloat16*>(states), mask, out, t, d, eps, not_finite);
      break;
  }
  check(cudaGetLastError(), "mean_pool_normalize");
}

void normalize_rows_f32(float* x, int64_t n, int64_t d, float eps, float* scales,
                        unsigned long long* not_finite, cudaStream_t stream) {
  if (n == 0 || d == 0) return;
  clear_stale_error("normalize_rows");
  EMB_LAUNCH(row_scales_kernel, n, kThreads, 0, stream)(x, d, eps, scales, not_finite);
  check(cudaGetLastError(), "normalize_rows (scales)");
  EMB_LAUNCH(apply_scales_kernel, n, kThreads, 0, stream)(x, d, scales, not_finite);
  check(cudaGetLastError(), "normalize_rows (apply)");
}

}  // namespace embengine::cuda
