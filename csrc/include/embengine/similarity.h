// Exact top-k by inner product, nearest centroid, and pairs above a threshold.
//
// Contract (CPU and CUDA alike):
//   vectors are row-major (n, d); the base / data side may be float32 or float16, queries
//   and centroids are float32; scores are float32 inner products (cosine for unit rows).
//   A top-k list holds k (score, id) entries ordered best first: higher score, and on equal
//   scores the lower id. Empty slots hold score -inf and id -1 (the sentinels), and sort last.
// The selection helpers below are __host__ __device__: the CUDA kernels call exactly these,
// and the CPU module exposes them to the tests, so the GPU's selection logic is exercised on
// machines without a GPU.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "embengine/common.h"

namespace embengine {

constexpr int64_t kNoId = -1;  ///< id of an empty top-k slot (its score is -inf)

/// True when (sa, ia) ranks strictly before (sb, ib): higher score, then lower id. The empty
/// id -1 compares as the largest id, so an empty slot (-inf, -1) sorts after everything.
EMB_HD inline bool ranks_before(float sa, int64_t ia, float sb, int64_t ib) {
  if (sa != sb) return sa > sb;
  return static_cast<uint64_t>(ia) < static_cast<uint64_t>(ib);
}

/// Restore the heap property below `pos` in a k-entry heap whose root is the *worst* entry.
EMB_HD inline void heap_sift_down(float* scores, int64_t* ids, int64_t k, int64_t pos) {
  const float s = scores[pos];
  const int64_t id = ids[pos];
  while (true) {
    int64_t child = 2 * pos + 1;
    if (child >= k) break;
    // pick the worse child: the one that does not rank before the other
    if (child + 1 < k && ranks_before(scores[child], ids[child], scores[child + 1], ids[child + 1]))
      ++child;
    if (!ranks_before(s, id, scores[child], ids[child])) break;
    scores[pos] = scores[child];
    ids[pos] = ids[child];
    pos = child;
  }
  scores[pos] = s;
  ids[pos] = id;
}

/// Offer (score, id) to a full k-entry worst-at-root heap: it replaces the root when it ranks
/// before it. Returns true when it was taken. A heap starts as k empty slots (-inf, -1).
EMB_HD inline bool heap_offer(float* scores, int64_t* ids, int64_t k, float score, int64_t id) {
  if (!ranks_before(score, id, scores[0], ids[0])) return false;
  scores[0] = score;
  ids[0] = id;
  heap_sift_down(scores, ids, k, 0);
  return true;
}

/// Sort a worst-at-root heap in place into best-first order (heapsort).
EMB_HD inline void heap_into_sorted(float* scores, int64_t* ids, int64_t k) {
  for (int64_t end = k - 1; end > 0; --end) {
    const float s = scores[0];
    const int64_t id = ids[0];
    scores[0] = scores[end];
    ids[0] = ids[end];
    scores[end] = s;
    ids[end] = id;
    heap_sift_down(scores, ids, end, 0);
  }
}

/// Merge path: of the first `diag` entries of the best-first merge of two best-first lists
/// a (na entries) and b (nb entries), how many come from a. On equal rank a comes first.
/// Each output position is then found independently: the CUDA merge gives one per thread.
EMB_HD inline int64_t merge_path_split(const float* as, const int64_t* ai, int64_t na,
                                       const float* bs, const int64_t* bi, int64_t nb,
                                       int64_t diag) {
  int64_t lo = diag > nb ? diag - nb : 0;
  int64_t hi = diag < na ? diag : na;
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    const int64_t j = diag - mid - 1;
    if (ranks_before(bs[j], bi[j], as[mid], ai[mid])) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  return lo;
}

/// Entry `pos` of the best-first merge of a and b (see merge_path_split).
EMB_HD inline void merge_path_entry(const float* as, const int64_t* ai, int64_t na,
                                    const float* bs, const int64_t* bi, int64_t nb, int64_t pos,
                                    float* score, int64_t* id) {
  const int64_t i = merge_path_split(as, ai, na, bs, bi, nb, pos);
  const int64_t j = pos - i;
  const bool from_a = j >= nb || (i < na && !ranks_before(bs[j], bi[j], as[i], ai[i]));
  *score = from_a ? as[i] : bs[j];
  *id = from_a ? ai[i] : bi[j];
}

/// One compare-exchange of a best-first bitonic sort over n (a power of two) entries:
/// element `i` against partner i ^ stride in the merge stage of size `stage`. Returns the
/// partner when `i` owns the exchange (i < partner), else -1. Every thread of a CUDA block
/// calls this for its indices between barriers; the CPU runs the same network in a loop.
EMB_HD inline int64_t bitonic_partner(int64_t i, int64_t stride) {
  const int64_t partner = i ^ stride;
  return partner > i ? partner : -1;
}

/// In the bitonic network, should entries i < partner be swapped in stage `stage`?
/// Blocks with (i & stage) == 0 sort best-first, the others worst-first.
EMB_HD inline bool bitonic_should_swap(float si, int64_t ii, float sp, int64_t ip, int64_t i,
                                       int64_t stage) {
  const bool best_first = (i & stage) == 0;
  return best_first ? ranks_before(sp, ip, si, ii) : ranks_before(si, ii, sp, ip);
}

/// Smallest power of two >= n (n >= 1).
EMB_HD inline int64_t next_pow2(int64_t n) {
  int64_t p = 1;
  while (p < n) p *= 2;
  return p;
}

/// The inner product of two float32 rows in one fixed order: eight running lanes of fused
/// multiply-adds, folded as ((l0 + l4) + (l1 + l5)) + ((l2 + l6) + (l3 + l7)), then the d % 8
/// tail by fused multiply-add: exactly what the CPU's AVX2 dot does. pairs_above re-scores
/// its candidates with this order on the CPU and on the GPU, so both keep the same pairs with
/// bit-equal scores whatever BLAS / cuBLAS computed for the tile that nominated them.
EMB_HD inline float dot_lanes8(const float* a, const float* b, int64_t d) {
  float acc[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  int64_t p = 0;
  for (; p + 8 <= d; p += 8) {
    for (int l = 0; l < 8; ++l) acc[l] = fmaf(a[p + l], b[p + l], acc[l]);
  }
  const float l0 = acc[0] + acc[4], l1 = acc[1] + acc[5];
  const float l2 = acc[2] + acc[6], l3 = acc[3] + acc[7];
  float s = (l0 + l1) + (l2 + l3);
  for (; p < d; ++p) s = fmaf(a[p], b[p], s);
  return s;
}

/// True when a score may rank at all: NaN and +-inf come from NaN / inf data or float32
/// overflow; the kernels skip and count them (they never reach a result) and the caller
/// raises naming the bad row.
EMB_HD inline bool score_is_finite(float s) { return s - s == 0.0f; }

/// How many column splits a few-query top-k over m columns spreads across (CPU and GPU use
/// the same rule): enough blocks to fill `blocks_wanted`, but every split keeps at least
/// max(min_span, 4 k) columns, so merging the splits' k-lists stays cheap next to the scan.
EMB_HD inline int64_t topk_splits(int64_t q, int64_t m, int64_t k, int64_t blocks_wanted,
                                  int64_t min_span) {
  if (q <= 0 || m <= 0) return 1;
  const int64_t span = min_span > 4 * k ? min_span : 4 * k;
  const int64_t by_width = (m + span - 1) / span;
  const int64_t by_blocks = (blocks_wanted + q - 1) / q;
  const int64_t splits = by_width < by_blocks ? by_width : by_blocks;
  return splits > 1 ? splits : 1;
}

namespace cpu {

// The scanning kernels below return how many scores were not finite (NaN / inf in the data,
// or float32 overflow). Such scores are skipped, never ranked; callers raise when it is > 0.

/// out[a * ldo + b] = dot(A row a, B row b) for a < na, b < nb. A: na * d float32;
/// B: nb * d float32 or (B16) float16 bits. Each pair's sum runs in the same order wherever
/// it falls in the tile, so equal rows give bit-equal scores (ties stay ties).
void dot_tile_f32(const float* a, int64_t na, const float* b, int64_t nb, int64_t d, float* out,
                  int64_t ldo);
void dot_tile_f16(const float* a, int64_t na, const uint16_t* b, int64_t nb, int64_t d,
                  float* out, int64_t ldo);

/// Top-k of q queries over n base rows (ids base_offset + row), scanned natively: the
/// bandwidth-bound few-query path. Offers every score to the heaps (q * k, worst at root);
/// with exclude_self, query r never takes id self_offset + r.
int64_t topk_scan_f32(const float* queries, int64_t q, const float* base, int64_t n, int64_t d,
                   int64_t base_offset, int64_t k, float* heap_scores, int64_t* heap_ids,
                   bool exclude_self, int64_t self_offset);
int64_t topk_scan_f16(const float* queries, int64_t q, const uint16_t* base, int64_t n, int64_t d,
                   int64_t base_offset, int64_t k, float* heap_scores, int64_t* heap_ids,
                   bool exclude_self, int64_t self_offset);

/// Offer a (q, n) score tile (row stride ld, column c = id base_offset + c) to q heaps.
int64_t topk_offer_tile(const float* tile, int64_t q, int64_t n, int64_t ld, int64_t base_offset,
                     int64_t k, float* heap_scores, int64_t* heap_ids, bool exclude_self,
                     int64_t self_offset);

/// Sort q heaps of k entries into best-first lists.
void topk_finish(float* heap_scores, int64_t* heap_ids, int64_t q, int64_t k);

/// For each of n rows of x, the highest-scoring of c centroids (lower index on ties):
/// best_score[i] and best_index[i]. x: n * d float32 or float16 bits; centroids: c * d.
int64_t nearest_centroid_f32(const float* x, int64_t n, const float* centroids, int64_t c, int64_t d,
                          float* best_score, int64_t* best_index);
int64_t nearest_centroid_f16(const uint16_t* x, int64_t n, const float* centroids, int64_t c,
                          int64_t d, float* best_score, int64_t* best_index);

/// Pairs (i, j, score) found in a tile, in row-major order.
struct PairList {
  std::vector<int64_t> i, j;
  std::vector<float> score;
};

/// Every pair >= threshold of an (nr, nc) score tile (row stride ld) whose rows are ids
/// row0 + r and columns col0 + c, appended to `out` in row-major order; with upper_only,
/// only pairs with row id < column id (one triangle of a self-similarity). The tile (from
/// BLAS, whose rounding depends on blocking) only nominates candidates, entries >= threshold
/// - margin where margin bounds its rounding error; each candidate's kept score is the
/// native dot of rows[r] (nr * d) and cols[c] (nc * d), so the pairs and scores are the same
/// however the work was cut into tiles or blocks.
int64_t pairs_in_tile(const float* tile, int64_t nr, int64_t nc, int64_t ld, const float* rows,
                      const float* cols, int64_t d, int64_t row0, int64_t col0, float threshold,
                      float margin, bool upper_only, PairList* out);

}  // namespace cpu
}  // namespace embengine
