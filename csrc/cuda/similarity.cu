#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>

#include "embengine/similarity.h"
#include "embengine/similarity_cuda.h"

namespace embengine::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kChunk = 1024;  // tile columns sorted per step in shared memory (a power of 2)

__device__ inline float to_float(float v) { return v; }
__device__ inline float to_float(__half v) { return __half2float(v); }
__device__ inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

// One block per query row. The row's tile is taken kChunk columns at a time: a chunk that
// cannot beat the current k-th entry is skipped; otherwise it is bitonic-sorted in shared
// memory and merged with the running list by merge path (one output position per thread),
// ping-ponging between the state and scratch lists.
__global__ void topk_merge_kernel(const float* __restrict__ tile, int64_t m, int64_t ld,
                                  int64_t base_offset, bool exclude_self, int64_t self_offset,
                                  float* state_s, int64_t* state_i, float* scratch_s,
                                  int64_t* scratch_i, int64_t k) {
  __shared__ float cs[kChunk];
  __shared__ int64_t ci[kChunk];
  const int64_t row = blockIdx.x;
  const float* scores = tile + row * ld;
  const int64_t self_id = exclude_self ? self_offset + row : kNoId;
  float* cur_s = state_s + row * k;
  int64_t* cur_i = state_i + row * k;
  float* nxt_s = scratch_s + row * k;
  int64_t* nxt_i = scratch_i + row * k;

  for (int64_t c0 = 0; c0 < m; c0 += kChunk) {
    const float worst_s = cur_s[k - 1];
    const int64_t worst_i = cur_i[k - 1];
    int improves = 0;
    for (int t = threadIdx.x; t < kChunk; t += blockDim.x) {
      const int64_t col = c0 + t;
      const int64_t id = base_offset + col;
      const bool real = col < m && id != self_id;
      cs[t] = real ? scores[col] : -INFINITY;
      ci[t] = real ? id : kNoId;
      improves |= ranks_before(cs[t], ci[t], worst_s, worst_i);
    }
    if (!__syncthreads_or(improves)) continue;

    for (int64_t stage = 2; stage <= kChunk; stage *= 2) {
      for (int64_t stride = stage / 2; stride > 0; stride /= 2) {
        for (int t = threadIdx.x; t < kChunk; t += blockDim.x) {
          const int64_t p = bitonic_partner(t, stride);
          if (p >= 0 && bitonic_should_swap(cs[t], ci[t], cs[p], ci[p], t, stage)) {
            const float s = cs[t];
            cs[t] = cs[p];
            cs[p] = s;
            const int64_t i = ci[t];
            ci[t] = ci[p];
            ci[p] = i;
          }
        }
        __syncthreads();
      }
    }
    for (int64_t p = threadIdx.x; p < k; p += blockDim.x) {
      merge_path_entry(cur_s, cur_i, k, cs, ci, kChunk, p, &nxt_s[p], &nxt_i[p]);
    }
    __syncthreads();  // the new list is complete (and visible to the block) before it is read
    float* ts = cur_s;
    cur_s = nxt_s;
    nxt_s = ts;
    int64_t* ti = cur_i;
    cur_i = nxt_i;
    nxt_i = ti;
  }
  if (cur_s != state_s + row * k) {  // an odd number of merges left the list in scratch
    for (int64_t p = threadIdx.x; p < k; p += blockDim.x) {
      state_s[row * k + p] = cur_s[p];
      state_i[row * k + p] = cur_i[p];
    }
  }
}

__global__ void pairs_kernel(const float* __restrict__ tile, int64_t nr, int64_t nc, int64_t ld,
                             int64_t row0, int64_t col0, float threshold, bool upper_only,
                             int64_t* out_i, int64_t* out_j, float* out_score, int64_t capacity,
                             unsigned long long* count) {
  const int64_t r = blockIdx.y;
  if (r >= nr) return;
  for (int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; c < nc;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float s = tile[r * ld + c];
    if (s < threshold || (upper_only && row0 + r >= col0 + c)) continue;
    const unsigned long long pos = atomicAdd(count, 1ull);
    if (pos < static_cast<unsigned long long>(capacity)) {
      out_i[pos] = row0 + r;
      out_j[pos] = col0 + c;
      out_score[pos] = s;
    }
  }
}

// One warp per row of x; the row's dot with each centroid is reduced to lane 0 and broadcast,
// so every lane agrees bit for bit and ties go to the lower centroid index.
template <typename T>
__global__ void nearest_centroid_kernel(const T* __restrict__ x, int64_t n,
                                        const float* __restrict__ centroids, int64_t c, int64_t d,
                                        float* best_score, int64_t* best_index) {
  const int lane = threadIdx.x % 32;
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  if (row >= n) return;
  const T* xr = x + row * d;
  float best = -INFINITY;
  int64_t arg = 0;
  for (int64_t j = 0; j < c; ++j) {
    const float* cr = centroids + j * d;
    float s = 0.0f;
    for (int64_t p = lane; p < d; p += 32) s = fmaf(to_float(xr[p]), __ldg(cr + p), s);
    for (int offset = 16; offset > 0; offset /= 2) s += __shfl_down_sync(0xffffffffu, s, offset);
    s = __shfl_sync(0xffffffffu, s, 0);
    if (j == 0 || s > best) {
      best = s;
      arg = j;
    }
  }
  if (lane == 0) {
    best_score[row] = best;
    best_index[row] = arg;
  }
}

}  // namespace

void topk_merge_tile(const float* tile, int64_t q, int64_t m, int64_t ld, int64_t base_offset,
                     bool exclude_self, int64_t self_offset, float* state_scores,
                     int64_t* state_ids, float* scratch_scores, int64_t* scratch_ids, int64_t k,
                     cudaStream_t stream) {
  if (q == 0 || m == 0) return;
  topk_merge_kernel<<<q, kThreads, 0, stream>>>(tile, m, ld, base_offset, exclude_self,
                                                self_offset, state_scores, state_ids,
                                                scratch_scores, scratch_ids, k);
  check(cudaGetLastError(), "topk_merge_tile");
}

void pairs_in_tile(const float* tile, int64_t nr, int64_t nc, int64_t ld, int64_t row0,
                   int64_t col0, float threshold, bool upper_only, int64_t* out_i,
                   int64_t* out_j, float* out_score, int64_t capacity,
                   unsigned long long* count, cudaStream_t stream) {
  if (nr == 0 || nc == 0) return;
  const int64_t col_blocks = (nc + kThreads - 1) / kThreads;
  const dim3 grid(static_cast<unsigned>(col_blocks < 64 ? col_blocks : 64),
                  static_cast<unsigned>(nr));
  pairs_kernel<<<grid, kThreads, 0, stream>>>(tile, nr, nc, ld, row0, col0, threshold,
                                              upper_only, out_i, out_j, out_score, capacity,
                                              count);
  check(cudaGetLastError(), "pairs_in_tile");
}

void nearest_centroid(const void* x, DType dtype, int64_t n, const float* centroids, int64_t c,
                      int64_t d, float* best_score, int64_t* best_index, cudaStream_t stream) {
  if (n == 0) return;
  const int64_t blocks = (n * 32 + kThreads - 1) / kThreads;
  switch (dtype) {
    case DType::f32:
      nearest_centroid_kernel<<<blocks, kThreads, 0, stream>>>(
          static_cast<const float*>(x), n, centroids, c, d, best_score, best_index);
      break;
    case DType::f16:
      nearest_centroid_kernel<<<blocks, kThreads, 0, stream>>>(
          static_cast<const __half*>(x), n, centroids, c, d, best_score, best_index);
      break;
    case DType::bf16:
      nearest_centroid_kernel<<<blocks, kThreads, 0, stream>>>(
          static_cast<const __nv_bfloat16*>(x), n, centroids, c, d, best_score, best_index);
      break;
  }
  check(cudaGetLastError(), "nearest_centroid");
}

}  // namespace embengine::cuda
