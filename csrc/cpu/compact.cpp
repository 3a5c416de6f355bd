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

// Per-byte popcounts of 32 bytes: two 16-entry nibble lookups (vpshufb), no popcnt.
EMB_AVX2_POPCNT inline __m256i popcount_bytes(__m256i v) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,  //
                                       0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f);
  return _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_and_si256(v, low)),
                         _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), low)));
}

// Four rows' byte counts (each byte <= 8 * 32-byte chunks, so no overflow up to 1024 dims)
// -> their four totals as int32, matched bits = 8 * nbytes - differing bits. vpsadbw sums
// each row's bytes into 4 qwords; rows 0/1 and 2/3 share qwords (low / high dword), then the
// two 128-bit halves and the two qword halves are added.
EMB_AVX2_POPCNT inline void store_four(__m256i c0, __m256i c1, __m256i c2, __m256i c3,
                                       int32_t bits_per_row, int32_t* out) {
  const __m256i zero = _mm256_setzero_si256();
  const __m256i u01 = _mm256_or_si256(_mm256_sad_epu8(c0, zero),
                                      _mm256_slli_epi64(_mm256_sad_epu8(c1, zero), 32));
  const __m256i u23 = _mm256_or_si256(_mm256_sad_epu8(c2, zero),
                                      _mm256_slli_epi64(_mm256_sad_epu8(c3, zero), 32));
  const __m128i x01 = _mm_add_epi32(_mm256_castsi256_si128(u01), _mm256_extracti128_si256(u01, 1));
  const __m128i x23 = _mm_add_epi32(_mm256_castsi256_si128(u23), _mm256_extracti128_si256(u23, 1));
  const __m128i diff = _mm_add_epi32(_mm_unpacklo_epi64(x01, x23), _mm_unpackhi_epi64(x01, x23));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm_sub_epi32(_mm_set1_epi32(bits_per_row), diff));
}

// 48-byte rows (384 dims): two rows are three 32-byte chunks, so four rows are six loads,
// xored with the query laid out as (q[0:32], q[32:48] q[0:16], q[16:48]) repeated.
EMB_AVX2_POPCNT void hamming_block_48(const uint8_t* queries, int64_t q, const uint8_t* bits,
                                      int64_t rows, int32_t* out) {
  const __m256i first = _mm256_setr_epi64x(-1, -1, 0, 0);  // the low 128-bit lane
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    __m256i row[6];
    for (int c = 0; c < 6; ++c)
      row[c] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bits + r * 48 + 32 * c));
    for (int64_t i = 0; i < q; ++i) {
      const uint8_t* qi = queries + i * 48;
      const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qi));
      const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qi + 16));
      const __m256i b = _mm256_permute2x128_si256(c, a, 0x21);  // q[32:48] | q[0:16]
      const __m256i p1 = popcount_bytes(_mm256_xor_si256(row[1], b));
      const __m256i p4 = popcount_bytes(_mm256_xor_si256(row[4], b));
      store_four(
          _mm256_add_epi8(popcount_bytes(_mm256_xor_si256(row[0], a)), _mm256_and_si256(p1, first)),
          _mm256_add_epi8(popcount_bytes(_mm256_xor_si256(row[2], c)), _mm256_andnot_si256(first, p1)),
          _mm256_add_epi8(popcount_bytes(_mm256_xor_si256(row[3], a)), _mm256_and_si256(p4, first)),
          _mm256_add_epi8(popcount_bytes(_mm256_xor_si256(row[5], c)), _mm256_andnot_si256(first, p4)),
          384, out + i * kRows + r);
    }
  }
  for (; r < rows; ++r) hamming_rows<6, 1>(queries, q, bits + r * 48, out + r);
}

// Rows of C 32-byte chunks (256, 512, 768, 1024 dims), four rows per step.
template <int C>
EMB_AVX2_POPCNT void hamming_block_32s(const uint8_t* queries, int64_t q, const uint8_t* bits,
                                       int64_t rows, int32_t* out) {
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    const uint8_t* b = bits + r * 32 * C;
    for (int64_t i = 0; i < q; ++i) {
      __m256i count[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                          _mm256_setzero_si256()};
      for (int c = 0; c < C; ++c) {
        const __m256i qc =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(queries + i * 32 * C + 32 * c));
        for (int j = 0; j < 4; ++j) {
          const __m256i x = _mm256_loadu_si256(
              reinterpret_cast<const __m256i*>(b + j * 32 * C + 32 * c));
          count[j] = _mm256_add_epi8(count[j], popcount_bytes(_mm256_xor_si256(x, qc)));
        }
      }
      store_four(count[0], count[1], count[2], count[3], 256 * C, out + i * kRows + r);
    }
  }
  for (; r < rows; ++r)
    for (int64_t i = 0; i < q; ++i)
      out[i * kRows + r] = matches(queries + i * 32 * C, bits + r * 32 * C, 32 * C);
}

EMB_AVX2_POPCNT void hamming_block_avx2(const uint8_t* queries, int64_t q, const uint8_t* bits,
                                        int64_t rows, int64_t nbytes, int32_t* out) {
  switch (nbytes) {  // the widths of common models: 256, 384, 512, 768, 1024 dims
    case 32: return hamming_block_32s<1>(queries, q, bits, rows, out);
    case 48: return hamming_block_48(queries, q, bits, rows, out);
    case 64: return hamming_block_32s<2>(queries, q, bits, rows, out);
    case 96: return hamming_block_32s<3>(queries, q, bits, rows, out);
    case 128: return hamming_block_32s<4>(queries, q, bits, rows, out);
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
