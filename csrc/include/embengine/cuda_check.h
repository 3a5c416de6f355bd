// CUDA error handling shared by the kernels and the bindings.
#pragma once

#include "embengine/cuda_compat.h"

#include <stdexcept>
#include <string>

namespace embengine::cuda {

/// Turns a CUDA error into a C++ exception (pybind11 maps it to RuntimeError).
inline void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string("embengine CUDA error in ") + what + ": " +
                             cudaGetErrorName(status) + ": " + cudaGetErrorString(status));
  }
}

/// Called before our launches. A failed launch elsewhere in the process (another library, an
/// earlier call) leaves its error in the runtime's per-thread slot, and the first
/// cudaGetLastError after *our* launch would report it as ours; such a non-sticky error is
/// cleared here. A sticky error (an illegal address, a kernel fault) is returned by every
/// later call and means the context is unusable: that raises, saying so, instead of
/// launching into a broken context.
inline void clear_stale_error(const char* what) {
  const cudaError_t stale = cudaGetLastError();
  if (stale == cudaSuccess) return;
  const cudaError_t again = cudaGetLastError();
  if (again != cudaSuccess) {
    throw std::runtime_error(std::string("embengine CUDA error before ") + what +
                             ": an earlier CUDA failure left this process's context unusable (" +
                             cudaGetErrorName(again) + ": " + cudaGetErrorString(again) +
                             "); restart the process");
  }
}

/// Element types a CUDA kernel can read; the values match the Python dispatcher's codes.
enum class DType : int { f32 = 0, f16 = 1, bf16 = 2 };

}  // namespace embengine::cuda
