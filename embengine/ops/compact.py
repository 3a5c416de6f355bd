"""Exact top-k over compact vectors: int8 codes (integer dot) and packed sign bits (Hamming).

Same contract as `topk_cosine`: (scores, ids) of shape (q, k), best first, ties to the lower
id, slots past n hold -inf / -1. Scores are exact integers held in float32 (the int8 dot, or
the count of matching bits), so the kernels, the CUDA twins and the numpy oracle agree on
every id. numpy / CPU torch run csrc/cpu/compact.cpp; CuPy / CUDA torch run
csrc/cuda/compact.cu and the float path's selection kernel.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from embengine import _native
from embengine.errors import InvalidInputError
from embengine.ops import similarity
from embengine.ops._arrays import CudaArray, cuda_array, is_cuda_array, like_input, to_numpy

INT8_QUERY_MIN = -127  # -128 would overflow the kernel's sign trick (see compact.cpp)


def _check_codes(a: Any, name: str, dtype: type, width: int | None) -> np.ndarray:
    x = to_numpy(a, name)
    if x.ndim != 2:
        raise InvalidInputError(f"{name} must have shape (n, width), got {x.shape}")
    if x.dtype != dtype:
        raise InvalidInputError(f"{name} must be {np.dtype(dtype).name}, got {x.dtype}")
    if width is not None and x.shape[1] != width:
        raise InvalidInputError(f"{name} has width {x.shape[1]}, expected {width}")
    return np.ascontiguousarray(x)


def _check_cuda_codes(a: Any, name: str, dtype: str, width: int | None) -> CudaArray:
    x = cuda_array(a)
    if len(x.shape) != 2:
        raise InvalidInputError(f"{name} must have shape (n, width), got {x.shape}")
    if x.dtype != dtype:
        raise InvalidInputError(f"{name} must be {dtype}, got {x.dtype}")
    if width is not None and x.shape[1] != width:
        raise InvalidInputError(f"{name} has width {x.shape[1]}, expected {width}")
    return x.astype(dtype)  # contiguous


def _pair_on_gpu(queries: Any, base: Any, names: str) -> bool:
    on_gpu = is_cuda_array(queries), is_cuda_array(base)
    if on_gpu[0] != on_gpu[1]:
        raise InvalidInputError(f"{names} must both be on the GPU or both on the CPU")
    return on_gpu[0]


def topk_int8(queries: Any, codes: Any, k: int) -> tuple[Any, Any]:
    """Top-k code rows by exact integer dot with int8 queries: (scores, ids), each (q, k).

    `queries` (q, d) int8 with values in [-127, 127] (-128 raises: the kernel's exactness
    needs it), `codes` (n, d) int8 (any value).
    """
    return _topk(queries, codes, k, "int8")


def topk_hamming(queries: Any, bits: Any, k: int) -> tuple[Any, Any]:
    """Top-k bit rows by matching bits (8 * bytes - Hamming distance): (scores, ids).

    `queries` (q, b) and `bits` (n, b) are uint8 rows of packed sign bits (np.packbits).
    """
    return _topk(queries, bits, k, "uint8")


def _topk(queries: Any, base: Any, k: int, dtype: str) -> tuple[Any, Any]:
    from embengine.ops import _check_k, _check_result_size

    k = _check_k(k)
    base_name = "codes" if dtype == "int8" else "bits"
    if _pair_on_gpu(queries, base, f"queries and {base_name}"):
        q = _check_cuda_codes(queries, "queries", dtype, None)
        b = _check_cuda_codes(base, base_name, dtype, q.shape[1])
        _check_result_size(q.shape[0], k, b.shape[0])
        if dtype == "int8" and q.size and bool((q.original == INT8_QUERY_MIN - 1).any()):
            raise InvalidInputError("int8 queries must lie in [-127, 127], got -128")
        return _topk_cuda(q, b, k, dtype)
    q = _check_codes(queries, "queries", np.dtype(dtype).type, None)
    b = _check_codes(base, base_name, np.dtype(dtype).type, q.shape[1])
    _check_result_size(len(q), k, len(b))
    if dtype == "int8" and q.size and q.min() < INT8_QUERY_MIN:
        raise InvalidInputError("int8 queries must lie in [-127, 127], got -128")
    scores = np.full((len(q), k), similarity.EMPTY_SCORE, dtype=np.float32)
    ids = np.full((len(q), k), similarity.EMPTY_ID, dtype=np.int64)
    kk = min(k, len(b))
    if len(q) and kk:
        s, i = scores[:, :kk].copy(), ids[:, :kk].copy()
        scan = _native.topk_int8_scan if dtype == "int8" else _native.topk_hamming_scan
        scan(q, b, s, i, 0)
        _native.topk_finish(s, i)
        scores[:, :kk], ids[:, :kk] = s, i
    return like_input(scores, queries), like_input(ids, queries)


def _topk_cuda(q: CudaArray, b: CudaArray, k: int, dtype: str) -> tuple[Any, Any]:
    """Score tiles from the compact kernels, selected by the float path's topk_select."""
    g = similarity._Gpu(q)
    nq, n, width = q.shape[0], b.shape[0], q.shape[1]
    scores = g.full((nq, k), similarity.EMPTY_SCORE, "float32")
    ids = g.full((nq, k), similarity.EMPTY_ID, "int64")
    if nq == 0 or n == 0:
        return scores, ids  # before any pointer: empty arrays may have address 0
    kk = min(k, n)
    state_s = scores if kk == k else g.full((nq, kk), similarity.EMPTY_SCORE, "float32")
    state_i = ids if kk == k else g.full((nq, kk), similarity.EMPTY_ID, "int64")
    scratch_s, scratch_i = g.empty((nq, kk), "float32"), g.empty((nq, kk), "int64")
    not_finite = g.full((1,), 0, "int64")
    select = similarity._Selector(g, nq, kk, state_s, state_i, scratch_s, scratch_i, not_finite)
    kernel = g.kernels.int8_dot_scores if dtype == "int8" else g.kernels.hamming_scores
    with q.on_device():
        stream = q.stream()
        cols = min(n, max(1024, similarity.GPU_TILE_ELEMENTS // nq))
        tile = g.empty((nq, cols), "float32")
        for b0, b1 in similarity._blocks(n, cols):
            kernel(q.ptr, nq, b.ptr + b0 * width, b1 - b0, width, g.ptr(tile), cols, stream)
            select(tile, 0, nq, b1 - b0, cols, b0, False, stream)
    if kk < k:
        scores[:, :kk] = state_s
        ids[:, :kk] = state_i
    return scores, ids
