// CUDA twins of compact.h: score tiles over int8 codes and packed sign bits. Selection is
// the float path's topk_select (similarity_cuda.h): scores are exact integers in float32, so
// ids and tie order match the CPU kernels.
#pragma once

#include <cstdint>

#include "embengine/cuda_check.h"

namespace embengine::cuda {

/// out[r * ld + c] = integer dot of int8 query row r (values in [-127, 127]) and int8 code
/// row c, as float32, for r < q, c < m. One warp per code row.
void int8_dot_scores(const int8_t* queries, int64_t q, const int8_t* codes, int64_t m, int64_t d,
                     float* out, int64_t ld, cudaStream_t stream);

/// out[r * ld + c] = matching bits (8 * nbytes - Hamming distance) of packed query row r and
/// bit row c, as float32. One thread per bit row.
void hamming_scores(const uint8_t* queries, int64_t q, const uint8_t* bits, int64_t m,
                    int64_t nbytes, float* out, int64_t ld, cudaStream_t stream);

}  // namespace embengine::cuda
