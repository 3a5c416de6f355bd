// CUDA twins of similarity.h. Pointers are device memory; work is queued on `stream`.
// Score tiles come from the caller's cuBLAS matmul (torch / CuPy); these kernels own the
// selection, using the __host__ __device__ helpers of similarity.h.
#pragma once

#include <cstdint>

#include "embengine/cuda_check.h"

namespace embengine::cuda {

/// Merge a (q, m) float32 score tile (row stride ld; column c is id base_offset + c) into the
/// q best-first top-k lists held in (state_scores, state_ids), each (q, k). scratch_scores /
/// scratch_ids are (q, k) work space. With exclude_self, row r never takes id self_offset + r.
void topk_merge_tile(const float* tile, int64_t q, int64_t m, int64_t ld, int64_t base_offset,
                     bool exclude_self, int64_t self_offset, float* state_scores,
                     int64_t* state_ids, float* scratch_scores, int64_t* scratch_ids, int64_t k,
                     cudaStream_t stream);

/// Append every entry >= threshold of an (nr, nc) float32 tile (rows = ids row0 + r, columns
/// col0 + c; upper_only keeps row id < column id) to (out_i, out_j, out_score) at positions
/// taken from *count (a device counter, not reset here); positions >= capacity are counted
/// but not written, so the caller re-runs the tile with more room when *count > capacity.
void pairs_in_tile(const float* tile, int64_t nr, int64_t nc, int64_t ld, int64_t row0,
                   int64_t col0, float threshold, bool upper_only, int64_t* out_i,
                   int64_t* out_j, float* out_score, int64_t capacity,
                   unsigned long long* count, cudaStream_t stream);

/// For each of n rows of x (`dtype`), the highest inner product with c float32 centroids and
/// its index (lowest on ties): best_score (n,) float32, best_index (n,) int64.
void nearest_centroid(const void* x, DType dtype, int64_t n, const float* centroids, int64_t c,
                      int64_t d, float* best_score, int64_t* best_index, cudaStream_t stream);

}  // namespace embengine::cuda
