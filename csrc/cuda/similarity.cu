#include <cmath>
#include <cstdint>

#include "embengine/cuda_compat.h"
#include "embengine/similarity.h"
#include "embengine/similarity_cuda.h"

namespace embengine::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kChunk = 1024;        // tile columns sorted per step in shared memory (a power of 2)
constexpr int kScoreQueries = 8;    // queries scored per pass of dot_scores (held in registers)
constexpr int kMaxSharedQueryFloats = 8192;  // 32 KiB of queries in shared memory per block

__device__ inline float to_float(float v) { return v; }
__device__ inline float to_float(__half v) { return __half2float(v); }
__device__ inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

__device__ inline void count_not_finite(unsigned long long* counter, int64_t n) {
  if (n != 0 && counter != nullptr) atomicAdd(counter, static_cast<unsigned long long>(n));
}

// Row chunks of E elements as float: E = 1 reads one element (any width, any alignment);
// E = 16 / sizeof(T) reads one 16-byte vector (rows a multiple of 16 bytes, aligned).
template <typename T, int E>
__device__ inline void load_chunk(const T* row, int64_t v, bool valid, float* x) {
  if constexpr (E == 1) {
    x[0] = valid ? to_float(row[v]) : 0.0f;
  } else {
    uint4 raw = make_uint4(0u, 0u, 0u, 0u);
    if (valid) raw = reinterpret_cast<const uint4*>(row)[v];
    const T* elements = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int e = 0; e < E; ++e) x[e] = to_float(elements[e]);
  }
}

// dot(chunk of E floats at q, x) added to acc: float4 reads when E allows.
template <int E>
__device__ inline float chunk_dot(const float* q, const float* x, float acc) {
  if constexpr (E % 4 == 0) {
#pragma unroll
    for (int h = 0; h < E / 4; ++h) {
      const float4 w = reinterpret_cast<const float4*>(q)[h];
      acc = fmaf(w.x, x[4 * h], acc);
      acc = fmaf(w.y, x[4 * h + 1], acc);
      acc = fmaf(w.z, x[4 * h + 2], acc);
      acc = fmaf(w.w, x[4 * h + 3], acc);
    }
  } else {
#pragma unroll
    for (int e = 0; e < E; ++e) acc = fmaf(q[e], x[e], acc);
  }
  return acc;
}

// dot_scores: `group` lanes share a base row (grid-stride; a warp covers 32 / group rows),
// each lane reading every group-th chunk of E elements, so a row is read once, coalesced;
// up to kScoreQueries queries per pass from shared memory; a group's partial sums meet by
// xor shuffles inside the group. E = 1 with group = 32 takes any row; 16-byte chunks need
// group | chunks per row (see lanes_per_row), so every lane of a group loads alike.
template <typename T, int E>
__global__ void dot_scores_kernel(const float* __restrict__ queries, int64_t q,
                                  const T* __restrict__ base, int64_t m, int64_t d,
                                  float* __restrict__ out, int64_t ld, int64_t q_shared,
                                  int group) {
  EMB_DYNAMIC_SHARED(float, sq);  // q_shared x d queries
  const int lane = threadIdx.x % 32;
  const int sub = lane % group;
  const int64_t rows_per_warp = 32 / group;
  const int64_t chunks = d / E;
  const int64_t warps_per_block = blockDim.x / 32;
  const int64_t warp0 = static_cast<int64_t>(blockIdx.x) * warps_per_block + threadIdx.x / 32;
  const int64_t warp_stride = static_cast<int64_t>(gridDim.x) * warps_per_block;
  for (int64_t q0 = 0; q0 < q; q0 += q_shared) {
    const int64_t qn = q - q0 < q_shared ? q - q0 : q_shared;
    __syncthreads();
    for (int64_t i = threadIdx.x; i < qn * d; i += blockDim.x) sq[i] = queries[q0 * d + i];
    __syncthreads();
    for (int64_t first = warp0 * rows_per_warp; first < m; first += warp_stride * rows_per_warp) {
      const int64_t row = first + lane / group;
      const bool valid = row < m;  // lanes past the end still join the shuffles
      const T* br = base + (valid ? row : 0) * d;
      for (int64_t g = 0; g < qn; g += kScoreQueries) {
        float acc[kScoreQueries];
#pragma unroll
        for (int j = 0; j < kScoreQueries; ++j) acc[j] = 0.0f;
        for (int64_t v = sub; v < chunks; v += group) {
          float x[E];
          load_chunk<T, E>(br, v, valid, x);
#pragma unroll
          for (int j = 0; j < kScoreQueries; ++j) {
            if (g + j < qn) acc[j] = chunk_dot<E>(sq + (g + j) * d + v * E, x, acc[j]);
          }
        }
#pragma unroll
        for (int j = 0; j < kScoreQueries; ++j) {
          if (g + j >= qn) break;  // uniform across the warp: no divergent shuffle
          float s = acc[j];
          for (int offset = group / 2; offset > 0; offset /= 2) {
            s += __shfl_xor_sync(0xffffffffu, s, offset);
          }
          if (sub == 0 && valid) out[(q0 + g + j) * ld + row] = s;
        }
      }
    }
  }
}

// Top-k selection. Block (s, r) takes columns [s * span, min(m, (s + 1) * span)) of tile row r,
// one column per thread per step. Only a score that ranks before the running k-th entry is a
// candidate: it is appended to a shared buffer (one shared atomic). When the buffer could
// overflow on the next step, and at the end, it is bitonic-sorted (at the next power of two
// of its fill, not at full size) and merged with the running list by merge path (one output
// position per thread), ping-ponging between the list and its scratch. After the list fills,
// candidates are rare (about k ln(span / k) in all on random data), so a span costs one read
// of its scores and a sort or two, not one sort per 1024 columns.
__global__ void topk_select_kernel(const float* __restrict__ tile, int64_t m, int64_t ld,
                                   const int64_t* __restrict__ tile_ids, int64_t base_offset,
                                   int64_t splits, int64_t span, bool exclude_self,
                                   int64_t self_offset, float* list_s, int64_t* list_i,
                                   float* scratch_s, int64_t* scratch_i, int64_t k, bool init,
                                   unsigned long long* not_finite) {
  __shared__ float cs[kChunk];
  __shared__ int64_t ci[kChunk];
  __shared__ int slot;  // next free buffer position (equal to `fill` between steps)
  const int64_t split = blockIdx.x;
  const int64_t row = blockIdx.y;
  const int64_t list = row * splits + split;
  const float* scores = tile + row * ld;
  const int64_t* ids = tile_ids == nullptr ? nullptr : tile_ids + row * ld;
  const int64_t self_id = exclude_self ? self_offset + row : kNoId;
  const int64_t begin = split * span;
  const int64_t end = begin + span < m ? begin + span : m;
  float* cur_s = list_s + list * k;
  int64_t* cur_i = list_i + list * k;
  float* nxt_s = scratch_s + list * k;
  int64_t* nxt_i = scratch_i + list * k;
  if (init) {
    for (int64_t p = threadIdx.x; p < k; p += blockDim.x) {
      cur_s[p] = -INFINITY;
      cur_i[p] = kNoId;
    }
  }
  if (threadIdx.x == 0) slot = 0;
  __syncthreads();
  float worst_s = cur_s[k - 1];
  int64_t worst_i = cur_i[k - 1];
  int fill = 0;  // block-uniform: every thread adds the same __syncthreads_count
  int64_t bad = 0;
  for (int64_t c0 = begin; c0 < end; c0 += blockDim.x) {
    const int64_t col = c0 + threadIdx.x;
    int candidate = 0;
    if (col < end) {
      const float s = scores[col];
      const int64_t id = ids == nullptr ? base_offset + col : ids[col];
      if (id != kNoId && !score_is_finite(s)) {
        ++bad;  // NaN / inf data or overflow: counted, never ranked
      } else if (id != kNoId && id != self_id && ranks_before(s, id, worst_s, worst_i)) {
        candidate = 1;  // (an empty slot of a merged list, id -1, is not a score)
        const int pos = atomicAdd(&slot, 1);
        cs[pos] = s;
        ci[pos] = id;
      }
    }
    fill += __syncthreads_count(candidate);  // also makes the appended entries visible
    const bool last = c0 + static_cast<int64_t>(blockDim.x) >= end;
    if (fill == 0 || (fill + static_cast<int>(blockDim.x) <= kChunk && !last)) continue;

    const int size = static_cast<int>(next_pow2(fill));
    for (int t = fill + threadIdx.x; t < size; t += blockDim.x) {
      cs[t] = -INFINITY;  // padding ranks after every real entry
      ci[t] = kNoId;
    }
    __syncthreads();
    for (int stage = 2; stage <= size; stage *= 2) {
      for (int stride = stage / 2; stride > 0; stride /= 2) {
        for (int t = threadIdx.x; t < size; t += blockDim.x) {
          const int64_t p = bitonic_partner(t, stride);
          if (p >= 0 && bitonic_should_swap(cs[t], ci[t], cs[p], ci[p], t, stage)) {
            const float sv = cs[t];
            cs[t] = cs[p];
            cs[p] = sv;
            const int64_t iv = ci[t];
            ci[t] = ci[p];
            ci[p] = iv;
          }
        }
        __syncthreads();
      }
    }
    for (int64_t p = threadIdx.x; p < k; p += blockDim.x) {
      merge_path_entry(cur_s, cur_i, k, cs, ci, size, p, &nxt_s[p], &nxt_i[p]);
    }
    if (threadIdx.x == 0) slot = 0;
    __syncthreads();  // the new list is complete (and visible to the block) before it is read
    float* ts = cur_s;
    cur_s = nxt_s;
    nxt_s = ts;
    int64_t* ti = cur_i;
    cur_i = nxt_i;
    nxt_i = ti;
    worst_s = cur_s[k - 1];
    worst_i = cur_i[k - 1];
    fill = 0;
  }
  if (cur_s != list_s + list * k) {  // an odd number of merges left the list in scratch
    for (int64_t p = threadIdx.x; p < k; p += blockDim.x) {
      list_s[list * k + p] = cur_s[p];
      list_i[list * k + p] = cur_i[p];
    }
  }
  count_not_finite(not_finite, bad);
}

// Pairs: grid (column blocks, rows). The trip count of the column loop is the same for every
// lane of a block, so each warp can gather its hits with one ballot and one atomicAdd.
__global__ void pairs_kernel(const float* __restrict__ tile, int64_t nr, int64_t nc, int64_t ld,
                             const float* __restrict__ rows, const float* __restrict__ cols,
                             int64_t d, int64_t row0, int64_t col0, float threshold,
                             float candidate, bool upper_only, int64_t* out_i, int64_t* out_j,
                             float* out_score, int64_t capacity, unsigned long long* count,
                             unsigned long long* not_finite) {
  const int64_t r = blockIdx.y;
  if (r >= nr) return;
  const int lane = threadIdx.x % 32;
  const int64_t first = upper_only ? row0 + r + 1 - col0 : 0;  // upper triangle: id j > id i
  int64_t bad = 0;
  for (int64_t c0 = static_cast<int64_t>(blockIdx.x) * blockDim.x; c0 < nc;
       c0 += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = c0 + threadIdx.x;
    bool hit = false;
    float score = 0.0f;
    if (c < nc) {
      const float s = tile[r * ld + c];
      if (!score_is_finite(s)) {
        ++bad;
      } else if (c >= first && s >= candidate) {
        // the kept score is the fixed-order dot the CPU keeps too (see dot_lanes8)
        score = dot_lanes8(rows + r * d, cols + c * d, d);
        hit = score >= threshold;
      }
    }
    const unsigned mask = __ballot_sync(0xffffffffu, hit);
    if (mask == 0) continue;
    const int leader = __ffs(mask) - 1;
    unsigned long long start = 0;
    if (lane == leader) start = atomicAdd(count, static_cast<unsigned long long>(__popc(mask)));
    start = __shfl_sync(0xffffffffu, start, leader);
    if (hit) {
      const unsigned long long pos = start + __popc(mask & ((1u << lane) - 1u));
      if (pos < static_cast<unsigned long long>(capacity)) {
        out_i[pos] = row0 + r;
        out_j[pos] = col0 + c;
        out_score[pos] = score;
      }
    }
  }
  count_not_finite(not_finite, bad);
}

// A row's score with centroid j offered to its running best (lowest index on ties);
// NaN / inf marks the row, never wins.
__device__ inline void offer_centroid(float s, int64_t j, float* best, int64_t* arg,
                                      bool* finite) {
  if (!score_is_finite(s)) {
    *finite = false;
  } else if (ranks_before(s, j, *best, *arg)) {
    *best = s;
    *arg = j;
  }
}

// One warp per row of x; the row's dot with each centroid is reduced to lane 0 and broadcast,
// so every lane agrees bit for bit and ties go to the lower centroid index.
template <typename T>
__global__ void nearest_centroid_kernel(const T* __restrict__ x, int64_t n,
                                        const float* __restrict__ centroids, int64_t c, int64_t d,
                                        float* best_score, int64_t* best_index,
                                        unsigned long long* not_finite) {
  const int lane = threadIdx.x % 32;
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  if (row >= n) return;
  const T* xr = x + row * d;
  float best = -INFINITY;
  int64_t arg = kNoId;
  bool finite = true;
  for (int64_t j = 0; j < c; ++j) {
    const float* cr = centroids + j * d;
    float s = 0.0f;
    for (int64_t p = lane; p < d; p += 32) s = fmaf(to_float(xr[p]), __ldg(cr + p), s);
    for (int offset = 16; offset > 0; offset /= 2) s += __shfl_down_sync(0xffffffffu, s, offset);
    s = __shfl_sync(0xffffffffu, s, 0);
    offer_centroid(s, j, &best, &arg, &finite);
  }
  if (lane == 0) {
    best_score[row] = best;
    best_index[row] = arg;
    if (!finite) count_not_finite(not_finite, 1);
  }
}

// nearest_centroid, 16-byte loads (rows as in dot_scores_kernel): a group of lanes per row
// holds the row in registers (VPL chunks per lane, read once) and meets each centroid with
// float4 reads; the xor-shuffle sum gives every lane of the group the same bits, so they
// agree on the best centroid (lowest index on ties).
template <typename T, int VPL>
__global__ void nearest_centroid_vec_kernel(const T* __restrict__ x, int64_t n,
                                            const float* __restrict__ centroids, int64_t c,
                                            int64_t d, float* best_score, int64_t* best_index,
                                            unsigned long long* not_finite, int group) {
  constexpr int E = 16 / sizeof(T);
  const int lane = threadIdx.x % 32;
  const int sub = lane % group;
  const int64_t rows_per_warp = 32 / group;
  const int64_t first = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32 *
                        rows_per_warp;
  if (first >= n) return;  // whole warps only: every lane of a warp agrees
  const int64_t row = first + lane / group;
  const bool valid = row < n;  // lanes past the end still join the shuffles
  float xv[VPL * E];
#pragma unroll
  for (int r = 0; r < VPL; ++r) {
    load_chunk<T, E>(x + (valid ? row : 0) * d, sub + r * group, valid, xv + r * E);
  }
  float best = -INFINITY;
  int64_t arg = kNoId;
  bool finite = true;
  for (int64_t j = 0; j < c; ++j) {
    float s = 0.0f;
#pragma unroll
    for (int r = 0; r < VPL; ++r) {
      s = chunk_dot<E>(centroids + j * d + (sub + r * group) * E, xv + r * E, s);
    }
    for (int offset = group / 2; offset > 0; offset /= 2) {
      s += __shfl_xor_sync(0xffffffffu, s, offset);
    }
    offer_centroid(s, j, &best, &arg, &finite);
  }
  if (sub == 0 && valid) {
    best_score[row] = best;
    best_index[row] = arg;
    if (!finite) count_not_finite(not_finite, 1);
  }
}

// One warp per row of an (n, c) score tile: the best column (lowest on ties).
__global__ void tile_argmax_kernel(const float* __restrict__ tile, int64_t n, int64_t c,
                                   int64_t ld, float* best_score, int64_t* best_index,
                                   unsigned long long* not_finite) {
  const int lane = threadIdx.x % 32;
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  if (row >= n) return;
  float best = -INFINITY;
  int64_t arg = kNoId;
  int64_t bad = 0;
  for (int64_t j = lane; j < c; j += 32) {
    const float s = tile[row * ld + j];
    if (!score_is_finite(s)) {
      ++bad;
    } else if (ranks_before(s, j, best, arg)) {
      best = s;
      arg = j;
    }
  }
  for (int offset = 16; offset > 0; offset /= 2) {
    const float os = __shfl_down_sync(0xffffffffu, best, offset);
    const int64_t oi = __shfl_down_sync(0xffffffffu, arg, offset);
    if (ranks_before(os, oi, best, arg)) {
      best = os;
      arg = oi;
    }
  }
  if (lane == 0) {
    best_score[row] = best;
    best_index[row] = arg;
  }
  count_not_finite(not_finite, bad);
}

int64_t blocks_for_warps(int64_t warps) { return (warps * 32 + kThreads - 1) / kThreads; }

// Lanes per row for 16-byte loads of rows of d elements of `bytes` each (0: not possible).
int lanes_per_row(const void* base, int64_t d, int64_t bytes) {
  const int64_t per_vector = 16 / bytes;
  if (reinterpret_cast<std::uintptr_t>(base) % 16 != 0 || d % per_vector != 0) return 0;
  const int64_t vecs = d / per_vector;
  const int64_t group = vecs & -vecs;  // the largest power of two dividing vecs
  return group >= 4 ? static_cast<int>(group < 32 ? group : 32) : 0;  // else too few lanes
}

template <typename T>
void launch_dot_scores(const float* queries, int64_t q, const T* base, int64_t m, int64_t d,
                       float* out, int64_t ld, int64_t q_shared, cudaStream_t stream) {
  const size_t shared = static_cast<size_t>(q_shared * d) * sizeof(float);
  const int group = lanes_per_row(base, d, sizeof(T));
  const int64_t rows_per_warp = group == 0 ? 1 : 32 / group;
  int64_t blocks = blocks_for_warps((m + rows_per_warp - 1) / rows_per_warp);
  if (blocks > 65535) blocks = 65535;  // grid-stride beyond: every SM stays busy
  if (group == 0) {
    EMB_LAUNCH((dot_scores_kernel<T, 1>), blocks, kThreads, shared, stream)(
        queries, q, base, m, d, out, ld, q_shared, 32);
  } else {
    EMB_LAUNCH((dot_scores_kernel<T, 16 / sizeof(T)>), blocks, kThreads, shared, stream)(
        queries, q, base, m, d, out, ld, q_shared, group);
  }
}

}  // namespace

void dot_scores(const float* queries, int64_t q, const void* base, DType dtype, int64_t m,
                int64_t d, float* out, int64_t ld, cudaStream_t stream) {
  if (q == 0 || m == 0 || d == 0) return;
  clear_stale_error("dot_scores");
  int64_t q_shared = kMaxSharedQueryFloats / d;
  if (q_shared < 1) throw std::invalid_argument("dot_scores: dim is too large for the scan path");
  if (q_shared > q) q_shared = q;
  switch (dtype) {
    case DType::f32:
      launch_dot_scores(queries, q, static_cast<const float*>(base), m, d, out, ld, q_shared,
                        stream);
      break;
    case DType::f16:
      launch_dot_scores(queries, q, static_cast<const __half*>(base), m, d, out, ld, q_shared,
                        stream);
      break;
    case DType::bf16:
      launch_dot_scores(queries, q, static_cast<const __nv_bfloat16*>(base), m, d, out, ld,
                        q_shared, stream);
      break;
  }
  check(cudaGetLastError(), "dot_scores");
}

void topk_select(const float* tile, int64_t q, int64_t m, int64_t ld, const int64_t* tile_ids,
                 int64_t base_offset, int64_t splits, int64_t span, bool exclude_self,
                 int64_t self_offset, float* list_scores, int64_t* list_ids,
                 float* scratch_scores, int64_t* scratch_ids, int64_t k, bool init,
                 unsigned long long* not_finite, cudaStream_t stream) {
  if (q == 0 || m == 0) return;
  if (q > 65535) throw std::invalid_argument("topk_select: at most 65535 rows per tile");
  clear_stale_error("topk_select");
  const dim3 grid(static_cast<unsigned>(splits), static_cast<unsigned>(q));
  EMB_LAUNCH(topk_select_kernel, grid, kThreads, 0, stream)(
      tile, m, ld, tile_ids, base_offset, splits, span, exclude_self, self_offset, list_scores,
      list_ids, scratch_scores, scratch_ids, k, init, not_finite);
  check(cudaGetLastError(), "topk_select");
}

void pairs_in_tile(const float* tile, int64_t nr, int64_t nc, int64_t ld, const float* rows,
                   const float* cols, int64_t d, int64_t row0, int64_t col0, float threshold,
                   float margin, bool upper_only, int64_t* out_i, int64_t* out_j,
                   float* out_score, int64_t capacity, unsigned long long* count,
                   unsigned long long* not_finite, cudaStream_t stream) {
  if (nr == 0 || nc == 0) return;
  if (nr > 65535) throw std::invalid_argument("pairs_in_tile: at most 65535 rows per tile");
  clear_stale_error("pairs_in_tile");
  const int64_t col_blocks = (nc + kThreads - 1) / kThreads;
  const dim3 grid(static_cast<unsigned>(col_blocks < 64 ? col_blocks : 64),
                  static_cast<unsigned>(nr));
  const float candidate = threshold - margin;  // in float, exactly as the CPU computes it
  EMB_LAUNCH(pairs_kernel, grid, kThreads, 0, stream)(
      tile, nr, nc, ld, rows, cols, d, row0, col0, threshold, candidate, upper_only, out_i, out_j,
      out_score, capacity, count, not_finite);
  check(cudaGetLastError(), "pairs_in_tile");
}

namespace {

// The register kernel when rows allow 16-byte loads with at most 4 vectors a lane, else the
// warp-per-row kernel.
template <typename T>
void launch_nearest_centroid(const T* x, int64_t n, const float* centroids, int64_t c,
                             int64_t d, float* best_score, int64_t* best_index,
                             unsigned long long* not_finite, cudaStream_t stream) {
  const int group = reinterpret_cast<std::uintptr_t>(centroids) % 16 == 0
                        ? lanes_per_row(x, d, sizeof(T))
                        : 0;
  const int64_t per_lane = group == 0 ? 0 : d / static_cast<int64_t>(16 / sizeof(T)) / group;
  if (per_lane < 1 || per_lane > 4) {
    EMB_LAUNCH(nearest_centroid_kernel, blocks_for_warps(n), kThreads, 0, stream)(
        x, n, centroids, c, d, best_score, best_index, not_finite);
    return;
  }
  const int64_t blocks = blocks_for_warps((n + 32 / group - 1) / (32 / group));
  switch (per_lane) {
    case 1:
      EMB_LAUNCH((nearest_centroid_vec_kernel<T, 1>), blocks, kThreads, 0, stream)(
          x, n, centroids, c, d, best_score, best_index, not_finite, group);
      break;
    case 2:
      EMB_LAUNCH((nearest_centroid_vec_kernel<T, 2>), blocks, kThreads, 0, stream)(
          x, n, centroids, c, d, best_score, best_index, not_finite, group);
      break;
    case 3:
      EMB_LAUNCH((nearest_centroid_vec_kernel<T, 3>), blocks, kThreads, 0, stream)(
          x, n, centroids, c, d, best_score, best_index, not_finite, group);
      break;
    default:
      EMB_LAUNCH((nearest_centroid_vec_kernel<T, 4>), blocks, kThreads, 0, stream)(
          x, n, centroids, c, d, best_score, best_index, not_finite, group);
      break;
  }
}

}  // namespace

void nearest_centroid(const void* x, DType dtype, int64_t n, const float* centroids, int64_t c,
                      int64_t d, float* best_score, int64_t* best_index,
                      unsigned long long* not_finite, cudaStream_t stream) {
  if (n == 0) return;
  clear_stale_error("nearest_centroid");
  switch (dtype) {
    case DType::f32:
      launch_nearest_centroid(static_cast<const float*>(x), n, centroids, c, d, best_score,
                              best_index, not_finite, stream);
      break;
    case DType::f16:
      launch_nearest_centroid(static_cast<const __half*>(x), n, centroids, c, d, best_score,
                              best_index, not_finite, stream);
      break;
    case DType::bf16:
      launch_nearest_centroid(static_cast<const __nv_bfloat16*>(x), n, centroids, c, d,
                              best_score, best_index, not_finite, stream);
      break;
  }
  check(cudaGetLastError(), "nearest_centroid");
}

void tile_argmax(const float* tile, int64_t n, int64_t c, int64_t ld, float* best_score,
                 int64_t* best_index, unsigned long long* not_finite, cudaStream_t stream) {
  if (n == 0 || c == 0) return;
  clear_stale_error("tile_argmax");
  EMB_LAUNCH(tile_argmax_kernel, blocks_for_warps(n), kThreads, 0, stream)(
      tile, n, c, ld, best_score, best_index, not_finite);
  check(cudaGetLastError(), "tile_argmax");
}

}  // namespace embengine::cuda
