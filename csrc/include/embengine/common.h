// Shared helpers for the CPU and CUDA kernels.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define EMB_HD __host__ __device__
#else
#define EMB_HD
#endif

// Hot CPU loops are compiled for AVX-512, AVX2+FMA and baseline x86-64, and the loader
// picks the best one for the running CPU: one portable wheel, no -march=native.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__)
#define EMB_SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define EMB_SIMD_CLONE_LEVELS "x86-64-v4 (AVX-512), x86-64-v3 (AVX2+FMA), x86-64 baseline"
#else
#define EMB_SIMD_CLONES
#define EMB_SIMD_CLONE_LEVELS "compiler default"
#endif

namespace embengine {

/// IEEE binary16 bits -> float, exact for every input (subnormals, inf and NaN included).
EMB_HD inline float half_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0x1fu) {
    bits = sign | 0x7f800000u | (mantissa << 13);  // inf / NaN
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);  // normal: rebias 15 -> 127
  } else if (mantissa == 0) {
    bits = sign;  // signed zero
  } else {
    // Subnormal half: shift the mantissa up until its leading bit is the implicit one.
    exponent = 113u;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    bits = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
  }
  float out;
#if defined(__CUDA_ARCH__)
  out = __uint_as_float(bits);
#else
  std::memcpy(&out, &bits, sizeof(out));
#endif
  return out;
}

}  // namespace embengine
