// CUDA twins of similarity.h. Pointers are device memory; work is queued on `stream`.
// Score tiles come from the caller's cuBLAS matmul (torch / CuPy) or, for few queries, from
// dot_scores (reads a float16 / bfloat16 base as is); these kernels own the selection, using
// the __host__ __device__ helpers of similarity.h. Every kernel that reads scores counts the
// non-finite ones into a device counter (`not_finite`, may be null) and skips them, as the
// CPU does: NaN never reaches a result, and nothing here synchronises with the host.
#pragma once

#include <cstdint>

#include "embengine/cuda_check.h"

namespace embengine::cuda {

/// out[r * ld + c] = dot(queries row r, base row c) for r < q, c < m: float32 queries, base of
/// `dtype` read as is (no float32 copy), float32 sums. The bandwidth-bound few-query path.
void dot_scores(const float* queries, int64_t q, const void* base, DType dtype, int64_t m,
                int64_t d, float* out, int64_t ld, cudaStream_t stream);

/// Top-k selection over a (q, m) float32 tile (row stride ld). Column c of row r has id
/// tile_ids[r * ld + c] when tile_ids is given, else base_offset + c. The columns are cut into
/// `splits` spans of `span` columns, one block each (grid splits x q); block (s, r) merges its
/// span into list r * splits + s of (list_scores, list_ids) (k entries each, best first;
/// scratch_* are the same size). With `init` the lists start empty (-inf / -1), otherwise they
/// hold running results. With exclude_self, row r never takes id self_offset + r.
void topk_select(const float* tile, int64_t q, int64_t m, int64_t ld, const int64_t* tile_ids,
                 int64_t base_offset, int64_t splits, int64_t span, bool exclude_self,
                 int64_t self_offset, float* list_scores, int64_t* list_ids,
                 float* scratch_scores, int64_t* scratch_ids, int64_t k, bool init,
                 unsigned long long* not_finite, cudaStream_t stream);

/// Append every pair of an (nr, nc) float32 tile (rows = ids row0 + r, columns col0 + c;
/// upper_only keeps row id < column id) whose tile score is >= threshold - margin *and* whose
/// re-computed score dot_lanes8(rows[r], cols[c]) is >= threshold, to (out_i, out_j,
/// out_score) at positions taken from *count (not reset here; one atomic per warp);
/// positions >= capacity are counted but not written, so the caller re-runs the tile with
/// more room when *count > capacity. rows: nr x d, cols: nc x d, float32.
void pairs_in_tile(const float* tile, int64_t nr, int64_t nc, int64_t ld, const float* rows,
                   const float* cols, int64_t d, int64_t row0, int64_t col0, float threshold,
                   float margin, bool upper_only, int64_t* out_i, int64_t* out_j,
                   float* out_score, int64_t capacity, unsigned long long* count,
                   unsigned long long* not_finite, cudaStream_t stream);

/// For each of n rows of x (`dtype`), the highest inner product with c float32 centroids and
/// its index (lowest on ties): best_score (n,) float32, best_index (n,) int64. Fused: one
/// warp per row; for few centroids.
void nearest_centroid(const void* x, DType dtype, int64_t n, const float* centroids, int64_t c,
                      int64_t d, float* best_score, int64_t* best_index,
                      unsigned long long* not_finite, cudaStream_t stream);

/// Row-wise best of an (n, c) float32 score tile (row stride ld): best_score[r], best_index[r]
/// (lowest column on ties). The many-centroid path, after a cuBLAS matmul.
void tile_argmax(const float* tile, int64_t n, int64_t c, int64_t ld, float* best_score,
                 int64_t* best_index, unsigned long long* not_finite, cudaStream_t stream);

}  // namespace embengine::cuda
