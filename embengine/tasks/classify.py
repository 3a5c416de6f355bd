"""Classification from a few labelled examples: no training step, a new class is new examples.

Every example is kept as a vector. A query is scored against them in one of three modes:

* ``"centroid"``: cosine to each label's centroid (mean of its examples), the best rule
  with very few examples per label;
* ``"knn"``: a distance-weighted vote of the `k` nearest examples, each weighing
  ``exp((cos - cos_best) / knn_temperature)``, the best rule with many examples;
* ``"auto"`` (default): the mean of the two label distributions (kNN vote shares and a
  softmax of the centroid cosines). With one example per label it is the centroid rule;
  as labels fill up the kNN vote takes over. On Banking77 it beats both, and logistic
  regression, at 5 to 20 examples per label (README, "Classification").

Vectors are centred on the mean of all examples before comparison (then re-normalised):
the shared direction every sentence has carries no label information, and removing it
helps all three rules (also computed from the examples alone: nothing is trained).

Open set: with `threshold`, a query whose nearest example is less similar (plain cosine)
than the threshold gets the `unknown` label. ``threshold="auto"`` calibrates it by leave-one-
out over the examples: each example's cosine to its nearest other example, and the
`reject_rate` quantile of those, so about that share of in-distribution texts is refused.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embengine import ops
from embengine.io import load_state, malformed_is_corrupt, save_arrays
from embengine.validation import check_texts

if TYPE_CHECKING:
    from embengine.engine import Engine

Label = Hashable
MODES = ("auto", "knn", "centroid")
_KIND = "classifier"


class Classifier:
    """A label for each text from the labelled examples it is closest to.

    Args:
        engine: embeds examples and queries.
        examples: label -> example texts (labels are str or int).
        mode: "auto", "knn" or "centroid" (module docstring).
        k: neighbours that vote in "knn" and "auto".
        knn_temperature: how fast a neighbour's vote fades with its cosine gap to the best.
        centroid_temperature: softmax temperature over centroid cosines ("auto", probas).
        center: subtract the examples' mean before comparing (module docstring).
        threshold: None (closed set: always a label), a cosine, or "auto" (leave-one-out).
        reject_rate: share of known texts "auto" may refuse, in (0, 1).
        unknown: the label returned for a refused text.
    """

    def __init__(
        self,
        engine: Engine,
        examples: Mapping[Label, Sequence[str]] | None = None,
        *,
        mode: str = "auto",
        k: int = 5,
        knn_temperature: float = 0.05,
        centroid_temperature: float = 0.05,
        center: bool = True,
        threshold: float | str | None = None,
        reject_rate: float = 0.05,
        unknown: Label | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if knn_temperature <= 0 or centroid_temperature <= 0:
            raise ValueError("temperatures must be > 0")
        if not (threshold is None or threshold == "auto" or isinstance(threshold, (int, float))):
            raise ValueError(f"threshold must be None, a cosine or 'auto', got {threshold!r}")
        if not 0.0 < reject_rate < 1.0:
            raise ValueError(f"reject_rate must be in (0, 1), got {reject_rate}")
        self.engine = engine
        self.mode = mode
        self.k = int(k)
        self.knn_temperature = float(knn_temperature)
        self.centroid_temperature = float(centroid_temperature)
        self.center = bool(center)
        self.threshold_setting = threshold
        self.reject_rate = float(reject_rate)
        self.unknown = unknown
        self.labels: list[Label] = []
        self._vectors = np.zeros((0, engine.dim), np.float32)  # examples, plain unit rows
        self._label_ids = np.zeros(0, np.int64)  # index into self.labels, per example
        self._derived: dict[str, np.ndarray] | None = None  # centred examples and centroids
        for label, texts in (examples or {}).items():
            self.add_examples(label, texts)

    # -- examples ------------------------------------------------------------------------

    def add_examples(self, label: Label, texts: Sequence[str]) -> None:
        """Add examples of a label (new or known): embedding them is all the work."""
        items = check_texts(texts)
        if not items:
            raise ValueError(f"no example texts given for label {label!r}")
        self.add_vectors(label, self.engine.embed(items))

    def add_vectors(self, label: Label, vectors: np.ndarray) -> None:
        """`add_examples` with embedded texts: (n, dim) unit rows, n >= 1."""
        _check_label(label)
        x = _as_rows(vectors, "vectors", self.engine.dim)
        if len(x) == 0:
            raise ValueError(f"no example vectors given for label {label!r}")
        if label not in self.labels:
            self.labels.append(label)
        self._vectors = np.concatenate([self._vectors, x])
        ids = np.full(len(x), self.labels.index(label), np.int64)
        self._label_ids = np.concatenate([self._label_ids, ids])
        self._derived = None

    def remove_label(self, label: Label) -> None:
        """Forget a label and all its examples (KeyError if unknown)."""
        if label not in self.labels:
            raise KeyError(f"unknown label {label!r}; labels are {self.labels}")
        index = self.labels.index(label)
        keep = self._label_ids != index
        self._vectors = self._vectors[keep]
        self._label_ids = self._label_ids[keep]
        self._label_ids[self._label_ids > index] -= 1
        del self.labels[index]
        self._derived = None

    def counts(self) -> dict[Label, int]:
        """Examples per label."""
        counts = np.bincount(self._label_ids, minlength=len(self.labels))
        return dict(zip(self.labels, counts.tolist(), strict=True))

    # -- prediction ----------------------------------------------------------------------

    def predict(self, texts: Iterable[str]) -> list[Label | None]:
        """The label of each text (`unknown` where the open-set threshold refuses it)."""
        return self.predict_vectors(self.engine.embed(check_texts(texts)))

    def predict_proba(self, texts: Iterable[str]) -> np.ndarray:
        """(n, labels) float32, rows summing to 1, columns in `self.labels` order."""
        return self.predict_proba_vectors(self.engine.embed(check_texts(texts)))

    def predict_vectors(self, vectors: np.ndarray) -> list[Label | None]:
        """`predict` on embedded texts: (n, dim) unit rows."""
        x = self._queries(vectors)
        if len(x) == 0:
            return []
        derived = self._state()
        if self.mode == "centroid":
            _, best = ops.centroid_distance(self._center_queries(x), derived["centroids"])
        else:
            best = self.predict_proba_vectors(x).argmax(axis=1)
        labels: list[Label | None] = [self.labels[i] for i in best]
        threshold = self.threshold
        if threshold is not None:
            nearest, _ = ops.topk_cosine(x, self._vectors, 1)
            for row in np.flatnonzero(nearest[:, 0] < threshold):
                labels[row] = self.unknown
        return labels

    def predict_proba_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """`predict_proba` on embedded texts: (n, dim) unit rows -> (n, labels) float32."""
        x = self._queries(vectors)
        if len(x) == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        q = self._center_queries(x)
        if self.mode == "knn":
            return self._knn_votes(q)
        centroid = self._centroid_softmax(q)
        return centroid if self.mode == "centroid" else (centroid + self._knn_votes(q)) / 2

    def _knn_votes(self, q: np.ndarray) -> np.ndarray:
        """Distance-weighted vote shares of the k nearest examples: (n, labels)."""
        examples = self._state()["examples"]
        k = min(self.k, len(examples))
        scores, ids = ops.topk_cosine(q, examples, k)
        weights = np.exp((scores - scores[:, :1]) / self.knn_temperature)
        votes = np.zeros((len(q), len(self.labels)), np.float64)
        rows = np.repeat(np.arange(len(q)), k)
        np.add.at(votes, (rows, self._label_ids[ids].ravel()), weights.ravel())
        return (votes / votes.sum(axis=1, keepdims=True)).astype(np.float32)

    def _centroid_softmax(self, q: np.ndarray) -> np.ndarray:
        """Softmax over the cosines to every label's centroid: (n, labels)."""
        centroids = self._state()["centroids"]
        scores, ids = ops.topk_cosine(q, centroids, len(centroids))  # all of them, sorted
        logits = (scores - scores[:, :1]) / self.centroid_temperature
        probs = np.zeros((len(q), len(centroids)), np.float64)
        np.put_along_axis(probs, ids, np.exp(logits), axis=1)
        return (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)

    # -- open set ------------------------------------------------------------------------

    @property
    def threshold(self) -> float | None:
        """The cosine below which a text is refused, or None (closed set)."""
        if self.threshold_setting is None:
            return None
        if self.threshold_setting == "auto":
            return float(self._state()["auto_threshold"][0])
        return float(self.threshold_setting)

    def _calibrate(self) -> float:
        """Leave-one-out: the `reject_rate` quantile of each example's nearest other example."""
        if len(self._vectors) < 2:
            raise ValueError("threshold='auto' needs at least 2 examples to calibrate")
        nearest, _ = ops.topk_cosine(self._vectors, self._vectors, 1, exclude_self=True)
        return float(np.quantile(nearest[:, 0], self.reject_rate))

    # -- internals -----------------------------------------------------------------------

    def _state(self) -> dict[str, np.ndarray]:
        """Centred examples, label centroids and the auto threshold, rebuilt after changes."""
        if not self.labels:
            raise RuntimeError("the classifier has no examples: call add_examples first")
        if self._derived is None:
            mean = self._vectors.mean(axis=0) if self.center else None
            examples = _centered(self._vectors, mean)
            centroids = np.zeros((len(self.labels), self.engine.dim), np.float32)
            np.add.at(centroids, self._label_ids, examples)
            derived = {"examples": examples, "centroids": ops.normalize_rows_(centroids)}
            if mean is not None:
                derived["mean"] = mean.astype(np.float32)
            if self.threshold_setting == "auto":
                derived["auto_threshold"] = np.array([self._calibrate()])
            self._derived = derived
        return self._derived

    def _center_queries(self, x: np.ndarray) -> np.ndarray:
        return _centered(x, self._state().get("mean"))

    def _queries(self, vectors: np.ndarray) -> np.ndarray:
        self._state()
        return _as_rows(vectors, "vectors", self.engine.dim)

    # -- persistence ---------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write examples, labels and settings to one verified file (labels: str or int)."""
        meta = {
            "kind": _KIND,
            "model": self.engine.spec.fingerprint,
            "labels": self.labels,
            "mode": self.mode,
            "k": self.k,
            "knn_temperature": self.knn_temperature,
            "centroid_temperature": self.centroid_temperature,
            "center": self.center,
            "threshold": self.threshold_setting,
            "reject_rate": self.reject_rate,
            "unknown": self.unknown,
        }
        save_arrays(path, {"vectors": self._vectors, "label_ids": self._label_ids}, meta)

    @classmethod
    @malformed_is_corrupt
    def load(cls, engine: Engine, path: str | Path) -> Classifier:
        """A classifier saved by `save`, for the same model (ModelMismatchError otherwise)."""
        arrays, meta = load_state(path, _KIND, engine.spec.fingerprint)
        clf = cls(
            engine,
            mode=meta["mode"],
            k=meta["k"],
            knn_temperature=meta["knn_temperature"],
            centroid_temperature=meta["centroid_temperature"],
            center=meta["center"],
            threshold=meta["threshold"],
            reject_rate=meta["reject_rate"],
            unknown=meta["unknown"],
        )
        vectors, label_ids = arrays["vectors"], arrays["label_ids"]
        for index, label in enumerate(meta["labels"]):
            clf.add_vectors(label, vectors[label_ids == index])
        return clf


def _centered(x: np.ndarray, mean: np.ndarray | None) -> np.ndarray:
    """Rows minus the examples' mean, re-normalised (x itself when mean is None)."""
    if mean is None:
        return x
    return ops.normalize_rows_(np.ascontiguousarray(x - mean, dtype=np.float32))


def _check_label(label: Label) -> None:
    if isinstance(label, bool) or not isinstance(label, (str, int)):
        raise TypeError(f"labels must be str or int, got {type(label).__name__} {label!r}")


def _as_rows(vectors: np.ndarray, name: str, dim: int) -> np.ndarray:
    return np.ascontiguousarray(ops.check_vectors(vectors, name, dim), dtype=np.float32)
