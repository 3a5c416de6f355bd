"""Anomaly detection on event streams: how far a new line is from recent normal traffic.

The detector keeps a rolling window of the last `window` normal vectors and their scores.
A line's score combines two distances (cosine, 0 = identical):

* `centroid`: distance to the nearest centroid of the window (its mean, or k-means
  centroids when normal traffic is multi-modal): how atypical the line is;
* `novelty`: distance to the nearest single line of the window: how new it is.

The score is ``min(centroid, novelty_weight * novelty)``: a line is anomalous only when it
is both atypical and unlike anything seen recently. Centroid distance alone ranks rare but
known messages above real failures; nearest-line distance alone flags every new normal
message; on Loghub BGL the combination beats both (see README, "Anomaly detection").
`novelty_weight=None` gives the plain centroid rule.

The threshold is the empirical `quantile` of the window's scores, each computed before the
line joined the window (leave-one-out at `fit`), so on stationary normal traffic about
``1 - quantile`` of the lines are flagged. Log lines are masked (numbers, hex ids, IPs,
timestamps, paths: `LogMask`) before embedding unless `mask=None`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from embengine import ops
from embengine.clustering import spherical_kmeans
from embengine.io import load_state, malformed_is_corrupt, save_arrays
from embengine.tasks.logmask import LogMask
from embengine.validation import check_texts

if TYPE_CHECKING:
    from embengine.engine import Engine

_KIND = "anomaly_detector"
DEFAULT_MASK = LogMask()
# Identical (masked) lines have cosine 1 only up to float32 rounding; distances below this
# are exactly 0, so that a repeat never edges over a threshold of 0 by noise.
SAME_LINE = 1e-5


class Detection(NamedTuple):
    """One line of a stream, as `AnomalyDetector.process` judged it."""

    text: str
    score: float
    anomalous: bool
    threshold: float


class AnomalyDetector:
    """Scores texts against a rolling window of normal ones; see the module docstring.

    Args:
        engine: embeds the texts.
        window: how many recent normal lines define "normal" (the oldest leave first).
        quantile: the threshold is this quantile of the window's scores, in (0, 1).
        centroids: 1 for the window mean, more for seeded spherical k-means.
        novelty_weight: weight of the nearest-line distance in the score; None for the
            centroid distance alone.
        mask: a callable applied to each text before embedding (default `LogMask()`), or
            None to embed texts as given.
        seed: seeds k-means.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        window: int = 5000,
        quantile: float = 0.99,
        centroids: int = 1,
        novelty_weight: float | None = 5.0,
        mask: Callable[[str], str] | None = DEFAULT_MASK,
        seed: int = 0,
    ) -> None:
        if window < 2:
            raise ValueError(f"window must be >= 2, got {window}")
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile must be in (0, 1), got {quantile}")
        if centroids < 1:
            raise ValueError(f"centroids must be >= 1, got {centroids}")
        if novelty_weight is not None and novelty_weight <= 0:
            raise ValueError(f"novelty_weight must be > 0 or None, got {novelty_weight}")
        self.engine = engine
        self.window = int(window)
        self.quantile = float(quantile)
        self.n_centroids = int(centroids)
        self.novelty_weight = novelty_weight
        self.mask = mask
        self.seed = int(seed)
        self._vectors = np.zeros((0, engine.dim), np.float32)  # the window, oldest first
        self._scores = np.zeros(0, np.float32)  # each window line's score when it joined
        self._centroids = np.zeros((0, engine.dim), np.float32)

    # -- state ---------------------------------------------------------------------------

    @property
    def fitted(self) -> bool:
        return len(self._vectors) > 0

    @property
    def threshold(self) -> float:
        """The current threshold: `quantile` of the window's scores."""
        self._check_fitted()
        return float(np.quantile(self._scores, self.quantile))

    @property
    def centroids(self) -> np.ndarray:
        """(centroids, dim) float32 unit rows."""
        return self._centroids.copy()

    def __len__(self) -> int:
        """Lines in the window."""
        return len(self._vectors)

    # -- texts ---------------------------------------------------------------------------

    def embed(self, texts: Iterable[str]) -> np.ndarray:
        """Mask (when configured) and embed: (n, dim) float32 unit rows."""
        items = check_texts(texts)
        if self.mask is not None:
            items = [self.mask(t) for t in items]
        return self.engine.embed(items)

    def fit(self, normal_texts: Sequence[str]) -> AnomalyDetector:
        """Start from these normal lines (the last `window` of them are kept)."""
        return self.fit_vectors(self.embed(normal_texts))

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """(n,) float32 anomaly scores; higher is more anomalous."""
        return self.score_vectors(self.embed(texts))

    def is_anomalous(self, texts: Sequence[str]) -> np.ndarray:
        """(n,) bool: score above the current threshold."""
        return self.score(texts) > self.threshold

    def update(self, normal_texts: Sequence[str]) -> None:
        """Add lines known to be normal; the oldest leave; centroids and threshold follow."""
        self.update_vectors(self.embed(normal_texts))

    def process(self, stream: Iterable[str], *, batch_size: int = 32) -> Iterator[Detection]:
        """Judge a stream in order: score each batch, then learn from its normal lines.

        Flagged lines never join the window, so a repeated anomaly stays flagged.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._check_fitted()
        batch: list[str] = []
        for position, text in enumerate(stream):
            if not isinstance(text, str):
                raise TypeError(f"stream item {position} is {type(text).__name__}, expected str")
            batch.append(text)
            if len(batch) == batch_size:
                yield from self._process_batch(batch)
                batch = []
        if batch:
            yield from self._process_batch(batch)

    def _process_batch(self, texts: list[str]) -> list[Detection]:
        vectors = self.embed(texts)
        scores = self.score_vectors(vectors)
        threshold = self.threshold
        flags = scores > threshold
        self._add(vectors[~flags], scores[~flags])
        return [
            Detection(t, float(s), bool(f), threshold)
            for t, s, f in zip(texts, scores, flags, strict=True)
        ]

    # -- vectors -------------------------------------------------------------------------

    def fit_vectors(self, vectors: np.ndarray) -> AnomalyDetector:
        """`fit` on embedded lines: (n, dim) unit rows, n >= 2."""
        x = self._check_vectors(vectors, "normal vectors")
        if len(x) < 2:
            raise ValueError(f"fit needs at least 2 normal lines, got {len(x)}")
        x = x[-self.window :]
        self._centroids = spherical_kmeans(x, self.n_centroids, seed=self.seed)
        self._vectors = x
        self._scores = self._scores_against_window(x, exclude_self=True)
        return self

    def score_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """`score` on embedded lines: (n, dim) -> (n,) float32."""
        self._check_fitted()
        x = self._check_vectors(vectors, "vectors")
        if len(x) == 0:
            return np.zeros(0, np.float32)
        return self._scores_against_window(x, exclude_self=False)

    def update_vectors(self, vectors: np.ndarray) -> None:
        """`update` on embedded lines."""
        x = self._check_vectors(vectors, "vectors")
        self._add(x, self.score_vectors(x))

    def _add(self, x: np.ndarray, scores: np.ndarray) -> None:
        if len(x) == 0:
            return
        self._vectors = np.concatenate([self._vectors, x])[-self.window :]
        self._scores = np.concatenate([self._scores, scores])[-self.window :]
        self._centroids = spherical_kmeans(self._vectors, self.n_centroids, seed=self.seed)

    def _scores_against_window(self, x: np.ndarray, *, exclude_self: bool) -> np.ndarray:
        """min(centroid distance, novelty_weight * nearest-line distance), rounding snapped.

        With exclude_self, x is the window itself and each line is scored against the others.
        """
        distance, _ = ops.centroid_distance(x, self._centroids)
        if self.novelty_weight is not None:
            nearest, _ = ops.topk_cosine(x, self._vectors, 1, exclude_self=exclude_self)
            distance = np.minimum(distance, self.novelty_weight * (1.0 - nearest[:, 0]))
        return np.where(distance < SAME_LINE, 0.0, distance).astype(np.float32)

    def _check_vectors(self, vectors: np.ndarray, name: str) -> np.ndarray:
        return np.ascontiguousarray(ops.check_vectors(vectors, name, self.engine.dim), np.float32)

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError("the detector has no normal lines yet: call fit(normal_texts)")

    # -- persistence ---------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the window, its scores and the settings to one verified file."""
        self._check_fitted()
        if self.mask is not None and not isinstance(self.mask, LogMask):
            raise ValueError("only a LogMask (or mask=None) can be saved, not a custom callable")
        meta = {
            "kind": _KIND,
            "model": self.engine.spec.fingerprint,
            "window": self.window,
            "quantile": self.quantile,
            "centroids": self.n_centroids,
            "novelty_weight": self.novelty_weight,
            "mask": None if self.mask is None else asdict(self.mask),
            "seed": self.seed,
        }
        arrays = {"vectors": self._vectors, "scores": self._scores, "centroids": self._centroids}
        save_arrays(path, arrays, meta)

    @classmethod
    @malformed_is_corrupt
    def load(cls, engine: Engine, path: str | Path) -> AnomalyDetector:
        """A detector saved by `save`, for the same model (ModelMismatchError otherwise)."""
        arrays, meta = load_state(path, _KIND, engine.spec.fingerprint)
        mask = None if meta["mask"] is None else LogMask(**meta["mask"])
        detector = cls(
            engine,
            window=meta["window"],
            quantile=meta["quantile"],
            centroids=meta["centroids"],
            novelty_weight=meta["novelty_weight"],
            mask=mask,
            seed=meta["seed"],
        )
        detector._vectors = arrays["vectors"]
        detector._scores = arrays["scores"]
        detector._centroids = arrays["centroids"]
        return detector
