// pybind11 face of the CPU kernels: checks every argument, releases the GIL, never copies.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <sstream>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "embengine/pooling.h"

namespace py = pybind11;
using namespace embengine;

namespace {

std::string shape_of(const py::array& a) {
  std::ostringstream s;
  s << "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s << (i ? ", " : "") << a.shape(i);
  s << (a.ndim() == 1 ? ",)" : ")");
  return s.str();
}

void require(bool ok, const std::string& message) {
  if (!ok) throw py::value_error(message);
}

void require_c_contiguous(const py::array& a, const char* name) {
  require(a.flags() & py::array::c_style,
          std::string(name) + " must be C-contiguous (use numpy.ascontiguousarray)");
}

py::array_t<float> mean_pool_normalize(const py::array& states, const py::array& mask,
                                       float eps) {
  require(states.ndim() == 3, "states must have shape (batch, tokens, dim), got " +
                                  shape_of(states));
  require(mask.ndim() == 2 && mask.shape(0) == states.shape(0) && mask.shape(1) == states.shape(1),
          "mask must have shape (batch, tokens) = (" + std::to_string(states.shape(0)) + ", " +
              std::to_string(states.shape(1)) + "), got " + shape_of(mask));
  require(py::dtype::of<int32_t>().is(mask.dtype()), "mask must be int32");
  require_c_contiguous(states, "states");
  require_c_contiguous(mask, "mask");
  const int64_t b = states.shape(0), t = states.shape(1), d = states.shape(2);
  py::array_t<float> out({b, d});
  const auto* m = static_cast<const int32_t*>(mask.data());
  float* o = out.mutable_data();
  if (py::dtype::of<float>().is(states.dtype())) {
    const auto* s = static_cast<const float*>(states.data());
    py::gil_scoped_release release;
    cpu::mean_pool_normalize_f32(s, m, o, b, t, d, eps);
  } else if (states.dtype().kind() == 'f' && states.dtype().itemsize() == 2) {
    const auto* s = static_cast<const uint16_t*>(states.data());
    py::gil_scoped_release release;
    cpu::mean_pool_normalize_f16(s, m, o, b, t, d, eps);
  } else {
    throw py::value_error("states must be float32 or float16, got " +
                          std::string(py::str(states.dtype())));
  }
  return out;
}

void normalize_rows(py::array& x, float eps) {
  require(x.ndim() == 2, "x must have shape (n, dim), got " + shape_of(x));
  require(py::dtype::of<float>().is(x.dtype()), "x must be float32 to normalise in place");
  require_c_contiguous(x, "x");
  require(x.writeable(), "x must be writeable");
  const int64_t n = x.shape(0), d = x.shape(1);
  float* data = static_cast<float*>(x.mutable_data());
  py::gil_scoped_release release;
  cpu::normalize_rows_f32(data, n, d, eps);
}

std::string cpu_simd_level() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl"))
    return "x86-64-v4 (AVX-512)";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "x86-64-v3 (AVX2+FMA)";
  return "x86-64 baseline";
#else
  return "unknown";
#endif
}

py::dict build_info() {
  py::dict info;
  info["version"] = EMBENGINE_VERSION;
#if defined(__clang__)
  info["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  info["compiler"] = std::string("gcc ") + __VERSION__;
#else
  info["compiler"] = "unknown";
#endif
  info["simd_compiled"] = EMB_SIMD_CLONE_LEVELS;
  info["simd_running"] = cpu_simd_level();
#ifdef _OPENMP
  info["openmp"] = _OPENMP;
  info["openmp_max_threads"] = omp_get_max_threads();
#else
  info["openmp"] = py::none();
  info["openmp_max_threads"] = 1;
#endif
  return info;
}

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "embengine CPU kernels (C++17, OpenMP, SIMD clones)";
  m.attr("__version__") = EMBENGINE_VERSION;  // from CMakeLists.txt: the one version source
  m.def("mean_pool_normalize", &mean_pool_normalize, py::arg("states"), py::arg("mask"),
        py::arg("eps"),
        "Masked mean over tokens then L2-normalise: (b, t, d) float32/float16 + (b, t) int32 "
        "-> (b, d) float32 unit rows (all-padding rows give zeros).");
  m.def("normalize_rows", &normalize_rows, py::arg("x"), py::arg("eps"),
        "Scale the rows of a C-contiguous float32 (n, d) array to unit norm, in place.");
  m.def("build_info", &build_info, "What this module was compiled with.");
}
