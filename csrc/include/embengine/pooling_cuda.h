// CUDA twins of pooling.h. Pointers are device memory; work is queued on `stream`.
#pragma once

#include <cstdint>

#include "embengine/cuda_check.h"

namespace embengine::cuda {

/// states: b * t * d elements of `dtype`; mask: b * t int32; out: b * d float32.
/// Rows whose pooled values are not finite (NaN / inf in a real token, or float32 overflow)
/// are counted into *not_finite (may be null) and left as they are.
void mean_pool_normalize(const void* states, DType dtype, const int32_t* mask, float* out,
                         int64_t b, int64_t t, int64_t d, float eps,
                         unsigned long long* not_finite, cudaStream_t stream);

/// x: n * d float32, scaled in place to unit rows. Two passes: the scales of every row into
/// `scales` (2 n floats of work space) with non-finite rows counted into *not_finite, then the
/// scaling, which changes nothing at all when any row was not finite (nothing half-applied).
void normalize_rows_f32(float* x, int64_t n, int64_t d, float eps, float* scales,
                        unsigned long long* not_finite, cudaStream_t stream);

}  // namespace embengine::cuda
