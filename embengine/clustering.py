"""Spherical k-means on unit vectors: the one clustering routine every job shares.

Anomaly centroids, dedup partitions and recommender taste profiles all cluster unit rows
by cosine; they differ only in size, so they share this code and choose the seeding.
"""

from __future__ import annotations

import numpy as np

from embengine import ops
from embengine.errors import InvalidInputError


def spherical_kmeans(
    x: np.ndarray,
    k: int,
    *,
    seed: int = 0,
    iterations: int = 20,
    sample: int | None = None,
    init: str = "k-means++",
) -> np.ndarray:
    """(k', dim) unit centroids of the unit rows of `x` (k' = min(k, distinct rows)).

    Trained on a seeded sample of `sample` rows (all rows when None). `init`: "k-means++"
    (careful seeding, best for a few centroids) or "random" (rows drawn at random: cheap
    for hundreds of partitions). Lloyd steps assign with ops.centroid_distance and stop
    when the assignment stops changing; an emptied centroid keeps its last position.
    k=1 is the normalised mean, computed directly.
    """
    n = len(x)
    if n == 0 or k < 1:
        raise InvalidInputError(f"k-means needs k >= 1 and rows, got k={k} for {n} rows")
    if init not in ("k-means++", "random"):
        raise InvalidInputError(f"init must be 'k-means++' or 'random', got {init!r}")
    rng = np.random.default_rng(seed)
    if sample is not None and sample < n:
        x = x[np.sort(rng.choice(n, sample, replace=False))]
    x = np.ascontiguousarray(x, dtype=np.float32)
    if k == 1 or len(x) == 1:
        return unit_mean(x)[None, :]
    k = min(k, len(x))
    if init == "random":
        centroids = x[rng.choice(len(x), k, replace=False)].copy()
    else:
        centroids = _kmeans_pp(x, k, rng)
    assignment = np.full(len(x), -1)
    for _ in range(iterations):
        _, nearest = nearest_centroid(x, centroids)
        if np.array_equal(nearest, assignment):
            break
        assignment = nearest
        sums = np.zeros((len(centroids), x.shape[1]), dtype=np.float64)
        np.add.at(sums, assignment, x)
        norms = np.linalg.norm(sums, axis=1)
        filled = norms > 0
        centroids = centroids.copy()
        centroids[filled] = (sums[filled] / norms[filled, None]).astype(np.float32)
    return np.ascontiguousarray(centroids, dtype=np.float32)


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    chosen = [int(rng.integers(len(x)))]
    distance, _ = ops.centroid_distance(x, x[chosen])
    for _ in range(1, k):
        weights = np.maximum(distance.astype(np.float64), 0.0)
        if weights.sum() <= 0:  # fewer distinct points than k
            break
        chosen.append(int(rng.choice(len(x), p=weights / weights.sum())))
        new_distance, _ = ops.centroid_distance(x, x[chosen[-1:]])
        distance = np.minimum(distance, new_distance)
    return x[chosen].copy()


def nearest_centroid(
    vectors: np.ndarray, centroids: np.ndarray, *, block: int = 16_384
) -> tuple[np.ndarray, np.ndarray]:
    """ops.centroid_distance over row blocks, so the distance tile stays small."""
    dist = np.empty(len(vectors), dtype=np.float32)
    nearest = np.empty(len(vectors), dtype=np.int64)
    for a in range(0, len(vectors), block):
        dist[a : a + block], nearest[a : a + block] = ops.centroid_distance(
            vectors[a : a + block], centroids
        )
    return dist, nearest


def unit_mean(x: np.ndarray) -> np.ndarray:
    """The mean row of x scaled to unit length (zeros stay zeros)."""
    mean = x.astype(np.float64).mean(axis=0)
    norm = np.linalg.norm(mean)
    return (mean / norm if norm > 0 else mean).astype(np.float32)
