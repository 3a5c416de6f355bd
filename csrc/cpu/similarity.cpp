// CPU kernels for top-k, nearest centroid and the dot-product tiles they share.
#include <cmath>
#include <limits>
#include <vector>

#include "embengine/similarity.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define EMB_HAVE_AVX2_PATH 1
#define EMB_AVX2 __attribute__((target("avx2,fma,f16c")))
#else
#define EMB_HAVE_AVX2_PATH 0
#endif

namespace embengine::cpu {
namespace {

constexpr int64_t kScanRows = 128;  // base rows per dot tile in the scan paths (L2-resident)
constexpr float kEmpty = -std::numeric_limits<float>::infinity();

inline float to_float(float v) { return v; }
inline float to_float(uint16_t v) { return half_bits_to_float(v); }

// Portable dot tile: one pair at a time, the same order for every pair.
template <typename T>
void dot_tile_generic(const float* a, int64_t na, const T* b, int64_t nb, int64_t d, float* out,
                      int64_t ldo) {
  for (int64_t j = 0; j < nb; ++j) {
    for (int64_t i = 0; i < na; ++i) {
      float s = 0.0f;
      for (int64_t p = 0; p < d; ++p) s += a[i * d + p] * to_float(b[j * d + p]);
      out[i * ldo + j] = s;
    }
  }
}

#if EMB_HAVE_AVX2_PATH
EMB_AVX2 inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
EMB_AVX2 inline __m256 load8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

EMB_AVX2 inline float hsum(__m256 v) {
  __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  __m128 shuf = _mm_movehdup_ps(lo);
  lo = _mm_add_ps(lo, shuf);
  shuf = _mm_movehl_ps(shuf, lo);
  return _mm_cvtss_f32(_mm_add_ss(lo, shuf));
}

// An RA x RB block of dots: 8-lane FMA accumulators, one horizontal sum, then the d % 8 tail.
// Every block shape runs the same sequence per pair, so results do not depend on position.
template <int RA, int RB, typename T>
EMB_AVX2 inline void dot_block(const float* a, const T* b, int64_t d, float* out, int64_t ldo) {
  __m256 acc[RA][RB];
  for (int i = 0; i < RA; ++i)
    for (int j = 0; j < RB; ++j) acc[i][j] = _mm256_setzero_ps();
  int64_t p = 0;
  for (; p + 8 <= d; p += 8) {
    __m256 vb[RB];
    for (int j = 0; j < RB; ++j) vb[j] = load8(b + j * d + p);
    for (int i = 0; i < RA; ++i) {
      const __m256 va = _mm256_loadu_ps(a + i * d + p);
      for (int j = 0; j < RB; ++j) acc[i][j] = _mm256_fmadd_ps(va, vb[j], acc[i][j]);
    }
  }
  for (int i = 0; i < RA; ++i) {
    for (int j = 0; j < RB; ++j) {
      float s = hsum(acc[i][j]);
      for (int64_t t = p; t < d; ++t) s = std::fma(a[i * d + t], to_float(b[j * d + t]), s);
      out[i * ldo + j] = s;
    }
  }
}

// Base rows outer (four at a time stay in L1), query / centroid pairs inner.
template <typename T>
EMB_AVX2 void dot_tile_avx2(const float* a, int64_t na, const T* b, int64_t nb, int64_t d,
                            float* out, int64_t ldo) {
  int64_t j = 0;
  for (; j + 4 <= nb; j += 4) {
    int64_t i = 0;
    for (; i + 2 <= na; i += 2) dot_block<2, 4>(a + i * d, b + j * d, d, out + i * ldo + j, ldo);
    if (i < na) dot_block<1, 4>(a + i * d, b + j * d, d, out + i * ldo + j, ldo);
  }
  for (; j < nb; ++j) {
    int64_t i = 0;
    for (; i + 2 <= na; i += 2) dot_block<2, 1>(a + i * d, b + j * d, d, out + i * ldo + j, ldo);
    if (i < na) dot_block<1, 1>(a + i * d, b + j * d, d, out + i * ldo + j, ldo);
  }
}

EMB_AVX2 void halves_to_floats_avx2(const uint16_t* src, float* dst, int64_t count) {
  int64_t i = 0;
  for (; i + 8 <= count; i += 8) _mm256_storeu_ps(dst + i, load8(src + i));
  for (; i < count; ++i) dst[i] = half_bits_to_float(src[i]);
}

// Calls on(c) for every c < n where row[c] >= *bound or row[c] is not finite, eight lanes
// per compare; on() may raise *bound, and must re-check its lane (the chunk was masked first).
template <typename On>
EMB_AVX2 void scan_candidates_avx2(const float* row, int64_t n, const float* bound, On&& on) {
  const __m256 inf = _mm256_set1_ps(std::numeric_limits<float>::infinity());
  const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) {
    const __m256 v = _mm256_loadu_ps(row + c);
    const __m256 above = _mm256_cmp_ps(v, _mm256_set1_ps(*bound), _CMP_GE_OQ);
    const __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
    const __m256 infinite = _mm256_cmp_ps(_mm256_and_ps(v, magnitude), inf, _CMP_EQ_OQ);
    unsigned mask = _mm256_movemask_ps(_mm256_or_ps(above, _mm256_or_ps(nan, infinite)));
    while (mask) {
      on(c + __builtin_ctz(mask));
      mask &= mask - 1;
    }
  }
  for (; c < n; ++c) {
    if (!(row[c] < *bound) || !std::isfinite(row[c])) on(c);
  }
}

bool cpu_has_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
}
const bool kAvx2 = cpu_has_avx2();
#endif

void halves_to_floats(const uint16_t* src, float* dst, int64_t count) {
#if EMB_HAVE_AVX2_PATH
  if (kAvx2) return halves_to_floats_avx2(src, dst, count);
#endif
  for (int64_t i = 0; i < count; ++i) dst[i] = half_bits_to_float(src[i]);
}

template <typename T>
void dot_tile(const float* a, int64_t na, const T* b, int64_t nb, int64_t d, float* out,
              int64_t ldo) {
#if EMB_HAVE_AVX2_PATH
  if (kAvx2) return dot_tile_avx2(a, na, b, nb, d, out, ldo);
#endif
  dot_tile_generic(a, na, b, nb, d, out, ldo);
}

// dot_lanes8's order; the AVX2 dot block <1, 1> performs exactly these operations, faster.
inline float rescore(const float* a, const float* b, int64_t d) {
#if EMB_HAVE_AVX2_PATH
  if (kAvx2) {
    float score;
    dot_tile_avx2(a, 1, b, 1, d, &score, 1);
    return score;
  }
#endif
  return dot_lanes8(a, b, d);
}

template <typename On>
void scan_candidates(const float* row, int64_t n, const float* bound, On&& on) {
#if EMB_HAVE_AVX2_PATH
  if (kAvx2) return scan_candidates_avx2(row, n, bound, on);
#endif
  for (int64_t c = 0; c < n; ++c) {
    if (!(row[c] < *bound) || !std::isfinite(row[c])) on(c);
  }
}

// Dots of na rows against one block of nb data rows. A float16 block read by more than two
// rows is converted once into `converted` (nb * d floats, L2-resident) rather than once per
// row pair; conversion is exact, so the scores are the same either way.
inline void dot_block_rows(const float* a, int64_t na, const float* b, int64_t nb, int64_t d,
                           float* out, int64_t ldo, std::vector<float>&) {
  dot_tile(a, na, b, nb, d, out, ldo);
}
inline void dot_block_rows(const float* a, int64_t na, const uint16_t* b, int64_t nb, int64_t d,
                           float* out, int64_t ldo, std::vector<float>& converted) {
  if (na <= 2) return dot_tile(a, na, b, nb, d, out, ldo);
  converted.resize(nb * d);
  halves_to_floats(b, converted.data(), nb * d);
  dot_tile(a, na, converted.data(), nb, d, out, ldo);
}

// Offer one row of scores (ids first_id + c) to a heap; most scores fail the root check.
// Returns how many scores were not finite (NaN / inf data or overflow): they are skipped
// and reported, so the caller can raise instead of returning a silently wrong answer.
inline int64_t offer_row(const float* row, int64_t n, int64_t first_id, float* hs, int64_t* hi,
                         int64_t k, int64_t skip_id) {
  float worst = hs[0];
  int64_t not_finite = 0;
  scan_candidates(row, n, &worst, [&](int64_t c) {
    const float v = row[c];
    if (!std::isfinite(v)) {
      ++not_finite;
      return;
    }
    const int64_t id = first_id + c;
    if (id == skip_id) return;
    if (heap_offer(hs, hi, k, v, id)) worst = hs[0];
  });
  return not_finite;
}

template <typename T>
int64_t topk_scan(const float* queries, int64_t q, const T* base, int64_t n, int64_t d,
               int64_t base_offset, int64_t k, float* heap_scores, int64_t* heap_ids,
               bool exclude_self, int64_t self_offset) {
  const int64_t blocks = (n + kScanRows - 1) / kScanRows;
  int64_t not_finite = 0;
#pragma omp parallel if (n * q * d > (1 << 18)) reduction(+ : not_finite)
  {
    std::vector<float> hs(q * k, kEmpty);
    std::vector<int64_t> hi(q * k, kNoId);
    std::vector<float> tile(q * kScanRows), converted;
#pragma omp for schedule(dynamic, 4)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t r0 = blk * kScanRows;
      const int64_t rows = n - r0 < kScanRows ? n - r0 : kScanRows;
      dot_block_rows(queries, q, base + r0 * d, rows, d, tile.data(), kScanRows, converted);
      for (int64_t r = 0; r < q; ++r) {
        not_finite += offer_row(tile.data() + r * kScanRows, rows, base_offset + r0, hs.data() + r * k,
                  hi.data() + r * k, k, exclude_self ? self_offset + r : kNoId);
      }
    }
#pragma omp critical
    for (int64_t r = 0; r < q; ++r) {
      for (int64_t e = 0; e < k; ++e) {
        if (hi[r * k + e] == kNoId) continue;
        heap_offer(heap_scores + r * k, heap_ids + r * k, k, hs[r * k + e], hi[r * k + e]);
      }
    }
  }
  return not_finite;
}

template <typename T>
int64_t nearest_centroid(const T* x, int64_t n, const float* centroids, int64_t c, int64_t d,
                      float* best_score, int64_t* best_index) {
  const int64_t blocks = (n + kScanRows - 1) / kScanRows;
  int64_t not_finite = 0;
#pragma omp parallel if (n * c * d > (1 << 18)) reduction(+ : not_finite)
  {
    std::vector<float> tile(c * kScanRows), converted;
#pragma omp for schedule(dynamic, 4)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t r0 = blk * kScanRows;
      const int64_t rows = n - r0 < kScanRows ? n - r0 : kScanRows;
      dot_block_rows(centroids, c, x + r0 * d, rows, d, tile.data(), kScanRows, converted);
      for (int64_t r = 0; r < rows; ++r) {
        float best = tile[r];
        int64_t arg = 0;
        bool finite = std::isfinite(best);
        for (int64_t j = 1; j < c; ++j) {
          const float s = tile[j * kScanRows + r];
          finite &= std::isfinite(s);
          if (s > best) {
            best = s;
            arg = j;
          }
        }
        not_finite += finite ? 0 : 1;
        best_score[r0 + r] = best;
        best_index[r0 + r] = arg;
      }
    }
  }
  return not_finite;
}

}  // namespace

void dot_tile_f32(const float* a, int64_t na, const float* b, int64_t nb, int64_t d, float* out,
                  int64_t ldo) {
  dot_tile(a, na, b, nb, d, out, ldo);
}

void dot_tile_f16(const float* a, int64_t na, const uint16_t* b, int64_t nb, int64_t d,
                  float* out, int64_t ldo) {
  dot_tile(a, na, b, nb, d, out, ldo);
}

int64_t topk_scan_f32(const float* queries, int64_t q, const float* base, int64_t n, int64_t d,
                   int64_t base_offset, int64_t k, float* heap_scores, int64_t* heap_ids,
                   bool exclude_self, int64_t self_offset) {
  return topk_scan(queries, q, base, n, d, base_offset, k, heap_scores, heap_ids, exclude_self,
                   self_offset);
}

int64_t topk_scan_f16(const float* queries, int64_t q, const uint16_t* base, int64_t n, int64_t d,
                   int64_t base_offset, int64_t k, float* heap_scores, int64_t* heap_ids,
                   bool exclude_self, int64_t self_offset) {
  return topk_scan(queries, q, base, n, d, base_offset, k, heap_scores, heap_ids, exclude_self,
                   self_offset);
}

int64_t topk_offer_tile(const float* tile, int64_t q, int64_t n, int64_t ld, int64_t base_offset,
                     int64_t k, float* heap_scores, int64_t* heap_ids, bool exclude_self,
                     int64_t self_offset) {
  // Serial on purpose: it runs between two multi-threaded BLAS calls, and an OpenMP team
  // here would spin against BLAS's threads for the few percent of the time it needs.
  int64_t not_finite = 0;
  for (int64_t r = 0; r < q; ++r) {
    not_finite += offer_row(tile + r * ld, n, base_offset, heap_scores + r * k, heap_ids + r * k,
                            k, exclude_self ? self_offset + r : kNoId);
  }
  return not_finite;
}

void topk_finish(float* heap_scores, int64_t* heap_ids, int64_t q, int64_t k) {
#pragma omp parallel for schedule(static) if (q * k > (1 << 14))
  for (int64_t r = 0; r < q; ++r) heap_into_sorted(heap_scores + r * k, heap_ids + r * k, k);
}

int64_t nearest_centroid_f32(const float* x, int64_t n, const float* centroids, int64_t c, int64_t d,
                          float* best_score, int64_t* best_index) {
  return nearest_centroid(x, n, centroids, c, d, best_score, best_index);
}

int64_t nearest_centroid_f16(const uint16_t* x, int64_t n, const float* centroids, int64_t c,
                          int64_t d, float* best_score, int64_t* best_index) {
  return nearest_centroid(x, n, centroids, c, d, best_score, best_index);
}

int64_t pairs_in_tile(const float* tile, int64_t nr, int64_t nc, int64_t ld, const float* rows,
                      const float* cols, int64_t d, int64_t row0, int64_t col0, float threshold,
                      float margin, bool upper_only, PairList* out) {
  // Serial for the reason topk_offer_tile is: a vectorised pass between two BLAS calls.
  const float candidate = threshold - margin;
  int64_t not_finite = 0;
  for (int64_t r = 0; r < nr; ++r) {
    const float* row = tile + r * ld;
    // in the diagonal tile of a self-similarity, columns up to the row's own id are skipped
    // (but still checked for non-finite scores)
    const int64_t first = upper_only ? row0 + r + 1 - col0 : 0;
    scan_candidates(row, nc, &candidate, [&](int64_t c) {
      if (!std::isfinite(row[c])) {
        ++not_finite;
        return;
      }
      if (c < first) return;
      // the kept score is the fixed-order dot (dot_lanes8; the AVX2 dot computes exactly
      // that), whose summation order never depends on the tile: the CUDA path keeps the same
      const float score = rescore(rows + r * d, cols + c * d, d);
      if (score >= threshold) {
        out->i.push_back(row0 + r);
        out->j.push_back(col0 + c);
        out->score.push_back(score);
      }
    });
  }
  return not_finite;
}

}  // namespace embengine::cpu
