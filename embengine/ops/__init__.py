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
from embengine.ops import reference
from embengine.ops._arrays import cuda_array, is_cuda_array, like_input, to_numpy

DEFAULT_EPS = 1e-12  # as torch.nn.functional.normalize and sentence-transformers

__all__ = [
    "DEFAULT_EPS",
    "centroid_distance",
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


def check_vectors(x: Any, name: str, dim: int | None = None) -> np.ndarray:
    """A finite 2-D float array, or ValueError naming the array, its shape and the problem."""
    a = to_numpy(x, name)
    if a.ndim != 2:
        raise ValueError(f"{name} must have shape (n, dim), got {a.shape}")
    if dim is not None and a.shape[1] != dim:
        raise ValueError(f"{name} has dim {a.shape[1]}, expected {dim} (shape {a.shape})")
    if a.dtype not in (np.float32, np.float16):
        a = a.astype(np.float32)
    if a.size and not np.isfinite(a).all():
        bad = int(np.argwhere(~np.isfinite(a))[0][0])
        raise ValueError(f"{name} has NaN or inf values (first in row {bad}, shape {a.shape})")
    return a


def topk_cosine(
    queries: Any, base: Any, k: int, *, exclude_self: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product (cosine for unit rows): (scores, ids), each (q, k).

    Sorted by score descending, ties broken by the lower id; slots past n hold score
    -inf and id -1. `exclude_self` drops base row i from query i's results (queries == base).
    """
    q = check_vectors(queries, "queries")
    b = check_vectors(base, "base", q.shape[1])
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return reference.topk_cosine(q, b, k, exclude_self=exclude_self)


def centroid_distance(x: Any, centroids: Any) -> tuple[np.ndarray, np.ndarray]:
    """Cosine distance (1 - dot) of each row to its nearest centroid, and that centroid's index."""
    c = check_vectors(centroids, "centroids")
    a = check_vectors(x, "x", c.shape[1])
    if len(c) == 0:
        raise ValueError("centroids is empty")
    return reference.centroid_distance(a, c)


def pairs_above(
    x: Any, threshold: float, *, y: Any = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair with cosine >= threshold as (i, j, score) arrays, sorted by (i, j).

    One set: pairs i < j. Two sets (y given): every (i in x, j in y).
    """
    a = check_vectors(x, "x")
    b = None if y is None else check_vectors(y, "y", a.shape[1])
    return reference.pairs_above(a, threshold, y=b)
