// Turns every CUDA error into a C++ exception (pybind11 maps it to RuntimeError).
#pragma once

#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

namespace embengine::cuda {

inline void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string("embengine CUDA error in ") + what + ": " +
                             cudaGetErrorString(status));
  }
}

/// Element types a CUDA kernel can read; the values match the Python dispatcher's codes.
enum class DType : int { f32 = 0, f16 = 1, bf16 = 2 };

}  // namespace embengine::cuda
