"""Top-k, nearest centroid and threshold pairs: blocked loops over score tiles.

Score tiles come from the framework's matrix product (numpy / OpenBLAS on the CPU, torch or
CuPy / cuBLAS on the GPU), which is already at the hardware's arithmetic limit; selection,
fusion and memory traffic are ours (csrc/cpu/similarity.cpp, csrc/cuda/similarity.cu). The
few-query top-k and the few-centroid distance are bandwidth-bound, so on the CPU they skip
the tiles and run one native SIMD pass over the data. Memory stays O(q * k + tile): the full
(q, n) score matrix is never built.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from embengine import _native
from embengine.device import cuda_module
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
GPU_PAIRS_CAPACITY = 1 << 16  # first size of the GPU pair buffers; they double as needed

EMPTY_SCORE = -np.inf  # score of an empty top-k slot (k > n)
EMPTY_ID = -1  # id of an empty top-k slot


def _require_finite(not_finite: int, *named: tuple[str, np.ndarray]) -> None:
    """Raise when a kernel met non-finite scores, naming the array and row that caused them.

    With finite queries, a NaN or inf anywhere in a data row makes every one of its scores
    non-finite, so counting non-finite scores in the kernels checks the data for free
    instead of in a separate pass over it.
    """
    if not not_finite:
        return
    for name, a in named:
        bad = ~np.isfinite(a).all(axis=1)
        if bad.any():
            row = int(np.argmax(bad))
            raise ValueError(f"{name} has NaN or inf values (first in row {row}, shape {a.shape})")
    raise ValueError(f"{not_finite} scores overflowed float32: the vectors are too large")


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
    q: np.ndarray, b: np.ndarray, k: int, exclude_self: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) of the k best base rows per query; q and b C-contiguous, q float32."""
    scores = np.full((len(q), k), EMPTY_SCORE, dtype=np.float32)
    ids = np.full((len(q), k), EMPTY_ID, dtype=np.int64)
    if len(q) == 0 or len(b) == 0:
        return scores, ids
    if len(q) <= SCAN_MAX_QUERIES:
        _require_finite(_native.topk_scan(q, b, scores, ids, 0, exclude_self, 0), ("base", b))
    else:
        tile = np.empty(TILE_ROWS * TILE_COLS, dtype=np.float32)
        converted = np.empty(TILE_COLS * b.shape[1], dtype=np.float32)
        for b0, b1 in _blocks(len(b), TILE_COLS):
            base_tile = _as_f32(b[b0:b1], converted)
            for q0, q1 in _blocks(len(q), TILE_ROWS):
                out = tile[: (q1 - q0) * (b1 - b0)].reshape(q1 - q0, b1 - b0)
                _matmul(q[q0:q1], base_tile, out)
                bad = _native.topk_offer_tile(out, scores[q0:q1], ids[q0:q1], b0, exclude_self, q0)
                _require_finite(bad, ("base", b))
    _native.topk_finish(scores, ids)
    return scores, ids


def nearest_centroid_cpu(x: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(best score, index) per row of x over the centroids c (float32, C-contiguous)."""
    if len(c) <= FUSED_MAX_CENTROIDS:
        best, index, bad = _native.nearest_centroid(x, c)
        _require_finite(bad, ("x", x))
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
        _require_finite(_native.topk_offer_tile(out, heap_s, heap_i, 0, False, 0), ("x", x))
    return best, index


def centroid_scores_cpu(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The full (n, c) matrix x @ c.T, computed in row blocks (fp16 x converted per block)."""
    out = np.empty((len(x), len(c)), dtype=np.float32)
    converted = np.empty(TILE_ROWS * x.shape[1], dtype=np.float32)
    for r0, r1 in _blocks(len(x), TILE_ROWS):
        _matmul(_as_f32(x[r0:r1], converted), c, out[r0:r1])
    _require_finite(int((~np.isfinite(out)).sum()), ("x", x))
    return out


def pairs_cpu(
    x: np.ndarray, threshold: float, y: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (i, j, score) with score >= threshold, sorted by (i, j); i < j when y is None."""
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
            _require_finite(bad, ("x", x), ("y", other))
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
    d = x.shape[1]
    u = 2.0**-24
    gamma = d * u / (1 - d * u)
    norms = [
        float(np.sqrt(max(float(np.einsum("ij,ij->i", b, b, dtype=np.float64).max()), 0.0)))
        for b in (x, y)
    ]
    return float(2 * gamma * norms[0] * norms[1])


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


# ---- CUDA: the same loops, tiles from the framework's matmul (cuBLAS), selection ours ----


class _Gpu:
    """The few framework calls the CUDA loops need, for torch tensors and CuPy arrays."""

    def __init__(self, like: CudaArray) -> None:
        self.like = like
        self.torch = like.framework == "torch"
        self.kernels = cuda_module()
        if self.kernels is None:
            raise RuntimeError("a CUDA array was given but embengine was built without CUDA")

    def full(self, shape: tuple[int, ...], value: float, dtype: str) -> Any:
        if self.torch:
            import torch

            return torch.full(
                shape, value, dtype=getattr(torch, dtype), device=self.like.original.device
            )
        import cupy

        return cupy.full(shape, value, dtype=dtype)

    def f32(self, block: Any) -> Any:
        """A contiguous float32 copy of a block (or the block itself when it already is)."""
        return cuda_array(block).astype("float32").original

    def matmul(self, a: Any, b: Any) -> Any:
        """a @ b.T as a new float32 array (the caching allocator reuses the tile memory)."""
        return a @ b.T

    def ptr(self, a: Any) -> int:
        return cuda_array(a).ptr

    def copy(self, a: Any) -> Any:
        return a.clone() if self.torch else a.copy()

    def zero(self, a: Any) -> None:
        a.zero_() if self.torch else a.fill(0)

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


def topk_cuda(q: CudaArray, b: CudaArray, k: int, exclude_self: bool) -> tuple[Any, Any]:
    """topk_cpu on the GPU: (scores, ids) device arrays of shape (q, k)."""
    g = _Gpu(q)
    nq, n = q.shape[0], b.shape[0]
    scores = g.full((nq, k), EMPTY_SCORE, "float32")
    ids = g.full((nq, k), EMPTY_ID, "int64")
    if nq == 0 or n == 0:
        return scores, ids
    scratch_s = g.full((nq, k), EMPTY_SCORE, "float32")
    scratch_i = g.full((nq, k), EMPTY_ID, "int64")
    queries = g.f32(q.original)
    rows = min(nq, TILE_ROWS)
    cols = max(1024, GPU_TILE_ELEMENTS // rows)
    with q.on_device():
        stream = q.stream()
        for b0, b1 in _blocks(n, cols):
            base_tile = g.f32(b.original[b0:b1])
            for q0, q1 in _blocks(nq, rows):
                tile = g.matmul(queries[q0:q1], base_tile)
                g.kernels.topk_merge_tile(
                    g.ptr(tile),
                    q1 - q0,
                    b1 - b0,
                    b1 - b0,
                    b0,
                    exclude_self,
                    q0,
                    g.ptr(scores[q0:q1]),
                    g.ptr(ids[q0:q1]),
                    g.ptr(scratch_s[q0:q1]),
                    g.ptr(scratch_i[q0:q1]),
                    k,
                    stream,
                )
    return scores, ids


def nearest_centroid_cuda(x: CudaArray, c: CudaArray) -> tuple[Any, Any]:
    """nearest_centroid_cpu on the GPU: one fused pass over x (float32, float16 or bfloat16)."""
    g = _Gpu(x)
    xs = x.astype(x.dtype)  # contiguous
    cs = c.astype("float32")
    n = x.shape[0]
    best = g.full((n,), EMPTY_SCORE, "float32")
    index = g.full((n,), EMPTY_ID, "int64")
    with x.on_device():
        g.kernels.nearest_centroid(
            xs.ptr,
            xs.dtype_code,
            n,
            cs.ptr,
            c.shape[0],
            c.shape[1],
            g.ptr(best),
            g.ptr(index),
            x.stream(),
        )
    return best, index


def pairs_cuda(x: CudaArray, threshold: float, y: CudaArray | None) -> tuple[Any, Any, Any]:
    """pairs_cpu on the GPU. The output grows: a tile with more pairs than room is re-run."""
    g = _Gpu(x)
    rows_all = g.f32(x.original)
    other = rows_all if y is None else g.f32(y.original)
    n, m = x.shape[0], other.shape[0]
    capacity = GPU_PAIRS_CAPACITY
    out_i = g.full((capacity,), 0, "int64")
    out_j = g.full((capacity,), 0, "int64")
    out_s = g.full((capacity,), 0, "float32")
    count = g.full((1,), 0, "int64")  # read as an unsigned 64-bit counter by the kernel
    found: list[tuple[Any, Any, Any]] = []
    with x.on_device():
        stream = x.stream()
        for r0, r1 in _blocks(n, TILE_ROWS):
            for c0, c1 in _blocks(m - (r0 if y is None else 0), TILE_COLS * 4):
                c0, c1 = (c0 + r0, c1 + r0) if y is None else (c0, c1)
                tile = g.matmul(rows_all[r0:r1], other[c0:c1])
                upper = y is None and c0 < r1
                while True:
                    g.zero(count)
                    g.kernels.pairs_in_tile(
                        g.ptr(tile),
                        r1 - r0,
                        c1 - c0,
                        c1 - c0,
                        r0,
                        c0,
                        float(threshold),
                        upper,
                        g.ptr(out_i),
                        g.ptr(out_j),
                        g.ptr(out_s),
                        capacity,
                        g.ptr(count),
                        stream,
                    )
                    total = int(count[0])  # synchronises with the stream
                    if total <= capacity:
                        break
                    capacity = max(2 * capacity, total)
                    out_i = g.full((capacity,), 0, "int64")
                    out_j = g.full((capacity,), 0, "int64")
                    out_s = g.full((capacity,), 0, "float32")
                if total:
                    found.append(
                        (g.copy(out_i[:total]), g.copy(out_j[:total]), g.copy(out_s[:total]))
                    )
    if not found:
        return g.full((0,), 0, "int64"), g.full((0,), 0, "int64"), g.full((0,), 0, "float32")
    i, j, s = (g.concat(list(parts)) for parts in zip(*found, strict=True))
    order = g.argsort(i * m + j)
    return i[order], j[order], s[order]
