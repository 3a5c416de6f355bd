// Compact vectors: exact top-k over int8 codes (integer dot products) and over sign bits
// packed 8 per byte (Hamming distance). Same contract as similarity.h: (score, id) lists
// best first, ties to the lower id, empty slots (-inf, -1). Scores are exact integers held
// in float32: the int8 dot itself, and for bits the count of matching bits
// (8 * bytes - Hamming distance), so the numpy oracle can reproduce every id.
#pragma once

#include <cstdint>

#include "embengine/common.h"

namespace embengine {

/// Integer dot of an int8 query row (values in [-127, 127]) and an int8 code row (any value).
EMB_HD inline int32_t dot_i8(const int8_t* a, const int8_t* b, int64_t d) {
  int32_t s = 0;
  for (int64_t p = 0; p < d; ++p) s += static_cast<int32_t>(a[p]) * static_cast<int32_t>(b[p]);
  return s;
}

namespace cpu {

/// Offer every code row (ids base_offset + row) to the (q, k) worst-at-root heaps.
/// queries: q * d int8 in [-127, 127] (the caller checks); codes: n * d int8.
void topk_int8_scan(const int8_t* queries, int64_t q, const int8_t* codes, int64_t n, int64_t d,
                    int64_t base_offset, int64_t k, float* heap_scores, int64_t* heap_ids);

/// Offer every bit row (nbytes packed bytes each) scored by matching bits to the heaps.
void topk_hamming_scan(const uint8_t* queries, int64_t q, const uint8_t* bits, int64_t n,
                       int64_t nbytes, int64_t base_offset, int64_t k, float* heap_scores,
                       int64_t* heap_ids);

}  // namespace cpu
}  // namespace embengine
