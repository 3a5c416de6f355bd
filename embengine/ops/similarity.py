"""Top-k, nearest centroid and threshold pairs: blocked loops over score tiles.

Score tiles come from the framework's matrix product (numpy / OpenBLAS on the CPU, torch or
CuPy / cuBLAS on the GPU), which is already at the hardware's arithmetic limit; selection,
fusion and memory traffic are ours (csrc/cpu/similarity.cpp, csrc/cuda/similarity.cu). The
few-query top-k and the few-centroid distance are bandwidth-bound, so on the CPU they skip
the tiles and run one native SIMD pass over the data. Memory stays O(q * k + tile): the full
(q, n) score matrix is never built.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from embengine import _native
from embengine.device import cuda_module
from embengine.errors import BackendError, InvalidInputError
from embengine.ops._arrays import CudaArray, cuda_array

# The native scan beats BLAS tiles while the base is read once for few queries; above this
# many queries the sgemm tiles win (benchmarks/bench_kernels.py measures the crossover).
SCAN_MAX_QUERIES = 32
# Likewise for centroids: the fused native pass (register-blocked, at sgemm speed per core
# in our measurements up to 64 centroids, and with no (n, c) temporary) up to this many.
FUSED_MAX_CENTROIDS = 64
TILE_ROWS = 1024  # query rows per score tile
TILE_COLS = 4096  # base rows per score tile (a (1024, 4096) float32 tile is 16 MiB)
GPU_TILE_ELEMENTS = 1 << 24  # scores per GPU tile (64 MiB): wide tiles, few launches
GPU_CONVERT_ELEMENTS = 1 << 23  # a float16 / bfloat16 block converted for cuBLAS: <= 32 MiB
GPU_PAIRS_CAPACITY = 1 << 16  # first size of the GPU pair buffers; they double as needed
# Few queries are bandwidth-bound: the fused dot_scores kernel reads the base once at its own
# width (float16 / bfloat16 as is) instead of cuBLAS over a float32 copy.
GPU_SCAN_MAX_QUERIES = 32
GPU_SCAN_MAX_DIM = 8192  # queries held in 32 KiB of shared memory per block
GPU_FUSED_MAX_CENTROIDS = 64  # as on the CPU: above this, cuBLAS tiles + a row-wise argmax
GPU_MIN_SPAN = 4096  # columns per top-k split at least: four 1024-column sorting chunks
GPU_DEFAULT_SMS = 132  # H100 / H200, when the card cannot be asked

EMPTY_SCORE = -np.inf  # score of an empty top-k slot (k > n)
EMPTY_ID = -1  # id of an empty top-k slot


def _require_finite(not_finite: int, *named: tuple[str, Any]) -> None:
    """Raise when a kernel met non-finite scores, naming the array and row that caused them.

    With finite queries, a NaN or inf anywhere in a data row makes every one of its scores
    non-finite, so counting non-finite scores in the kernels checks the data for free
    instead of in a separate pass over it.
    """
    if not not_finite:
        return
    for name, a in named:
        require_finite_rows(name, a)
    raise InvalidInputError(f"{not_finite} scores overflowed float32: the vectors are too large")


def require_finite_rows(name: str, a: Any) -> None:
    """InvalidInputError naming `a`'s first row with NaN or inf, if it has one."""
    row = _first_non_finite_row(a)
    if row is not None:
        raise InvalidInputError(
            f"{name} has NaN or inf values (first in row {row}, shape {tuple(a.shape)})"
        )


def _first_non_finite_row(a: Any) -> int | None:
    """The first row of a 2-D array (numpy, torch or CuPy) holding NaN or inf; error path only."""
    if isinstance(a, np.ndarray):
        bad = ~np.isfinite(a).all(axis=1)
        return int(np.argmax(bad)) if bad.any() else None
    if type(a).__module__.startswith("torch"):
        import torch

        rows = torch.nonzero(~torch.isfinite(a).all(dim=1))
        return int(rows[0, 0]) if len(rows) else None
    import cupy

    rows = cupy.flatnonzero(~cupy.isfinite(a).all(axis=1))
    return int(rows[0]) if len(rows) else None


def _matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out = a @ b.T; overflow / NaN are counted by the selection kernels, not warned here."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.matmul(a, b.T, out=out)


def _blocks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(start + size, n)


def _as_f32(block: np.ndarray, buffer: np.ndarray) -> np.ndarray:
    """block as float32: itself when it already is, else converted into `buffer`."""
    if block.dtype == np.float32:
        return block
    out = buffer[: block.size].reshape(block.shape)
    np.copyto(out, block)
    return out


def topk_cpu(
    q: np.ndarray, b: np.ndarray, k: int, exclude_self: bool, check_finite: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) of the k best base rows per query; q and b C-contiguous, q float32.

    The heaps hold min(k, n) entries (the work never grows with k past n); slots past n
    are sentinels.
    """
    scores = np.full((len(q), k), EMPTY_SCORE, dtype=np.float32)
    ids = np.full((len(q), k), EMPTY_ID, dtype=np.int64)
    if len(q) == 0 or len(b) == 0:
        return scores, ids
    if k > len(b):
        s, i = topk_cpu(q, b, len(b), exclude_self, check_finite)
        scores[:, : len(b)], ids[:, : len(b)] = s, i
        return scores, ids
    check = _require_finite if check_finite else _ignore
    if len(q) <= SCAN_MAX_QUERIES:
        check(_native.topk_scan(q, b, scores, ids, 0, exclude_self, 0), ("base", b))
    else:
        tile = np.empty(TILE_ROWS * TILE_COLS, dtype=np.float32)
        converted = np.empty(TILE_COLS * b.shape[1], dtype=np.float32)
        for b0, b1 in _blocks(len(b), TILE_COLS):
            base_tile = _as_f32(b[b0:b1], converted)
            for q0, q1 in _blocks(len(q), TILE_ROWS):
                out = tile[: (q1 - q0) * (b1 - b0)].reshape(q1 - q0, b1 - b0)
                _matmul(q[q0:q1], base_tile, out)
                bad = _native.topk_offer_tile(out, scores[q0:q1], ids[q0:q1], b0, exclude_self, q0)
                check(bad, ("base", b))
    _native.topk_finish(scores, ids)
    return scores, ids


def _ignore(not_finite: int, *named: tuple[str, Any]) -> None:
    """check_finite=False: non-finite scores were skipped by the kernels; nothing to say."""


def nearest_centroid_cpu(
    x: np.ndarray, c: np.ndarray, check_finite: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(best score, index) per row of x over the centroids c (float32, C-contiguous)."""
    check = _require_finite if check_finite else _ignore
    if len(c) <= FUSED_MAX_CENTROIDS:
        best, index, bad = _native.nearest_centroid(x, c)
        check(bad, ("x", x))
        return best, index
    best = np.empty(len(x), dtype=np.float32)
    index = np.empty(len(x), dtype=np.int64)
    tile = np.empty(TILE_ROWS * len(c), dtype=np.float32)
    converted = np.empty(TILE_ROWS * x.shape[1], dtype=np.float32)
    for r0, r1 in _blocks(len(x), TILE_ROWS):
        out = tile[: (r1 - r0) * len(c)].reshape(r1 - r0, len(c))
        _matmul(_as_f32(x[r0:r1], converted), c, out)
        heap_s = best[r0:r1].reshape(-1, 1)
        heap_i = index[r0:r1].reshape(-1, 1)
        heap_s.fill(EMPTY_SCORE)
        heap_i.fill(EMPTY_ID)
        check(_native.topk_offer_tile(out, heap_s, heap_i, 0, False, 0), ("x", x))
    return best, index


def centroid_scores_cpu(x: np.ndarray, c: np.ndarray, check_finite: bool = True) -> np.ndarray:
    """The full (n, c) matrix x @ c.T, computed in row blocks (fp16 x converted per block)."""
    out = np.empty((len(x), len(c)), dtype=np.float32)
    converted = np.empty(TILE_ROWS * x.shape[1], dtype=np.float32)
    for r0, r1 in _blocks(len(x), TILE_ROWS):
        _matmul(_as_f32(x[r0:r1], converted), c, out[r0:r1])
    if check_finite:
        _require_finite(int((~np.isfinite(out)).sum()), ("x", x))
    return out


def pairs_cpu(
    x: np.ndarray, threshold: float, y: np.ndarray | None, check_finite: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (i, j, score) with score >= threshold, sorted by (i, j); i < j when y is None."""
    check = _require_finite if check_finite else _ignore
    other = x if y is None else y
    margin = _rounding_bound(x, other)
    tile = np.empty(TILE_ROWS * TILE_COLS, dtype=np.float32)
    conv_rows = np.empty(TILE_ROWS * x.shape[1], dtype=np.float32)
    conv_cols = np.empty(TILE_COLS * x.shape[1], dtype=np.float32)
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for r0, r1 in _blocks(len(x), TILE_ROWS):
        rows = _as_f32(x[r0:r1], conv_rows)
        block: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        # one triangle: column tiles start at the row tile's first row
        for c0, c1 in _blocks(len(other) - (r0 if y is None else 0), TILE_COLS):
            c0, c1 = (c0 + r0, c1 + r0) if y is None else (c0, c1)
            out = tile[: (r1 - r0) * (c1 - c0)].reshape(r1 - r0, c1 - c0)
            cols = _as_f32(other[c0:c1], conv_cols)
            _matmul(rows, cols, out)
            upper = y is None and c0 < r1
            *pairs, bad = _native.pairs_in_tile(out, rows, cols, r0, c0, threshold, margin, upper)
            check(bad, ("x", x), ("y", other))
            block.append(tuple(pairs))
        found.extend(_row_major(block))
    if not found:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    i, j, s = (np.concatenate(parts) for parts in zip(*found, strict=True))
    return i, j, s


def _rounding_bound(x: np.ndarray, y: np.ndarray) -> float:
    """A bound on |BLAS fp32 dot - exact dot| for any row pair: gamma_d * max|x| * max|y|.

    (|fl(x.y) - x.y| <= gamma_d * sum|x_i y_i| <= gamma_d |x| |y|, gamma_d = d u / (1 - d u).)
    """
    if not len(x) or not len(y):
        return 0.0
    norms = []
    for b in (x, y):
        squares = np.einsum("ij,ij->i", b, b, dtype=np.float64)
        squares = squares[np.isfinite(squares)]  # NaN / inf rows are counted, not bounded
        norms.append(float(np.sqrt(squares.max())) if len(squares) else 0.0)
    return rounding_margin(x.shape[1], norms[0], norms[1])


def rounding_margin(
    d: int, max_norm_x: float, max_norm_y: float, *, tf32: bool = False, half: bool = False
) -> float:
    """Twice the bound on |tile dot - exact dot| of any row pair, for a (cu)BLAS tile.

    float32 products accumulate at most gamma_d = d u / (1 - d u) relative error (u = 2^-24).
    TF32 tensor cores round both inputs to 10 mantissa bits first: each product is then off
    by up to 2 * 2^-11 more, so the margin grows by that much. float16 inputs (`half`) round
    to the same 10 bits, and values below 2^-14 lose bits as subnormals: at most 2^-25 off
    each, so sqrt(d) 2^-25 (|x| + |y|) more in all.
    """
    u = 2.0**-24
    gamma = d * u / (1 - d * u)
    if tf32 or half:
        gamma += 2 * 2.0**-11 + 2.0**-22
    margin = 2 * gamma * max_norm_x * max_norm_y
    if half:
        margin += 2 * math.sqrt(d) * 2.0**-25 * (1 + 2.0**-10) * (max_norm_x + max_norm_y)
    return float(margin)


def _row_major(
    block: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Pairs of one row block, found tile by tile, in (i, j) order (tiles go up in j)."""
    block = [t for t in block if len(t[0])]
    if len(block) <= 1:
        return block
    i, j, s = (np.concatenate(parts) for parts in zip(*block, strict=True))
    order = np.argsort(i, kind="stable")
    return [(i[order], j[order], s[order])]


# ---- CUDA: the same loops, tiles from cuBLAS or dot_scores, selection ours ----
#
# Nothing in these loops waits for the GPU except where a size must be known on the host
# (the pairs' output buffers) and, with check_finite, one read of the non-finite counter at
# the end of the call. Float16 / bfloat16 data is never converted whole: the few-query scan
# reads it as is, and cuBLAS paths convert one bounded block at a time.


class _Gpu:
    """The few framework calls the CUDA loops need, for torch tensors and CuPy arrays."""

    def __init__(self, like: CudaArray) -> None:
        self.like = like
        self.torch = like.framework == "torch"
        self.kernels = cuda_module()
        if self.kernels is None:
            raise BackendError("a CUDA array was given but embengine was built without CUDA")

    def full(self, shape: tuple[int, ...], value: float, dtype: str) -> Any:
        if self.torch:
            import torch

            return torch.full(
                shape, value, dtype=getattr(torch, dtype), device=self.like.original.device
            )
        import cupy

        return cupy.full(shape, value, dtype=dtype)

    def empty(self, shape: tuple[int, ...], dtype: str = "float32") -> Any:
        if self.torch:
            import torch

            return torch.empty(shape, dtype=getattr(torch, dtype), device=self.like.original.device)
        import cupy

        return cupy.empty(shape, dtype=dtype)

    def f32(self, block: Any, buffer: Any) -> Any:
        """block as contiguous float32: itself when it already is, else converted into buffer."""
        a = cuda_array(block)
        if a.dtype == "float32" and a.contiguous:
            return block
        out = buffer[: a.shape[0]]
        self.copy_into(out, block)
        return out

    def copy_into(self, out: Any, block: Any) -> None:
        """out[...] = block, converting the dtype on the device."""
        if self.torch:
            out.copy_(block)
        else:
            import cupy

            cupy.copyto(out, block, casting="unsafe")

    def matmul(self, a: Any, b: Any) -> Any:
        """a @ b.T as a new float32 array (the caching allocator reuses the tile memory)."""
        return a @ b.T

    def ptr(self, a: Any) -> int:
        return cuda_array(a).ptr

    def half_parts(self, queries: Any, dtype: str) -> Any | None:
        """Float32 queries for tensor-core products with a `dtype` base: their split terms
        side by side, (q, terms * d) (see split_terms and half_matmul), or None when this
        torch cannot multiply half inputs into a float32 output (torch.mm out_dtype), or the
        queries are too large for float16 (then the base is converted instead)."""
        if not self.torch or not _mm_out_dtype_works():
            return None
        import torch

        if dtype == "float16" and float(queries.abs().max()) >= HALF_SPLIT_MAX:
            return None
        return torch.cat(split_terms(queries, getattr(torch, dtype), SPLIT_TERMS[dtype]), dim=1)

    def half_matmul(self, parts: Any, block: Any, *, parts_left: bool = True) -> Any:
        """(sum of the terms) @ block.T (or block @ (sum of the terms).T) as a contiguous
        float32 tile: ONE tensor-core product of the side-by-side terms with the half block
        repeated as many times, so the terms' sum happens in the float32 accumulator (no
        second product, no pass adding tiles)."""
        import torch

        wide = block.repeat(1, parts.shape[1] // block.shape[1])
        if parts_left:
            return torch.mm(parts, wide.T, out_dtype=torch.float32)
        return torch.mm(wide, parts.T, out_dtype=torch.float32)

    def half_copy(self, x: Any) -> Any | None:
        """x as float16 to nominate pairs on tensor cores (the candidates are re-scored in
        float32, so the margin covers the rounding), or None: CuPy, no float32-output half
        product in this torch, bfloat16 data (7 bits: a margin too wide), or values too
        large for float16."""
        if not self.torch or not _mm_out_dtype_works():
            return None
        import torch

        if x.dtype == torch.bfloat16 or float(x.abs().max()) >= HALF_SPLIT_MAX:
            return None  # (NaN passes: its scores are counted by the kernel, as in float32)
        return x.half()

    def half_product(self, a: Any, b: Any) -> Any:
        """a @ b.T of float16 arrays as a float32 tile, on tensor cores."""
        import torch

        return torch.mm(a, b.T, out_dtype=torch.float32)

    def zero(self, a: Any) -> None:
        a.zero_() if self.torch else a.fill(0)

    def read(self, counter: Any) -> int:
        """The value of a one-element device counter: the one host sync of a call."""
        return int(counter[0])

    def copy(self, a: Any) -> Any:
        return a.clone() if self.torch else a.copy()

    def concat(self, parts: list[Any]) -> Any:
        if self.torch:
            import torch

            return torch.cat(parts)
        import cupy

        return cupy.concatenate(parts)

    def argsort(self, key: Any) -> Any:
        if self.torch:
            import torch

            return torch.argsort(key, stable=True)
        import cupy

        return cupy.argsort(key, kind="stable")

    def max_row_norm(self, x: Any) -> float:
        """The largest finite row norm (NaN / inf rows are counted by the kernels instead)."""
        if self.torch:
            import torch

            norms = torch.linalg.vector_norm(x.double(), dim=1)
            return float(torch.where(torch.isfinite(norms), norms, 0.0).max())
        import cupy

        norms = cupy.sqrt((x.astype("float64") ** 2).sum(axis=1))
        return float(cupy.where(cupy.isfinite(norms), norms, 0.0).max())

    def count_not_finite(self, a: Any) -> int:
        """NaN / inf entries of a result array (read on the host: one sync)."""
        if self.torch:
            import torch

            return int((~torch.isfinite(a)).sum())
        import cupy

        return int((~cupy.isfinite(a)).sum())

    def tf32(self) -> bool:
        """May float32 matmuls here use TF32 tensor cores (rounding inputs to 10 bits)?"""
        if self.torch:
            return torch_allows_tf32()
        import os

        return os.environ.get("CUPY_TF32", "0") != "0"

    def multiprocessors(self) -> int:
        """The card's SM count, asked once per device: cudaGetDeviceProperties reads every
        attribute and can cost more than a whole small search."""
        key = (id(self.kernels), self.like.device_id)
        if key not in _SM_COUNTS:
            try:
                props = self.kernels.device_properties(self.like.device_id)
                _SM_COUNTS[key] = int(props["multiprocessors"])
            except Exception:  # a fake or an odd driver: any positive count is correct
                _SM_COUNTS[key] = GPU_DEFAULT_SMS
        return _SM_COUNTS[key]


_SM_COUNTS: dict[tuple[int, int], int] = {}


def torch_allows_tf32() -> bool:
    """May torch's float32 CUDA matmuls use TF32 tensor cores (inputs rounded to 10 bits)?"""
    import torch

    return bool(torch.backends.cuda.matmul.allow_tf32) or (
        torch.get_float32_matmul_precision() != "highest"
    )


_MM_OUT_DTYPE: list[bool] = []


def _mm_out_dtype_works() -> bool:
    """Can torch.mm multiply float16 into a float32 result on this GPU? (probed once)"""
    if not _MM_OUT_DTYPE:
        try:
            import torch

            a = torch.ones((2, 8), dtype=torch.float16, device="cuda")
            ok = torch.mm(a, a.T, out_dtype=torch.float32).dtype == torch.float32
        except (TypeError, RuntimeError, NotImplementedError):
            ok = False
        _MM_OUT_DTYPE.append(ok)
    return _MM_OUT_DTYPE[0]


def topk_cuda(
    q: CudaArray, b: CudaArray, k: int, exclude_self: bool, check_finite: bool = True
) -> tuple[Any, Any]:
    """topk_cpu on the GPU: (scores, ids) device arrays of shape (q, k).

    The work is clamped to min(k, n) columns; slots past n are sentinels.
    """
    g = _Gpu(q)
    nq, n, d = q.shape[0], b.shape[0], q.shape[1]
    scores = g.full((nq, k), EMPTY_SCORE, "float32")
    ids = g.full((nq, k), EMPTY_ID, "int64")
    if nq == 0 or n == 0:
        return scores, ids  # checked before any pointer: empty arrays may have address 0
    kk = min(k, n)
    state_s = scores if kk == k else g.full((nq, kk), EMPTY_SCORE, "float32")
    state_i = ids if kk == k else g.full((nq, kk), EMPTY_ID, "int64")
    scratch_s = g.empty((nq, kk), "float32")
    scratch_i = g.empty((nq, kk), "int64")
    not_finite = g.full((1,), 0, "int64")  # the kernels add to it as an unsigned counter
    queries = q.astype("float32")
    base = b.astype(b.dtype)  # contiguous; float16 / bfloat16 stay as they are
    select = _Selector(g, nq, kk, state_s, state_i, scratch_s, scratch_i, not_finite)
    with q.on_device():
        stream = q.stream()
        if nq <= GPU_SCAN_MAX_QUERIES and 0 < d <= GPU_SCAN_MAX_DIM:
            cols = min(n, max(1024, GPU_TILE_ELEMENTS // nq))
            tile = g.empty((nq, cols), "float32")
            for b0, b1 in _blocks(n, cols):
                g.kernels.dot_scores(
                    queries.ptr, nq, base.row_ptr(b0), base.dtype_code, b1 - b0, d,
                    g.ptr(tile), cols, stream,
                )  # fmt: skip
                select(tile, 0, nq, b1 - b0, cols, b0, exclude_self, stream)
        else:
            rows = min(nq, TILE_ROWS)
            cols = min(n, max(1024, GPU_TILE_ELEMENTS // rows))
            half = base.dtype != "float32"
            parts = g.half_parts(queries.original, base.dtype) if half else None
            converted = g.empty((_convert_rows(cols, d), d)) if half and parts is None else None
            for b0, b1 in _blocks(n, cols):
                for c0, c1 in _blocks(b1 - b0, len(converted) if converted is not None else cols):
                    block = base.original[b0 + c0 : b0 + c1]
                    base_tile = block if converted is None else g.f32(block, converted)
                    for q0, q1 in _blocks(nq, rows):
                        if parts is not None:  # tensor cores, the base read as is
                            tile = g.half_matmul(parts[q0:q1], base_tile)
                        else:
                            tile = g.matmul(queries.original[q0:q1], base_tile)
                        select(tile, q0, q1, c1 - c0, c1 - c0, b0 + c0, exclude_self, stream)
    if check_finite:
        _require_finite(g.read(not_finite), ("queries", q.original), ("base", b.original))
    if kk < k:
        scores[:, :kk] = state_s
        ids[:, :kk] = state_i
    return scores, ids


# float32 queries as a sum of float16 / bfloat16 terms: 2 float16 terms carry 22 bits of
# mantissa, 3 bfloat16 terms 24, so the sum of the terms' products with a half base (exact
# in a float32 tensor-core accumulator) is as accurate as float32 arithmetic.
SPLIT_TERMS = {"float16": 2, "bfloat16": 3}
HALF_SPLIT_MAX = 6.0e4  # float16 overflows at 65504: larger queries take the float32 path


def split_terms(q: Any, dtype: Any, terms: int) -> list[Any]:
    """q (float32) as `terms` arrays of `dtype` whose float32 sum is q to ~24 bits.

    Works for torch tensors (and numpy, for tests): each term is what the previous ones
    missed, rounded to the half type.
    """
    parts, rest = [], q
    for _ in range(terms):
        part = rest.to(dtype) if hasattr(rest, "to") else rest.astype(dtype)
        parts.append(part)
        rest = rest - (part.float() if hasattr(part, "float") else part.astype("float32"))
    return parts


def _convert_rows(rows: int, d: int) -> int:
    """Rows of a float16 / bfloat16 block converted to float32 at a time (bounded memory)."""
    return max(1, min(rows, GPU_CONVERT_ELEMENTS // max(d, 1)))


class _Selector:
    """Merges score tiles into the running (q, k) lists, splitting wide tiles across blocks.

    One block per query row would leave a 1-query search over 1M rows on one SM; instead
    each row's columns are cut into `splits` spans (same rule as _native.topk_splits), each
    span selects its own k best in its own block, and one more pass merges the spans' lists
    into the running list.
    """

    def __init__(
        self,
        g: _Gpu,
        nq: int,
        k: int,
        state_s: Any,
        state_i: Any,
        scratch_s: Any,
        scratch_i: Any,
        not_finite: Any,
    ) -> None:
        self.g, self.k = g, k
        self.state = (state_s, state_i, scratch_s, scratch_i)
        self.not_finite = not_finite
        self.blocks_wanted = 2 * g.multiprocessors()
        self.parts: tuple[Any, Any, Any, Any] | None = None
        self.calls: list[tuple[int, int]] = []  # (rows, splits) per tile: tests read it

    def __call__(
        self,
        tile: Any,
        q0: int,
        q1: int,
        m: int,
        ld: int,
        base_offset: int,
        exclude_self: bool,
        stream: int,
    ) -> None:
        g, k, rows = self.g, self.k, q1 - q0
        state = [g.ptr(a[q0:q1]) for a in self.state]
        splits = int(_native.topk_splits(rows, m, k, self.blocks_wanted, GPU_MIN_SPAN))
        self.calls.append((rows, splits))
        nf = g.ptr(self.not_finite)
        if splits == 1:
            g.kernels.topk_select(
                g.ptr(tile), rows, m, ld, 0, base_offset, 1, m, exclude_self, q0, *state, k,
                False, nf, stream,
            )  # fmt: skip
            return
        span = -(-m // splits)
        splits = -(-m // span)
        width = splits * k
        if self.parts is None or self.parts[0].shape[0] < rows * width:
            self.parts = (
                g.empty((rows * width,), "float32"),
                g.empty((rows * width,), "int64"),
                g.empty((rows * width,), "float32"),
                g.empty((rows * width,), "int64"),
            )
        parts = [g.ptr(a) for a in self.parts]
        g.kernels.topk_select(
            g.ptr(tile), rows, m, ld, 0, base_offset, splits, span, exclude_self, q0, *parts,
            k, True, nf, stream,
        )  # fmt: skip
        g.kernels.topk_select(
            parts[0], rows, width, width, parts[1], 0, 1, width, False, 0, *state, k, False,
            0, stream,
        )  # fmt: skip


def nearest_centroid_cuda(x: CudaArray, c: CudaArray, check_finite: bool = True) -> tuple[Any, Any]:
    """nearest_centroid_cpu on the GPU: fused up to GPU_FUSED_MAX_CENTROIDS, cuBLAS above."""
    g = _Gpu(x)
    n, d, nc = x.shape[0], x.shape[1], c.shape[0]
    best = g.full((n,), EMPTY_SCORE, "float32")
    index = g.full((n,), EMPTY_ID, "int64")
    if n == 0:
        return best, index
    xs = x.astype(x.dtype)  # contiguous, float16 / bfloat16 as is
    cs = c.astype("float32")
    not_finite = g.full((1,), 0, "int64")
    with x.on_device():
        stream = x.stream()
        if nc <= GPU_FUSED_MAX_CENTROIDS:
            g.kernels.nearest_centroid(
                xs.ptr, xs.dtype_code, n, cs.ptr, nc, d, g.ptr(best), g.ptr(index),
                g.ptr(not_finite), stream,
            )  # fmt: skip
        else:
            for r0, r1, tile in _centroid_tiles(g, xs, cs):
                g.kernels.tile_argmax(
                    g.ptr(tile), r1 - r0, nc, nc, g.ptr(best[r0:r1]), g.ptr(index[r0:r1]),
                    g.ptr(not_finite), stream,
                )  # fmt: skip
    if check_finite:
        _require_finite(g.read(not_finite), ("centroids", c.original), ("x", x.original))
    return best, index


def _centroid_tiles(g: _Gpu, x: CudaArray, c: CudaArray) -> Iterator[tuple[int, int, Any]]:
    """(r0, r1, x[r0:r1] @ c.T) in row blocks, float16 / bfloat16 blocks converted one by one."""
    n, d, nc = x.shape[0], x.shape[1], c.shape[0]
    rows = max(1, min(n, GPU_TILE_ELEMENTS // max(nc, 1), _convert_rows(n, d)))
    half = x.dtype != "float32"
    parts = g.half_parts(c.original, x.dtype) if half else None
    converted = g.empty((rows, d)) if half and parts is None else None
    for r0, r1 in _blocks(n, rows):
        block = x.original[r0:r1]
        if parts is not None:  # tensor cores, x read as is
            yield r0, r1, g.half_matmul(parts, block, parts_left=False)
            continue
        block = block if converted is None else g.f32(block, converted)
        yield r0, r1, g.matmul(block, c.original)


def centroid_scores_cuda(x: CudaArray, c: CudaArray, check_finite: bool = True) -> Any:
    """The full (n, c) float32 matrix x @ c.T on the GPU, in row blocks."""
    g = _Gpu(x)
    out = g.empty((x.shape[0], c.shape[0]), "float32")
    if x.shape[0] == 0 or c.shape[0] == 0:
        return out
    xs, cs = x.astype(x.dtype), c.astype("float32")
    with x.on_device():
        for r0, r1, tile in _centroid_tiles(g, xs, cs):
            out[r0:r1] = tile
    if check_finite:
        _require_finite(g.count_not_finite(out), ("centroids", c.original), ("x", x.original))
    return out


def pairs_cuda(
    x: CudaArray, threshold: float, y: CudaArray | None, check_finite: bool = True
) -> tuple[Any, Any, Any]:
    """pairs_cpu on the GPU, with the same pairs and bit-equal scores.

    cuBLAS tiles nominate candidates within the proven rounding margin (TF32 included; float16
    tensor-core tiles where torch allows, the margin widened to match), and each candidate is
    re-scored by dot_lanes8 on float32 rows, the CPU's own summation order. The output grows:
    a tile with more pairs than room is re-run with room for all of them.
    """
    g = _Gpu(x)
    other = x if y is None else y
    n, m, d = x.shape[0], other.shape[0], x.shape[1]
    empty = (g.full((0,), 0, "int64"), g.full((0,), 0, "int64"), g.full((0,), 0, "float32"))
    if n == 0 or m == 0:
        return empty
    xs = x.astype(x.dtype)
    os_ = xs if y is None else other.astype(other.dtype)
    x16 = g.half_copy(xs.original)  # nominate on tensor cores when the data allows
    y16 = None if x16 is None else (x16 if y is None else g.half_copy(os_.original))
    half = x16 is not None and y16 is not None
    margin = rounding_margin(
        d, g.max_row_norm(xs.original), g.max_row_norm(os_.original), tf32=g.tf32(), half=half
    )
    col_width = TILE_COLS * 4
    conv_rows = None if xs.dtype == "float32" else g.empty((TILE_ROWS, d))
    conv_cols = None if os_.dtype == "float32" else g.empty((col_width, d))
    capacity = GPU_PAIRS_CAPACITY
    out_i = g.empty((capacity,), "int64")
    out_j = g.empty((capacity,), "int64")
    out_s = g.empty((capacity,), "float32")
    count = g.full((1,), 0, "int64")  # read as an unsigned 64-bit counter by the kernel
    not_finite = g.full((1,), 0, "int64")
    tile_not_finite = g.full((1,), 0, "int64")  # a re-run tile counts its scores once
    found: list[tuple[Any, Any, Any]] = []
    with x.on_device():
        stream = x.stream()
        for r0, r1 in _blocks(n, TILE_ROWS):
            rows = xs.original[r0:r1]
            rows = rows if conv_rows is None else g.f32(rows, conv_rows)
            for c0, c1 in _blocks(m - (r0 if y is None else 0), col_width):
                c0, c1 = (c0 + r0, c1 + r0) if y is None else (c0, c1)
                cols = os_.original[c0:c1]
                cols = cols if conv_cols is None else g.f32(cols, conv_cols)
                tile = g.half_product(x16[r0:r1], y16[c0:c1]) if half else g.matmul(rows, cols)
                upper = y is None and c0 < r1
                while True:
                    g.zero(count)
                    g.zero(tile_not_finite)
                    g.kernels.pairs_in_tile(
                        g.ptr(tile), r1 - r0, c1 - c0, c1 - c0, g.ptr(rows), g.ptr(cols), d,
                        r0, c0, float(threshold), margin, upper, g.ptr(out_i), g.ptr(out_j),
                        g.ptr(out_s), capacity, g.ptr(count), g.ptr(tile_not_finite), stream,
                    )  # fmt: skip
                    total = g.read(count)  # the buffers' size must be known: one sync a tile
                    if total <= capacity:
                        break
                    capacity = max(2 * capacity, total)
                    out_i = g.empty((capacity,), "int64")
                    out_j = g.empty((capacity,), "int64")
                    out_s = g.empty((capacity,), "float32")
                not_finite += tile_not_finite  # on the device: no sync
                if total:
                    found.append(
                        (g.copy(out_i[:total]), g.copy(out_j[:total]), g.copy(out_s[:total]))
                    )
    if check_finite:
        _require_finite(g.read(not_finite), ("x", x.original), ("y", other.original))
    if not found:
        return empty
    i, j, s = (g.concat(list(parts)) for parts in zip(*found, strict=True))
    order = g.argsort(i * m + j)
    return i[order], j[order], s[order]
