#include "embengine/pooling.h"

#include <vector>

namespace embengine::cpu {
namespace {

inline float load(float v) { return v; }
inline float load(uint16_t v) { return half_bits_to_float(v); }

// One row: accumulate the masked token states in float, then scale once.
template <typename T>
EMB_SIMD_CLONES void pool_row(const T* states, const int32_t* mask, float* out, int64_t t,
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
  const float scale = pooled_unit_scale(sum_sq, count, eps);
  for (int64_t j = 0; j < d; ++j) out[j] *= scale;
}

// Pooling runs between encoder batches, where ONNX Runtime or torch owns the cores with its
// own thread pool. Waking OpenMP threads here leaves them spinning against that pool after
// each call, for a kernel that takes well under a millisecond at encoder batch sizes; so it
// only goes parallel for batches far larger than any CPU encoder batch.
constexpr int64_t kParallelPoolElements = int64_t{1} << 24;

template <typename T>
void pool_rows(const T* states, const int32_t* mask, float* out, int64_t b, int64_t t, int64_t d,
               float eps) {
#pragma omp parallel for schedule(static) if (b * t * d > kParallelPoolElements)
  for (int64_t i = 0; i < b; ++i) {
    pool_row(states + i * t * d, mask + i * t, out + i * d, t, d, eps);
  }
}

EMB_SIMD_CLONES void normalize_row(float* x, int64_t d, float eps) {
  float sum_sq = 0.0f;
  for (int64_t j = 0; j < d; ++j) sum_sq += x[j] * x[j];
  const float scale = unit_scale(sum_sq, eps);
  for (int64_t j = 0; j < d; ++j) x[j] *= scale;
}

}  // namespace

void mean_pool_normalize_f32(const float* states, const int32_t* mask, float* out, int64_t b,
                             int64_t t, int64_t d, float eps) {
  pool_rows(states, mask, out, b, t, d, eps);
}

void mean_pool_normalize_f16(const uint16_t* states, const int32_t* mask, float* out, int64_t b,
                             int64_t t, int64_t d, float eps) {
  pool_rows(states, mask, out, b, t, d, eps);
}

void normalize_rows_f32(float* x, int64_t n, int64_t d, float eps) {
#pragma omp parallel for schedule(static) if (n * d > (1 << 16))
  for (int64_t i = 0; i < n; ++i) normalize_row(x + i * d, d, eps);
}

}  // namespace embengine::cpu
