// pybind11 face of the CUDA kernels. Arrays arrive as raw device pointers from the Python
// dispatcher (CuPy / torch, via __cuda_array_interface__), so no framework is linked here
// and no host copy is made. Every pointer is checked to be device memory first.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "embengine/pooling_cuda.h"

namespace py = pybind11;
using namespace embengine::cuda;

namespace {

template <typename T>
T* device_ptr(std::uintptr_t address, const char* name) {
  if (address == 0) throw py::value_error(std::string(name) + " is a null device pointer");
  cudaPointerAttributes attributes{};
  check(cudaPointerGetAttributes(&attributes, reinterpret_cast<void*>(address)), name);
  if (attributes.type != cudaMemoryTypeDevice && attributes.type != cudaMemoryTypeManaged) {
    throw py::value_error(std::string(name) + " is not CUDA device memory");
  }
  return reinterpret_cast<T*>(address);
}

cudaStream_t as_stream(std::uintptr_t stream) { return reinterpret_cast<cudaStream_t>(stream); }

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device / no driver" error
    return 0;
  }
  return count;
}

py::dict device_properties(int device) {
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  py::dict out;
  out["name"] = std::string(prop.name);
  out["compute_capability"] = py::make_tuple(prop.major, prop.minor);
  out["total_memory"] = static_cast<std::uint64_t>(prop.totalGlobalMem);
  out["multiprocessors"] = prop.multiProcessorCount;
  return out;
}

py::dict build_info() {
  py::dict info;
  info["version"] = EMBENGINE_VERSION;
  info["cuda_archs"] = EMBENGINE_CUDA_ARCHS;
  info["cuda_toolkit"] = EMBENGINE_CUDA_VERSION;
  int runtime = 0, driver = 0;
  cudaRuntimeGetVersion(&runtime);
  if (cudaDriverGetVersion(&driver) != cudaSuccess) cudaGetLastError();
  info["cuda_runtime"] = runtime;
  info["cuda_driver"] = driver;
  return info;
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "embengine CUDA kernels (raw device pointers; use embengine.ops instead)";
  m.def("device_count", &device_count, "CUDA devices visible (0 without a driver or GPU).");
  m.def("device_properties", &device_properties, py::arg("device"));
  m.def("build_info", &build_info);
  m.def(
      "mean_pool_normalize",
      [](std::uintptr_t states, int dtype, std::uintptr_t mask, std::uintptr_t out, int64_t b,
         int64_t t, int64_t d, float eps, std::uintptr_t stream) {
        if (dtype < 0 || dtype > 2) throw py::value_error("dtype code must be 0, 1 or 2");
        const void* s = device_ptr<const void>(states, "states");
        const int32_t* mk = device_ptr<const int32_t>(mask, "mask");
        float* o = device_ptr<float>(out, "out");
        py::gil_scoped_release release;
        mean_pool_normalize(s, static_cast<DType>(dtype), mk, o, b, t, d, eps, as_stream(stream));
      },
      py::arg("states"), py::arg("dtype"), py::arg("mask"), py::arg("out"), py::arg("b"),
      py::arg("t"), py::arg("d"), py::arg("eps"), py::arg("stream"));
  m.def(
      "normalize_rows",
      [](std::uintptr_t x, int64_t n, int64_t d, float eps, std::uintptr_t stream) {
        float* data = device_ptr<float>(x, "x");
        py::gil_scoped_release release;
        normalize_rows_f32(data, n, d, eps, as_stream(stream));
      },
      py::arg("x"), py::arg("n"), py::arg("d"), py::arg("eps"), py::arg("stream"));
}
