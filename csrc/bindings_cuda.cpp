// pybind11 face of the CUDA kernels. Arrays arrive as raw device pointers from the Python
// dispatcher (CuPy / torch, via __cuda_array_interface__), so no framework is linked here
// and no host copy is made. Sizes are checked before pointers (an empty array's pointer may
// be 0), and every pointer is checked to be device memory on the current device.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "embengine/compact_cuda.h"
#include "embengine/pooling_cuda.h"
#include "embengine/similarity_cuda.h"

namespace py = pybind11;
using namespace embengine::cuda;

namespace {

using u64 = unsigned long long;

template <typename T>
T* device_ptr(std::uintptr_t address, const char* name) {
  if (address == 0) throw py::value_error(std::string(name) + " is a null device pointer");
  cudaPointerAttributes attributes{};
  const cudaError_t status =
      cudaPointerGetAttributes(&attributes, reinterpret_cast<void*>(address));
  if (status != cudaSuccess) {
    cudaGetLastError();  // a host pointer on old drivers: not sticky, do not leave it behind
    throw py::value_error(std::string(name) + " is not CUDA memory (" +
                          cudaGetErrorString(status) + ")");
  }
  if (attributes.type != cudaMemoryTypeDevice && attributes.type != cudaMemoryTypeManaged) {
    throw py::value_error(std::string(name) + " is not CUDA device memory");
  }
  int current = 0;
  check(cudaGetDevice(&current), "cudaGetDevice");
  if (attributes.type == cudaMemoryTypeDevice && attributes.device != current) {
    throw py::value_error(std::string(name) + " lives on CUDA device " +
                          std::to_string(attributes.device) + " but device " +
                          std::to_string(current) +
                          " is current: put every array on one GPU (and make it current)");
  }
  return reinterpret_cast<T*>(address);
}

// Optional device pointers (a counter, an id array): 0 means "none".
template <typename T>
T* optional_ptr(std::uintptr_t address, const char* name) {
  return address == 0 ? nullptr : device_ptr<T>(address, name);
}

cudaStream_t as_stream(std::uintptr_t stream) { return reinterpret_cast<cudaStream_t>(stream); }

// What cudaGetDeviceCount says, error included: "no device", "no driver" and "driver too old
// for this runtime" are different problems with different fixes.
py::dict device_status() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  py::dict out;
  if (status != cudaSuccess) {
    cudaGetLastError();  // clear the (non-sticky) error it leaves behind
    count = 0;
  }
  out["count"] = count;
  out["error"] = status == cudaSuccess ? std::string() : std::string(cudaGetErrorName(status));
  out["message"] =
      status == cudaSuccess ? std::string() : std::string(cudaGetErrorString(status));
  int runtime = 0, driver = 0;
  cudaRuntimeGetVersion(&runtime);
  if (cudaDriverGetVersion(&driver) != cudaSuccess) cudaGetLastError();
  out["runtime"] = runtime;
  out["driver"] = driver;
  return out;
}

int device_count() { return device_status()["count"].cast<int>(); }

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

void check_dtype(int dtype) {
  if (dtype < 0 || dtype > 2) throw py::value_error("dtype code must be 0, 1 or 2");
}

}  // namespace

#if defined(EMBENGINE_CUDA_SIM)
namespace embengine::sim {
void add_selftests(py::module_& m);  // csrc/sim/selftest.cpp
}
#endif

#ifndef EMBENGINE_CUDA_MODULE
#define EMBENGINE_CUDA_MODULE _cuda  // _cuda_sim when built for the simulator
#endif

PYBIND11_MODULE(EMBENGINE_CUDA_MODULE, m) {
  m.doc() = "embengine CUDA kernels (raw device pointers; use embengine.ops instead)";
#if defined(EMBENGINE_CUDA_SIM)
  embengine::sim::add_selftests(m);
#endif
  m.def("device_count", &device_count, "CUDA devices visible (0 without a driver or GPU).");
  m.def("device_status", &device_status,
        "{count, error, message, runtime, driver}: why no device is visible, when none is.");
  m.def("device_properties", &device_properties, py::arg("device"));
  m.def("build_info", &build_info);
  m.def(
      "mean_pool_normalize",
      [](std::uintptr_t states, int dtype, std::uintptr_t mask, std::uintptr_t out, int64_t b,
         int64_t t, int64_t d, float eps, std::uintptr_t not_finite, std::uintptr_t stream) {
        check_dtype(dtype);
        if (b == 0 || d == 0) return;
        const void* s = t ? device_ptr<const void>(states, "states") : nullptr;
        const int32_t* mk = t ? device_ptr<const int32_t>(mask, "mask") : nullptr;
        float* o = device_ptr<float>(out, "out");
        u64* nf = optional_ptr<u64>(not_finite, "not_finite");
        py::gil_scoped_release release;
        mean_pool_normalize(s, static_cast<DType>(dtype), mk, o, b, t, d, eps, nf,
                            as_stream(stream));
      },
      py::arg("states"), py::arg("dtype"), py::arg("mask"), py::arg("out"), py::arg("b"),
      py::arg("t"), py::arg("d"), py::arg("eps"), py::arg("not_finite"), py::arg("stream"));
  m.def(
      "normalize_rows",
      [](std::uintptr_t x, int64_t n, int64_t d, float eps, std::uintptr_t scales,
         std::uintptr_t not_finite, std::uintptr_t stream) {
        if (n == 0 || d == 0) return;
        float* data = device_ptr<float>(x, "x");
        float* sc = device_ptr<float>(scales, "scales");
        u64* nf = device_ptr<u64>(not_finite, "not_finite");
        py::gil_scoped_release release;
        normalize_rows_f32(data, n, d, eps, sc, nf, as_stream(stream));
      },
      py::arg("x"), py::arg("n"), py::arg("d"), py::arg("eps"), py::arg("scales"),
      py::arg("not_finite"), py::arg("stream"));
  m.def(
      "dot_scores",
      [](std::uintptr_t queries, int64_t q, std::uintptr_t base, int dtype, int64_t n, int64_t d,
         std::uintptr_t out, int64_t ld, std::uintptr_t stream) {
        check_dtype(dtype);
        if (ld < n) throw py::value_error("score row stride must be >= the base rows");
        if (q == 0 || n == 0 || d == 0) return;
        const float* qp = device_ptr<const float>(queries, "queries");
        const void* bp = device_ptr<const void>(base, "base");
        float* o = device_ptr<float>(out, "out");
        py::gil_scoped_release release;
        dot_scores(qp, q, bp, static_cast<DType>(dtype), n, d, o, ld, as_stream(stream));
      },
      py::arg("queries"), py::arg("q"), py::arg("base"), py::arg("dtype"), py::arg("n"),
      py::arg("d"), py::arg("out"), py::arg("ld"), py::arg("stream"));
  m.def(
      "int8_dot_scores",
      [](std::uintptr_t queries, int64_t q, std::uintptr_t codes, int64_t n, int64_t d,
         std::uintptr_t out, int64_t ld, std::uintptr_t stream) {
        if (ld < n) throw py::value_error("score row stride must be >= the code rows");
        if (q == 0 || n == 0 || d == 0) return;
        const int8_t* qp = device_ptr<const int8_t>(queries, "queries");
        const int8_t* cp = device_ptr<const int8_t>(codes, "codes");
        float* o = device_ptr<float>(out, "out");
        py::gil_scoped_release release;
        int8_dot_scores(qp, q, cp, n, d, o, ld, as_stream(stream));
      },
      py::arg("queries"), py::arg("q"), py::arg("codes"), py::arg("n"), py::arg("d"),
      py::arg("out"), py::arg("ld"), py::arg("stream"));
  m.def(
      "hamming_scores",
      [](std::uintptr_t queries, int64_t q, std::uintptr_t bits, int64_t n, int64_t nbytes,
         std::uintptr_t out, int64_t ld, std::uintptr_t stream) {
        if (ld < n) throw py::value_error("score row stride must be >= the bit rows");
        if (q == 0 || n == 0 || nbytes == 0) return;
        const uint8_t* qp = device_ptr<const uint8_t>(queries, "queries");
        const uint8_t* bp = device_ptr<const uint8_t>(bits, "bits");
        float* o = device_ptr<float>(out, "out");
        py::gil_scoped_release release;
        hamming_scores(qp, q, bp, n, nbytes, o, ld, as_stream(stream));
      },
      py::arg("queries"), py::arg("q"), py::arg("bits"), py::arg("n"), py::arg("nbytes"),
      py::arg("out"), py::arg("ld"), py::arg("stream"));
  m.def(
      "topk_select",
      [](std::uintptr_t tile, int64_t q, int64_t m, int64_t ld, std::uintptr_t tile_ids,
         int64_t base_offset, int64_t splits, int64_t span, bool exclude_self,
         int64_t self_offset, std::uintptr_t list_scores, std::uintptr_t list_ids,
         std::uintptr_t scratch_scores, std::uintptr_t scratch_ids, int64_t k, bool init,
         std::uintptr_t not_finite, std::uintptr_t stream) {
        if (k < 1) throw py::value_error("k must be >= 1");
        if (ld < m) throw py::value_error("tile row stride must be >= its width");
        if (splits < 1 || span < 1 || splits * span < m) {
          throw py::value_error("splits x span must cover the tile's columns");
        }
        if (q == 0 || m == 0) return;
        const float* t = device_ptr<const float>(tile, "tile");
        const int64_t* ids = optional_ptr<const int64_t>(tile_ids, "tile_ids");
        float* ls = device_ptr<float>(list_scores, "list_scores");
        int64_t* li = device_ptr<int64_t>(list_ids, "list_ids");
        float* ss = device_ptr<float>(scratch_scores, "scratch_scores");
        int64_t* si = device_ptr<int64_t>(scratch_ids, "scratch_ids");
        u64* nf = optional_ptr<u64>(not_finite, "not_finite");
        py::gil_scoped_release release;
        topk_select(t, q, m, ld, ids, base_offset, splits, span, exclude_self, self_offset, ls,
                    li, ss, si, k, init, nf, as_stream(stream));
      },
      py::arg("tile"), py::arg("q"), py::arg("m"), py::arg("ld"), py::arg("tile_ids"),
      py::arg("base_offset"), py::arg("splits"), py::arg("span"), py::arg("exclude_self"),
      py::arg("self_offset"), py::arg("list_scores"), py::arg("list_ids"),
      py::arg("scratch_scores"), py::arg("scratch_ids"), py::arg("k"), py::arg("init"),
      py::arg("not_finite"), py::arg("stream"));
  m.def(
      "pairs_in_tile",
      [](std::uintptr_t tile, int64_t nr, int64_t nc, int64_t ld, std::uintptr_t rows,
         std::uintptr_t cols, int64_t d, int64_t row0, int64_t col0, float threshold,
         float margin, bool upper_only, std::uintptr_t out_i, std::uintptr_t out_j,
         std::uintptr_t out_score, int64_t capacity, std::uintptr_t count,
         std::uintptr_t not_finite, std::uintptr_t stream) {
        if (ld < nc) throw py::value_error("tile row stride must be >= its width");
        if (nr == 0 || nc == 0) return;
        const float* t = device_ptr<const float>(tile, "tile");
        const float* rp = device_ptr<const float>(rows, "rows");
        const float* cp = device_ptr<const float>(cols, "cols");
        int64_t* oi = capacity ? device_ptr<int64_t>(out_i, "out_i") : nullptr;
        int64_t* oj = capacity ? device_ptr<int64_t>(out_j, "out_j") : nullptr;
        float* os = capacity ? device_ptr<float>(out_score, "out_score") : nullptr;
        auto* cnt = device_ptr<u64>(count, "count");
        u64* nf = optional_ptr<u64>(not_finite, "not_finite");
        py::gil_scoped_release release;
        pairs_in_tile(t, nr, nc, ld, rp, cp, d, row0, col0, threshold, margin, upper_only, oi,
                      oj, os, capacity, cnt, nf, as_stream(stream));
      },
      py::arg("tile"), py::arg("nr"), py::arg("nc"), py::arg("ld"), py::arg("rows"),
      py::arg("cols"), py::arg("d"), py::arg("row0"), py::arg("col0"), py::arg("threshold"),
      py::arg("margin"), py::arg("upper_only"), py::arg("out_i"), py::arg("out_j"),
      py::arg("out_score"), py::arg("capacity"), py::arg("count"), py::arg("not_finite"),
      py::arg("stream"));
  m.def(
      "nearest_centroid",
      [](std::uintptr_t x, int dtype, int64_t n, std::uintptr_t centroids, int64_t c, int64_t d,
         std::uintptr_t best_score, std::uintptr_t best_index, std::uintptr_t not_finite,
         std::uintptr_t stream) {
        check_dtype(dtype);
        if (c < 1) throw py::value_error("centroids is empty");
        if (n == 0) return;
        const void* xp = device_ptr<const void>(x, "x");
        const float* cp = device_ptr<const float>(centroids, "centroids");
        float* bs = device_ptr<float>(best_score, "best_score");
        int64_t* bi = device_ptr<int64_t>(best_index, "best_index");
        u64* nf = optional_ptr<u64>(not_finite, "not_finite");
        py::gil_scoped_release release;
        nearest_centroid(xp, static_cast<DType>(dtype), n, cp, c, d, bs, bi, nf,
                         as_stream(stream));
      },
      py::arg("x"), py::arg("dtype"), py::arg("n"), py::arg("centroids"), py::arg("c"),
      py::arg("d"), py::arg("best_score"), py::arg("best_index"), py::arg("not_finite"),
      py::arg("stream"));
  m.def(
      "tile_argmax",
      [](std::uintptr_t tile, int64_t n, int64_t c, int64_t ld, std::uintptr_t best_score,
         std::uintptr_t best_index, std::uintptr_t not_finite, std::uintptr_t stream) {
        if (ld < c) throw py::value_error("tile row stride must be >= its width");
        if (n == 0 || c == 0) return;
        const float* t = device_ptr<const float>(tile, "tile");
        float* bs = device_ptr<float>(best_score, "best_score");
        int64_t* bi = device_ptr<int64_t>(best_index, "best_index");
        u64* nf = optional_ptr<u64>(not_finite, "not_finite");
        py::gil_scoped_release release;
        tile_argmax(t, n, c, ld, bs, bi, nf, as_stream(stream));
      },
      py::arg("tile"), py::arg("n"), py::arg("c"), py::arg("ld"), py::arg("best_score"),
      py::arg("best_index"), py::arg("not_finite"), py::arg("stream"));
}
