"""Classification from labelled examples: no fit call, a new class is new examples.

Every example is kept as a vector; everything else is derived from them, once per set of
examples, on the first call that needs it. A query is scored in one of six modes:

* ``"centroid"``: cosine to each label's centroid (mean of its examples);
* ``"knn"``: a distance-weighted vote of the `k` nearest examples, each weighing
  ``exp((cos - cos_best) / knn_temperature)``;
* ``"neighbours"``: the mean of the two distributions above (a softmax of the centroid
  cosines and the kNN vote shares);
* ``"lda"``: linear discriminant analysis: a Gaussian per label with one shared covariance,
  shrunk toward a multiple of the identity by the Ledoit-Wolf formula. Closed form (one
  384 x 384 solve), so a new class is still just its examples;
* ``"logistic"``: a multinomial logistic-regression head (L2 penalty `head_c`, as
  scikit-learn's C) fitted on the examples by L-BFGS. It is part of the snapshot's derived
  state: fitted once, lazily, on the first prediction after a write, so a new class is
  still just its examples (about 1.6 s at 10,000 examples x 384 on 2 CPU cores);
* ``"auto"`` (default): ``(1 - head_weight)`` x the mean of the "neighbours" distribution
  and the LDA posterior softened by `lda_temperature`, plus ``head_weight`` x the logistic
  head. `head_c` and `head_weight` were chosen leave-one-set-out on Banking77, HWU64 and
  Banking77-OOS; `oos_head_c` and `oos_weight` on the validation splits of Banking77-OOS as
  published and with clean labels (benchmarks/README.md, "Classification").

Vectors are centred on the mean of all examples before comparison (then re-normalised):
the direction every sentence shares carries no label information.

Out of scope: `oos_score` combines two scores, each turned into a rank among the
examples' own held-out scores (its empirical distribution function on them), so a text's
score depends only on the text and the examples, never on the other texts of the call:

* the neighbour score ``1 - max over labels of the mean cosine of the query's `oos_k`
  nearest examples of that label`` (reference: each example scored leave-one-out);
* ``-max logit`` of a second, smoother logistic head (`oos_head_c`), reference: each
  example scored by a head fitted without its fold (5 folds, warm-started).

The score is ``oos_weight x rank(neighbour) + (1 - oos_weight) x rank(head)``, in [0, 1],
higher = more likely none of the labels. With `threshold`, `predict` refuses a text whose
score is above it and returns the `unknown` label ("unknown" by default, never None).
``threshold="auto"`` takes the (1 - `reject_rate`) quantile of the examples' own held-out
scores, so about `reject_rate` of in-scope texts are refused. Building the references costs
six head fits, once per snapshot, on the first `oos_score` or thresholded `predict`.

Thread safety: the examples live in one immutable snapshot; a write (add_examples,
remove_label) builds a new snapshot and swaps one reference, so a concurrent predict sees
the state before or after the write, never a mix.

GPU: on a device-resident engine (embengine.tasks._device) predictions embed on the GPU,
centre there and run the neighbour searches (kNN, centroids, the out-of-scope neighbour
score) as CUDA kernels against device copies of the snapshot's examples, made once per
snapshot; only their top-k results come back. The LDA and logistic heads read a host copy
of the centred queries (their float64 products stay on the host).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embengine import ops
from embengine.errors import InvalidInputError, InvalidTypeError, NotFoundError
from embengine.io import load_state, malformed_is_corrupt, save_arrays
from embengine.tasks import _device
from embengine.validation import check_texts

if TYPE_CHECKING:
    from embengine.engine import Engine

Label = Hashable
MODES = ("auto", "logistic", "lda", "neighbours", "knn", "centroid")
_FOLDS = 5  # cross-fitting folds of the out-of-scope head's reference scores
_KIND = "classifier"


class _Snapshot:
    """Examples and everything derived from them; never mutated once published."""

    def __init__(self, labels: tuple[Label, ...], vectors: np.ndarray, label_ids: np.ndarray):
        self.labels = labels
        self.vectors = vectors  # examples, plain unit rows
        self.label_ids = label_ids  # index into labels, per example
        self._derived: dict[str, Any] = {}
        self._lock = threading.RLock()  # builds each derived value once (builds nest)
        self.device: dict[tuple[str, str], Any] = {}  # device copies (_device.placed)

    def derived(self, name: str, build: Callable[[], Any]) -> Any:
        value = self._derived.get(name)
        if value is None:
            with self._lock:
                value = self._derived.get(name)
                if value is None:
                    value = self._derived[name] = build()
        return value


class Classifier:
    """A label for each text from the labelled examples it is closest to.

    Args:
        engine: embeds examples and queries (None: vectors only, see `from_vectors`).
        examples: label -> example texts (labels are str or int).
        mode: "auto", "logistic", "lda", "neighbours", "knn" or "centroid" (module docstring).
        k: neighbours that vote in "knn", "neighbours" and "auto".
        knn_temperature: how fast a neighbour's vote fades with its cosine gap to the best.
        centroid_temperature: softmax temperature over centroid cosines.
        lda_temperature: divides the LDA logits in "auto" (their raw scale is very sharp).
        head_c: inverse L2 strength of the logistic head (scikit-learn's C), > 0.
        head_weight: the logistic head's share of the "auto" distribution, in [0, 1].
        center: subtract the examples' mean before comparing (module docstring).
        threshold: None (closed set: always a label), an `oos_score` in [0, 1] above which
            a text is refused, or "auto" (calibrated on held-out example scores).
        reject_rate: share of in-scope texts "auto" may refuse, in (0, 1).
        oos_k: nearest examples per label averaged by the neighbour score of `oos_score`.
        oos_head_c: inverse L2 strength of the out-of-scope head, > 0.
        oos_weight: the neighbour score's share of `oos_score`, in [0, 1].
        unknown: the label returned for a refused text (str or int, not one of the labels).
    """

    def __init__(
        self,
        engine: Engine | None,
        examples: Mapping[Label, Sequence[str]] | None = None,
        *,
        mode: str = "auto",
        k: int = 5,
        knn_temperature: float = 0.05,
        centroid_temperature: float = 0.05,
        lda_temperature: float = 10.0,
        head_c: float = 4.0,
        head_weight: float = 0.5,
        center: bool = True,
        threshold: float | str | None = None,
        reject_rate: float = 0.05,
        oos_k: int = 3,
        oos_head_c: float = 2.0,
        oos_weight: float = 0.4,
        unknown: str | int = "unknown",
    ) -> None:
        if mode not in MODES:
            raise InvalidInputError(f"mode must be one of {MODES}, got {mode!r}")
        for name, value in (("k", k), ("oos_k", oos_k)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name} must be an int >= 1, got {value!r}")
        for name, value in (
            ("knn_temperature", knn_temperature),
            ("centroid_temperature", centroid_temperature),
            ("lda_temperature", lda_temperature),
            ("head_c", head_c),
            ("oos_head_c", oos_head_c),
        ):
            if not _is_number(value) or not math.isfinite(value) or value <= 0:
                raise InvalidInputError(f"{name} must be a finite number > 0, got {value!r}")
        for name, value in (("head_weight", head_weight), ("oos_weight", oos_weight)):
            if not _is_number(value) or not 0.0 <= value <= 1.0:  # False for NaN too
                raise InvalidInputError(f"{name} must be a number in [0, 1], got {value!r}")
        _check_threshold(threshold)
        if not isinstance(reject_rate, (int, float)) or not 0.0 < reject_rate < 1.0:
            raise InvalidInputError(f"reject_rate must be in (0, 1), got {reject_rate!r}")
        unknown = _check_label(unknown, "unknown")
        self.engine = engine
        self.mode = mode
        self.k = k
        self.knn_temperature = float(knn_temperature)
        self.centroid_temperature = float(centroid_temperature)
        self.lda_temperature = float(lda_temperature)
        self.head_c = float(head_c)
        self.head_weight = float(head_weight)
        self.oos_head_c = float(oos_head_c)
        self.oos_weight = float(oos_weight)
        self.center = bool(center)
        self.threshold_setting = threshold
        self.reject_rate = float(reject_rate)
        self.oos_k = oos_k
        self.unknown = unknown
        self._dim = engine.dim if engine is not None else None
        self._write = threading.Lock()
        self._snap = _Snapshot((), np.zeros((0, self._dim or 0), np.float32), np.zeros(0, np.int64))
        for label, texts in (examples or {}).items():
            self.add_examples(label, texts)

    @classmethod
    def from_vectors(
        cls,
        vectors: np.ndarray,
        labels: Sequence[Label],
        *,
        engine: Engine | None = None,
        mode: str = "auto",
        threshold: float | str | None = None,
        unknown: str | int = "unknown",
        head_c: float = 4.0,
        head_weight: float = 0.5,
        oos_head_c: float = 2.0,
        oos_weight: float = 0.4,
    ) -> Classifier:
        """A classifier over your own (n, dim) unit rows, one label per row; no model needed
        (text methods then raise; use the `*_vectors` ones)."""
        x = _as_rows(vectors, "vectors", engine.dim if engine is not None else None)
        if len(labels) != len(x):
            raise InvalidInputError(f"{len(labels)} labels for {len(x)} vectors")
        clf = cls(
            engine,
            mode=mode,
            threshold=threshold,
            unknown=unknown,
            head_c=head_c,
            head_weight=head_weight,
            oos_head_c=oos_head_c,
            oos_weight=oos_weight,
        )
        labels = [_check_label(label, "labels") for label in labels]
        order = list(dict.fromkeys(labels))
        column = np.array([order.index(label) for label in labels]) if len(x) else np.zeros(0)
        for index, label in enumerate(order):
            clf.add_vectors(label, x[column == index])
        return clf

    # -- examples ------------------------------------------------------------------------

    @property
    def labels(self) -> list[Label]:
        """Known labels, in the order they were added (the columns of `predict_proba`)."""
        return list(self._snap.labels)

    def add_examples(self, label: Label, texts: Sequence[str]) -> None:
        """Add examples of a label (new or known): embedding them is all the work."""
        items = check_texts(texts)
        if not items:
            raise InvalidInputError(f"no example texts given for label {label!r}")
        self.add_vectors(label, self._embed(items))

    def add_vectors(self, label: Label, vectors: np.ndarray) -> None:
        """`add_examples` with embedded texts: (n, dim) unit rows, n >= 1."""
        label = _check_label(label, "label")
        if label == self.unknown:
            raise InvalidInputError(f"label {label!r} is the `unknown` label of refused texts")
        x = _as_rows(vectors, "vectors", self._dim)
        if len(x) == 0:
            raise InvalidInputError(f"no example vectors given for label {label!r}")
        with self._write:
            old = self._snap
            labels = old.labels if label in old.labels else (*old.labels, label)
            vectors_ = np.concatenate([old.vectors.reshape(-1, x.shape[1]), x])
            ids = np.full(len(x), labels.index(label), np.int64)
            self._dim = x.shape[1]
            self._snap = _Snapshot(labels, vectors_, np.concatenate([old.label_ids, ids]))

    def remove_label(self, label: Label) -> None:
        """Forget a label and all its examples (NotFoundError if unknown)."""
        with self._write:
            old = self._snap
            if label not in old.labels:
                raise NotFoundError(f"unknown label {label!r}; labels are {list(old.labels)}")
            index = old.labels.index(label)
            keep = old.label_ids != index
            ids = old.label_ids[keep]
            ids[ids > index] -= 1
            labels = old.labels[:index] + old.labels[index + 1 :]
            self._snap = _Snapshot(labels, old.vectors[keep], ids)

    def counts(self) -> dict[Label, int]:
        """Examples per label."""
        snap = self._snap
        counts = np.bincount(snap.label_ids, minlength=len(snap.labels))
        return dict(zip(snap.labels, counts.tolist(), strict=True))

    # -- prediction ----------------------------------------------------------------------

    def predict(self, texts: Iterable[str]) -> list[Label]:
        """The label of each text (`unknown` where the open-set threshold refuses it)."""
        return self.predict_vectors(self._embed_queries(texts))

    def predict_proba(self, texts: Iterable[str]) -> np.ndarray:
        """(n, labels) float32, rows summing to 1, columns in `self.labels` order."""
        return self.predict_proba_vectors(self._embed_queries(texts))

    def oos_score(self, texts: Iterable[str]) -> np.ndarray:
        """(n,) float32 in [0, 1]: higher = more likely none of the labels (module docstring)."""
        return self.oos_score_vectors(self._embed_queries(texts))

    def predict_vectors(self, vectors: np.ndarray) -> list[Label]:
        """`predict` on embedded texts: (n, dim) unit rows."""
        snap = self._ready()
        x = self._queries(vectors)
        if len(x) == 0:
            return []
        if self.mode == "centroid":
            centroids = self._placed(snap, "centroids", self._centroids(snap), x)
            best = ops.to_host(ops.centroid_distance(self._centred(snap, x), centroids)[1])
        else:
            best = self._proba(snap, x).argmax(axis=1)
        labels: list[Label] = [snap.labels[i] for i in best]
        threshold = self._threshold(snap)
        if threshold is not None:
            for row in np.flatnonzero(self._oos(snap, x) > threshold):
                labels[row] = self.unknown
        return labels

    def predict_proba_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """`predict_proba` on embedded texts: (n, dim) unit rows -> (n, labels) float32."""
        snap = self._ready()
        x = self._queries(vectors)
        if len(x) == 0:
            return np.zeros((0, len(snap.labels)), np.float32)
        return self._proba(snap, x)

    def oos_score_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """`oos_score` on embedded texts: (n, dim) unit rows -> (n,) float32."""
        snap = self._ready()
        return self._oos(snap, self._queries(vectors))

    @property
    def threshold(self) -> float | None:
        """The `oos_score` above which a text is refused, or None (closed set)."""
        return self._threshold(self._ready())

    # -- scoring internals ---------------------------------------------------------------

    def _proba(self, snap: _Snapshot, x: np.ndarray) -> np.ndarray:
        q = self._centred(snap, x)
        if self.mode == "knn":
            return self._knn_votes(snap, q)
        if self.mode == "centroid":
            return self._centroid_softmax(snap, q)
        if self.mode == "lda":
            return _softmax(self._lda_logits(snap, q))
        if self.mode == "logistic":
            return _softmax(self._head_logits(snap, q, self.head_c))
        neighbours = (self._centroid_softmax(snap, q) + self._knn_votes(snap, q)) / 2
        if self.mode == "neighbours":
            return neighbours
        lda = _softmax(self._lda_logits(snap, q) / self.lda_temperature)
        blend = (1 - self.head_weight) * (neighbours + lda) / 2
        if self.head_weight > 0:
            blend += self.head_weight * _softmax(self._head_logits(snap, q, self.head_c))
        return blend.astype(np.float32)

    def _knn_votes(self, snap: _Snapshot, q: np.ndarray) -> np.ndarray:
        """Distance-weighted vote shares of the k nearest examples: (n, labels)."""
        examples = self._placed(snap, "examples", self._examples(snap), q)
        k = min(self.k, len(examples))
        scores, ids = map(ops.to_host, ops.topk_cosine(q, examples, k))
        weights = np.exp((scores - scores[:, :1]) / self.knn_temperature)
        votes = np.zeros((len(q), len(snap.labels)), np.float64)
        rows = np.repeat(np.arange(len(q)), k)
        np.add.at(votes, (rows, snap.label_ids[ids].ravel()), weights.ravel())
        return (votes / votes.sum(axis=1, keepdims=True)).astype(np.float32)

    def _centroid_softmax(self, snap: _Snapshot, q: np.ndarray) -> np.ndarray:
        """Softmax over the cosines to every label's centroid: (n, labels)."""
        centroids = self._placed(snap, "centroids", self._centroids(snap), q)
        scores, ids = map(ops.to_host, ops.topk_cosine(q, centroids, len(centroids)))  # all
        logits = np.zeros((len(q), len(centroids)), np.float64)
        np.put_along_axis(logits, ids, scores / self.centroid_temperature, axis=1)
        return _softmax(logits)

    def _lda_logits(self, snap: _Snapshot, q: np.ndarray) -> np.ndarray:
        weights, bias = snap.derived("lda", lambda: _lda_head(self._examples(snap), snap))
        return ops.to_host(q).astype(np.float64) @ weights + bias

    def _head_logits(self, snap: _Snapshot, q: np.ndarray, c: float) -> np.ndarray:
        """Logits of the logistic head with inverse L2 strength c, on centred rows q."""
        weights, bias = snap.derived(f"head:{c!r}", lambda: self._fit_head(snap, c))
        return ops.to_host(q).astype(np.float64) @ weights + bias

    def _fit_head(self, snap: _Snapshot, c: float) -> tuple[np.ndarray, np.ndarray]:
        return fit_softmax_head(self._examples(snap), snap.label_ids, len(snap.labels), c)

    def _oos(self, snap: _Snapshot, x: np.ndarray) -> np.ndarray:
        """The two scores' ranks among the examples' held-out scores, weighted (docstring)."""
        neighbour_ref, head_ref, _, _ = self._oos_reference(snap)
        neighbour = self._neighbour_score(snap, x)
        head = -self._head_logits(snap, self._centred(snap, x), self.oos_head_c).max(axis=1)
        return self._combine(neighbour_ref, head_ref, neighbour, head)

    def _combine(self, neighbour_ref, head_ref, neighbour, head) -> np.ndarray:
        w = self.oos_weight
        score = w * _rank(neighbour_ref, neighbour) + (1 - w) * _rank(head_ref, head)
        return score.astype(np.float32)

    def _neighbour_score(self, snap: _Snapshot, x: np.ndarray) -> np.ndarray:
        """1 - max over labels of the mean cosine of the oos_k nearest examples of it."""
        best = np.full(len(x), -np.inf)
        vectors = self._placed(snap, "vectors", snap.vectors, x)
        for index in range(len(snap.labels)):
            rows = _device.rows(vectors, np.flatnonzero(snap.label_ids == index))
            scores = ops.to_host(ops.topk_cosine(x, rows, min(self.oos_k, len(rows)))[0])
            np.maximum(best, scores.mean(axis=1), out=best)
        return 1.0 - best

    def _threshold(self, snap: _Snapshot) -> float | None:
        if self.threshold_setting is None:
            return None
        if self.threshold_setting == "auto":
            key = f"auto_threshold:{self.oos_weight!r}:{self.reject_rate!r}"
            return snap.derived(key, lambda: self._calibrate(snap))
        return float(self.threshold_setting)

    def _calibrate(self, snap: _Snapshot) -> float:
        """The (1 - reject_rate) quantile of the examples' own held-out `oos_score`s."""
        neighbour_ref, head_ref, neighbour, head = self._oos_reference(snap)
        scores = self._combine(neighbour_ref, head_ref, neighbour, head)
        return float(np.quantile(scores, 1.0 - self.reject_rate))

    def _oos_reference(self, snap: _Snapshot) -> tuple[np.ndarray, ...]:
        """The examples' held-out neighbour and head scores, sorted and in example order;
        built once per snapshot (and per `oos_head_c`)."""
        key = f"oos_reference:{self.oos_head_c!r}"
        return snap.derived(key, lambda: self._build_reference(snap))

    def _build_reference(self, snap: _Snapshot) -> tuple[np.ndarray, ...]:
        if len(snap.vectors) < 2:
            raise InvalidInputError("the out-of-scope score needs at least 2 examples")
        neighbour = self._held_out_neighbour_scores(snap)
        head = self._held_out_head_scores(snap)
        return np.sort(neighbour), np.sort(head), neighbour, head

    def _held_out_neighbour_scores(self, snap: _Snapshot) -> np.ndarray:
        """Every example's neighbour score, leaving itself out."""
        best = np.full(len(snap.vectors), -np.inf)
        for index in range(len(snap.labels)):
            own = snap.label_ids == index
            rows = snap.vectors[own]
            if not own.all():  # every other label's examples against this label's
                scores, _ = ops.topk_cosine(snap.vectors[~own], rows, min(self.oos_k, len(rows)))
                best[~own] = np.maximum(best[~own], scores.mean(axis=1))
            if len(rows) > 1:  # this label's examples, each leaving itself out
                k = min(self.oos_k, len(rows) - 1)
                scores, _ = ops.topk_cosine(rows, rows, k, exclude_self=True)
                best[own] = np.maximum(best[own], scores.mean(axis=1))
        return 1.0 - best

    def _held_out_head_scores(self, snap: _Snapshot) -> np.ndarray:
        """Every example's head score (-max logit) from a head fitted without its fold.

        Folds deal each label's examples round-robin; each fold's head starts from the full
        head's weights (fewer iterations, same optimum)."""
        examples = self._examples(snap)
        full = snap.derived(
            f"head:{self.oos_head_c!r}", lambda: self._fit_head(snap, self.oos_head_c)
        )
        rank = np.zeros(len(examples), np.int64)  # position of each example within its label
        for index in range(len(snap.labels)):
            own = np.flatnonzero(snap.label_ids == index)
            rank[own] = np.arange(len(own))
        fold = rank % _FOLDS
        scores = np.zeros(len(examples))
        for f in range(min(_FOLDS, int(rank.max()) + 1)):
            out = fold == f
            if out.all():  # one example per label: this fold's head would know no label
                weights, bias = np.zeros_like(full[0]), np.zeros_like(full[1])
            else:  # same penalty per example as the full head (c scaled by n / n_fold)
                c = self.oos_head_c * len(examples) / int((~out).sum())
                weights, bias = fit_softmax_head(
                    examples[~out], snap.label_ids[~out], len(snap.labels), c, init=full
                )
            scores[out] = -(examples[out].astype(np.float64) @ weights + bias).max(axis=1)
        return scores

    # -- derived state -------------------------------------------------------------------

    def _mean(self, snap: _Snapshot) -> np.ndarray | None:
        if not self.center:
            return None
        return snap.derived("mean", lambda: snap.vectors.mean(axis=0).astype(np.float32))

    def _examples(self, snap: _Snapshot) -> np.ndarray:
        return snap.derived("examples", lambda: _centered(snap.vectors, self._mean(snap)))

    def _centroids(self, snap: _Snapshot) -> np.ndarray:
        def build() -> np.ndarray:
            centroids = np.zeros((len(snap.labels), snap.vectors.shape[1]), np.float32)
            np.add.at(centroids, snap.label_ids, self._examples(snap))
            return ops.normalize_rows_(centroids)

        return snap.derived("centroids", build)

    def _centred(self, snap: _Snapshot, x: np.ndarray) -> np.ndarray:
        mean = self._mean(snap)
        if mean is None or not _device.on_device(x):
            return _centered(x, mean)
        return ops.normalize_rows_(x - self._placed(snap, "mean", mean, x))  # on the device

    @staticmethod
    def _placed(snap: _Snapshot, name: str, a: np.ndarray, x: Any) -> Any:
        """Derived array `a` where x lives (a device copy made once per snapshot)."""
        return _device.placed(snap.device, name, a, x)

    def _queries(self, vectors: Any) -> Any:
        """Checked query rows: a device array stays there (and the call counts as a device
        run), anything else becomes host float32 rows."""
        if not _device.on_device(vectors):
            return _as_rows(vectors, "vectors", self._dim)
        _device.record("classify")
        return _device.check(vectors, "vectors", self._dim)

    def _ready(self) -> _Snapshot:
        snap = self._snap
        if not snap.labels:
            raise InvalidInputError("the classifier has no examples: call add_examples first")
        return snap

    def _embed(self, texts: list[str]) -> np.ndarray:
        if self.engine is None:
            raise InvalidInputError("this classifier has no engine: use the *_vectors methods")
        return self.engine.embed(texts)

    def _embed_queries(self, texts: Iterable[str]) -> Any:
        """`_embed` for predictions: left on the GPU when the engine is resident there."""
        items = check_texts(texts)
        if self.engine is None:
            return self._embed(items)
        return _device.embed(self.engine, items)

    # -- persistence ---------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write examples, labels and settings to one verified file (labels: str or int)."""
        snap = self._snap
        meta = {
            "kind": _KIND,
            "model": self.engine.spec.fingerprint if self.engine is not None else None,
            "labels": list(snap.labels),
            "mode": self.mode,
            "k": self.k,
            "knn_temperature": self.knn_temperature,
            "centroid_temperature": self.centroid_temperature,
            "lda_temperature": self.lda_temperature,
            "head_c": self.head_c,
            "head_weight": self.head_weight,
            "center": self.center,
            "threshold": self.threshold_setting,
            "reject_rate": self.reject_rate,
            "oos_k": self.oos_k,
            "oos_head_c": self.oos_head_c,
            "oos_weight": self.oos_weight,
            "unknown": self.unknown,
            "oos_scale": 2,  # oos_score in [0, 1] (format 1: a cosine distance in [0, 2])
        }
        save_arrays(path, {"vectors": snap.vectors, "label_ids": snap.label_ids}, meta)

    @classmethod
    @malformed_is_corrupt
    def load(cls, path: str | Path, *, engine: Engine | None) -> Classifier:
        """A classifier saved by `save`, for the same model (ModelMismatchError otherwise);
        engine=None loads it for the `*_vectors` methods only."""
        fingerprint = engine.spec.fingerprint if engine is not None else None
        arrays, meta = load_state(path, _KIND, fingerprint) if engine else _load_any(path)
        settings = ("mode", "k", "knn_temperature", "centroid_temperature", "lda_temperature")
        settings += ("center", "threshold", "reject_rate", "oos_k", "unknown")
        settings += ("head_c", "head_weight", "oos_head_c", "oos_weight")  # format 2
        if meta.get("oos_scale") != 2 and meta["threshold"] not in (None, "auto"):
            raise InvalidInputError(
                f"{path} was saved with a numeric threshold on the old out-of-scope scale "
                "([0, 2]); load it and set the threshold again on the new one ([0, 1])"
            )
        clf = cls(engine, **{name: meta[name] for name in settings if name in meta})
        vectors, label_ids = arrays["vectors"], arrays["label_ids"]
        for index, label in enumerate(meta["labels"]):
            clf.add_vectors(label, vectors[label_ids == index])
        return clf


def _load_any(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    from embengine.errors import CorruptFileError
    from embengine.io import load_arrays

    arrays, meta = load_arrays(path)
    if meta.get("kind") != _KIND:
        raise CorruptFileError(f"{path} holds a {meta.get('kind')!r}, not a {_KIND!r}")
    return arrays, meta


def _lda_head(examples: np.ndarray, snap: _Snapshot) -> tuple[np.ndarray, np.ndarray]:
    """Weights (dim, labels) and biases of LDA with a Ledoit-Wolf-shrunk shared covariance.

    logit_c(x) = x S^-1 mu_c - mu_c S^-1 mu_c / 2 (equal priors); with one example per
    label the within-label scatter is zero and this is the nearest-mean rule.
    """
    x = examples.astype(np.float64)
    dim = x.shape[1]
    means = np.zeros((len(snap.labels), dim))
    np.add.at(means, snap.label_ids, x)
    means /= np.bincount(snap.label_ids, minlength=len(snap.labels))[:, None]
    residuals = x - means[snap.label_ids]
    scatter = residuals.T @ residuals / len(x)
    scale = np.trace(scatter) / dim
    if scale <= 1e-12:
        covariance = np.eye(dim)
    else:
        # floored: with very few examples the formula can give 0 and a singular scatter
        shrink = max(ledoit_wolf_shrinkage(residuals), 1e-6)
        covariance = (1 - shrink) * scatter + shrink * scale * np.eye(dim)
    weights = np.linalg.solve(covariance, means.T)  # (dim, labels)
    bias = -0.5 * np.einsum("cd,dc->c", means, weights)
    return weights, bias


def ledoit_wolf_shrinkage(x: np.ndarray) -> float:
    """Ledoit & Wolf (2004) shrinkage intensity toward a scaled identity, for centred rows
    (the formula scikit-learn's `ledoit_wolf_shrinkage` uses)."""
    n, dim = x.shape
    squares = x**2
    variances = squares.sum(axis=0) / n
    mu = variances.sum() / dim
    beta_ = (squares.T @ squares).sum()
    delta_ = ((x.T @ x) ** 2).sum() / n**2
    beta = (beta_ / n - delta_) / (dim * n)
    delta = (delta_ - 2.0 * mu * variances.sum() + dim * mu**2) / dim
    return 1.0 if delta <= 0 else float(min(beta, delta) / delta)


def fit_softmax_head(
    x: np.ndarray,
    label_ids: np.ndarray,
    n_labels: int,
    c: float,
    *,
    init: tuple[np.ndarray, np.ndarray] | None = None,
    max_iter: int = 300,
    tol: float = 1e-5,
    memory: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression by L-BFGS: weights (dim, labels) and biases.

    Minimises mean cross-entropy + ||W||^2 / (2 c n) (scikit-learn's objective with C = c,
    bias unpenalised) from `init` (zeros by default), until the largest gradient entry is
    below `tol`. Deterministic: same inputs, same head.
    """
    n, dim = x.shape
    x = np.ascontiguousarray(x, dtype=np.float32)
    size = dim * n_labels
    l2 = 1.0 / (c * n)
    rows = np.arange(n)

    def loss_and_gradient(theta: np.ndarray) -> tuple[float, np.ndarray]:
        weights = theta[:size].reshape(dim, n_labels)
        logits = x @ weights.astype(np.float32) + theta[size:].astype(np.float32)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        total = exp.sum(axis=1, keepdims=True)
        nll = float(np.log(total[:, 0]).astype(np.float64).sum() - logits[rows, label_ids].sum())
        residual = exp / total
        residual[rows, label_ids] -= 1.0
        residual /= n
        grad = np.concatenate(
            [
                (x.T @ residual).astype(np.float64).ravel() + l2 * theta[:size],
                residual.sum(axis=0, dtype=np.float64),
            ]
        )
        return nll / n + 0.5 * l2 * float(theta[:size] @ theta[:size]), grad

    if n_labels < 2:  # one label: every text is it, nothing to fit
        return np.zeros((dim, n_labels)), np.zeros(n_labels)
    theta = np.zeros(size + n_labels)
    if init is not None:
        theta[:size], theta[size:] = init[0].ravel(), init[1]
    loss, grad = loss_and_gradient(theta)
    steps: list[tuple[np.ndarray, np.ndarray, float]] = []  # (s, y, 1 / y.s)
    for _ in range(max_iter):
        if np.abs(grad).max() < tol:
            break
        direction = -_lbfgs_direction(grad, steps)
        slope = float(grad @ direction)
        if slope >= 0:  # not a descent direction: restart from the gradient
            steps.clear()
            direction, slope = -grad, -float(grad @ grad)
        step = 1.0 if steps else 1.0 / max(float(np.linalg.norm(grad)), 1e-12)
        while True:  # backtracking until the Armijo condition holds
            candidate = theta + step * direction
            new_loss, new_grad = loss_and_gradient(candidate)
            if new_loss <= loss + 1e-4 * step * slope or step < 1e-10:
                break
            step *= 0.5
        s, y = candidate - theta, new_grad - grad
        if float(s @ y) > 1e-10:
            steps.append((s, y, 1.0 / float(s @ y)))
            del steps[:-memory]
        theta, loss, grad = candidate, new_loss, new_grad
    return theta[:size].reshape(dim, n_labels), theta[size:]


def _lbfgs_direction(grad: np.ndarray, steps: list[tuple[np.ndarray, np.ndarray, float]]):
    """The two-loop recursion: the inverse-Hessian estimate times the gradient."""
    q = grad.copy()
    alphas = []
    for s, y, rho in reversed(steps):
        alpha = rho * float(s @ q)
        q -= alpha * y
        alphas.append(alpha)
    if steps:
        s, y, _ = steps[-1]
        q *= float(s @ y) / float(y @ y)
    for (s, y, rho), alpha in zip(steps, reversed(alphas), strict=True):
        q += (alpha - rho * float(y @ q)) * s
    return q


def _rank(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Share of the sorted `reference` below each value, interpolated: in [0, 1]."""
    positions = (np.arange(len(reference)) + 0.5) / len(reference)
    return np.interp(values, reference, positions, left=0.0, right=1.0)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)


def _centered(x: np.ndarray, mean: np.ndarray | None) -> np.ndarray:
    """Rows minus the examples' mean, re-normalised (x itself when mean is None)."""
    if mean is None:
        return x
    return ops.normalize_rows_(np.ascontiguousarray(x - mean, dtype=np.float32))


def _check_threshold(threshold: object) -> None:
    if threshold is None or threshold == "auto":
        return
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not 0.0 <= threshold <= 1.0  # False for NaN too
    ):
        raise InvalidInputError(
            f"threshold must be None, 'auto' or an oos_score in [0, 1], got {threshold!r}"
        )


def _check_label(label: object, name: str) -> str | int:
    """The label as a plain str / int (numpy scalars included), or InvalidTypeError."""
    if isinstance(label, (bool, np.bool_)) or not isinstance(label, (str, int, np.integer)):
        raise InvalidTypeError(f"{name} must be str or int, got {type(label).__name__} {label!r}")
    return int(label) if isinstance(label, (int, np.integer)) else str(label)


def _as_rows(vectors: np.ndarray, name: str, dim: int | None) -> np.ndarray:
    return np.ascontiguousarray(ops.check_vectors(vectors, name, dim), dtype=np.float32)
