// Fused mean pooling + L2 normalisation, and in-place row normalisation.
//
// Contract (CPU and CUDA alike):
//   states  (b, t, d) row-major, float32 or float16 (bfloat16 too on CUDA)
//   mask    (b, t) int32, non-zero = real token
//   out     (b, d) float32: mean of the masked token states, scaled to unit L2 norm.
// A row with no real token, or whose mean is the zero vector, comes out all zeros: the
// norm is clamped at `eps` (as torch.nn.functional.normalize does), never divided by 0.
#pragma once

#include <cmath>
#include <cstdint>

#include "embengine/common.h"

namespace embengine {

/// Factor that turns a row's masked *sum* into the unit-norm *mean*: the mean is
/// sum / count and its norm is clamped at eps, exactly as sentence-transformers does
/// (count clamped at 1e-9, norm clamped at eps). Shared by the CPU and CUDA kernels.
EMB_HD inline float pooled_unit_scale(float sum_sq, float count, float eps) {
  const float inv_count = 1.0f / (count > 1e-9f ? count : 1e-9f);
  const float norm = sqrtf(sum_sq) * inv_count;
  return inv_count / (norm > eps ? norm : eps);
}

/// Factor that scales a row with squared norm sum_sq to unit norm (norm clamped at eps).
EMB_HD inline float unit_scale(float sum_sq, float eps) {
  const float norm = sqrtf(sum_sq);
  return 1.0f / (norm > eps ? norm : eps);
}

namespace cpu {

/// out: size b * d. states: size b * t * d. mask: size b * t.
void mean_pool_normalize_f32(const float* states, const int32_t* mask, float* out, int64_t b,
                             int64_t t, int64_t d, float eps);
/// As above with float16 states given as their raw 16-bit patterns.
void mean_pool_normalize_f16(const uint16_t* states, const int32_t* mask, float* out, int64_t b,
                             int64_t t, int64_t d, float eps);
/// x: size n * d, scaled in place so every row has unit norm (zero rows stay zero).
void normalize_rows_f32(float* x, int64_t n, int64_t d, float eps);

}  // namespace cpu
}  // namespace embengine
