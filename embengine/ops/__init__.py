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
from embengine.errors import BackendError, InvalidInputError
from embengine.ops import similarity
from embengine.ops._arrays import (
    CudaArray,
    cuda_array,
    is_cuda_array,
    like_input,
    same_device,
    to_host,
    to_numpy,
)
from embengine.ops.compact import topk_hamming, topk_int8

DEFAULT_EPS = 1e-12  # as torch.nn.functional.normalize and sentence-transformers
# The most (score, id) slots one top-k call returns: q * k above this is refused rather than
# allocated (1.5 GiB of scores and ids). The work itself is clamped to min(k, n) per query.
MAX_RESULT_SLOTS = 1 << 27

__all__ = [
    "DEFAULT_EPS",
    "MAX_RESULT_SLOTS",
    "centroid_distance",
    "centroid_distances",
    "mean_pool_normalize",
    "normalize_rows_",
    "pairs_above",
    "topk_cosine",
    "topk_hamming",
    "topk_int8",
]


def _cuda_kernels() -> Any:
    module = cuda_module()
    if module is None:
        raise BackendError("a CUDA array was given but embengine was built without CUDA kernels")
    return module


def _check_mask(m: np.ndarray) -> np.ndarray:
    """A (b, t) mask of 0/1 integers or bools as C-contiguous int32, or a clear error.

    0.5 or 2**32 would silently count as padding once cast to int32, so only exact 0 / 1
    values of an integer or bool dtype are taken.
    """
    if m.dtype == np.bool_:
        return np.ascontiguousarray(m, dtype=np.int32)
    if m.dtype.kind not in "iu":
        raise InvalidInputError(f"mask must hold 0/1 integers or bools, got dtype {m.dtype}")
    if m.size:
        bad = (m != 0) & (m != 1)
        if bad.any():
            pos = tuple(int(i) for i in np.argwhere(bad)[0])
            raise InvalidInputError(f"mask must hold only 0 and 1, got {m[pos]} at {pos}")
    return np.ascontiguousarray(m, dtype=np.int32)


def _pooled_error(out: Any, states: Any, mask: Any) -> InvalidInputError:
    """Name the first row the pooling kernel could not normalise, and why (error path only)."""
    o = to_host(out)
    row = int(np.argmax(~np.isfinite(o).all(axis=1)))
    s = to_host(states)
    m = to_host(mask)
    real = np.asarray(s[row], dtype=np.float32)[np.asarray(m[row]) != 0]
    if not np.isfinite(real).all():
        return InvalidInputError(
            f"states has NaN or inf values in a real token of row {row} (shape {s.shape})"
        )
    return InvalidInputError(
        f"row {row} of states overflowed float32 when pooled (values too large, shape {s.shape})"
    )


def mean_pool_normalize(states: Any, mask: Any, *, eps: float = DEFAULT_EPS) -> Any:
    """Masked mean of token states, L2-normalised: one fused pass.

    `states` has shape (batch, tokens, dim), float32 or float16 (bfloat16 on CUDA), any
    layout (non-contiguous input is copied); `mask` has shape (batch, tokens) and holds 0 / 1
    integers or bools (anything else raises). Returns (batch, dim) float32 unit rows; a row
    with no real token comes back as zeros, a row of huge values (>= 1e19) is still scaled
    correctly, and NaN / inf in a real token raises InvalidInputError naming the row.
    """
    if is_cuda_array(states):
        return _mean_pool_normalize_cuda(states, mask, eps)
    s = to_numpy(states, "states")
    if s.dtype not in (np.float32, np.float16):
        s = s.astype(np.float32)
    m = to_numpy(mask, "mask")
    if s.ndim != 3:
        raise InvalidInputError(f"states must have shape (batch, tokens, dim), got {s.shape}")
    if m.ndim != 2 or m.shape != s.shape[:2]:
        raise InvalidInputError(
            f"mask must have shape {s.shape[:2]} to match states {s.shape}, got {m.shape}"
        )
    m32 = _check_mask(m)
    out, not_finite = _native.mean_pool_normalize(np.ascontiguousarray(s), m32, float(eps))
    if not_finite:
        raise _pooled_error(out, s, m32)
    return like_input(out, states)


def _mean_pool_normalize_cuda(states: Any, mask: Any, eps: float) -> Any:
    kernels = _cuda_kernels()
    s = cuda_array(states)
    if len(s.shape) != 3:
        raise InvalidInputError(f"states must have shape (batch, tokens, dim), got {s.shape}")
    if s.dtype not in ("float32", "float16", "bfloat16"):
        s = s.astype("float32")
    s = s.astype(s.dtype)  # contiguous
    if not is_cuda_array(mask):
        raise InvalidInputError("states is on the GPU, so mask must be too")
    m = cuda_array(mask)
    if m.shape != s.shape[:2]:
        raise InvalidInputError(
            f"mask must have shape {s.shape[:2]} to match states {s.shape}, got {m.shape}"
        )
    if m.dtype != "bool" and not m.dtype.startswith(("int", "uint")):
        raise InvalidInputError(f"mask must hold 0/1 integers or bools, got dtype {m.dtype}")
    same_device({"states": s, "mask": m})
    b, t, d = s.shape
    with s.on_device():
        g = similarity._Gpu(s)
        out = g.empty((b, d), "float32")
        if b == 0 or d == 0:
            return out
        if t == 0:  # no tokens at all: every row is all padding
            g.zero(out)
            return out
        bad_mask = int(((m.original < 0) | (m.original > 1)).sum()) if m.dtype != "bool" else 0
        if bad_mask:
            raise InvalidInputError(f"mask must hold only 0 and 1 ({bad_mask} other values)")
        m32 = m.astype("int32")
        not_finite = g.full((1,), 0, "int64")
        kernels.mean_pool_normalize(
            s.ptr, s.dtype_code, m32.ptr, g.ptr(out), b, t, d, float(eps), g.ptr(not_finite),
            s.stream(),
        )  # fmt: skip
        if g.read(not_finite):
            raise _pooled_error(out, s.original, m32.original)
    return out


def normalize_rows_(x: Any, *, eps: float = DEFAULT_EPS) -> Any:
    """Scale the rows of a float (n, dim) array to unit norm in place, and return it.

    Zero rows stay zero (the norm is clamped at eps); rows of huge values (>= 1e19) are
    scaled correctly. Any layout is accepted: a non-contiguous or non-float32 array is
    normalised in a float32 copy and written back. NaN / inf raises InvalidInputError naming
    the row, with nothing changed.
    """
    if is_cuda_array(x):
        return _normalize_rows_cuda(x, eps)
    a = to_numpy(x, "x")
    if a.ndim != 2:
        raise InvalidInputError(f"x must have shape (n, dim), got {a.shape}")
    if not a.flags.writeable:
        raise InvalidInputError("x must be writeable to be normalised in place")
    if a.dtype.kind != "f":
        raise InvalidInputError(f"x must be a float array to normalise in place, got {a.dtype}")
    if a.size and not np.isfinite(a).all():
        row = int(np.argmax(~np.isfinite(a).all(axis=1)))
        raise InvalidInputError(f"x has NaN or inf values (first in row {row}, shape {a.shape})")
    if a.dtype == np.float32 and a.flags.c_contiguous:
        _native.normalize_rows(a, float(eps))
        return x
    work = np.ascontiguousarray(a, dtype=np.float32)
    _native.normalize_rows(work, float(eps))
    a[...] = work
    return x


def _normalize_rows_cuda(x: Any, eps: float) -> Any:
    a = cuda_array(x)
    if len(a.shape) != 2 or a.dtype not in ("float32", "float16", "bfloat16"):
        raise InvalidInputError(
            f"x must be a float32, float16 or bfloat16 (n, dim) array, got {a.dtype} {a.shape}"
        )
    n, d = a.shape
    if n == 0 or d == 0:
        return x
    work = a.astype("float32")
    with a.on_device():
        g = similarity._Gpu(a)
        scales = g.empty((2 * n,), "float32")
        not_finite = g.full((1,), 0, "int64")
        _cuda_kernels().normalize_rows(
            work.ptr, n, d, float(eps), g.ptr(scales), g.ptr(not_finite), a.stream()
        )
        if g.read(not_finite):
            similarity.require_finite_rows("x", a.original)
        if work is not a:
            if a.framework == "torch":
                a.original.copy_(work.original)
            else:
                import cupy

                cupy.copyto(a.original, work.original, casting="unsafe")
    return x


def check_vectors(
    x: Any, name: str, dim: int | None = None, *, check_finite: bool = True
) -> np.ndarray:
    """A finite 2-D float array, or InvalidInputError naming the array, its shape and problem.

    check_finite=False leaves the NaN / inf check to the kernel (it counts non-finite
    scores, saving a pass over a large data side).
    """
    a = to_numpy(x, name)
    if a.ndim != 2:
        raise InvalidInputError(f"{name} must have shape (n, dim), got {a.shape}")
    if dim is not None and a.shape[1] != dim:
        raise InvalidInputError(f"{name} has dim {a.shape[1]}, expected {dim} (shape {a.shape})")
    if a.dtype not in (np.float32, np.float16):
        a = a.astype(np.float32)
    if check_finite and a.size and not np.isfinite(a).all():
        bad = int(np.argwhere(~np.isfinite(a))[0][0])
        raise InvalidInputError(
            f"{name} has NaN or inf values (first in row {bad}, shape {a.shape})"
        )
    return a


def _cuda_pair(a: Any, b: Any, names: str) -> bool:
    """True when both arrays are on the GPU, False when both are not; mixed raises."""
    on_gpu = is_cuda_array(a), is_cuda_array(b)
    if on_gpu[0] != on_gpu[1]:
        raise InvalidInputError(f"{names} must both be on the GPU or both on the CPU")
    return on_gpu[0]


def check_cuda_vectors(
    x: Any, name: str, dim: int | None = None, *, check_finite: bool = False
) -> CudaArray:
    """A 2-D float GPU array, or InvalidInputError naming the array, its shape and problem.

    NaN / inf are not looked for by default: the kernels count non-finite scores as they go
    (no second pass over the data, no host sync) and the op raises afterwards, naming the
    row. check_finite: look now (one pass and one sync), for arrays kept beyond one op.
    """
    a = cuda_array(x)
    if len(a.shape) != 2:
        raise InvalidInputError(f"{name} must have shape (n, dim), got {a.shape}")
    if dim is not None and a.shape[1] != dim:
        raise InvalidInputError(f"{name} has dim {a.shape[1]}, expected {dim} (shape {a.shape})")
    if a.dtype not in ("float32", "float16", "bfloat16"):
        a = a.astype("float32")
    if check_finite:
        similarity.require_finite_rows(name, a.original)
    return a


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidInputError(f"k must be an integer >= 1, got {k!r}")
    return int(k)


def _check_result_size(nq: int, k: int, n: int) -> None:
    """Refuse a (q, k) result too large to allocate, saying what would fit."""
    if nq * k > MAX_RESULT_SLOTS:
        raise InvalidInputError(
            f"k={k} for {nq} queries asks for {nq * k:,} result slots, over the limit of "
            f"{MAX_RESULT_SLOTS:,} (embengine.ops.MAX_RESULT_SLOTS); the base has {n:,} rows, "
            f"so k={max(1, min(n, MAX_RESULT_SLOTS // max(nq, 1))):,} already returns all "
            "that can be returned"
        )


def topk_cosine(
    queries: Any, base: Any, k: int, *, exclude_self: bool = False, check_finite: bool = True
) -> tuple[Any, Any]:
    """Exact top-k by inner product (cosine for unit rows): (scores, ids), each (q, k).

    `queries` (q, dim) and `base` (n, dim) are float32 or float16 (bfloat16 too on CUDA; a
    float16 / bfloat16 base is read as is: half the memory traffic; scores are float32 sums
    either way). Results are sorted by score descending, ties broken by the lower id. Any
    k >= 1 works: the work is clamped to min(k, n) per query and slots past n hold score -inf
    and id -1; a (q, k) result over MAX_RESULT_SLOTS slots is refused (InvalidInputError)
    rather than allocated. `exclude_self` drops base row i from query i's results (for
    queries that are the base itself). NaN / inf in either array raises InvalidInputError
    naming the row; check_finite=False skips those scores silently instead (on the GPU that
    saves the call's one host sync). numpy / CPU torch in -> numpy / torch out (C++);
    CuPy / CUDA torch in -> the same framework out (CUDA, no host copy).
    """
    k = _check_k(k)
    if _cuda_pair(queries, base, "queries and base"):
        q = check_cuda_vectors(queries, "queries")
        b = check_cuda_vectors(base, "base", q.shape[1])
        same_device({"queries": q, "base": b})
        _check_result_size(q.shape[0], k, b.shape[0])
        return similarity.topk_cuda(q, b, k, exclude_self, check_finite)
    q = np.ascontiguousarray(check_vectors(queries, "queries"), dtype=np.float32)
    b = np.ascontiguousarray(check_vectors(base, "base", q.shape[1], check_finite=False))
    _check_result_size(len(q), k, len(b))
    scores, ids = similarity.topk_cpu(q, b, k, exclude_self, check_finite)
    return like_input(scores, queries), like_input(ids, queries)


def centroid_distance(x: Any, centroids: Any, *, check_finite: bool = True) -> tuple[Any, Any]:
    """Cosine distance (1 - dot) of each row of x to its nearest centroid, and its index.

    `x` (n, dim) float32 or float16 (bfloat16 too on CUDA; streamed in blocks, never copied
    whole), `centroids` (c >= 1, dim). Returns distance (n,) float32 and nearest (n,) int64,
    lowest index on ties. For the whole (n, c) matrix use `centroid_distances`.
    check_finite as in topk_cosine.
    """
    if _cuda_pair(x, centroids, "x and centroids"):
        c = check_cuda_vectors(centroids, "centroids")
        a = check_cuda_vectors(x, "x", c.shape[1])
        same_device({"x": a, "centroids": c})
        if c.shape[0] == 0:
            raise InvalidInputError("centroids is empty")
        best, nearest = similarity.nearest_centroid_cuda(a, c, check_finite)
        return 1.0 - best, nearest
    c = np.ascontiguousarray(check_vectors(centroids, "centroids"), dtype=np.float32)
    a = np.ascontiguousarray(check_vectors(x, "x", c.shape[1], check_finite=False))
    if len(c) == 0:
        raise InvalidInputError("centroids is empty")
    best, nearest = similarity.nearest_centroid_cpu(a, c, check_finite)
    return like_input(1.0 - best, x), like_input(nearest, x)


def centroid_distances(x: Any, centroids: Any, *, check_finite: bool = True) -> Any:
    """The full (n, c) float32 matrix of cosine distances 1 - x @ centroids.T."""
    if _cuda_pair(x, centroids, "x and centroids"):
        c = check_cuda_vectors(centroids, "centroids")
        a = check_cuda_vectors(x, "x", c.shape[1])
        same_device({"x": a, "centroids": c})
        scores = similarity.centroid_scores_cuda(a, c, check_finite)
        return 1.0 - scores
    c = np.ascontiguousarray(check_vectors(centroids, "centroids"), dtype=np.float32)
    a = np.ascontiguousarray(check_vectors(x, "x", c.shape[1], check_finite=False))
    scores = similarity.centroid_scores_cpu(a, c, check_finite)
    return like_input(np.subtract(1.0, scores, out=scores), x)


def pairs_above(
    x: Any, threshold: float, *, y: Any = None, check_finite: bool = True
) -> tuple[Any, Any, Any]:
    """Every pair with cosine >= threshold as (i, j, score) arrays, sorted by (i, j).

    One set: pairs i < j. Two sets (y given): every (i in x, j in y). i and j are int64,
    score float32; the output grows with the pairs found (no cap). Blocked: memory is the
    output plus one score tile. The (cu)BLAS tiles only nominate candidates (within a proven
    rounding margin) and each kept score is re-computed in one fixed summation order shared
    by the CPU and the GPU, so the pairs and scores do not depend on blocking or device
    (Ray tasks included). check_finite as in topk_cosine.
    """
    threshold = float(threshold)
    if not np.isfinite(threshold):
        raise InvalidInputError(f"threshold must be finite, got {threshold}")
    other = x if y is None else y
    if _cuda_pair(x, other, "x and y"):
        a = check_cuda_vectors(x, "x")
        b = None if y is None else check_cuda_vectors(y, "y", a.shape[1])
        same_device({"x": a} if b is None else {"x": a, "y": b})
        return similarity.pairs_cuda(a, threshold, b, check_finite)
    a = np.ascontiguousarray(check_vectors(x, "x", check_finite=False))
    b = None if y is None else check_vectors(y, "y", a.shape[1], check_finite=False)
    b = None if b is None else np.ascontiguousarray(b)
    i, j, s = similarity.pairs_cpu(a, threshold, b, check_finite)
    return like_input(i, x), like_input(j, x), like_input(s, x)
