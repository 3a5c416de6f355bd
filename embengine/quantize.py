"""Compact vectors: int8 codes with corpus-calibrated ranges, and sign bits with rescoring.

int8: each dimension's range [low, high] is calibrated once on the corpus (`fit`) and saved
with it, so a single query quantizes exactly as it would inside any batch (ranges never come
from the queries), and values outside the range clip to the ends instead of wrapping around.
A vector is 1 byte per dimension (384 dims: 384 bytes vs 1536 for float32).

Binary: one sign bit per dimension packed 8 per byte (384 dims: 48 bytes). Search by
Hamming distance, then rescore the top k * oversample candidates exactly against float32
vectors or int8 codes.

The kernels live in embengine.ops (topk_int8, topk_hamming); this module holds the maths
around them. Results follow the ranked-results contract: (scores, ids) of shape (q, k),
best first, ties to the lower id, empty slots -inf / -1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from embengine import io, ops
from embengine.errors import CorruptFileError, InvalidInputError
from embengine.ops import _check_k, check_vectors
from embengine.ops._arrays import to_numpy

CODE_MAX = 127  # codes span [-127, 127]: 255 levels, symmetric, never -128
LEVELS = 2 * CODE_MAX  # steps between low and high
STATE_KIND = "int8-quantizer"
DEFAULT_INT8_OVERSAMPLE = 4
DEFAULT_BINARY_OVERSAMPLE = 10

__all__ = [
    "Int8Quantizer",
    "binarize",
    "search_binary",
    "search_int8",
]


class Int8Quantizer:
    """Per-dimension affine int8 quantization: x ~ low + (code + 127) * step.

    step = (high - low) / 254 per dimension (1 where high == low, so a constant dimension
    quantizes to -127 and dequantizes back to its value).
    """

    def __init__(self, low: Any, high: Any) -> None:
        lo = np.asarray(low, dtype=np.float32)
        hi = np.asarray(high, dtype=np.float32)
        if lo.ndim != 1 or hi.shape != lo.shape or lo.size == 0:
            raise InvalidInputError(
                f"low and high must be 1-D of one length >= 1, got {lo.shape} and {hi.shape}"
            )
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            raise InvalidInputError("low and high must be finite")
        if (hi < lo).any():
            raise InvalidInputError(f"high < low in dimension {int(np.argmax(hi < lo))}")
        self.low, self.high = lo, hi
        width = hi.astype(np.float64) - lo.astype(np.float64)
        self.step = np.where(width > 0, width / LEVELS, 1.0)  # float64, fixed per quantizer

    @classmethod
    def fit(cls, vectors: Any, *, percentile: float = 100.0) -> Int8Quantizer:
        """Ranges from a corpus: per dimension the [100 - p, p] percentiles (p=100: min/max)."""
        x = check_vectors(vectors, "vectors")
        if len(x) == 0:
            raise InvalidInputError("cannot calibrate int8 ranges on an empty corpus")
        if not 50.0 < percentile <= 100.0:
            raise InvalidInputError(f"percentile must be in (50, 100], got {percentile}")
        if percentile == 100.0:
            return cls(x.min(axis=0), x.max(axis=0))
        low, high = np.percentile(x.astype(np.float32), [100.0 - percentile, percentile], axis=0)
        return cls(low, high)

    @property
    def dim(self) -> int:
        return int(self.low.size)

    def quantize(self, vectors: Any) -> np.ndarray:
        """(n, dim) int8 codes; values beyond the calibrated range clip to -127 / 127.

        Element-wise IEEE arithmetic on this object's fixed ranges only: a row's codes do
        not depend on the other rows given with it.
        """
        x = check_vectors(vectors, "vectors", self.dim)
        codes = np.rint((x.astype(np.float64) - self.low) / self.step) - CODE_MAX
        return np.clip(codes, -CODE_MAX, CODE_MAX).astype(np.int8)

    def dequantize(self, codes: Any) -> np.ndarray:
        """(n, dim) float32 values the codes stand for."""
        c = _int8_codes(codes, "codes", self.dim)
        return (self.low + (c.astype(np.float64) + CODE_MAX) * self.step).astype(np.float32)

    def to_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(arrays, meta) for embengine.io.save_arrays, or to embed in an index's state."""
        return {"int8_low": self.low, "int8_high": self.high}, {"kind": STATE_KIND}

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Int8Quantizer:
        if meta.get("kind") != STATE_KIND or not {"int8_low", "int8_high"} <= arrays.keys():
            raise CorruptFileError(f"not an int8 quantizer state (kind {meta.get('kind')!r})")
        try:
            return cls(arrays["int8_low"], arrays["int8_high"])
        except InvalidInputError as exc:
            raise CorruptFileError(f"corrupt int8 quantizer state: {exc}") from exc

    def save(self, path: str | Path) -> None:
        io.save_arrays(path, *self.to_state())

    @classmethod
    def load(cls, path: str | Path) -> Int8Quantizer:
        return cls.from_state(*io.load_arrays(path))


def _int8_codes(codes: Any, name: str, dim: int | None) -> np.ndarray:
    c = to_numpy(codes, name)
    if c.ndim != 2 or c.dtype != np.int8:
        raise InvalidInputError(f"{name} must be a 2-D int8 array, got {c.dtype} {c.shape}")
    if dim is not None and c.shape[1] != dim:
        raise InvalidInputError(f"{name} has dim {c.shape[1]}, expected {dim}")
    return c


def binarize(vectors: Any) -> np.ndarray:
    """Sign bits (x > 0) packed 8 per byte: (n, ceil(dim / 8)) uint8."""
    x = check_vectors(vectors, "vectors")
    return np.packbits(x > 0, axis=1)


def _query_weights(queries: np.ndarray, quantizer: Int8Quantizer) -> np.ndarray:
    """int8 query weights whose integer dot with codes ranks as q . dequantize(codes).

    q . (low + (c + 127) step) = const(q) + sum_j (q_j step_j) c_j, so the ranking needs
    w = q * step only; w is scaled per query to [-127, 127] (a positive factor: the order
    within a query is unchanged) and rounded, independently of the other queries.
    """
    w = queries.astype(np.float64) * quantizer.step
    peak = np.abs(w).max(axis=1, keepdims=True)
    scale = np.divide(CODE_MAX, peak, out=np.zeros_like(peak), where=peak > 0)
    return np.clip(np.rint(w * scale), -CODE_MAX, CODE_MAX).astype(np.int8)


def _float_dots(vectors: np.ndarray) -> Any:
    """dots(queries, ids): (q, m) float32 dots of query r with vectors[ids[r]]."""

    def dots(queries: np.ndarray, ids: np.ndarray) -> np.ndarray:
        rows = vectors[ids.ravel()].astype(np.float32, copy=False).reshape(*ids.shape, -1)
        return np.einsum("qmd,qd->qm", rows, queries.astype(np.float32))

    return dots


def _int8_dots(codes: np.ndarray, quantizer: Int8Quantizer) -> Any:
    """dots(queries, ids): q . dequantize(codes[ids]) without dequantizing the rows:
    q . (low + (c + 127) step) = (q . low + 127 sum(q step)) + (q step) . c, one float32
    matmul over the gathered codes (the dequantized form costs ten times more)."""

    def dots(queries: np.ndarray, ids: np.ndarray) -> np.ndarray:
        w = queries.astype(np.float64) * quantizer.step
        offset = queries.astype(np.float64) @ quantizer.low.astype(np.float64)
        offset += CODE_MAX * w.sum(axis=1)
        rows = codes[ids.ravel()].astype(np.float32).reshape(*ids.shape, -1)
        found = np.einsum("qmd,qd->qm", rows, w.astype(np.float32))
        return (found + offset[:, None]).astype(np.float32)

    return dots


def _rescore(
    queries: np.ndarray, candidates: np.ndarray, dots: Any, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact scores of each query's candidate ids by `dots` (see _float_dots / _int8_dots);
    the best k, ties to the lower id. Candidate id -1 is an empty slot."""
    nq, m = candidates.shape
    valid = candidates >= 0
    safe = np.where(valid, candidates, 0)
    exact = np.empty((nq, m), np.float32)
    step = max(1, (1 << 21) // max(1, m * queries.shape[1]))  # ~8 MiB of gathered rows
    for r0 in range(0, nq, step):
        exact[r0 : r0 + step] = dots(queries[r0 : r0 + step], safe[r0 : r0 + step])
    exact = np.where(valid, exact, np.float32(-np.inf))
    keyed_ids = np.where(valid, candidates, np.iinfo(np.int64).max)
    order = np.lexsort((keyed_ids, -exact), axis=1)[:, :k]
    scores = np.full((nq, k), -np.inf, dtype=np.float32)
    ids = np.full((nq, k), -1, dtype=np.int64)
    top_s = np.take_along_axis(exact, order, axis=1)
    top_i = np.take_along_axis(candidates, order, axis=1)
    scores[:, : order.shape[1]] = top_s
    ids[:, : order.shape[1]] = np.where(np.isneginf(top_s), -1, top_i)
    return scores, ids


def _float_queries(queries: Any, dim: int | None, quantizer: Int8Quantizer | None) -> np.ndarray:
    """float32 queries; int8 queries are taken as codes of `quantizer` and dequantized."""
    q = to_numpy(queries, "queries")
    if q.dtype == np.int8:
        if quantizer is None:
            raise InvalidInputError("int8 queries need the quantizer that made them")
        return quantizer.dequantize(q)
    return np.ascontiguousarray(check_vectors(q, "queries", dim), dtype=np.float32)


def search_int8(
    queries: Any,
    codes: Any,
    quantizer: Int8Quantizer,
    k: int,
    *,
    oversample: int = DEFAULT_INT8_OVERSAMPLE,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of float (or int8-coded) queries over int8 codes: (scores, ids), each (q, k).

    Asymmetric: the query stays float; the native int8 kernel ranks by the query's int8
    weights (see _query_weights), and its k * oversample best are rescored exactly as
    q . dequantize(code), which is the returned score (a cosine estimate for unit rows).
    """
    c = _int8_codes(codes, "codes", quantizer.dim)
    q = _float_queries(queries, quantizer.dim, quantizer)
    k, oversample = _check_k(k), _check_oversample(oversample)
    _, candidates = ops.topk_int8(_query_weights(q, quantizer), c, min(k * oversample, len(c)) or 1)
    return _rescore(q, candidates, _int8_dots(c, quantizer), k)


def search_binary(
    queries: Any,
    bits: Any,
    k: int,
    *,
    rescore_with: Any = None,
    quantizer: Int8Quantizer | None = None,
    oversample: int = DEFAULT_BINARY_OVERSAMPLE,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by Hamming distance over packed sign bits, optionally rescored exactly.

    `queries`: float (q, dim) rows, or already packed uint8 bits (then no rescoring).
    Without `rescore_with` the scores are matching bits. With `rescore_with` float32 (n, dim)
    vectors, or int8 (n, dim) codes plus their `quantizer`, the k * oversample best by
    Hamming are rescored as exact dots with the float query and the best k returned.
    """
    b = to_numpy(bits, "bits")
    if b.ndim != 2 or b.dtype != np.uint8:
        raise InvalidInputError(f"bits must be a 2-D uint8 array, got {b.dtype} {b.shape}")
    k, oversample = _check_k(k), _check_oversample(oversample)
    q = to_numpy(queries, "queries")
    if q.dtype == np.uint8:
        if rescore_with is not None:
            raise InvalidInputError("rescoring needs float queries, got packed uint8 bits")
        return ops.topk_hamming(q, b, k)
    qf = _float_queries(q, None, quantizer)
    if (qf.shape[1] + 7) // 8 != b.shape[1]:
        raise InvalidInputError(f"queries have dim {qf.shape[1]}, bits hold {b.shape[1]} bytes")
    if rescore_with is None:
        return ops.topk_hamming(binarize(qf), b, k)
    rows = _rescore_rows(rescore_with, quantizer, len(b), qf.shape[1])
    _, candidates = ops.topk_hamming(binarize(qf), b, min(k * oversample, len(b)) or 1)
    return _rescore(qf, candidates, rows, k)


def _rescore_rows(vectors: Any, quantizer: Int8Quantizer | None, n: int, dim: int) -> Any:
    v = to_numpy(vectors, "rescore_with")
    if v.ndim != 2 or v.shape != (n, dim):
        raise InvalidInputError(f"rescore_with must have shape {(n, dim)}, got {v.shape}")
    if v.dtype == np.int8:
        if quantizer is None:
            raise InvalidInputError("rescoring with int8 codes needs their quantizer")
        return _int8_dots(v, quantizer)
    if v.dtype not in (np.float32, np.float16):
        raise InvalidInputError(f"rescore_with must be float32, float16 or int8, got {v.dtype}")
    return _float_dots(v)


def _check_oversample(oversample: int) -> int:
    if isinstance(oversample, bool) or not isinstance(oversample, (int, np.integer)):
        raise InvalidInputError(f"oversample must be an integer >= 1, got {oversample!r}")
    if oversample < 1:
        raise InvalidInputError(f"oversample must be an integer >= 1, got {oversample}")
    return int(oversample)
