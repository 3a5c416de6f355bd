"""Plain numpy versions of every kernel: slow, obviously right, and the tests' oracle."""

from __future__ import annotations

import numpy as np


def mean_pool_normalize(states: np.ndarray, mask: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Masked mean over tokens, then unit L2 norm (as sentence-transformers computes it)."""
    states = np.asarray(states, dtype=np.float64)
    weights = (np.asarray(mask) != 0).astype(np.float64)[:, :, None]
    summed = (states * weights).sum(axis=1)
    counts = np.maximum(weights.sum(axis=1), 1e-9)
    return normalize_rows(summed / counts, eps)


def normalize_rows(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit norm; rows with norm below eps are divided by eps (zeros stay 0)."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)
    return (x / norms).astype(np.float32)


def topk_cosine(
    queries: np.ndarray, base: np.ndarray, k: int, *, exclude_self: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product (cosine for unit rows): (scores, ids), each (q, k).

    Sorted by score descending, ties broken by the lower id. When k > n the missing
    slots hold score -inf and id -1. With exclude_self, query i never returns base row i
    (for queries that are the base itself).
    """
    q = np.asarray(queries, dtype=np.float64)
    b = np.asarray(base, dtype=np.float64)
    scores = q @ b.T
    if exclude_self:
        np.fill_diagonal(scores, -np.inf)
    n = b.shape[0]
    out_scores = np.full((q.shape[0], k), -np.inf, dtype=np.float32)
    out_ids = np.full((q.shape[0], k), -1, dtype=np.int64)
    for row in range(q.shape[0]):
        order = np.lexsort((np.arange(n), -scores[row]))  # score desc, then id asc
        order = [i for i in order if np.isfinite(scores[row, i])][:k]
        out_scores[row, : len(order)] = scores[row, order]
        out_ids[row, : len(order)] = order
    return out_scores, out_ids


def centroid_distance(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine distance (1 - dot, for unit rows) to the nearest centroid, and its index.

    Ties go to the lower centroid index.
    """
    distances = centroid_distances(x, centroids)
    nearest = distances.argmin(axis=1)
    return distances[np.arange(len(x)), nearest].astype(np.float32), nearest.astype(np.int64)


def centroid_distances(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """The full (n, c) matrix of cosine distances 1 - x @ centroids.T."""
    return 1.0 - np.asarray(x, np.float64) @ np.asarray(centroids, np.float64).T


def pairs_above(
    x: np.ndarray, threshold: float, *, y: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair with inner product >= threshold: (i, j, score), sorted by (i, j).

    Within one set (y is None) only i < j; across two sets every (i in x, j in y).
    """
    a = np.asarray(x, dtype=np.float64)
    b = a if y is None else np.asarray(y, dtype=np.float64)
    scores = a @ b.T
    keep = scores >= threshold
    if y is None:
        keep &= np.triu(np.ones_like(keep, dtype=bool), k=1)
    i, j = np.nonzero(keep)
    return i.astype(np.int64), j.astype(np.int64), scores[i, j].astype(np.float32)
