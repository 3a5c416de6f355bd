"""Content-based recommendation over item embeddings, blended with interactions when given.

Items are texts (or dicts joined as in embengine.records.record_texts), embedded once; a user is the
weighted centroid of the items in their history, or several centroids for varied tastes.
A new item is recommendable the moment it is added: content needs no interactions.
With interactions, `alpha` blends in item-item co-occurrence ("users who liked your items
also liked"), which only items with a history can earn.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from embengine import ops
from embengine.clustering import spherical_kmeans
from embengine.records import Record, record_texts

if TYPE_CHECKING:
    from embengine.engine import Engine

ItemId = Hashable
History = Sequence[ItemId] | Mapping[ItemId, float]


class Recommender:
    """Recommend items by content similarity, optionally blended with interactions.

    `items` maps id -> text or dict (`fields` / `template` as in embengine.records.record_texts).
    `interactions` is an iterable of (user, item) or (user, item, weight) rows; with it,
    `alpha` in [0, 1] weights co-occurrence against content (0: content only).
    `profiles` > 1 splits a long history into that many taste centroids (k-means) and
    scores an item by its best one. `center` scores content on embeddings minus the
    catalogue's mean vector (renormalised): the direction all items share otherwise
    dominates every centroid and favours generic items. `diversity` in [0, 1) re-ranks by
    maximal marginal relevance (0: pure relevance).
    """

    def __init__(
        self,
        engine: Engine,
        items: Mapping[ItemId, Record],
        *,
        interactions: Iterable[tuple] | None = None,
        alpha: float = 0.5,
        profiles: int = 1,
        diversity: float = 0.0,
        center: bool = True,
        fields: Sequence[str] | None = None,
        template: str | None = None,
    ) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if profiles < 1:
            raise ValueError(f"profiles must be >= 1, got {profiles}")
        if not 0.0 <= diversity < 1.0:
            raise ValueError(f"diversity must be in [0, 1), got {diversity}")
        self.engine = engine
        self.alpha = alpha
        self.profiles = profiles
        self.diversity = diversity
        self.center = center
        self._content: np.ndarray | None = None  # scoring vectors, rebuilt after add_items
        self._fields, self._template = fields, template
        self.ids: list[ItemId] = []
        self._row: dict[ItemId, int] = {}
        self.vectors = np.zeros((0, engine.dim), dtype=np.float32)
        self._users = np.empty(0, dtype=np.int64)  # interaction rows: user index,
        self._items = np.empty(0, dtype=np.int64)  # item row,
        self._weights = np.empty(0, dtype=np.float32)  # and weight
        self.add_items(items)
        if interactions is not None:
            self.add_interactions(interactions)

    def __len__(self) -> int:
        return len(self.ids)

    def add_items(self, items: Mapping[ItemId, Record]) -> None:
        """Embed and add items; they are recommendable at once. Known ids raise ValueError."""
        if not isinstance(items, Mapping):
            raise TypeError(
                f"items must be a mapping id -> text or dict, got {type(items).__name__}"
            )
        new_ids = list(items)
        repeated = [i for i in new_ids if i in self._row]
        if repeated:
            raise ValueError(f"item ids already present: {repeated[:5]}")
        texts = record_texts(list(items.values()), fields=self._fields, template=self._template)
        vectors = self.engine.embed(texts)
        for offset, item_id in enumerate(new_ids):
            self._row[item_id] = len(self.ids) + offset
        self.ids.extend(new_ids)
        self.vectors = np.concatenate([self.vectors, vectors]) if len(self.vectors) else vectors
        self._content = None

    @property
    def content_vectors(self) -> np.ndarray:
        """(n, dim) unit rows that content scores use: the embeddings, centred if `center`."""
        if self._content is None:
            if self.center and len(self.vectors) > 1:
                centred = np.ascontiguousarray(self.vectors - self.vectors.mean(axis=0))
                self._content = ops.normalize_rows_(centred)
            else:
                self._content = self.vectors
        return self._content

    def add_interactions(self, interactions: Iterable[tuple]) -> None:
        """Record (user, item) or (user, item, weight) rows; unknown items raise KeyError."""
        users: dict[Hashable, int] = getattr(self, "_user_index", {})
        rows_u, rows_i, rows_w = [], [], []
        for position, row in enumerate(interactions):
            if len(row) not in (2, 3):
                raise ValueError(
                    f"interactions[{position}] must be (user, item[, weight]): {row!r}"
                )
            user, item = row[0], row[1]
            if item not in self._row:
                raise KeyError(f"interactions[{position}] names unknown item {item!r}")
            rows_u.append(users.setdefault(user, len(users)))
            rows_i.append(self._row[item])
            rows_w.append(float(row[2]) if len(row) == 3 else 1.0)
        self._user_index = users
        self._users = np.concatenate([self._users, np.asarray(rows_u, dtype=np.int64)])
        self._items = np.concatenate([self._items, np.asarray(rows_i, dtype=np.int64)])
        self._weights = np.concatenate([self._weights, np.asarray(rows_w, dtype=np.float32)])

    # ------------------------------------------------------------------------ queries

    def similar(self, item_id: ItemId, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The k items most similar in content to `item_id`, itself excluded.

        Returns (scores, ids): 1-D, best first, cosine scores; fewer than k when the
        catalogue is smaller.
        """
        row = self._rows([item_id], "item_id")[0]
        k = self._check_k(k)
        vectors = self.content_vectors
        scores, rows = ops.topk_cosine(vectors[row : row + 1], vectors, k + 1)
        keep = (rows[0] >= 0) & (rows[0] != row)
        return scores[0][keep][:k], self._ids_of(rows[0][keep][:k])

    def for_user(
        self,
        history: History,
        k: int = 10,
        *,
        exclude_seen: bool = True,
        exclude: Iterable[ItemId] = (),
        candidates: Iterable[ItemId] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items for a user with this history (ids, or id -> weight).

        `candidates` restricts the ranking to those ids (e.g. new arrivals); `exclude`
        drops ids; `exclude_seen` drops the history itself. Returns (scores, ids), 1-D,
        best first; scores are the blended relevance in [0, 1] (cosine when alpha is 0
        or there are no interactions).
        """
        k = self._check_k(k)
        rows, weights = self._history(history)
        scores = self.scores(rows, weights)
        allowed = np.ones(len(self.ids), dtype=bool)
        if candidates is not None:
            allowed[:] = False
            allowed[self._rows(list(candidates), "candidates")] = True
        if exclude_seen:
            allowed[rows] = False
        allowed[self._rows(list(exclude), "exclude")] = False
        pool = np.flatnonzero(allowed)
        if self.diversity > 0.0:
            picked = self._mmr(pool, scores[pool], k)
        else:
            picked = pool[np.lexsort((pool, -scores[pool]))[:k]]
        return scores[picked].astype(np.float32), self._ids_of(picked)

    def scores(self, rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Relevance of every item for a history given as item rows and weights: (n,)."""
        content = self._content_scores(rows, weights)
        if self.alpha == 0.0 or len(self._users) == 0:
            return content
        signal = self._cooccurrence(rows, weights)
        return (1 - self.alpha) * _unit_range(content) + self.alpha * _unit_range(signal)

    def _content_scores(self, rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Best cosine of each item to the history's taste centroid(s)."""
        catalogue = self.content_vectors
        vectors = catalogue[rows]
        if self.profiles > 1 and len(rows) > 2 * self.profiles:
            centroids = spherical_kmeans(vectors, self.profiles, iterations=5, seed=0)
        else:
            centroids = (weights[:, None] * vectors).sum(0, keepdims=True)
            centroids = ops.normalize_rows_(np.ascontiguousarray(centroids, dtype=np.float32))
        dist, _ = ops.centroid_distance(catalogue, centroids)
        return 1.0 - dist

    def _cooccurrence(self, rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Item-item co-occurrence with the history, damped by sqrt(popularity).

        score(j) = sum over users u of overlap(u, history) * w(u, j) / sqrt(pop(j)), the
        item-based neighbourhood score computed from the interaction rows in O(rows).
        """
        n = len(self.ids)
        in_history = np.zeros(n, dtype=np.float32)
        in_history[rows] = weights
        overlap = np.bincount(
            self._users, weights=in_history[self._items] * self._weights, minlength=self._n_users
        )
        score = np.bincount(self._items, weights=overlap[self._users] * self._weights, minlength=n)
        popularity = np.bincount(self._items, minlength=n)
        return score / np.sqrt(np.maximum(popularity, 1))

    @property
    def _n_users(self) -> int:
        return len(getattr(self, "_user_index", {}))

    def _mmr(self, pool: np.ndarray, relevance: np.ndarray, k: int) -> np.ndarray:
        """Maximal marginal relevance over the 20k most relevant items of the pool."""
        top = np.lexsort((pool, -relevance))[: max(20 * k, 200)]
        pool, relevance = pool[top], relevance[top]
        chosen: list[int] = []
        closest = np.full(len(pool), -np.inf)
        for _ in range(min(k, len(pool))):
            gain = (1 - self.diversity) * relevance - self.diversity * np.maximum(closest, 0)
            gain[chosen] = -np.inf
            best = int(np.argmax(gain))
            chosen.append(best)
            vectors = self.content_vectors
            closest = np.maximum(closest, vectors[pool] @ vectors[pool[best]])
        return pool[chosen]

    # ------------------------------------------------------------------------ helpers

    def _history(self, history: History) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(history, (str, bytes)):
            raise TypeError("history must be a sequence of item ids or a mapping id -> weight")
        if isinstance(history, Mapping):
            ids, weights = list(history), np.asarray(list(history.values()), dtype=np.float32)
        else:
            ids = list(history)
            weights = np.ones(len(ids), dtype=np.float32)
        if not ids:
            raise ValueError("history is empty: a user needs at least one item")
        if not np.isfinite(weights).all() or (weights <= 0).any():
            raise ValueError("history weights must be finite and > 0")
        return self._rows(ids, "history"), weights

    def _rows(self, ids: list[ItemId], name: str) -> np.ndarray:
        missing = [i for i in ids if i not in self._row]
        if missing:
            raise KeyError(f"{name} has unknown item ids: {missing[:5]}")
        return np.asarray([self._row[i] for i in ids], dtype=np.int64)

    def _ids_of(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty(len(rows), dtype=object)
        out[:] = [self.ids[r] for r in rows]
        return out

    @staticmethod
    def _check_k(k: int) -> int:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        return int(k)


def _unit_range(x: np.ndarray) -> np.ndarray:
    """Min-max scaled to [0, 1] (all zeros when constant), so two signals can be blended."""
    low, high = float(x.min()), float(x.max())
    return (x - low) / (high - low) if high > low else np.zeros_like(x, dtype=np.float64)
