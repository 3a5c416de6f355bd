"""The kernels' Python face: one entry point per op, dispatched on where the arrays live.

numpy arrays and CPU torch tensors run the C++ kernels; CuPy arrays and CUDA torch tensors
run the CUDA kernels on the framework's current stream with no host copy. Results come back
in the caller's framework. `embengine.ops.reference` holds the numpy oracle of each op.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from embengine import _native
from embengine.device import cuda_module
from embengine.ops import similarity
from embengine.ops._arrays import (
    CudaArray,
    cuda_array,
    is_cuda_array,
    is_torch,
    like_input,
    to_numpy,
)

DEFAULT_EPS = 1e-12  # as torch.nn.functional.normalize and sentence-transformers

__all__ = [
    "DEFAULT_EPS",
    "centroid_distance",
    "centroid_distances",
    "mean_pool_normalize",
    "normalize_rows_",
    "pairs_above",
    "topk_cosine",
]


def _cuda_kernels() -> Any:
    module = cuda_module()
    if module is None:
        raise RuntimeError("a CUDA array was given but embengine was built without CUDA kernels")
    return module


def mean_pool_normalize(states: Any, mask: Any, *, eps: float = DEFAULT_EPS) -> Any:
    """Masked mean of token states, L2-normalised: one fused pass.

    `states` has shape (batch, tokens, dim), float32 or float16 (bfloat16 on CUDA);
    `mask` has shape (batch, tokens), non-zero for real tokens. Returns (batch, dim) float32
    unit rows; a row with no real token comes back as zeros.
    """
    if is_cuda_array(states):
        return _mean_pool_normalize_cuda(states, mask, eps)
    s = to_numpy(states, "states")
    if s.dtype not in (np.float32, np.float16):
        s = s.astype(np.float32)
    m = to_numpy(mask, "mask")
    if m.ndim != 2 or m.shape != s.shape[:2]:
        raise ValueError(
            f"mask must have shape {s.shape[:2]} to match states {s.shape}, got {m.shape}"
        )
    out = _native.mean_pool_normalize(
        np.ascontiguousarray(s), np.ascontiguousarray(m, dtype=np.int32), float(eps)
    )
    return like_input(out, states)


def _mean_pool_normalize_cuda(states: Any, mask: Any, eps: float) -> Any:
    kernels = _cuda_kernels()
    s = cuda_array(states)
    if len(s.shape) != 3:
        raise ValueError(f"states must have shape (batch, tokens, dim), got {s.shape}")
    if s.dtype not in ("float32", "float16", "bfloat16"):
        s = s.astype("float32")
    s = s.astype(s.dtype)  # contiguous
    if not is_cuda_array(mask):
        raise ValueError("states is on the GPU, so mask must be too")
    m = cuda_array(mask)
    if m.shape != s.shape[:2]:
        raise ValueError(
            f"mask must have shape {s.shape[:2]} to match states {s.shape}, got {m.shape}"
        )
    m = m.astype("int32")
    b, t, d = s.shape
    with s.on_device():
        out = s.empty((b, d))
        kernels.mean_pool_normalize(
            s.ptr, s.dtype_code, m.ptr, cuda_array(out).ptr, b, t, d, float(eps), s.stream()
        )
    return out


def normalize_rows_(x: Any, *, eps: float = DEFAULT_EPS) -> Any:
    """Scale the rows of a float32 (n, dim) array to unit norm in place, and return it.

    Zero rows stay zero (the norm is clamped at eps). The array must be C-contiguous.
    """
    if is_cuda_array(x):
        a = cuda_array(x)
        if len(a.shape) != 2 or a.dtype != "float32" or not a.contiguous:
            raise ValueError(
                f"x must be a C-contiguous float32 (n, dim) array, got {a.dtype} {a.shape}"
            )
        with a.on_device():
            _cuda_kernels().normalize_rows(a.ptr, a.shape[0], a.shape[1], float(eps), a.stream())
        return x
    _native.normalize_rows(to_numpy(x, "x"), float(eps))
    return x


def check_vectors(
    x: Any, name: str, dim: int | None = None, *, check_finite: bool = True
) -> np.ndarray:
    """A finite 2-D float array, or ValueError naming the array, its shape and the problem.

    check_finite=False leaves the NaN / inf check to the kernel (it counts non-finite
    scores, saving a pass over a large data side).
    """
    a = to_numpy(x, name)
    if a.ndim != 2:
        raise ValueError(f"{name} must have shape (n, dim), got {a.shape}")
    if dim is not None and a.shape[1] != dim:
        raise ValueError(f"{name} has dim {a.shape[1]}, expected {dim} (shape {a.shape})")
    if a.dtype not in (np.float32, np.float16):
        a = a.astype(np.float32)
    if check_finite and a.size and not np.isfinite(a).all():
        bad = int(np.argwhere(~np.isfinite(a))[0][0])
        raise ValueError(f"{name} has NaN or inf values (first in row {bad}, shape {a.shape})")
    return a


def _cuda_pair(a: Any, b: Any, names: str) -> bool:
    """True when both arrays are on the GPU, False when both are not; mixed raises."""
    on_gpu = is_cuda_array(a), is_cuda_array(b)
    if on_gpu[0] != on_gpu[1]:
        raise ValueError(f"{names} must both be on the GPU or both on the CPU")
    return on_gpu[0]


def check_cuda_vectors(x: Any, name: str, dim: int | None = None) -> CudaArray:
    """A finite 2-D float GPU array, or ValueError naming the array, its shape and the problem."""
    a = cuda_array(x)
    if len(a.shape) != 2:
        raise ValueError(f"{name} must have shape (n, dim), got {a.shape}")
    if dim is not None and a.shape[1] != dim:
        raise ValueError(f"{name} has dim {a.shape[1]}, expected {dim} (shape {a.shape})")
    if a.dtype not in ("float32", "float16", "bfloat16"):
        a = a.astype("float32")
    if a.shape[0] and a.shape[1] and not bool(_finite(a.original)):
        raise ValueError(f"{name} has NaN or inf values (shape {a.shape})")
    return a


def _finite(x: Any) -> Any:
    if is_torch(x):
        import torch

        return torch.isfinite(x).all()
    import cupy

    return cupy.isfinite(x).all()


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    return int(k)


def topk_cosine(queries: Any, base: Any, k: int, *, exclude_self: bool = False) -> tuple[Any, Any]:
    """Exact top-k by inner product (cosine for unit rows): (scores, ids), each (q, k).

    `queries` (q, dim) and `base` (n, dim) are float32 or float16 (a float16 base is read as
    is: half the memory traffic; scores are float32 sums either way). Results are sorted by
    score descending, ties broken by the lower id; any k >= 1 works, and slots past n hold
    score -inf and id -1. `exclude_self` drops base row i from query i's results (for
    queries that are the base itself). numpy / CPU torch in -> numpy / torch out (C++);
    CuPy / CUDA torch in -> the same framework out (CUDA, no host copy).
    """
    k = _check_k(k)
    if _cuda_pair(queries, base, "queries and base"):
        q = check_cuda_vectors(queries, "queries")
        b = check_cuda_vectors(base, "base", q.shape[1])
        return similarity.topk_cuda(q, b, k, exclude_self)
    q = np.ascontiguousarray(check_vectors(queries, "queries"), dtype=np.float32)
    b = np.ascontiguousarray(check_vectors(base, "base", q.shape[1], check_finite=False))
    scores, ids = similarity.topk_cpu(q, b, k, exclude_self)
    return like_input(scores, queries), like_input(ids, queries)


def centroid_distance(x: Any, centroids: Any) -> tuple[Any, Any]:
    """Cosine distance (1 - dot) of each row of x to its nearest centroid, and its index.

    `x` (n, dim) float32 or float16 (streamed in blocks, never copied whole), `centroids`
    (c >= 1, dim). Returns distance (n,) float32 and nearest (n,) int64, lowest index on
    ties. For the whole (n, c) matrix use `centroid_distances`.
    """
    if _cuda_pair(x, centroids, "x and centroids"):
        c = check_cuda_vectors(centroids, "centroids")
        a = check_cuda_vectors(x, "x", c.shape[1])
        if c.shape[0] == 0:
            raise ValueError("centroids is empty")
        best, nearest = similarity.nearest_centroid_cuda(a, c)
        return 1.0 - best, nearest
    c = np.ascontiguousarray(check_vectors(centroids, "centroids"), dtype=np.float32)
    a = np.ascontiguousarray(check_vectors(x, "x", c.shape[1], check_finite=False))
    if len(c) == 0:
        raise ValueError("centroids is empty")
    best, nearest = similarity.nearest_centroid_cpu(a, c)
    return like_input(1.0 - best, x), like_input(nearest, x)


def centroid_distances(x: Any, centroids: Any) -> Any:
    """The full (n, c) float32 matrix of cosine distances 1 - x @ centroids.T."""
    if _cuda_pair(x, centroids, "x and centroids"):
        c = check_cuda_vectors(centroids, "centroids").astype("float32")
        a = check_cuda_vectors(x, "x", c.shape[1]).astype("float32")
        return 1.0 - a.original @ c.original.T
    c = np.ascontiguousarray(check_vectors(centroids, "centroids"), dtype=np.float32)
    a = np.ascontiguousarray(check_vectors(x, "x", c.shape[1], check_finite=False))
    scores = similarity.centroid_scores_cpu(a, c)
    return like_input(np.subtract(1.0, scores, out=scores), x)


def pairs_above(x: Any, threshold: float, *, y: Any = None) -> tuple[Any, Any, Any]:
    """Every pair with cosine >= threshold as (i, j, score) arrays, sorted by (i, j).

    One set: pairs i < j. Two sets (y given): every (i in x, j in y). i and j are int64,
    score float32; the output grows with the pairs found (no cap). Blocked: memory is the
    output plus one score tile. On the CPU the sgemm tiles only nominate candidates (with a
    proven rounding margin) and each kept score is re-computed by one native dot, so the
    pairs and scores do not depend on how the rows are cut into blocks (Ray tasks included).
    """
    threshold = float(threshold)
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    other = x if y is None else y
    if _cuda_pair(x, other, "x and y"):
        a = check_cuda_vectors(x, "x")
        b = None if y is None else check_cuda_vectors(y, "y", a.shape[1])
        return similarity.pairs_cuda(a, threshold, b)
    a = np.ascontiguousarray(check_vectors(x, "x", check_finite=False))
    b = None if y is None else check_vectors(y, "y", a.shape[1], check_finite=False)
    b = None if b is None else np.ascontiguousarray(b)
    i, j, s = similarity.pairs_cpu(a, threshold, b)
    return like_input(i, x), like_input(j, x), like_input(s, x)
