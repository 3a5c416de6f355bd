// pybind11 face of the CUDA kernels. Arrays arrive as raw device pointers from the Python
// dispatcher (CuPy / torch, via __cuda_array_interface__), so no framework is linked here
// and no host copy is made. Every pointer is checked to be device memory first.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "embengine/pooling_cuda.h"
#include "embengine/similarity_cuda.h"

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
  m.def(
      "topk_merge_tile",
      [](std::uintptr_t tile, int64_t q, int64_t m, int64_t ld, int64_t base_offset,
         bool exclude_self, int64_t self_offset, std::uintptr_t state_scores,
         std::uintptr_t state_ids, std::uintptr_t scratch_scores, std::uintptr_t scratch_ids,
         int64_t k, std::uintptr_t stream) {
        if (k < 1) throw py::value_error("k must be >= 1");
        if (ld < m) throw py::value_error("tile row stride must be >= its width");
        const float* t = device_ptr<const float>(tile, "tile");
        float* ss = device_ptr<float>(state_scores, "state_scores");
        int64_t* si = device_ptr<int64_t>(state_ids, "state_ids");
        float* xs = device_ptr<float>(scratch_scores, "scratch_scores");
        int64_t* xi = device_ptr<int64_t>(scratch_ids, "scratch_ids");
        py::gil_scoped_release release;
        topk_merge_tile(t, q, m, ld, base_offset, exclude_self, self_offset, ss, si, xs, xi, k,
                        as_stream(stream));
      },
      py::arg("tile"), py::arg("q"), py::arg("m"), py::arg("ld"), py::arg("base_offset"),
      py::arg("exclude_self"), py::arg("self_offset"), py::arg("state_scores"),
      py::arg("state_ids"), py::arg("scratch_scores"), py::arg("scratch_ids"), py::arg("k"),
      py::arg("stream"));
  m.def(
      "pairs_in_tile",
      [](std::uintptr_t tile, int64_t nr, int64_t nc, int64_t ld, int64_t row0, int64_t col0,
         float threshold, bool upper_only, std::uintptr_t out_i, std::uintptr_t out_j,
         std::uintptr_t out_score, int64_t capacity, std::uintptr_t count,
         std::uintptr_t stream) {
        if (ld < nc) throw py::value_error("tile row stride must be >= its width");
        const float* t = device_ptr<const float>(tile, "tile");
        int64_t* oi = capacity ? device_ptr<int64_t>(out_i, "out_i") : nullptr;
        int64_t* oj = capacity ? device_ptr<int64_t>(out_j, "out_j") : nullptr;
        float* os = capacity ? device_ptr<float>(out_score, "out_score") : nullptr;
        auto* cnt = device_ptr<unsigned long long>(count, "count");
        py::gil_scoped_release release;
        pairs_in_tile(t, nr, nc, ld, row0, col0, threshold, upper_only, oi, oj, os, capacity,
                      cnt, as_stream(stream));
      },
      py::arg("tile"), py::arg("nr"), py::arg("nc"), py::arg("ld"), py::arg("row0"),
      py::arg("col0"), py::arg("threshold"), py::arg("upper_only"), py::arg("out_i"),
      py::arg("out_j"), py::arg("out_score"), py::arg("capacity"), py::arg("count"),
      py::arg("stream"));
  m.def(
      "nearest_centroid",
      [](std::uintptr_t x, int dtype, int64_t n, std::uintptr_t centroids, int64_t c, int64_t d,
         std::uintptr_t best_score, std::uintptr_t best_index, std::uintptr_t stream) {
        if (dtype < 0 || dtype > 2) throw py::value_error("dtype code must be 0, 1 or 2");
        if (c < 1) throw py::value_error("centroids is empty");
        const void* xp = device_ptr<const void>(x, "x");
        const float* cp = device_ptr<const float>(centroids, "centroids");
        float* bs = device_ptr<float>(best_score, "best_score");
        int64_t* bi = device_ptr<int64_t>(best_index, "best_index");
        py::gil_scoped_release release;
        nearest_centroid(xp, static_cast<DType>(dtype), n, cp, c, d, bs, bi, as_stream(stream));
      },
      py::arg("x"), py::arg("dtype"), py::arg("n"), py::arg("centroids"), py::arg("c"),
      py::arg("d"), py::arg("best_score"), py::arg("best_index"), py::arg("stream"));
}
