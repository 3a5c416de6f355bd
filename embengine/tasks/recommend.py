"""Content-based recommendation over item embeddings, blended with interactions when given.

Items are texts (or dicts joined as in embengine.records.record_texts) embedded once, or
the caller's own vectors (`Recommender.from_vectors`); a user is the weighted centroid of
the items in their history, or several centroids for varied tastes. A new item is
recommendable the moment it is added: content needs no interactions. With interactions,
`alpha` blends in item-item co-occurrence ("users who liked your items also liked"),
which only items with a history can earn.

Results follow the contract every job shares (README, "One contract for every job"):
`similar` and `for_user` take a batch and return `(scores, ids)`, each (n, k), best first;
slots past the available items hold score -inf and id -1 (int item ids) or None (str item
ids). A row's result does not depend on the rest of the batch: each row is scored alone.

Thread safety by copy-on-write: the catalogue and interactions live in one immutable
`_State`; a query reads `self._state` once and works on that snapshot, and a write builds
the next state and swaps the reference (writers take turns on a lock). Concurrent
queries therefore see the state before or after a write, never a mix, and a write that
raises leaves the state untouched.

GPU: on a device-resident engine (embengine.tasks._device) `add_items` embeds on the device
(the rows then join the host catalogue, which `save` / `load` and the copy-on-write rules
keep as the source of truth), and `similar` / `for_user` run their kernels (the top-k over
the catalogue, the taste centroids' distances) against a device copy of the state's content
vectors, made once per state; only ids and scores come back (for `for_user`, one score per
item, which the host blends with interactions and filters as without a GPU).
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embengine import ops
from embengine.clustering import spherical_kmeans
from embengine.errors import (
    CorruptFileError,
    InvalidInputError,
    InvalidTypeError,
    ModelMismatchError,
    NotFoundError,
)
from embengine.io import (
    load_arrays,
    malformed_is_corrupt,
    pack_strings,
    save_arrays,
    unpack_strings,
)
from embengine.records import Record, record_texts
from embengine.tasks import _device

if TYPE_CHECKING:
    from embengine.engine import Engine

ItemId = int | str
UserId = int | str
History = Sequence[ItemId] | Mapping[ItemId, float]
Interaction = tuple[UserId, ItemId] | tuple[UserId, ItemId, float]

_KIND = "recommender"
_FORMAT = 1
# k may exceed the catalogue (the rest is padding) up to this many slots per row; beyond
# both, the result would be almost all padding and its allocation could exhaust memory.
MAX_PADDED_K = 10_000
_INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class _State:
    """One consistent snapshot of the catalogue and interactions; never mutated."""

    ids: tuple[ItemId, ...]  # row -> item id
    row: Mapping[ItemId, int]  # item id -> row
    vectors: np.ndarray  # (n, dim) unit rows, read-only
    content: np.ndarray  # (n, dim) the rows content scores use (centred if asked), read-only
    users: Mapping[UserId, int]  # user id -> user index
    user_of: np.ndarray  # interaction rows: user index,
    item_of: np.ndarray  # item row,
    weight: np.ndarray  # and weight (float32 > 0)
    # device copies of `content`, made on first use (_device.placed); a new state (replace)
    # starts with none, so a reader never sees another state's copy
    device: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def id_kind(self) -> str | None:
        return None if not self.ids else ("str" if isinstance(self.ids[0], str) else "int")


class Recommender:
    """Recommend items by content similarity, optionally blended with interactions.

    `items` maps id -> text or dict (`fields` / `template` as in embengine.records.record_texts);
    item ids are all int (0 <= id < 2**63) or all str. `interactions` are (user, item) or
    (user, item, weight) rows, weight finite and > 0; with them, `alpha` in [0, 1] weights
    co-occurrence against content (0: content only). `profiles` > 1 splits a long history
    into that many taste centroids (k-means) and scores an item by its best one. `center`
    scores content on embeddings minus the catalogue's mean vector (renormalised): the
    direction all items share otherwise dominates every centroid and favours generic items.
    `diversity` in [0, 1) re-ranks by maximal marginal relevance (0: pure relevance).
    `engine` may be None for a recommender over your own vectors (see `from_vectors`).
    """

    def __init__(
        self,
        engine: Engine | None,
        items: Mapping[ItemId, Record] | None = None,
        *,
        interactions: Iterable[Interaction] | None = None,
        alpha: float = 0.5,
        profiles: int = 1,
        diversity: float = 0.0,
        center: bool = True,
        fields: Sequence[str] | None = None,
        template: str | None = None,
    ) -> None:
        self._alpha = _check_fraction(alpha, "alpha", upper_open=False)
        self._diversity = _check_fraction(diversity, "diversity", upper_open=True)
        if isinstance(profiles, bool) or not isinstance(profiles, (int, np.integer)):
            raise InvalidTypeError(f"profiles must be an int >= 1, got {profiles!r}")
        if profiles < 1:
            raise InvalidInputError(f"profiles must be >= 1, got {profiles}")
        if not isinstance(center, (bool, np.bool_)):
            raise InvalidTypeError(f"center must be a bool, got {center!r}")
        if template is not None and not isinstance(template, str):
            raise InvalidTypeError(f"template must be a str or None, got {template!r}")
        self._profiles = int(profiles)
        self._center = bool(center)
        self._fields = None if fields is None else [str(f) for f in fields]
        self._template = template
        self.engine = engine
        self._fingerprint: str | None = None if engine is None else engine.spec.fingerprint
        self._dim: int | None = None if engine is None else int(engine.dim)
        self._write = threading.Lock()  # writers take turns; readers never wait
        self._state = _State(
            ids=(),
            row={},
            vectors=_frozen(np.zeros((0, self._dim or 0), np.float32)),
            content=_frozen(np.zeros((0, self._dim or 0), np.float32)),
            users={},
            user_of=_frozen(np.empty(0, np.int64)),
            item_of=_frozen(np.empty(0, np.int64)),
            weight=_frozen(np.empty(0, np.float32)),
        )
        if items is not None:
            self.add_items(items)
        if interactions is not None:
            self.add_interactions(interactions)

    @classmethod
    def from_vectors(
        cls,
        vectors: np.ndarray,
        ids: Sequence[ItemId],
        *,
        engine: Engine | None = None,
        interactions: Iterable[Interaction] | None = None,
        alpha: float = 0.5,
        profiles: int = 1,
        diversity: float = 0.0,
        center: bool = True,
    ) -> Recommender:
        """A recommender over your own (n, dim) item vectors (rows are L2-normalised).

        No model is needed; pass `engine` only to add text items later (its dim must match).
        """
        rec = cls(
            engine,
            interactions=None,
            alpha=alpha,
            profiles=profiles,
            diversity=diversity,
            center=center,
        )
        rec.add_vectors(ids, vectors)
        if interactions is not None:
            rec.add_interactions(interactions)
        return rec

    # ------------------------------------------------------------------------ state

    def __len__(self) -> int:
        return len(self._state.ids)

    @property
    def ids(self) -> list[ItemId]:
        """Item ids in the order they were added."""
        return list(self._state.ids)

    @property
    def vectors(self) -> np.ndarray:
        """(n, dim) float32 unit rows of the items, in `ids` order (read-only)."""
        return self._state.vectors

    @property
    def content_vectors(self) -> np.ndarray:
        """(n, dim) unit rows that content scores use: the vectors, centred if `center`."""
        return self._state.content

    @property
    def alpha(self) -> float:
        return self._alpha

    @property
    def profiles(self) -> int:
        return self._profiles

    @property
    def diversity(self) -> float:
        return self._diversity

    @property
    def center(self) -> bool:
        return self._center

    # ------------------------------------------------------------------------ writes

    def add_items(self, items: Mapping[ItemId, Record]) -> None:
        """Embed and add items; they are recommendable at once.

        Ids already present, or repeated, raise InvalidInputError and nothing is added.
        """
        if not isinstance(items, Mapping):
            raise InvalidTypeError(
                f"items must be a mapping id -> text or dict, got {type(items).__name__}"
            )
        if self.engine is None:
            raise InvalidInputError(
                "text items need an engine: make the recommender with engine.recommender(...) "
                "or pass engine= to from_vectors / load, or add vectors with add_vectors"
            )
        ids = _check_item_ids(list(items), self._state)  # fail before the slow embedding
        texts = record_texts(list(items.values()), fields=self._fields, template=self._template)
        self._add(ids, _device.embed(self.engine, texts))

    def add_vectors(self, ids: Sequence[ItemId], vectors: np.ndarray) -> None:
        """`add_items` with your own (n, dim) vectors (rows are L2-normalised); device arrays
        (CUDA torch / CuPy) are checked there and copied to the host catalogue."""
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
            raise InvalidTypeError("ids must be a sequence of item ids (int or str)")
        self._add(_check_item_ids(list(ids), self._state), vectors)

    def _add(self, ids: list[ItemId], vectors: np.ndarray) -> None:
        x = _unit_rows(vectors, "vectors", self._dim)
        if len(x) != len(ids):
            raise InvalidInputError(f"{len(ids)} ids for {len(x)} vectors")
        with self._write:
            old = self._state
            ids = _check_item_ids(ids, old)  # again: another writer may have added them
            if not ids:
                return
            if len(old.ids) and x.shape[1] != old.vectors.shape[1]:
                raise InvalidInputError(
                    f"vectors have dim {x.shape[1]}, the catalogue {old.vectors.shape[1]}"
                )
            combined = np.concatenate([old.vectors, x]) if len(old.ids) else x
            row = dict(old.row)
            row.update({item: len(old.ids) + n for n, item in enumerate(ids)})
            self._dim = x.shape[1]
            self._state = replace(
                old,
                ids=old.ids + tuple(ids),
                row=row,
                vectors=_frozen(combined),
                content=_frozen(_content(combined, self._center)),
            )

    def add_interactions(self, interactions: Iterable[Interaction]) -> None:
        """Record (user, item) or (user, item, weight) rows; weight finite and > 0 (default 1).

        Unknown items raise NotFoundError, malformed rows InvalidInputError /
        InvalidTypeError, naming the row; nothing is recorded then.
        """
        if isinstance(interactions, (str, bytes, Mapping)):
            raise InvalidTypeError("interactions must be an iterable of (user, item[, weight])")
        rows = list(interactions)
        with self._write:
            old = self._state
            users = dict(old.users)
            user_of, item_of, weight = _parse_interactions(rows, old, users)
            self._state = _same_catalogue(
                old,
                users=users,
                user_of=_frozen(np.concatenate([old.user_of, user_of])),
                item_of=_frozen(np.concatenate([old.item_of, item_of])),
                weight=_frozen(np.concatenate([old.weight, weight])),
            )

    # ------------------------------------------------------------------------ queries

    def similar(self, item_ids: Sequence[ItemId], k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """For each item, the k items most similar in content, itself excluded.

        Returns (scores, ids), each (len(item_ids), k), best first; scores are cosines
        (of the centred vectors when `center`), float32. Missing slots: -inf and -1 (int
        ids) or None (str ids). There is no single-item form: take row 0 of a batch of one.
        """
        state = self._state
        if isinstance(item_ids, (str, bytes)) or not isinstance(item_ids, Sequence):
            raise InvalidTypeError("item_ids must be a sequence of item ids: wrap one id in a list")
        rows = _rows(state, list(item_ids), "item_ids")
        k = _check_k(k, len(state.ids))
        at = _device.anchor(self.engine)
        if at is not None and len(rows):
            return _similar_on_device(state, rows, k, at)
        scores, picked = _empty(len(rows), k)
        everything = np.arange(len(state.ids))
        for n, row in enumerate(rows):
            relevance = state.content @ state.content[row]
            pool = everything[everything != row]
            best = _best(pool, relevance[pool], k)
            scores[n, : len(best)] = relevance[best]
            picked[n, : len(best)] = best
        return scores, _external(state, picked)

    def for_user(
        self,
        histories: Sequence[History],
        k: int = 10,
        *,
        exclude_seen: bool = True,
        exclude: Sequence[Iterable[ItemId]] | None = None,
        candidates: Iterable[ItemId] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items for each history (a sequence of ids, or a mapping id -> weight > 0).

        `candidates` restricts every ranking to those ids (e.g. new arrivals); `exclude`
        gives one collection of ids to drop per history; `exclude_seen` drops each history's
        own items. Returns (scores, ids), each (len(histories), k), best first; scores are
        the blended relevance in [0, 1] (cosine when alpha is 0 or there are no
        interactions), float32. Missing slots: -inf and -1 (int ids) or None (str ids).
        """
        state = self._state
        if isinstance(histories, (str, bytes, Mapping)) or not isinstance(histories, Sequence):
            raise InvalidTypeError(
                "histories must be a sequence of histories (each a list of ids or a mapping "
                "id -> weight): wrap one history in a list"
            )
        k = _check_k(k, len(state.ids))
        parsed = [_history(state, h, f"histories[{n}]") for n, h in enumerate(histories)]
        if exclude is not None:
            if not isinstance(exclude, Sequence) or isinstance(exclude, (str, bytes)):
                raise InvalidTypeError("exclude must be a sequence: one collection per history")
            if len(exclude) != len(parsed):
                raise InvalidInputError(
                    f"exclude must hold one collection of ids per history ({len(parsed)} histories)"
                )
            dropped = [
                _rows(state, _id_list(e, f"exclude[{n}]"), f"exclude[{n}]")
                for n, e in enumerate(exclude)
            ]
        allowed = np.ones(len(state.ids), dtype=bool)
        if candidates is not None:
            allowed[:] = False
            allowed[_rows(state, _id_list(candidates, "candidates"), "candidates")] = True
        at = _device.anchor(self.engine) if parsed else None
        catalogue = _device.placed(state.device, "content", state.content, at)
        if at is not None:
            _device.record("recommend")
        scores, picked = _empty(len(parsed), k)
        for n, (rows, weights) in enumerate(parsed):
            relevance = self._relevance(state, rows, weights, catalogue)
            mask = allowed.copy()
            if exclude_seen:
                mask[rows] = False
            if exclude is not None:
                mask[dropped[n]] = False
            pool = np.flatnonzero(mask)
            if self._diversity > 0.0:
                best = self._mmr(state, pool, relevance[pool], k)
            else:
                best = _best(pool, relevance[pool], k)
            scores[n, : len(best)] = relevance[best]
            picked[n, : len(best)] = best
        return scores, _external(state, picked)

    def _relevance(
        self, state: _State, rows: np.ndarray, weights: np.ndarray, catalogue: Any
    ) -> np.ndarray:
        """Relevance of every item for one history (item rows and weights): (n_items,).

        `catalogue` is state.content or its device copy (the centroid distances run there)."""
        content = _content_scores(state.content, catalogue, rows, weights, self._profiles)
        if self._alpha == 0.0 or len(state.user_of) == 0:
            return content
        signal = _cooccurrence(state, rows, weights)
        return (1 - self._alpha) * _unit_range(content) + self._alpha * _unit_range(signal)

    def _mmr(self, state: _State, pool: np.ndarray, relevance: np.ndarray, k: int) -> np.ndarray:
        """Maximal marginal relevance over the max(20 k, 200) most relevant items of the pool."""
        top = np.lexsort((pool, -relevance))[: max(20 * k, 200)]
        pool, relevance = pool[top], relevance[top]
        vectors = state.content[pool]
        chosen: list[int] = []
        closest = np.full(len(pool), -np.inf)
        for _ in range(min(k, len(pool))):
            gain = (1 - self._diversity) * relevance - self._diversity * np.maximum(closest, 0)
            gain[chosen] = -np.inf
            best = int(np.argmax(gain))
            chosen.append(best)
            closest = np.maximum(closest, vectors @ vectors[best])
        return pool[chosen]

    # ------------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> None:
        """Write items, vectors, interactions and settings to one verified file, atomically.

        Item and user ids come back exactly (int or str, any characters).
        """
        state = self._state
        item_data, item_offsets, item_is_int = _pack_keys(state.ids)
        users = list(state.users)  # insertion order = user index
        user_data, user_offsets, user_is_int = _pack_keys(users)
        arrays = {
            "vectors": state.vectors,
            "item_data": item_data,
            "item_offsets": item_offsets,
            "item_is_int": item_is_int,
            "user_data": user_data,
            "user_offsets": user_offsets,
            "user_is_int": user_is_int,
            "user_of": state.user_of,
            "item_of": state.item_of,
            "weight": state.weight,
        }
        meta = {
            "kind": _KIND,
            "format": _FORMAT,
            "model": self._fingerprint,
            "dim": self._dim,
            "alpha": self._alpha,
            "profiles": self._profiles,
            "diversity": self._diversity,
            "center": self._center,
            "fields": self._fields,
            "template": self._template,
        }
        save_arrays(path, arrays, meta)

    @classmethod
    @malformed_is_corrupt
    def load(cls, path: str | Path, *, engine: Engine | None = None) -> Recommender:
        """A recommender saved by `save`, verified (CorruptFileError when damaged or foreign).

        With `engine`, text items can be added; ModelMismatchError when the file's vectors
        were made by another model. Without one, only vectors can be added.
        """
        arrays, meta = load_arrays(path)
        if meta.get("kind") != _KIND or meta.get("format") != _FORMAT:
            raise CorruptFileError(f"{path} holds a {meta.get('kind')!r}, not a {_KIND!r}")
        saved_model = meta.get("model")
        if engine is not None and saved_model not in (None, engine.spec.fingerprint):
            raise ModelMismatchError(f"{path} was made with another model ({saved_model})")
        if engine is not None and meta.get("dim") not in (None, engine.dim):
            raise ModelMismatchError(
                f"{path} holds {meta.get('dim')}-d vectors, the engine makes {engine.dim}-d ones"
            )
        try:
            rec = cls(
                engine,
                alpha=meta["alpha"],
                profiles=meta["profiles"],
                diversity=meta["diversity"],
                center=meta["center"],
                fields=meta["fields"],
                template=meta["template"],
            )
        except (KeyError, InvalidInputError, InvalidTypeError) as exc:
            raise CorruptFileError(f"{path} has corrupt settings: {exc}") from exc
        rec._fingerprint = saved_model if saved_model is not None else rec._fingerprint
        rec._restore(str(path), arrays, meta)
        return rec

    def _restore(self, path: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Rebuild the state from saved arrays, checking every shape and range first."""
        try:
            ids = _unpack_keys(arrays["item_data"], arrays["item_offsets"], arrays["item_is_int"])
            users = _unpack_keys(arrays["user_data"], arrays["user_offsets"], arrays["user_is_int"])
            vectors, user_of = arrays["vectors"], arrays["user_of"]
            item_of, weight = arrays["item_of"], arrays["weight"]
        except (KeyError, ValueError, UnicodeDecodeError) as exc:
            raise CorruptFileError(f"{path}: corrupt ids ({exc})") from exc
        n, dim = len(ids), meta.get("dim")
        problems = [
            vectors.dtype != np.float32 or vectors.ndim != 2 or len(vectors) != n,
            user_of.ndim != 1 or item_of.ndim != 1 or weight.ndim != 1,
            dim is not None and vectors.shape[1] != dim,
            self._dim is not None and vectors.shape[1] != self._dim,
            not np.isfinite(vectors).all(),
            len(set(users)) != len(users),
            not (len(user_of) == len(item_of) == len(weight)),
            user_of.dtype != np.int64 or item_of.dtype != np.int64 or weight.dtype != np.float32,
            len(user_of) and (user_of.min() < 0 or user_of.max() >= len(users)),
            len(item_of) and (item_of.min() < 0 or item_of.max() >= n),
            not (np.isfinite(weight).all() and (weight > 0).all()),
        ]
        if any(problems):
            raise CorruptFileError(f"{path}: saved arrays disagree (shapes, ranges or values)")
        empty = _State((), {}, vectors[:0], vectors[:0], {}, user_of[:0], item_of[:0], weight[:0])
        try:
            ids = _check_item_ids(ids, empty)
        except (InvalidInputError, InvalidTypeError) as exc:
            raise CorruptFileError(f"{path}: corrupt item ids ({exc})") from exc
        if self._dim is None and dim is not None:
            self._dim = int(dim)
        self._state = _State(
            ids=tuple(ids),
            row={item: r for r, item in enumerate(ids)},
            vectors=_frozen(vectors),
            content=_frozen(_content(vectors, self._center)),
            users={user: u for u, user in enumerate(users)},
            user_of=_frozen(user_of),
            item_of=_frozen(item_of),
            weight=_frozen(weight),
        )


def _same_catalogue(old: _State, **changes: Any) -> _State:
    """The next state with new interactions: the catalogue rows are the very same arrays,
    so their device copies stay true and carry over (an interaction write does not make the
    next device query copy the catalogue over again)."""
    new = replace(old, **changes)
    object.__setattr__(new, "device", old.device)  # frozen: the one field set after init
    return new


# ---------------------------------------------------------------------------- scoring


def _content(vectors: np.ndarray, center: bool) -> np.ndarray:
    """The rows content scores use: minus the catalogue mean and renormalised if `center`."""
    if center and len(vectors) > 1:
        centred = np.ascontiguousarray(vectors - vectors.mean(axis=0))
        return ops.normalize_rows_(centred)
    return vectors


def _content_scores(
    content: np.ndarray, catalogue: Any, rows: np.ndarray, weights: np.ndarray, profiles: int
) -> np.ndarray:
    """Best cosine of each item to the history's taste centroid(s), as numpy.

    The centroids come from the host `content`; the distances of every item to them run
    where `catalogue` (content or its device copy) lives, and only those come back."""
    vectors = content[rows]
    if profiles > 1 and len(rows) > 2 * profiles:
        centroids = spherical_kmeans(vectors, profiles, iterations=5, seed=0)
    else:
        centroids = (weights[:, None] * vectors).sum(0, keepdims=True)
        centroids = ops.normalize_rows_(np.ascontiguousarray(centroids, dtype=np.float32))
    if _device.on_device(catalogue):
        centroids = _device.like(centroids, catalogue)
    dist = ops.to_host(ops.centroid_distance(catalogue, centroids)[0])
    return 1.0 - dist


def _similar_on_device(
    state: _State, rows: np.ndarray, k: int, at: Any
) -> tuple[np.ndarray, np.ndarray]:
    """`Recommender.similar` on the device copy of the content: one top-(k + 1) per item
    (the item itself may be among them), best first with ties to the lower row, as the
    host's; only the (k + 1) ids and scores of each row come back."""
    _device.record("recommend")
    catalogue = _device.placed(state.device, "content", state.content, at)
    scores, picked = _empty(len(rows), k)
    chunk = max(1, ops.MAX_RESULT_SLOTS // (k + 1))
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        found = ops.topk_cosine(
            _device.rows(catalogue, part), catalogue, min(k + 1, len(state.ids))
        )
        top_scores, top_ids = map(ops.to_host, found)
        for r, row in enumerate(part):
            keep = top_ids[r] != row  # the item itself, wherever it ranks
            best = top_ids[r][keep][:k]
            scores[start + r, : len(best)] = top_scores[r][keep][:k]
            picked[start + r, : len(best)] = best
    return scores, _external(state, picked)


def _cooccurrence(state: _State, rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Item-item co-occurrence with the history, damped by sqrt(popularity).

    score(j) = sum over users u of overlap(u, history) * w(u, j) / sqrt(pop(j)), the
    item-based neighbourhood score computed from the interaction rows in O(rows).
    """
    n = len(state.ids)
    in_history = np.zeros(n, dtype=np.float32)
    in_history[rows] = weights
    overlap = np.bincount(
        state.user_of,
        weights=in_history[state.item_of] * state.weight,
        minlength=len(state.users),
    )
    score = np.bincount(state.item_of, weights=overlap[state.user_of] * state.weight, minlength=n)
    popularity = np.bincount(state.item_of, minlength=n)
    return score / np.sqrt(np.maximum(popularity, 1))


def _unit_range(x: np.ndarray) -> np.ndarray:
    """Min-max scaled to [0, 1] (all zeros when constant), so two signals can be blended."""
    low, high = float(x.min()), float(x.max())
    return (x - low) / (high - low) if high > low else np.zeros_like(x, dtype=np.float64)


def _best(pool: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """The k best rows of `pool` by score, ties to the lower row, best first.

    Same order as a full lexsort, but only the rows tied with or above the k-th best
    score are sorted.
    """
    if len(pool) > k:
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        keep = scores >= kth
        pool, scores = pool[keep], scores[keep]
    return pool[np.lexsort((pool, -scores))[:k]]


# ---------------------------------------------------------------------------- checks


def _check_fraction(value: float, name: str, *, upper_open: bool) -> float:
    """A real number in [0, 1] (or [0, 1) when upper_open); NaN and inf refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidTypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    upper = "1)" if upper_open else "1]"
    if not (0.0 <= value < 1.0 if upper_open else 0.0 <= value <= 1.0):
        raise InvalidInputError(f"{name} must be in [0, {upper}, got {value}")
    return value


def _check_k(k: int, available: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise InvalidTypeError(f"k must be an int >= 1, got {k!r}")
    if k < 1:
        raise InvalidInputError(f"k must be >= 1, got {k}")
    if k > max(available, MAX_PADDED_K):
        raise InvalidInputError(
            f"k={k} is larger than the catalogue ({available} items) and than "
            f"{MAX_PADDED_K}: the result would be padding"
        )
    return int(k)


def _check_item_ids(ids: list[Any], state: _State) -> list[ItemId]:
    """New item ids: all int in [0, 2**63) or all str (as the catalogue), not present, unique."""
    out: list[ItemId] = []
    kinds = set() if state.id_kind is None else {state.id_kind}
    for position, item in enumerate(ids):
        if isinstance(item, (bool, np.bool_)):
            raise InvalidTypeError(f"item ids[{position}] is a bool; ids are int or str")
        if isinstance(item, (int, np.integer)):
            item = int(item)
            if not 0 <= item <= _INT64_MAX:
                raise InvalidInputError(
                    f"item ids[{position}] is {item}: int ids must be in [0, 2**63) "
                    "(-1 marks a missing result)"
                )
            kinds.add("int")
        elif isinstance(item, str):
            kinds.add("str")
        else:
            raise InvalidTypeError(
                f"item ids[{position}] is {type(item).__name__}; ids are int or str"
            )
        out.append(item)
    if len(kinds) > 1:
        raise InvalidTypeError(
            f"item ids must all be int or all str (the catalogue holds {state.id_kind or 'none'})"
        )
    counts = Counter(out)
    repeated = [i for i in counts if counts[i] > 1 or i in state.row]
    if repeated:
        raise InvalidInputError(f"item ids already present or repeated: {repeated[:5]}")
    return out


def _parse_interactions(
    rows: list[Any], state: _State, users: dict[UserId, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user index, item row, weight) arrays; new users are added to `users` (a copy)."""
    user_of = np.empty(len(rows), np.int64)
    item_of = np.empty(len(rows), np.int64)
    weight = np.ones(len(rows), np.float32)
    for n, row in enumerate(rows):
        if isinstance(row, (str, bytes, Mapping)) or not hasattr(row, "__len__"):
            raise InvalidTypeError(f"interactions[{n}] must be (user, item[, weight]): {row!r}")
        if len(row) not in (2, 3):
            raise InvalidInputError(f"interactions[{n}] must be (user, item[, weight]): {row!r}")
        user, item = _key(row[0]), _key(row[1])
        if isinstance(user, bool) or not isinstance(user, (int, str)):
            raise InvalidTypeError(f"interactions[{n}] has user {row[0]!r}: users are int or str")
        if not isinstance(item, (int, str)) or item not in state.row:
            raise NotFoundError(f"interactions[{n}] names unknown item {row[1]!r}")
        if len(row) == 3:
            w = row[2]
            if isinstance(w, bool) or not isinstance(w, (int, float, np.integer, np.floating)):
                raise InvalidTypeError(f"interactions[{n}] has weight {w!r}: expected a number")
            if not (math.isfinite(w) and w > 0):
                raise InvalidInputError(
                    f"interactions[{n}] has weight {w}: weights must be finite and > 0"
                )
            weight[n] = w
        user_of[n] = users.setdefault(user, len(users))
        item_of[n] = state.row[item]
    return user_of, item_of, weight


def _history(state: _State, history: History, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(item rows, weights) of one history, ids checked, weights finite and > 0."""
    if isinstance(history, (str, bytes)):
        raise InvalidTypeError(
            f"{name} is a str, not a history (a list of ids or a mapping id -> weight): "
            "wrap one history in a list"
        )
    if isinstance(history, Mapping):
        ids = list(history)
        try:
            weights = np.asarray(list(history.values()), dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidTypeError(f"{name} has non-numeric weights") from exc
    else:
        ids = _id_list(history, name)
        weights = np.ones(len(ids))
    if not ids:
        raise InvalidInputError(f"{name} is empty: a user needs at least one item")
    if not np.isfinite(weights).all() or (weights <= 0).any():
        raise InvalidInputError(f"{name}: history weights must be finite and > 0")
    return _rows(state, ids, name), weights.astype(np.float32)


def _id_list(ids: Iterable[ItemId], name: str) -> list[ItemId]:
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise InvalidTypeError(f"{name} must be a collection of item ids, got {ids!r}")
    return list(ids)


def _rows(state: _State, ids: list[Any], name: str) -> np.ndarray:
    try:
        return np.fromiter((state.row[_key(i)] for i in ids), dtype=np.int64, count=len(ids))
    except (KeyError, TypeError):
        missing = [i for i in ids if not isinstance(_key(i), Hashable) or _key(i) not in state.row]
        raise NotFoundError(f"{name} has unknown item ids: {missing[:5]}") from None


def _key(value: Any) -> Any:
    """numpy ints as Python ints, so np.int64(3) finds item 3."""
    return int(value) if isinstance(value, np.integer) else value


def _unit_rows(vectors: Any, name: str, dim: int | None) -> np.ndarray:
    """A float32 host copy with unit rows; InvalidInputError for NaN/inf, zero rows, wrong
    dim (a device array is checked there, then copied over)."""
    try:
        if _device.on_device(vectors):
            vectors = ops.to_host(_device.check(vectors, name, dim))
        x = ops.check_vectors(vectors, name, dim)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from exc
    x = np.array(x, dtype=np.float32, order="C", copy=True)
    zero = np.flatnonzero(~np.any(x, axis=1))
    if len(zero):
        raise InvalidInputError(f"{name}[{zero[0]}] is all zeros: it has no direction")
    return ops.normalize_rows_(x)


# ---------------------------------------------------------------------------- results


def _empty(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n, k), -np.inf, np.float32), np.full((n, k), -1, np.int64)


def _external(state: _State, rows: np.ndarray) -> np.ndarray:
    """Item ids of rows: int64 with -1, or object with None (str ids), for missing slots."""
    if state.id_kind == "str":
        out = np.full(rows.shape, None, dtype=object)
        found = rows >= 0
        out[found] = [state.ids[r] for r in rows[found].tolist()]
        return out
    table = np.array([*state.ids, -1], dtype=np.int64)
    return table[rows]  # row -1 picks the trailing -1


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


# ---------------------------------------------------------------------------- id storage


def _pack_keys(keys: Sequence[ItemId]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ids as UTF-8 bytes + offsets + an is-int flag: exact for any str (NUL, surrogates)."""
    data, offsets = pack_strings([str(key) for key in keys])
    return data, offsets, np.array([isinstance(key, int) for key in keys], dtype=bool)


def _unpack_keys(data: np.ndarray, offsets: np.ndarray, is_int: np.ndarray) -> list[ItemId]:
    if is_int.dtype != np.bool_:
        raise ValueError("the id kinds are not booleans")
    texts = unpack_strings(data, offsets, len(is_int), "ids")
    return [int(text) if flag else text for text, flag in zip(texts, is_int.tolist(), strict=True)]
