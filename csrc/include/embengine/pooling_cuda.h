// CUDA twins of pooling.h. Pointers are device memory; work is queued on `stream`.
#pragma once

#include <cstdint>

#include "embengine/cuda_check.h"

namespace embengine::cuda {

/// states: b * t * d elements of `dtype`; mask: b * t int32; out: b * d float32.
void mean_pool_normalize(const void* states, DType dtype, const int32_t* mask, float* out,
                         int64_t b, int64_t t, int64_t d, float eps, cudaStream_t stream);

/// x: n * d float32, scaled in place to unit rows.
void normalize_rows_f32(float* x, int64_t n, int64_t d, float eps, cudaStream_t stream);

}  // namespace embengine::cuda
