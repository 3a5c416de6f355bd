// pybind11 face of the CPU kernels: checks every argument, releases the GIL, never copies.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>
#include <utility>
#include <vector>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "embengine/compact.h"
#include "embengine/pooling.h"
#include "embengine/similarity.h"

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

py::tuple mean_pool_normalize(const py::array& states, const py::array& mask,
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
  int64_t not_finite = 0;
  if (py::dtype::of<float>().is(states.dtype())) {
    const auto* s = static_cast<const float*>(states.data());
    py::gil_scoped_release release;
    not_finite = cpu::mean_pool_normalize_f32(s, m, o, b, t, d, eps);
  } else if (states.dtype().kind() == 'f' && states.dtype().itemsize() == 2) {
    const auto* s = static_cast<const uint16_t*>(states.data());
    py::gil_scoped_release release;
    not_finite = cpu::mean_pool_normalize_f16(s, m, o, b, t, d, eps);
  } else {
    throw py::value_error("states must be float32 or float16, got " +
                          std::string(py::str(states.dtype())));
  }
  return py::make_tuple(out, not_finite);
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

// By kind, size and native byte order, not dtype identity: arrays from other producers
// (Ray's object store, pickles) carry equal dtypes that are distinct objects.
bool native_float(const py::array& a, py::ssize_t size) {
  constexpr char kNative = __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ ? '<' : '>';
  const char order = a.dtype().byteorder();
  return a.dtype().kind() == 'f' && a.dtype().itemsize() == size &&
         (order == '=' || order == '|' || order == kNative);
}
bool is_f32(const py::array& a) { return native_float(a, 4); }
bool is_f16(const py::array& a) { return native_float(a, 2); }

// A C-contiguous (rows, cols) matrix of the given dtype, or ValueError naming it.
void require_matrix(const py::array& a, const char* name, bool allow_f16 = false) {
  require(a.ndim() == 2, std::string(name) + " must be 2-D, got shape " + shape_of(a));
  require(is_f32(a) || (allow_f16 && is_f16(a)),
          std::string(name) + (allow_f16 ? " must be float32 or float16" : " must be float32") +
              ", got " + std::string(py::str(a.dtype())));
  require_c_contiguous(a, name);
}

// The running top-k state of q queries: (q, k) float32 scores and int64 ids, writeable.
void require_heaps(const py::array& scores, const py::array& ids, int64_t q) {
  require_matrix(scores, "heap_scores");
  require(ids.ndim() == 2 && ids.shape(0) == scores.shape(0) && ids.shape(1) == scores.shape(1),
          "heap_ids must match heap_scores " + shape_of(scores) + ", got " + shape_of(ids));
  require(py::dtype::of<int64_t>().is(ids.dtype()), "heap_ids must be int64");
  require_c_contiguous(ids, "heap_ids");
  require(scores.writeable() && ids.writeable(), "heap arrays must be writeable");
  require(scores.shape(0) == q, "heap arrays have " + std::to_string(scores.shape(0)) +
                                    " rows for " + std::to_string(q) + " queries");
  require(scores.shape(1) >= 1, "k must be >= 1");
}

int64_t topk_scan(const py::array& queries, const py::array& base, py::array& heap_scores,
               py::array& heap_ids, int64_t base_offset, bool exclude_self, int64_t self_offset) {
  require_matrix(queries, "queries");
  require_matrix(base, "base", true);
  require(base.shape(1) == queries.shape(1), "base has dim " + std::to_string(base.shape(1)) +
                                                 ", queries have " +
                                                 std::to_string(queries.shape(1)));
  const int64_t q = queries.shape(0), n = base.shape(0), d = queries.shape(1);
  require_heaps(heap_scores, heap_ids, q);
  const int64_t k = heap_scores.shape(1);
  const auto* qp = static_cast<const float*>(queries.data());
  auto* hs = static_cast<float*>(heap_scores.mutable_data());
  auto* hi = static_cast<int64_t*>(heap_ids.mutable_data());
  if (is_f32(base)) {
    const auto* bp = static_cast<const float*>(base.data());
    py::gil_scoped_release release;
    return cpu::topk_scan_f32(qp, q, bp, n, d, base_offset, k, hs, hi, exclude_self,
                              self_offset);
  }
  const auto* bp = static_cast<const uint16_t*>(base.data());
  py::gil_scoped_release release;
  return cpu::topk_scan_f16(qp, q, bp, n, d, base_offset, k, hs, hi, exclude_self, self_offset);
}

// A C-contiguous 2-D int8 (signed) or uint8 (bits) matrix, or ValueError naming it.
void require_bytes(const py::array& a, const char* name, char kind) {
  require(a.ndim() == 2, std::string(name) + " must be 2-D, got shape " + shape_of(a));
  require(a.dtype().kind() == kind && a.dtype().itemsize() == 1,
          std::string(name) + (kind == 'i' ? " must be int8" : " must be uint8") + ", got " +
              std::string(py::str(a.dtype())));
  require_c_contiguous(a, name);
}

// Compact top-k scans: int8 codes (kind 'i') or packed sign bits (kind 'u'). The int8
// queries must lie in [-127, 127]: the Python op checks (the kernel's exactness needs it).
void compact_scan(const py::array& queries, const py::array& base, py::array& heap_scores,
                  py::array& heap_ids, int64_t base_offset, char kind) {
  require_bytes(queries, "queries", kind);
  require_bytes(base, kind == 'i' ? "codes" : "bits", kind);
  require(base.shape(1) == queries.shape(1),
          std::string(kind == 'i' ? "codes" : "bits") + " have width " +
              std::to_string(base.shape(1)) + ", queries " + std::to_string(queries.shape(1)));
  const int64_t q = queries.shape(0), n = base.shape(0), d = queries.shape(1);
  require_heaps(heap_scores, heap_ids, q);
  const int64_t k = heap_scores.shape(1);
  auto* hs = static_cast<float*>(heap_scores.mutable_data());
  auto* hi = static_cast<int64_t*>(heap_ids.mutable_data());
  py::gil_scoped_release release;
  if (kind == 'i') {
    cpu::topk_int8_scan(static_cast<const int8_t*>(queries.data()), q,
                        static_cast<const int8_t*>(base.data()), n, d, base_offset, k, hs, hi);
  } else {
    cpu::topk_hamming_scan(static_cast<const uint8_t*>(queries.data()), q,
                           static_cast<const uint8_t*>(base.data()), n, d, base_offset, k, hs,
                           hi);
  }
}

// A float32 (rows, cols) tile whose rows may be strided (a column slice of a buffer).
int64_t require_tile(const py::array& tile) {
  require(tile.ndim() == 2, "tile must be 2-D, got shape " + shape_of(tile));
  require(is_f32(tile), "tile must be float32");
  require(tile.strides(1) == 4 && tile.strides(0) % 4 == 0 && tile.strides(0) >= 4 * tile.shape(1),
          "tile rows must be contiguous float32");
  return tile.strides(0) / 4;
}

int64_t topk_offer_tile(const py::array& tile, py::array& heap_scores, py::array& heap_ids,
                     int64_t base_offset, bool exclude_self, int64_t self_offset) {
  const int64_t ld = require_tile(tile);
  const int64_t q = tile.shape(0), n = tile.shape(1);
  require_heaps(heap_scores, heap_ids, q);
  const int64_t k = heap_scores.shape(1);
  const auto* t = static_cast<const float*>(tile.data());
  auto* hs = static_cast<float*>(heap_scores.mutable_data());
  auto* hi = static_cast<int64_t*>(heap_ids.mutable_data());
  py::gil_scoped_release release;
  return cpu::topk_offer_tile(t, q, n, ld, base_offset, k, hs, hi, exclude_self, self_offset);
}

void topk_finish(py::array& heap_scores, py::array& heap_ids) {
  require_heaps(heap_scores, heap_ids, heap_scores.ndim() == 2 ? heap_scores.shape(0) : 0);
  const int64_t q = heap_scores.shape(0), k = heap_scores.shape(1);
  auto* hs = static_cast<float*>(heap_scores.mutable_data());
  auto* hi = static_cast<int64_t*>(heap_ids.mutable_data());
  py::gil_scoped_release release;
  cpu::topk_finish(hs, hi, q, k);
}

py::tuple nearest_centroid(const py::array& x, const py::array& centroids) {
  require_matrix(x, "x", true);
  require_matrix(centroids, "centroids");
  require(centroids.shape(1) == x.shape(1) && centroids.shape(0) >= 1,
          "centroids must have shape (c >= 1, " + std::to_string(x.shape(1)) + "), got " +
              shape_of(centroids));
  const int64_t n = x.shape(0), c = centroids.shape(0), d = x.shape(1);
  py::array_t<float> best(n);
  py::array_t<int64_t> index(n);
  const auto* cp = static_cast<const float*>(centroids.data());
  float* bp = best.mutable_data();
  int64_t* ip = index.mutable_data();
  int64_t not_finite = 0;
  if (is_f32(x)) {
    const auto* xp = static_cast<const float*>(x.data());
    py::gil_scoped_release release;
    not_finite = cpu::nearest_centroid_f32(xp, n, cp, c, d, bp, ip);
  } else {
    const auto* xp = static_cast<const uint16_t*>(x.data());
    py::gil_scoped_release release;
    not_finite = cpu::nearest_centroid_f16(xp, n, cp, c, d, bp, ip);
  }
  return py::make_tuple(best, index, not_finite);
}

template <typename T>
py::array_t<T> to_numpy_1d(const std::vector<T>& v) {
  py::array_t<T> out(static_cast<py::ssize_t>(v.size()));
  if (!v.empty()) std::memcpy(out.mutable_data(), v.data(), v.size() * sizeof(T));
  return out;
}

py::tuple pairs_in_tile(const py::array& tile, const py::array& rows, const py::array& cols,
                        int64_t row0, int64_t col0, float threshold, float margin,
                        bool upper_only) {
  const int64_t ld = require_tile(tile);
  require_matrix(rows, "rows");
  require_matrix(cols, "cols");
  require(rows.shape(0) == tile.shape(0) && cols.shape(0) == tile.shape(1) &&
              rows.shape(1) == cols.shape(1),
          "rows " + shape_of(rows) + " and cols " + shape_of(cols) + " do not match tile " +
              shape_of(tile));
  const auto* t = static_cast<const float*>(tile.data());
  const auto* rp = static_cast<const float*>(rows.data());
  const auto* cp = static_cast<const float*>(cols.data());
  const int64_t nr = tile.shape(0), nc = tile.shape(1), d = rows.shape(1);
  cpu::PairList found;
  int64_t not_finite = 0;
  {
    py::gil_scoped_release release;
    not_finite = cpu::pairs_in_tile(t, nr, nc, ld, rp, cp, d, row0, col0, threshold, margin,
                                    upper_only, &found);
  }
  return py::make_tuple(to_numpy_1d(found.i), to_numpy_1d(found.j), to_numpy_1d(found.score),
                        not_finite);
}

py::array_t<float> dot_tile(const py::array& a, const py::array& b) {
  require_matrix(a, "a");
  require_matrix(b, "b", true);
  require(a.shape(1) == b.shape(1), "a " + shape_of(a) + " and b " + shape_of(b) +
                                        " must have the same dim");
  const int64_t na = a.shape(0), nb = b.shape(0), d = a.shape(1);
  py::array_t<float> out({na, nb});
  const auto* ap = static_cast<const float*>(a.data());
  float* op = out.mutable_data();
  py::gil_scoped_release release;
  if (is_f32(b)) {
    cpu::dot_tile_f32(ap, na, static_cast<const float*>(b.data()), nb, d, op, nb);
  } else {
    cpu::dot_tile_f16(ap, na, static_cast<const uint16_t*>(b.data()), nb, d, op, nb);
  }
  return out;
}

// Best-first (scores, ids) lists as the CUDA selection gets them, checked and copied.
std::pair<std::vector<float>, std::vector<int64_t>> sorted_list(const py::array& scores,
                                                                const py::array& ids,
                                                                const char* name) {
  require(scores.ndim() == 1 && ids.ndim() == 1 && scores.shape(0) == ids.shape(0),
          std::string(name) + " scores and ids must be 1-D of one length");
  auto s = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(scores);
  auto i = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(ids);
  return {std::vector<float>(s.data(), s.data() + s.size()),
          std::vector<int64_t>(i.data(), i.data() + i.size())};
}

// The CUDA merge step run on the CPU: the best k of two best-first lists, one merge-path
// search per output position exactly as each CUDA thread does it.
py::tuple merge_sorted_lists(const py::array& a_scores, const py::array& a_ids,
                             const py::array& b_scores, const py::array& b_ids, int64_t k) {
  auto [as, ai] = sorted_list(a_scores, a_ids, "a");
  auto [bs, bi] = sorted_list(b_scores, b_ids, "b");
  const int64_t na = as.size(), nb = bs.size();
  require(k >= 0 && k <= na + nb, "k must be in [0, len(a) + len(b)]");
  std::vector<float> s(k);
  std::vector<int64_t> i(k);
  for (int64_t p = 0; p < k; ++p) {
    merge_path_entry(as.data(), ai.data(), na, bs.data(), bi.data(), nb, p, &s[p], &i[p]);
  }
  return py::make_tuple(to_numpy_1d(s), to_numpy_1d(i));
}

// The CUDA block sort run on the CPU: pad to a power of two with empty slots and run the
// bitonic network, every compare-exchange through the same helpers as the kernel.
py::tuple bitonic_sort(const py::array& scores, const py::array& ids) {
  auto [s, i] = sorted_list(scores, ids, "input");
  const int64_t n = s.size();
  if (n == 0) return py::make_tuple(to_numpy_1d(s), to_numpy_1d(i));
  const int64_t size = next_pow2(n);
  s.resize(size, -std::numeric_limits<float>::infinity());
  i.resize(size, kNoId);
  for (int64_t stage = 2; stage <= size; stage *= 2) {
    for (int64_t stride = stage / 2; stride > 0; stride /= 2) {
      for (int64_t t = 0; t < size; ++t) {  // one "thread" per element, then a barrier
        const int64_t p = bitonic_partner(t, stride);
        if (p >= 0 && bitonic_should_swap(s[t], i[t], s[p], i[p], t, stage)) {
          std::swap(s[t], s[p]);
          std::swap(i[t], i[p]);
        }
      }
    }
  }
  s.resize(n);
  i.resize(n);
  return py::make_tuple(to_numpy_1d(s), to_numpy_1d(i));
}

// The fixed-order dot that pairs_above keeps on the CPU and on the GPU (tests compare it with
// the CPU's own dot bit for bit).
py::array_t<float> dot_lanes8_rows(const py::array& a, const py::array& b) {
  require_matrix(a, "a");
  require_matrix(b, "b");
  require(a.shape(0) == b.shape(0) && a.shape(1) == b.shape(1),
          "a " + shape_of(a) + " and b " + shape_of(b) + " must have one shape");
  const int64_t n = a.shape(0), d = a.shape(1);
  py::array_t<float> out(n);
  const auto* ap = static_cast<const float*>(a.data());
  const auto* bp = static_cast<const float*>(b.data());
  for (int64_t i = 0; i < n; ++i) out.mutable_data()[i] = dot_lanes8(ap + i * d, bp + i * d, d);
  return out;
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
        "-> ((b, d) float32 unit rows, rows not finite); all-padding rows give zeros.");
  m.def("normalize_rows", &normalize_rows, py::arg("x"), py::arg("eps"),
        "Scale the rows of a C-contiguous float32 (n, d) array to unit norm, in place.");
  m.def("topk_scan", &topk_scan, py::arg("queries"), py::arg("base"), py::arg("heap_scores"),
        py::arg("heap_ids"), py::arg("base_offset"), py::arg("exclude_self"),
        py::arg("self_offset"),
        "Offer every base row (ids base_offset + row) to the (q, k) top-k heaps: the native "
        "SIMD scan for few queries. float32 queries, float32 or float16 base. Returns the "
        "count of non-finite scores (skipped).");
  m.def(
      "topk_int8_scan",
      [](const py::array& queries, const py::array& codes, py::array& heap_scores,
         py::array& heap_ids, int64_t base_offset) {
        compact_scan(queries, codes, heap_scores, heap_ids, base_offset, 'i');
      },
      py::arg("queries"), py::arg("codes"), py::arg("heap_scores"), py::arg("heap_ids"),
      py::arg("base_offset"),
      "Offer every int8 code row to the (q, k) heaps scored by its exact integer dot with the "
      "int8 queries (values in [-127, 127]).");
  m.def(
      "topk_hamming_scan",
      [](const py::array& queries, const py::array& bits, py::array& heap_scores,
         py::array& heap_ids, int64_t base_offset) {
        compact_scan(queries, bits, heap_scores, heap_ids, base_offset, 'u');
      },
      py::arg("queries"), py::arg("bits"), py::arg("heap_scores"), py::arg("heap_ids"),
      py::arg("base_offset"),
      "Offer every packed-bit row (uint8) to the (q, k) heaps scored by matching bits "
      "(8 * bytes - Hamming distance).");
  m.def("topk_offer_tile", &topk_offer_tile, py::arg("tile"), py::arg("heap_scores"),
        py::arg("heap_ids"), py::arg("base_offset"), py::arg("exclude_self"),
        py::arg("self_offset"), "Offer a (q, m) float32 score tile to the (q, k) top-k heaps; returns the count of "
        "non-finite scores (skipped).");
  m.def("topk_finish", &topk_finish, py::arg("heap_scores"), py::arg("heap_ids"),
        "Sort the (q, k) heaps in place into best-first lists (empty slots -inf / -1 last).");
  m.def("nearest_centroid", &nearest_centroid, py::arg("x"), py::arg("centroids"),
        "(best, index, not_finite): highest inner product of each row of x with c centroids, "
        "its index (lowest on ties), and how many rows met a non-finite score.");
  m.def("pairs_in_tile", &pairs_in_tile, py::arg("tile"), py::arg("rows"), py::arg("cols"),
        py::arg("row0"), py::arg("col0"), py::arg("threshold"), py::arg("margin"),
        py::arg("upper_only"),
        "(i, j, score, not_finite): pairs >= threshold of the tile rows @ cols.T, row-major; "
        "tile entries >= threshold - margin are re-scored with the native dot; rows are ids "
        "row0 + r, columns col0 + c; upper_only keeps i < j.");
  m.def("dot_tile", &dot_tile, py::arg("a"), py::arg("b"),
        "a @ b.T with the native SIMD kernel (float32 a, float32 or float16 b).");
  m.def("merge_sorted_lists", &merge_sorted_lists, py::arg("a_scores"), py::arg("a_ids"),
        py::arg("b_scores"), py::arg("b_ids"), py::arg("k"),
        "The CUDA top-k merge step on the CPU (tests): best k of two best-first lists.");
  m.def("bitonic_sort", &bitonic_sort, py::arg("scores"), py::arg("ids"),
        "The CUDA block sort on the CPU (tests): best-first by score, then lower id.");
  m.def("dot_lanes8", &dot_lanes8_rows, py::arg("a"), py::arg("b"),
        "Row-wise dot of two (n, d) float32 arrays in the fixed order pairs_above keeps "
        "(shared with the CUDA re-scoring; tests).");
  m.def("topk_splits", &topk_splits, py::arg("q"), py::arg("m"), py::arg("k"),
        py::arg("blocks_wanted"), py::arg("min_span"),
        "How many column splits the GPU top-k uses for q queries over m columns (tests).");
  m.def("score_is_finite", &score_is_finite, py::arg("score"),
        "The kernels' test for a score that may rank (tests).");
  m.def("build_info", &build_info, "What this module was compiled with.");
}
