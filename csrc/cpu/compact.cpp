// CPU kernels for int8-code and packed-bit top-k: one pass over the codes, per-thread heaps
// merged at the end (the pattern of topk_scan in similarity.cpp).
#include "embengine/compact.h"

#include <cstring>
#include <limits>
#include <vector>

#include "embengine/similarity.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define EMB_HAVE_AVX2_PATH 1
#define EMB_AVX2_POPCNT __attribute__((target("avx2,popcnt")))
#else
#define EMB_HAVE_AVX2_PATH 0
#endif

namespace embengine::cpu {
namespace {

constexpr int64_t kRows = 256;  // code rows per block: 96 KiB at d = 384, L2-resident
constexpr float kEmpty = -std::numeric_limits<float>::infinity();

// Matching bits of two packed rows: 8-byte words, then the byte tail. Inlined into the
// popcnt-enabled block below, __builtin_popcountll becomes one popcnt instruction.
__attribute__((always_inline)) inline int32_t matches(const uint8_t* a, const uint8_t* b,
                                                      int64_t nbytes) {
  int32_t diff = 0;
  int64_t p = 0;
  for (; p + 8 <= nbytes; p += 8) {
    uint64_t x, y;
    std::memcpy(&x, a + p, 8);
    std::memcpy(&y, b + p, 8);
    diff += __builtin_popcountll(x ^ y);
  }
  for (; p < nbytes; ++p) diff += __builtin_popcountll(static_cast<uint64_t>(a[p] ^ b[p]));
  return static_cast<int32_t>(8 * nbytes) - diff;
}

void hamming_block_generic(const uint8_t* queries, int64_t q, const uint8_t* bits, int64_t rows,
                           int64_t nbytes, int32_t* out) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < q; ++i)
      out[i * kRows + r] = matches(queries + i * nbytes, bits + r * nbytes, nbytes);
}

void int8_block_generic(const int8_t* queries, int64_t q, const int8_t* codes, int64_t rows,
                        int64_t d, int32_t* out) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < q; ++i) out[i * kRows + r] = dot_i8(queries + i * d, codes + r * d, d);
}

#if EMB_HAVE_AVX2_PATH
// W 8-byte words per row, known at compile time: the row's words stay in registers while
// every query is compared with them (xor + popcnt, fully unrolled).
template <int W, int RR>
EMB_AVX2_POPCNT inline void hamming_rows(const uint8_t* queries, int64_t q, const uint8_t* bits,
                                         int32_t* out) {
  uint64_t row[RR][W];
  std::memcpy(row, bits, 8 * W * RR);
  for (int64_t i = 0; i < q; ++i) {
    uint64_t query[W];
    std::memcpy(query, queries + i * 8 * W, 8 * W);
    for (int j = 0; j < RR; ++j) {
      int32_t diff = 0;
      for (int w = 0; w < W; ++w) diff += static_cast<int32_t>(_mm_popcnt_u64(row[j][w] ^ query[w]));
      out[i * kRows + j] = 64 * W - diff;
    }
  }
}

template <int W>
EMB_AVX2_POPCNT void hamming_block_words(const uint8_t* queries, int64_t q, const uint8_t* bits,
                                         int64_t rows, int32_t* out) {
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) hamming_rows<W, 4>(queries, q, bits + r * 8 * W, out + r);
  for (; r < rows; ++r) hamming_rows<W, 1>(queries, q, bits + r * 8 * W, out + r);
}

EMB_AVX2_POPCNT void hamming_block_avx2(const uint8_t* queries, int64_t q, const uint8_t* bits,
                                        int64_t rows, int64_t nbytes, int32_t* out) {
  switch (nbytes) {  // the widths of common models: 256, 384, 512, 768, 1024 dims
    case 32: return hamming_block_words<4>(queries, q, bits, rows, out);
    case 48: return hamming_block_words<6>(queries, q, bits, rows, out);
    case 64: return hamming_block_words<8>(queries, q, bits, rows, out);
    case 96: return hamming_block_words<12>(queries, q, bits, rows, out);
    case 128: return hamming_block_words<16>(queries, q, bits, rows, out);
    default: break;
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < q; ++i)
      out[i * kRows + r] = matches(queries + i * nbytes, bits + r * nbytes, nbytes);
}

EMB_AVX2_POPCNT inline int32_t hsum_epi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}

// RQ queries against RR code rows. maddubs multiplies unsigned by signed bytes: |code| (at
// most 128) times the query carrying the code's sign (the query is in [-127, 127], so the
// negation is exact), and a pair sums to at most 2 * 128 * 127 < 32767: no saturation.
template <int RQ, int RR>
EMB_AVX2_POPCNT inline void int8_rows(const int8_t* queries, const int8_t* codes, int64_t d,
                                      int32_t* out, int64_t ldo) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[RQ][RR];
  for (int i = 0; i < RQ; ++i)
    for (int j = 0; j < RR; ++j) acc[i][j] = _mm256_setzero_si256();
  int64_t p = 0;
  for (; p + 32 <= d; p += 32) {
    __m256i c[RR], magnitude[RR];
    for (int j = 0; j < RR; ++j) {
      c[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + j * d + p));
      magnitude[j] = _mm256_abs_epi8(c[j]);
    }
    for (int i = 0; i < RQ; ++i) {
      const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(queries + i * d + p));
      for (int j = 0; j < RR; ++j) {
        const __m256i pairs = _mm256_maddubs_epi16(magnitude[j], _mm256_sign_epi8(a, c[j]));
        acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(pairs, ones));
      }
    }
  }
  for (int i = 0; i < RQ; ++i) {
    for (int j = 0; j < RR; ++j) {
      out[i * ldo + j] =
          hsum_epi32(acc[i][j]) + dot_i8(queries + i * d + p, codes + j * d + p, d - p);
    }
  }
}

EMB_AVX2_POPCNT void int8_block_avx2(const int8_t* queries, int64_t q, const int8_t* codes,
                                     int64_t rows, int64_t d, int32_t* out) {
  int64_t r = 0;
  for (; r + 2 <= rows; r += 2) {
    int64_t i = 0;
    for (; i + 4 <= q; i += 4)
      int8_rows<4, 2>(queries + i * d, codes + r * d, d, out + i * kRows + r, kRows);
    for (; i < q; ++i) int8_rows<1, 2>(queries + i * d, codes + r * d, d, out + i * kRows + r, kRows);
  }
  for (; r < rows; ++r) {
    int64_t i = 0;
    for (; i + 4 <= q; i += 4)
      int8_rows<4, 1>(queries + i * d, codes + r * d, d, out + i * kRows + r, kRows);
    for (; i < q; ++i) int8_rows<1, 1>(queries + i * d, codes + r * d, d, out + i * kRows + r, kRows);
  }
}

bool cpu_has_avx2_popcnt() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
}
const bool kAvx2 = cpu_has_avx2_popcnt();
#endif

void int8_block(const int8_t* queries, int64_t q, const int8_t* codes, int64_t rows, int64_t d,
                int32_t* out) {
#if EMB_HAVE_AVX2_PATH
  if (kAvx2) return int8_block_avx2(queries, q, codes, rows, d, out);
#endif
  int8_block_generic(queries, q, codes, rows, d, out);
}

void hamming_block(const uint8_t* queries, int64_t q, const uint8_t* bits, int64_t rows,
                   int64_t nbytes, int32_t* out) {
#if EMB_HAVE_AVX2_PATH
  if (kAvx2) return hamming_block_avx2(queries, q, bits, rows, nbytes, out);
#endif
  hamming_block_generic(queries, q, bits, rows, nbytes, out);
}

// Offer n integer scores (ids first_id + r) to a k-entry heap; most fail the root check,
// made eight at a time on AVX2.
#if EMB_HAVE_AVX2_PATH
EMB_AVX2_POPCNT void offer_ints_avx2(const int32_t* row, int64_t n, float* s, int64_t* id,
                                     int64_t k, int64_t first_id) {
  int64_t r = 0;
  for (; r + 8 <= n; r += 8) {
    const __m256 v = _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + r)));
    unsigned mask = _mm256_movemask_ps(_mm256_cmp_ps(v, _mm256_set1_ps(s[0]), _CMP_GE_OQ));
    while (mask) {
      const int64_t c = r + __builtin_ctz(mask);
      heap_offer(s, id, k, static_cast<float>(row[c]), first_id + c);  // re-checks the root
      mask &= mask - 1;
    }
  }
  for (; r < n; ++r) {
    const float v = static_cast<float>(row[r]);
    if (v >= s[0]) heap_offer(s, id, k, v, first_id + r);
  }
}
#endif

void offer_ints(const int32_t* row, int64_t n, float* s, int64_t* id, int64_t k,
                int64_t first_id) {
#if EMB_HAVE_AVX2_PATH
  if (kAvx2) return offer_ints_avx2(row, n, s, id, k, first_id);
#endif
  for (int64_t r = 0; r < n; ++r) {
    const float v = static_cast<float>(row[r]);
    if (v >= s[0]) heap_offer(s, id, k, v, first_id + r);
  }
}

// Scan n rows in blocks of kRows: `block(r0, rows, tile)` fills a (q, kRows) int32 tile,
// whose scores go to per-thread heaps, merged into the caller's heaps at the end.
template <typename Block>
void scan(int64_t q, int64_t n, int64_t row_bytes, int64_t base_offset, int64_t k,
          float* heap_scores, int64_t* heap_ids, Block&& block) {
  const int64_t blocks = (n + kRows - 1) / kRows;
#pragma omp parallel if (n * q * row_bytes > (1 << 20))
  {
    std::vector<float> hs(q * k, kEmpty);
    std::vector<int64_t> hi(q * k, kNoId);
    std::vector<int32_t> tile(q * kRows);
#pragma omp for schedule(dynamic, 16)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t r0 = blk * kRows;
      const int64_t rows = n - r0 < kRows ? n - r0 : kRows;
      block(r0, rows, tile.data());
      for (int64_t i = 0; i < q; ++i) {
        float* s = hs.data() + i * k;
        int64_t* id = hi.data() + i * k;
        const int32_t* row = tile.data() + i * kRows;
        offer_ints(row, rows, s, id, k, base_offset + r0);
      }
    }
#pragma omp critical
    for (int64_t e = 0; e < q * k; ++e) {
      if (hi[e] == kNoId) continue;
      const int64_t i = e / k;
      heap_offer(heap_scores + i * k, heap_ids + i * k, k, hs[e], hi[e]);
    }
  }
}

}  // namespace

void topk_int8_scan(const int8_t* queries, int64_t q, const int8_t* codes, int64_t n, int64_t d,
                    int64_t base_offset, int64_t k, float* heap_scores, int64_t* heap_ids) {
  scan(q, n, d, base_offset, k, heap_scores, heap_ids, [&](int64_t r0, int64_t rows, int32_t* t) {
    int8_block(queries, q, codes + r0 * d, rows, d, t);
  });
}

void topk_hamming_scan(const uint8_t* queries, int64_t q, const uint8_t* bits, int64_t n,
                       int64_t nbytes, int64_t base_offset, int64_t k, float* heap_scores,
                       int64_t* heap_ids) {
  scan(q, n, nbytes, base_offset, k, heap_scores, heap_ids,
       [&](int64_t r0, int64_t rows, int32_t* t) {
         hamming_block(queries, q, bits + r0 * nbytes, rows, nbytes, t);
       });
}

}  // namespace embengine::cpu
