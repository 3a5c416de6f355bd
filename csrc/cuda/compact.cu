// CUDA score tiles for int8 codes (__dp4a) and packed sign bits (__popc).
#include "embengine/cuda_compat.h"
#include "embengine/compact.h"
#include "embengine/compact_cuda.h"

namespace embengine::cuda {
namespace {

constexpr int kThreads = 256;

// One warp per code row (grid-stride), lanes over 4-byte words when rows are word-aligned.
__global__ void int8_dot_kernel(const int8_t* __restrict__ queries, int64_t q,
                                const int8_t* __restrict__ codes, int64_t m, int64_t d,
                                float* __restrict__ out, int64_t ld) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  const bool words = d % 4 == 0;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
       row < m; row += warps) {
    const int8_t* c = codes + row * d;
    for (int64_t r = 0; r < q; ++r) {
      const int8_t* a = queries + r * d;
      int s = 0;
      if (words) {
        const int* cw = reinterpret_cast<const int*>(c);
        const int* aw = reinterpret_cast<const int*>(a);
        for (int64_t p = lane; p < d / 4; p += 32) s = __dp4a(aw[p], cw[p], s);
      } else {
        for (int64_t p = lane; p < d; p += 32) s += static_cast<int>(a[p]) * c[p];
      }
      for (int offset = 16; offset > 0; offset /= 2) s += __shfl_down_sync(0xffffffffu, s, offset);
      if (lane == 0) out[r * ld + row] = static_cast<float>(s);
    }
  }
}

// One thread per bit row (grid-stride): a 384-bit row is 12 words, read once per query.
__global__ void hamming_kernel(const uint8_t* __restrict__ queries, int64_t q,
                               const uint8_t* __restrict__ bits, int64_t m, int64_t nbytes,
                               float* __restrict__ out, int64_t ld) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const bool words = nbytes % 4 == 0;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; row < m;
       row += stride) {
    const uint8_t* b = bits + row * nbytes;
    for (int64_t r = 0; r < q; ++r) {
      const uint8_t* a = queries + r * nbytes;
      int diff = 0;
      if (words) {
        const unsigned* bw = reinterpret_cast<const unsigned*>(b);
        const unsigned* aw = reinterpret_cast<const unsigned*>(a);
        for (int64_t p = 0; p < nbytes / 4; ++p) diff += __popc(aw[p] ^ bw[p]);
      } else {
        for (int64_t p = 0; p < nbytes; ++p) diff += __popc(static_cast<unsigned>(a[p] ^ b[p]));
      }
      out[r * ld + row] = static_cast<float>(8 * nbytes - diff);
    }
  }
}

int64_t grid_for(int64_t units) {
  const int64_t blocks = (units + kThreads - 1) / kThreads;
  return blocks < 1 ? 1 : (blocks > 65535 ? 65535 : blocks);
}

}  // namespace

void int8_dot_scores(const int8_t* queries, int64_t q, const int8_t* codes, int64_t m, int64_t d,
                     float* out, int64_t ld, cudaStream_t stream) {
  if (q == 0 || m == 0 || d == 0) return;
  clear_stale_error("int8_dot_scores");
  EMB_LAUNCH(int8_dot_kernel, grid_for(m * 32), kThreads, 0, stream)(queries, q, codes, m, d,
                                                                     out, ld);
  check(cudaGetLastError(), "int8_dot_scores");
}

void hamming_scores(const uint8_t* queries, int64_t q, const uint8_t* bits, int64_t m,
                    int64_t nbytes, float* out, int64_t ld, cudaStream_t stream) {
  if (q == 0 || m == 0 || nbytes == 0) return;
  clear_stale_error("hamming_scores");
  EMB_LAUNCH(hamming_kernel, grid_for(m), kThreads, 0, stream)(queries, q, bits, m, nbytes, out,
                                                               ld);
  check(cudaGetLastError(), "hamming_scores");
}

}  // namespace embengine::cuda
