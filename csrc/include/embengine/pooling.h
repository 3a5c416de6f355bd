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

/// A row whose float32 sum of squares overflowed although every value is finite (magnitudes
/// from about 1e19) would get scale 1 / inf = 0 and come out as zeros. Such a row is scaled
/// by 1 / max|value| first (exact up to rounding, no overflow possible), then by this: its
/// norm is far above any eps, so the clamp plays no part. Shared by the CPU and CUDA kernels.
EMB_HD inline float rescaled_unit_scale(float scaled_sum_sq) {
  return 1.0f / sqrtf(scaled_sum_sq);
}

/// True for a finite float (not NaN, not +-inf), without relying on <cmath> in device code.
EMB_HD inline bool finite_value(float v) { return v - v == 0.0f; }

namespace cpu {

/// out: size b * d. states: size b * t * d. mask: size b * t. Returns how many rows came out
/// not finite (NaN / inf in a real token, or a pooled sum past float32): those rows are left
/// as they are and the caller raises, naming them.
int64_t mean_pool_normalize_f32(const float* states, const int32_t* mask, float* out, int64_t b,
                                int64_t t, int64_t d, float eps);
/// As above with float16 states given as their raw 16-bit patterns.
int64_t mean_pool_normalize_f16(const uint16_t* states, const int32_t* mask, float* out,
                                int64_t b, int64_t t, int64_t d, float eps);
/// x: size n * d, scaled in place so every row has unit norm (zero rows stay zero). The
/// caller checks finiteness first (nothing half-applied); a non-finite row stays as it is.
void normalize_rows_f32(float* x, int64_t n, int64_t d, float eps);

}  // namespace cpu
}  // namespace embengine
