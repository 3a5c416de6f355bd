"""Fusing dense and lexical scores of the same candidates into one ranking.

Both fusions take score matrices over a candidate set (rows = queries, columns =
candidates): `dense` is -inf where a column is no candidate for that query, `lexical` is
-inf where the candidate shares no term with the query (it is then absent from the lexical
ranking). They return fused scores of the same shape, higher is better.
"""

from __future__ import annotations

import numpy as np

FUSIONS = ("rrf", "score")
RRF_K = 60  # the constant of Cormack et al. 2009, used by most search engines


def ranks(scores: np.ndarray) -> np.ndarray:
    """1-based rank of each column within its row (ties broken by column order)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    out = np.empty_like(order)
    np.put_along_axis(out, order, np.arange(1, scores.shape[1] + 1)[None, :], axis=1)
    return out


def reciprocal_rank(dense: np.ndarray, lexical: np.ndarray, weight: float) -> np.ndarray:
    """weight / (60 + dense rank) + (1 - weight) / (60 + lexical rank), 0 when absent."""
    lexical_part = np.where(np.isfinite(lexical), (1 - weight) / (RRF_K + ranks(lexical)), 0.0)
    fused = weight / (RRF_K + ranks(dense)) + lexical_part
    return np.where(np.isfinite(dense), fused, -np.inf)


def normalized_score(dense: np.ndarray, lexical: np.ndarray, weight: float) -> np.ndarray:
    """weight * minmax(dense) + (1 - weight) * minmax(lexical), min-max over each row
    (a side with one candidate scores it 1; absent candidates score 0)."""
    fused = weight * _minmax(dense) + (1 - weight) * _minmax(lexical)
    return np.where(np.isfinite(dense), fused, -np.inf)


def _minmax(scores: np.ndarray) -> np.ndarray:
    finite = np.isfinite(scores)
    low = np.where(finite, scores, np.inf).min(axis=1, keepdims=True)
    high = np.where(finite, scores, -np.inf).max(axis=1, keepdims=True)
    span = np.where(high > low, high - low, 1.0)
    scaled = np.where(high > low, (scores - low) / span, 1.0)  # a lone candidate is the best
    return np.where(finite, scaled, 0.0)


def fuse(dense: np.ndarray, lexical: np.ndarray, *, method: str, weight: float) -> np.ndarray:
    if method == "rrf":
        return reciprocal_rank(dense, lexical, weight)
    if method == "score":
        return normalized_score(dense, lexical, weight)
    raise ValueError(f"fusion must be one of {FUSIONS}, got {method!r}")
