"""Anomaly detection on event streams: how far a new line is from recent normal traffic.

The detector remembers the last `window` normal lines as distinct *patterns* (masked lines
that embed identically count once, with a count). A line's score combines two cosine
distances (0 = identical):

* `centroid`: distance to the nearest centroid of the window's lines (their mean, or
  k-means centroids when normal traffic is multi-modal): how atypical the line is;
* `novelty`: distance to the nearest known pattern: how new it is.

A line unlike every known pattern scores ``min(centroid, novelty_weight * novelty)``: it is
anomalous only when it is both atypical and new. A line of a known pattern seen ``c`` times
in the window scores ``centroid / (1 + c)``, capped at the threshold: rare known messages
rank above frequent ones (on BGL this lifts AUROC from 0.883 to 0.939: real faults that first
scored under the threshold stay ranked above everyday traffic), but rarity alone never flags
a line. `novelty_weight=None` gives the plain centroid rule.

**Threshold.** The `quantile` of the window's *distinct patterns*, each scored against the
others (leave-one-out), floored at `min_threshold`. Exact repeats cannot pull it to 0 (a
window of one repeated line still has the floor), and the nominal false-alarm rate is
stated per new pattern: on stationary traffic about ``1 - quantile`` of the patterns that
are new to the window score above it (benchmarks/eval_anomaly.py measures it).

**Alert groups and admission.** `process` judges a stream line by line. A normal line joins
the window at once. A flagged line joins the nearest open alert group within
`group_radius` (else it opens one, `Detection.first` is True): one alert per new kind of
message, not one per repeat. A flagged pattern (a distinct masked line) that keeps
recurring is admitted as normal after `admit_after` flagged lines of it: it joins the
window and its repeats stop alerting (`Detection.admitted` marks the line that admitted it,
so an admission is reported, never silent). `confirm_normal(group)` or `update(texts)`
admits at once; `admit_after=None` leaves admission to the operator. Until then every
repeat is still flagged and carries its group id, so a recurring fault is reported as one
group, not as a stream of separate alerts.

**Groups of lines.** `score_groups(texts, group_ids)` judges sessions, blocks, jobs or runs:
see its docstring for the aggregation. Log lines are masked (`LogMask`) before embedding
unless `mask=None`.

**Threads.** Scores run concurrently; `fit`, `process` batches, `update` and
`confirm_normal` are exclusive (`RWLock`) and each replaces the state whole, so a failed
write leaves it as it was.

**GPU.** On a device-resident engine (embengine.tasks._device) `score`, `is_anomalous` and
`score_groups` (mean / max) embed on the GPU and run the centroid and nearest-pattern
kernels there, against device copies of the state's centroids and patterns (made once per
state); only the per-line distances come to the host. `fit`, `update` and `process` keep
the window on the host as before.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np

from embengine import ops
from embengine._sync import RWLock
from embengine.clustering import spherical_kmeans
from embengine.errors import InvalidInputError, InvalidTypeError
from embengine.io import load_state, malformed_is_corrupt, save_arrays
from embengine.tasks import _device
from embengine.tasks.logmask import LogMask
from embengine.validation import check_texts

if TYPE_CHECKING:
    from embengine.engine import Engine

_KIND = "anomaly_detector"
DEFAULT_MASK = LogMask()
# Identical (masked) lines have cosine 1 only up to float32 rounding; distances below this
# are exactly 0 and mean "the same pattern".
SAME_LINE = 1e-5
# The threshold is calibrated on at most this many patterns (each against all others), so
# that a window of many distinct lines (an unmasked log) stays cheap to recalibrate.
CALIBRATION_SAMPLE = 2000

GroupAggregation = Literal["profile", "mean", "max"]


class Detection(NamedTuple):
    """One line of a stream, as `AnomalyDetector.process` judged it.

    `group` is the alert group (pattern) of a flagged line, -1 for a normal one; `first`
    says the line opened its group (reduce a stream to one alert per new pattern by keeping
    the lines with `first`); `admitted` says this line's pattern was admitted as normal
    after it (its flagged lines joined the window).
    """

    text: str
    score: float
    anomalous: bool
    threshold: float
    group: int = -1
    first: bool = False
    admitted: bool = False


class GroupScores(NamedTuple):
    """`score_groups` result: group ids in order of first appearance, and their scores."""

    groups: list[Hashable]
    scores: np.ndarray


@dataclass(frozen=True)
class _State:
    """Everything a score reads; replaced whole by each write (copy-on-write)."""

    patterns: np.ndarray  # (m, dim) distinct normal vectors
    lines: np.ndarray  # (n,) int64 pattern of each window line, oldest first
    centroids: np.ndarray  # (c, dim)
    threshold: float
    profiles: np.ndarray  # (g, dim) mean line vector of each normal group given to fit
    alert_vectors: np.ndarray  # (a, dim) distinct vectors of open alert groups
    alert_groups: np.ndarray  # (a,) int64 group id of each
    alert_counts: np.ndarray  # (a,) int64 flagged lines of each
    next_group: int = 0
    admissions: tuple[int, ...] = field(default=())
    # device copies of the arrays above, made on first use (_device.placed); a new state
    # (dataclasses.replace included) starts with none
    device: dict = field(default_factory=dict, init=False, repr=False, compare=False)


class AnomalyDetector:
    """Scores texts against a rolling window of normal ones; see the module docstring.

    Args:
        engine: embeds the texts.
        window: how many recent normal lines define "normal" (the oldest leave first).
        quantile: the threshold is this quantile of the window patterns' leave-one-out
            scores, in (0, 1): about 1 - quantile of new patterns are flagged.
        centroids: 1 for the window mean, more for seeded spherical k-means.
        novelty_weight: weight of the nearest-pattern distance in the score; None for the
            plain centroid rule.
        admit_after: flagged lines of one pattern after which it is admitted as normal;
            None to admit only by `confirm_normal` / `update`.
        group_radius: cosine distance within which a flagged line joins an open alert group.
        min_threshold: floor of the threshold (a window of repeats has no spread).
        mask: a callable applied to each text before embedding (default `LogMask()`), or
            None to embed texts as given.
        seed: seeds k-means.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        window: int = 20_000,
        quantile: float = 0.95,
        centroids: int = 1,
        novelty_weight: float | None = 5.0,
        admit_after: int | None = 10,
        group_radius: float = 0.1,
        min_threshold: float = 0.05,
        mask: Callable[[str], str] | None = DEFAULT_MASK,
        seed: int = 0,
    ) -> None:
        self.engine = engine
        self.window = _int_at_least(window, 2, "window")
        self.quantile = _float_in(quantile, "quantile", 0.0, 1.0, closed=False)
        self.n_centroids = _int_at_least(centroids, 1, "centroids")
        if novelty_weight is not None:
            novelty_weight = _float_in(novelty_weight, "novelty_weight", 0.0, math.inf)
            if novelty_weight == 0:
                raise InvalidInputError("novelty_weight must be > 0, or None for the plain rule")
        self.novelty_weight = novelty_weight
        self.admit_after = (
            None if admit_after is None else _int_at_least(admit_after, 1, "admit_after")
        )
        self.group_radius = _float_in(group_radius, "group_radius", 0.0, 2.0)
        self.min_threshold = _float_in(min_threshold, "min_threshold", 0.0, 2.0)
        if mask is not None and not callable(mask):
            raise InvalidTypeError(f"mask must be callable or None, got {type(mask).__name__}")
        self.mask = mask
        self.seed = _int_at_least(seed, 0, "seed")
        self._lock = RWLock()
        self._state: _State | None = None

    # -- state ---------------------------------------------------------------------------

    @property
    def fitted(self) -> bool:
        return self._state is not None

    @property
    def threshold(self) -> float:
        """The current threshold (see the module docstring)."""
        return self._fitted_state().threshold

    @property
    def centroids(self) -> np.ndarray:
        """(centroids, dim) float32 unit rows."""
        return self._fitted_state().centroids.copy()

    @property
    def patterns(self) -> int:
        """Distinct patterns in the window."""
        return len(self._fitted_state().patterns)

    @property
    def alert_groups(self) -> dict[int, int]:
        """Open alert groups: group id -> flagged lines of its not yet admitted patterns."""
        st = self._fitted_state()
        return {
            int(g): int(st.alert_counts[st.alert_groups == g].sum())
            for g in dict.fromkeys(st.alert_groups.tolist())
        }

    @property
    def admissions(self) -> tuple[int, ...]:
        """The group of each pattern admitted as normal so far, in order."""
        return self._fitted_state().admissions

    def __len__(self) -> int:
        """Lines in the window."""
        return 0 if self._state is None else len(self._state.lines)

    # -- texts ---------------------------------------------------------------------------

    def embed(self, texts: Iterable[str]) -> np.ndarray:
        """Mask (when configured) and embed: (n, dim) float32 unit rows."""
        return self.engine.embed(self._masked(texts))

    def _masked(self, texts: Iterable[str]) -> list[str]:
        items = check_texts(texts)
        return items if self.mask is None else [self.mask(t) for t in items]

    def _embed_for_scores(self, texts: Iterable[str]) -> np.ndarray:
        """`embed`, left on the GPU when the engine is resident there (scores only read)."""
        return _device.embed(self.engine, self._masked(texts))

    def fit(
        self, normal_texts: Sequence[str], *, groups: Sequence[Hashable] | None = None
    ) -> AnomalyDetector:
        """Start from these normal lines; `groups` (one id per line) also keeps each normal
        group's profile for `score_groups`. More lines than `window` keep the newest
        `window` in the window, with a warning (profiles use every line)."""
        return self.fit_vectors(self.embed(normal_texts), groups=groups)

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """(n,) float32 anomaly scores; higher is more anomalous. Changes nothing."""
        return self.score_vectors(self._embed_for_scores(texts))

    def is_anomalous(self, texts: Sequence[str]) -> np.ndarray:
        """(n,) bool: score above the current threshold."""
        return self.is_anomalous_vectors(self._embed_for_scores(texts))

    def update(self, normal_texts: Sequence[str]) -> None:
        """Add lines known to be normal (the oldest leave); open alert groups holding one of
        them are admitted. Centroids and threshold follow."""
        self.update_vectors(self.embed(normal_texts))

    def score_groups(
        self,
        texts: Sequence[str],
        group_ids: Sequence[Hashable],
        *,
        how: GroupAggregation = "profile",
    ) -> GroupScores:
        """Score sessions / blocks / jobs / runs, one score per group id (see
        `score_groups_vectors`)."""
        x = self.embed(texts) if how == "profile" else self._embed_for_scores(texts)
        return self.score_groups_vectors(x, group_ids, how=how)

    def process(self, stream: Iterable[str], *, batch_size: int = 32) -> Iterator[Detection]:
        """Judge a stream in order, line by line (embedded `batch_size` at a time).

        A normal line joins the window; a flagged line joins or opens an alert group, which
        is admitted after `admit_after` flagged lines. The threshold and centroids are
        recalibrated after each batch.
        """
        batch_size = _int_at_least(batch_size, 1, "batch_size")
        self._fitted_state()
        batch: list[str] = []
        for position, text in enumerate(stream):
            if not isinstance(text, str):
                raise InvalidTypeError(
                    f"stream item {position} is {type(text).__name__}, expected str"
                )
            batch.append(text)
            if len(batch) == batch_size:
                yield from self._process_batch(batch)
                batch = []
        if batch:
            yield from self._process_batch(batch)

    def confirm_normal(self, groups: int | Iterable[int]) -> None:
        """Admit these open alert groups as normal now: their lines join the window.

        An id that is not an open group raises InvalidInputError and admits nothing.
        """
        wanted = [groups] if isinstance(groups, (int, np.integer)) else list(groups)
        with self._lock.write():
            st = self._fitted_state()
            open_ids = set(st.alert_groups.tolist())
            unknown = [g for g in wanted if g not in open_ids]
            if unknown:
                raise InvalidInputError(f"no open alert group {unknown}; open: {sorted(open_ids)}")
            self._state = self._recalibrate(_admit(st, set(wanted)))

    # -- vectors -------------------------------------------------------------------------

    def fit_vectors(
        self, vectors: np.ndarray, *, groups: Sequence[Hashable] | None = None
    ) -> AnomalyDetector:
        """`fit` on embedded lines: (n, dim) unit rows, n >= 2."""
        x = self._check_vectors(vectors, "normal vectors")
        if len(x) < 2:
            raise InvalidInputError(f"fit needs at least 2 normal lines, got {len(x)}")
        profiles = np.zeros((0, x.shape[1]), np.float32)
        if groups is not None:
            keys = _check_group_ids(groups, len(x))
            profiles = _group_means(x, keys)[1]
        if len(x) > self.window:
            warnings.warn(
                f"fit got {len(x)} lines for a window of {self.window}: the oldest "
                f"{len(x) - self.window} leave the window (raise window to keep them)",
                stacklevel=2,
            )
            x = x[-self.window :]
        patterns, lines = _distinct(x)
        empty = np.zeros((0, x.shape[1]), np.float32)
        state = _State(
            patterns=patterns,
            lines=lines,
            centroids=empty,
            threshold=0.0,
            profiles=profiles,
            alert_vectors=empty,
            alert_groups=np.zeros(0, np.int64),
            alert_counts=np.zeros(0, np.int64),
        )
        state = self._recalibrate(state)
        with self._lock.write():
            self._state = state
        return self

    def score_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """`score` on embedded lines: (n, dim) -> (n,) float32."""
        x = self._check_vectors(vectors, "vectors", scored=True)
        with self._lock.read():
            st = self._fitted_state()
            return self._scores(x, st)

    def is_anomalous_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """`is_anomalous` on embedded lines."""
        x = self._check_vectors(vectors, "vectors", scored=True)
        with self._lock.read():
            st = self._fitted_state()
            return self._scores(x, st) > st.threshold

    def update_vectors(self, vectors: np.ndarray) -> None:
        """`update` on embedded lines."""
        x = self._check_vectors(vectors, "vectors")
        if len(x) == 0:
            return
        with self._lock.write():
            st = self._fitted_state()
            if len(st.alert_vectors):
                nearest = 1.0 - (x @ st.alert_vectors.T).max(axis=0)
                confirmed = set(st.alert_groups[nearest < SAME_LINE].tolist())
                st = _admit(st, confirmed)
            self._state = self._recalibrate(_add_lines(st, x))

    def score_groups_vectors(
        self,
        vectors: np.ndarray,
        group_ids: Sequence[Hashable],
        *,
        how: GroupAggregation = "profile",
    ) -> GroupScores:
        """One score per group (session, block, job, run) of embedded lines.

        Aggregations (`how`):
        * "profile" (default): the group's profile is the mean of its line vectors (its mix
          of messages, repeats included); the score is the Euclidean distance to the nearest
          normal group profile kept by `fit(..., groups=...)`, or to the window's mean line
          when fit had no groups. It sees faults that change *how often* known messages
          occur (retries, missing steps), which line scores cannot.
        * "mean": mean line score (share and distance of new lines);
        * "max": highest line score.
        """
        x = self._check_vectors(vectors, "vectors", scored=True)
        keys = _check_group_ids(group_ids, len(x))
        if how not in ("profile", "mean", "max"):
            raise InvalidInputError(f"how must be 'profile', 'mean' or 'max', got {how!r}")
        with self._lock.read():
            st = self._fitted_state()
            if how == "profile":
                order, means = _group_means(ops.to_host(x), keys)
                reference = st.profiles
                if len(reference) == 0:
                    reference = st.patterns[st.lines].mean(axis=0, keepdims=True)
                d2 = (
                    (means**2).sum(1)[:, None]
                    - 2.0 * means @ reference.T
                    + (reference**2).sum(1)[None, :]
                )
                return GroupScores(order, np.sqrt(np.maximum(d2.min(axis=1), 0.0)))
            line_scores = self._scores(x, st)
        order = list(dict.fromkeys(keys))
        index = {key: i for i, key in enumerate(order)}
        codes = np.fromiter((index[k] for k in keys), np.int64, len(keys))
        if how == "mean":
            sums = np.bincount(codes, weights=line_scores, minlength=len(order))
            scores = sums / np.bincount(codes, minlength=len(order))
        else:
            scores = np.full(len(order), -np.inf)
            np.maximum.at(scores, codes, line_scores)
        return GroupScores(order, scores.astype(np.float32))

    # -- internals -----------------------------------------------------------------------

    def _process_batch(self, texts: list[str]) -> list[Detection]:
        x = self.embed(texts)
        with self._lock.write():
            st = self._fitted_state()
            detections, st = self._judge(texts, x, st)
            self._state = self._recalibrate(st)
        return detections

    def _judge(self, texts: list[str], x: np.ndarray, st: _State) -> tuple[list[Detection], _State]:
        """Judge lines in order against a state that learns as it goes (threshold fixed)."""
        centroid, _ = ops.centroid_distance(x, st.centroids)
        sims = x @ st.patterns.T
        best = sims.argmax(axis=1)
        known = 1.0 - sims[np.arange(len(x)), best]
        counts = np.bincount(st.lines, minlength=len(st.patterns))  # lines per pattern
        threshold = st.threshold
        added: list[np.ndarray] = []  # normal lines of this batch, as vectors
        fresh: list[np.ndarray] = []  # distinct patterns first seen in this batch
        fresh_counts: list[int] = []
        alerts = list(st.alert_vectors)
        alert_groups = st.alert_groups.tolist()
        alert_counts = st.alert_counts.tolist()
        next_group, admitted = st.next_group, list(st.admissions)
        out: list[Detection] = []

        def learn(v: np.ndarray, i: int | None, times: int) -> None:
            """Count `times` normal lines of vector v (line i of the batch, if it is one)."""
            added.extend([v] * times)
            if i is not None and known[i] < SAME_LINE:
                counts[best[i]] += times
                return
            if fresh:
                j = int((np.asarray(fresh) @ v).argmax())
                if 1.0 - float(fresh[j] @ v) < SAME_LINE:
                    fresh_counts[j] += times
                    return
            fresh.append(v)
            fresh_counts.append(times)

        for i, text in enumerate(texts):
            v = x[i]
            novelty, count = float(known[i]), int(counts[best[i]])
            if novelty >= SAME_LINE and fresh:
                j = int((np.asarray(fresh) @ v).argmax())
                novelty = min(novelty, 1.0 - float(fresh[j] @ v))
                count = fresh_counts[j]
            score = self._rule(float(centroid[i]), novelty, count, threshold)
            if score <= threshold:
                learn(v, i, 1)
                out.append(Detection(text, score, False, threshold))
                continue
            group, first, member = -1, False, -1
            if alerts:
                distances = 1.0 - np.asarray(alerts) @ v
                member = int(distances.argmin())
                if distances[member] <= self.group_radius:
                    group = alert_groups[member]
                    if distances[member] >= SAME_LINE:
                        member = -1  # a new member of that group
                else:
                    member = -1
            if group < 0:
                group, first, next_group = next_group, True, next_group + 1
            if member < 0:
                alerts.append(v)
                alert_groups.append(group)
                alert_counts.append(0)
                member = len(alerts) - 1
            alert_counts[member] += 1
            admit = self.admit_after is not None and alert_counts[member] >= self.admit_after
            if admit:  # this pattern recurred enough: it joins the window, its group may stay
                learn(alerts[member], i, alert_counts[member])
                del alerts[member], alert_groups[member], alert_counts[member]
                admitted.append(group)
            out.append(Detection(text, score, True, threshold, group, first, admit))
        dim = x.shape[1]
        st = replace(
            st,
            alert_vectors=np.asarray(alerts, np.float32).reshape(-1, dim),
            alert_groups=np.asarray(alert_groups, np.int64),
            alert_counts=np.asarray(alert_counts, np.int64),
            next_group=next_group,
            admissions=tuple(admitted),
        )
        if added:
            st = _add_lines(st, np.asarray(added, np.float32))
        return out, st

    def _rule(self, centroid: float, novelty: float, count: int, threshold: float) -> float:
        """The score of one line; see `_scores`."""
        if self.novelty_weight is None:
            score = centroid
        elif novelty < SAME_LINE:
            score = min(centroid / (1.0 + count), threshold)
        else:
            score = min(centroid, self.novelty_weight * novelty)
        return 0.0 if score < SAME_LINE else score

    def _scores(self, x: np.ndarray, st: _State) -> np.ndarray:
        """The line scores (module docstring), with distances under SAME_LINE snapped to 0.

        A line unlike every known pattern scores min(centroid, novelty_weight * novelty);
        a line of a known pattern seen c times in the window scores centroid / (1 + c),
        capped at the threshold: rare known messages rank above frequent ones, but rarity
        alone never flags a line.
        """
        if len(x) == 0:
            return np.zeros(0, np.float32)
        if _device.on_device(x):  # the kernels run on the device, distances come back
            _device.record("anomaly")
        centroids = _device.placed(st.device, "centroids", st.centroids, x)
        distance = ops.to_host(ops.centroid_distance(x, centroids)[0])
        if self.novelty_weight is not None:
            patterns = _device.placed(st.device, "patterns", st.patterns, x)
            nearest, ids = map(ops.to_host, ops.topk_cosine(x, patterns, 1))
            novelty = 1.0 - nearest[:, 0]
            counts = np.bincount(st.lines, minlength=len(st.patterns))[ids[:, 0]]
            known = np.minimum(distance / (1.0 + counts), st.threshold)
            distance = np.where(
                novelty < SAME_LINE, known, np.minimum(distance, self.novelty_weight * novelty)
            )
        return np.where(distance < SAME_LINE, 0.0, distance).astype(np.float32)

    def _recalibrate(self, st: _State) -> _State:
        """Trim the window, drop patterns with no line left, refit centroids and threshold."""
        lines = st.lines[-self.window :]
        used = np.unique(lines)
        patterns = st.patterns
        if len(used) < len(patterns):
            remap = np.full(len(patterns), -1, np.int64)
            remap[used] = np.arange(len(used))
            patterns, lines = patterns[used], remap[lines]
        if self.n_centroids == 1:
            counts = np.bincount(lines, minlength=len(patterns)).astype(np.float32)
            mean = counts @ patterns
            norm = float(np.linalg.norm(mean))
            centroids = (mean / norm if norm > 0 else patterns[0])[None, :].astype(np.float32)
        else:
            centroids = spherical_kmeans(patterns[lines], self.n_centroids, seed=self.seed)
        threshold = self._calibrate(patterns, centroids)
        return replace(st, patterns=patterns, lines=lines, centroids=centroids, threshold=threshold)

    def _calibrate(self, patterns: np.ndarray, centroids: np.ndarray) -> float:
        """`quantile` of the patterns' leave-one-out scores, at least `min_threshold`."""
        sample = patterns
        if len(patterns) > CALIBRATION_SAMPLE:
            rng = np.random.default_rng(self.seed)
            sample = patterns[np.sort(rng.choice(len(patterns), CALIBRATION_SAMPLE, replace=False))]
        scores, _ = ops.centroid_distance(sample, centroids)
        if self.novelty_weight is not None and len(patterns) > 1:
            nearest, _ = ops.topk_cosine(sample, patterns, 2)
            # the best match of a sampled pattern is itself: take the next one
            own = np.isclose(nearest[:, 0], 1.0, atol=SAME_LINE)
            other = np.where(own, nearest[:, 1], nearest[:, 0])
            scores = np.minimum(scores, self.novelty_weight * (1.0 - other))
        return max(float(np.quantile(scores, self.quantile)), self.min_threshold)

    def _check_vectors(self, vectors: np.ndarray, name: str, *, scored: bool = False) -> np.ndarray:
        """Checked float32 rows; a device array stays there when only `scored` (read),
        else its copy on the host (the window lives there)."""
        if _device.on_device(vectors):
            if scored:
                return _device.check(vectors, name, self.engine.dim)
            vectors = ops.to_host(vectors)
        try:
            x = ops.check_vectors(vectors, name, self.engine.dim)
        except InvalidInputError:
            raise
        except ValueError as error:
            raise InvalidInputError(str(error)) from error
        return np.ascontiguousarray(x, np.float32)

    def _fitted_state(self) -> _State:
        if self._state is None:
            raise InvalidInputError("the detector has no normal lines yet: call fit(normal_texts)")
        return self._state

    # -- persistence ---------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the window, the open alert groups and the settings to one verified file."""
        if self.mask is not None and not isinstance(self.mask, LogMask):
            raise InvalidInputError(
                "only a LogMask (or mask=None) can be saved, not a custom callable"
            )
        with self._lock.read():
            st = self._fitted_state()
            meta = {
                "kind": _KIND,
                "format": 2,
                "model": self.engine.spec.fingerprint,
                "window": self.window,
                "quantile": self.quantile,
                "centroids": self.n_centroids,
                "novelty_weight": self.novelty_weight,
                "admit_after": self.admit_after,
                "group_radius": self.group_radius,
                "min_threshold": self.min_threshold,
                "mask": None if self.mask is None else asdict(self.mask),
                "seed": self.seed,
                "threshold": st.threshold,
                "next_group": st.next_group,
                "admissions": list(st.admissions),
            }
            arrays = {
                "patterns": st.patterns,
                "lines": st.lines,
                "centroids": st.centroids,
                "profiles": st.profiles,
                "alert_vectors": st.alert_vectors,
                "alert_groups": st.alert_groups,
                "alert_counts": st.alert_counts,
            }
        save_arrays(path, arrays, meta)

    @classmethod
    @malformed_is_corrupt
    def load(cls, path: str | Path, *, engine: Engine) -> AnomalyDetector:
        """A detector saved by `save`, for the same model (ModelMismatchError otherwise).

        Files from the first format (a window of line vectors) load too: the window is
        rebuilt from its lines and recalibrated.
        """
        arrays, meta = load_state(path, _KIND, engine.spec.fingerprint)
        mask = None if meta["mask"] is None else LogMask(**meta["mask"])
        detector = cls(
            engine,
            window=meta["window"],
            quantile=meta["quantile"],
            centroids=meta["centroids"],
            novelty_weight=meta["novelty_weight"],
            admit_after=meta.get("admit_after", 10),
            group_radius=meta.get("group_radius", 0.1),
            min_threshold=meta.get("min_threshold", 0.05),
            mask=mask,
            seed=meta["seed"],
        )
        if meta.get("format", 1) == 1:
            return detector.fit_vectors(arrays["vectors"])
        detector._state = _checked_state(
            patterns=arrays["patterns"],
            lines=arrays["lines"].astype(np.int64),
            centroids=arrays["centroids"],
            threshold=float(meta["threshold"]),
            profiles=arrays["profiles"],
            alert_vectors=arrays["alert_vectors"],
            alert_groups=arrays["alert_groups"].astype(np.int64),
            alert_counts=arrays["alert_counts"].astype(np.int64),
            next_group=int(meta["next_group"]),
            admissions=tuple(int(g) for g in meta["admissions"]),
        )
        return detector


# -- helpers (pure functions of arrays) ----------------------------------------------------


def _checked_state(**fields: object) -> _State:
    """A loaded state whose arrays fit together, or ValueError saying which does not (load
    turns it into CorruptFileError): a crafted pattern index would otherwise reach the first
    score as a huge allocation or an index error."""
    st = _State(**fields)  # type: ignore[arg-type]
    if st.patterns.ndim != 2 or len(st.patterns) == 0 or st.patterns.dtype.kind != "f":
        raise ValueError(f"patterns must be a non-empty float matrix, got {st.patterns.shape}")
    dim = st.patterns.shape[1]
    for name in ("centroids", "profiles", "alert_vectors"):
        a = getattr(st, name)
        if a.ndim != 2 or a.shape[1] != dim or a.dtype.kind != "f":
            raise ValueError(f"{name} must be a float (n, {dim}) matrix, got {a.shape}")
    if len(st.centroids) == 0:
        raise ValueError("centroids is empty")
    if st.lines.ndim != 1 or len(st.lines) == 0:
        raise ValueError(f"lines must be a non-empty vector, got shape {st.lines.shape}")
    if st.lines.min() < 0 or st.lines.max() >= len(st.patterns):
        raise ValueError(f"lines must index the {len(st.patterns)} patterns")
    alerts = len(st.alert_vectors)
    if st.alert_groups.shape != (alerts,) or st.alert_counts.shape != (alerts,):
        raise ValueError(f"alert_groups and alert_counts must have {alerts} entries each")
    if alerts and st.alert_counts.min() < 0:
        raise ValueError("alert_counts must not be negative")
    if not math.isfinite(st.threshold):
        raise ValueError(f"threshold must be finite, got {st.threshold}")
    return st


def _distinct(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of unit vectors x and each row's pattern index.

    Identical masked lines embed to identical rows; rows equal only within SAME_LINE (float
    rounding across batches) are merged into the earlier one.
    """
    _, first, inverse = np.unique(x, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)  # unique rows in order of first appearance
    rows = x[first[order]]
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    target = np.arange(len(rows))
    if len(rows) > 1:
        nearest, ids = ops.topk_cosine(rows, rows, 1, exclude_self=True)
        twin = (1.0 - nearest[:, 0] < SAME_LINE) & (ids[:, 0] < target)
        target[twin] = ids[twin, 0]
        target = target[target]  # a twin of a twin (rare) maps to the earliest
    keep = np.unique(target)
    renumber = np.full(len(rows), -1, np.int64)
    renumber[keep] = np.arange(len(keep))
    lines = renumber[target[rank[inverse.reshape(-1)]]]
    return np.ascontiguousarray(rows[keep], np.float32), lines


def _add_lines(st: _State, x: np.ndarray) -> _State:
    """Append normal lines to the window (new patterns where no known one matches)."""
    patterns = st.patterns
    sims = x @ patterns.T
    best = sims.argmax(axis=1)
    match = 1.0 - sims[np.arange(len(x)), best] < SAME_LINE
    new_patterns, new_lines = _distinct(x[~match]) if (~match).any() else (patterns[:0], None)
    lines = best.astype(np.int64)
    if new_lines is not None:
        lines[~match] = len(patterns) + new_lines
    return replace(
        st,
        patterns=np.concatenate([patterns, new_patterns]),
        lines=np.concatenate([st.lines, lines]),
    )


def _admit(st: _State, groups: set[int]) -> _State:
    """Move the open alert groups `groups` into the window, each member once per line."""
    if not groups:
        return st
    chosen = np.isin(st.alert_groups, list(groups))
    vectors = np.repeat(st.alert_vectors[chosen], st.alert_counts[chosen], axis=0)
    admitted = st.admissions + tuple(g for g in dict.fromkeys(st.alert_groups[chosen].tolist()))
    st = replace(
        st,
        alert_vectors=st.alert_vectors[~chosen],
        alert_groups=st.alert_groups[~chosen],
        alert_counts=st.alert_counts[~chosen],
        admissions=admitted,
    )
    return _add_lines(st, vectors) if len(vectors) else st


def _group_means(x: np.ndarray, keys: list[Hashable]) -> tuple[list[Hashable], np.ndarray]:
    """Group ids in first-appearance order and the mean vector of each group's rows."""
    order = list(dict.fromkeys(keys))
    index = {key: i for i, key in enumerate(order)}
    codes = np.fromiter((index[k] for k in keys), np.int64, len(keys))
    sums = np.zeros((len(order), x.shape[1]), np.float64)
    np.add.at(sums, codes, x)
    counts = np.bincount(codes, minlength=len(order))
    return order, (sums / counts[:, None]).astype(np.float32)


def _check_group_ids(group_ids: Sequence[Hashable], n: int) -> list[Hashable]:
    if isinstance(group_ids, (str, bytes)):
        raise InvalidTypeError("group ids must be a sequence (one id per line), not a string")
    keys = list(group_ids)
    if len(keys) != n:
        raise InvalidInputError(f"got {len(keys)} group ids for {n} lines; give one per line")
    for position, key in enumerate(keys):
        if key is None or not isinstance(key, Hashable):
            raise InvalidTypeError(f"group_ids[{position}] is {key!r}, expected a hashable id")
    return keys


def _int_at_least(value: object, low: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidTypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low:
        raise InvalidInputError(f"{name} must be >= {low}, got {value}")
    return int(value)


def _float_in(value: object, name: str, low: float, high: float, *, closed: bool = True) -> float:
    """A finite float within [low, high] (or (low, high)); NaN and inf are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidTypeError(f"{name} must be a number, got {type(value).__name__}")
    number = float(value)
    inside = low <= number <= high if closed else low < number < high
    if not math.isfinite(number) or not inside:
        bounds = f"[{low}, {high}]" if closed else f"({low}, {high})"
        raise InvalidInputError(f"{name} must be a finite number in {bounds}, got {value}")
    return number
