#include "embengine/pooling.h"

#include <cmath>
#include <vector>

namespace embengine::cpu {
namespace {

inline float load(float v) { return v; }
inline float load(uint16_t v) { return half_bits_to_float(v); }

// A row whose sum of squares is not finite: when every value is finite it only overflowed
// (magnitudes from ~1e19), so it is scaled by 1 / max|value| first and then to unit norm;
// otherwise (NaN / inf values) it is left as it is and false says so.
bool scale_large_row(float* x, int64_t d) {
  float max_abs = 0.0f;
  for (int64_t j = 0; j < d; ++j) {
    if (!finite_value(x[j])) return false;
    max_abs = std::fabs(x[j]) > max_abs ? std::fabs(x[j]) : max_abs;
  }
  const float inv = 1.0f / max_abs;
  float scaled = 0.0f;
  for (int64_t j = 0; j < d; ++j) scaled += (x[j] * inv) * (x[j] * inv);
  const float scale = rescaled_unit_scale(scaled);
  for (int64_t j = 0; j < d; ++j) x[j] = (x[j] * inv) * scale;
  return true;
}

// One row: accumulate the masked token states in float, then scale once. Returns 1 when the
// row is not finite (see scale_large_row), else 0.
template <typename T>
EMB_SIMD_CLONES int64_t pool_row(const T* states, const int32_t* mask, float* out, int64_t t,
                              int64_t d, float eps) {
  for (int64_t j = 0; j < d; ++j) out[j] = 0.0f;
  float count = 0.0f;
  for (int64_t s = 0; s < t; ++s) {
    if (mask[s] == 0) continue;
    count += 1.0f;
    const T* row = states + s * d;
    for (int64_t j = 0; j < d; ++j) out[j] += load(row[j]);
  }
  float sum_sq = 0.0f;
  for (int64_t j = 0; j < d; ++j) sum_sq += out[j] * out[j];
  if (!finite_value(sum_sq)) return scale_large_row(out, d) ? 0 : 1;
  const float scale = pooled_unit_scale(sum_sq, count, eps);
  for (int64_t j = 0; j < d; ++j) out[j] *= scale;
  return 0;
}

// Pooling runs between encoder batches, where ONNX Runtime or torch owns the cores with its
// own thread pool. Waking OpenMP threads here leaves them spinning against that pool after
// each call, for a kernel that takes well under a millisecond at encoder batch sizes; so it
// only goes parallel for batches far larger than any CPU encoder batch.
constexpr int64_t kParallelPoolElements = int64_t{1} << 24;

template <typename T>
int64_t pool_rows(const T* states, const int32_t* mask, float* out, int64_t b, int64_t t,
                  int64_t d, float eps) {
  int64_t not_finite = 0;
#pragma omp parallel for schedule(static) if (b * t * d > kParallelPoolElements) \
    reduction(+ : not_finite)
  for (int64_t i = 0; i < b; ++i) {
    not_finite += pool_row(states + i * t * d, mask + i * t, out + i * d, t, d, eps);
  }
  return not_finite;
}

EMB_SIMD_CLONES void normalize_row(float* x, int64_t d, float eps) {
  float sum_sq = 0.0f;
  for (int64_t j = 0; j < d; ++j) sum_sq += x[j] * x[j];
  if (!finite_value(sum_sq)) {
    scale_large_row(x, d);
    return;
  }
  const float scale = unit_scale(sum_sq, eps);
  for (int64_t j = 0; j < d; ++j) x[j] *= scale;
}

}  // namespace

int64_t mean_pool_normalize_f32(const float* states, const int32_t* mask, float* out, int64_t b,
                                int64_t t, int64_t d, float eps) {
  return pool_rows(states, mask, out, b, t, d, eps);
}

int64_t mean_pool_normalize_f16(const uint16_t* states, const int32_t* mask, float* out,
                                int64_t b, int64_t t, int64_t d, float eps) {
  return pool_rows(states, mask, out, b, t, d, eps);
}

void normalize_rows_f32(float* x, int64_t n, int64_t d, float eps) {
#pragma omp parallel for schedule(static) if (n * d > (1 << 16))
  for (int64_t i = 0; i < n; ++i) normalize_row(x + i * d, d, eps);
}

}  // namespace embengine::cpu
