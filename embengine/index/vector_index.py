"""VectorIndex: unit vectors under external ids, searched exactly or approximately.

Rows live in slots: the n-th vector ever added (since the last compaction) is slot n, in
the numpy `vectors` table, in the FAISS index (FAISS id = slot) and, for hybrid search, in
the texts. Removing an id tombstones its slot; CPU searches skip tombstones through a FAISS
ID selector, and the table is compacted (live rows renumbered, FAISS rebuilt) when half of
the slots are dead, and before any search on a GPU index or on the exact kernel path,
since neither takes a selector. Upsert is remove + add.

Search results are FAISS-shaped: `(scores, ids)`, each (n_queries, k), best first. Slots
past the available results hold score -inf and id -1 (integer ids: int64 array) or None
(string ids: object array).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embengine import ops
from embengine.index import _faiss
from embengine.index.fusion import FUSIONS, fuse
from embengine.index.lexical import Lexical
from embengine.io import (
    CorruptFileError,
    ModelMismatchError,
    load_arrays,
    malformed_is_corrupt,
    save_arrays,
)

if TYPE_CHECKING:
    from embengine.engine import Engine

log = logging.getLogger("embengine")

FORMAT = "embengine.VectorIndex/1"
EXACT_BACKENDS = ("faiss", "kernel")
MODES = ("dense", "lexical", "hybrid")
Id = int | str


class VectorIndex:
    """Unit vectors under external ids (all int >= 0, or all str), searched by inner product.

    kind: "flat" (exact, the default), "ivf" or "hnsw" (approximate, for large collections;
    knobs in `_faiss.AnnParams`: nlist, nprobe, m, ef_construction, ef_search).
    device: "auto" (GPU when faiss has one, else CPU), "cpu" or "cuda" (raises when FAISS has
    no GPU). hnsw is CPU-only (FAISS has no GPU HNSW).
    exact: how kind="flat" searches on the CPU: "kernel" (the default: embengine.ops.topk_cosine,
    no FAISS copy of the vectors; 1.7x FAISS on SciFact, 2-3x for 1-16 queries at 50k rows)
    or "faiss" (IndexFlatIP); see README for the measurement.
    lexical: also keep a BM25 index of the texts, for mode="lexical" / "hybrid" searches.
    engine / fingerprint: the model that made the vectors; an engine lets add and search take
    texts, and a fingerprint is checked when loading with an engine.
    """

    def __init__(
        self,
        dim: int,
        *,
        kind: str = "flat",
        device: str = "auto",
        exact: str = "kernel",
        lexical: bool = False,
        stem: bool = True,
        engine: Engine | None = None,
        fingerprint: str | None = None,
        **ann: Any,
    ) -> None:
        if not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        if kind not in _faiss.KINDS:
            raise ValueError(f"kind must be one of {_faiss.KINDS}, got {kind!r}")
        if exact not in EXACT_BACKENDS:
            raise ValueError(f"exact must be one of {EXACT_BACKENDS}, got {exact!r}")
        self.dim = int(dim)
        self.kind = kind
        self.exact = exact
        self.device = _resolve_device(device, kind)
        self.params = _faiss.AnnParams(**ann)
        self.engine: Engine | None = None
        self.fingerprint = fingerprint
        self.lexical = lexical
        self.stem = stem
        self.id_kind: str | None = None  # "int" or "str", fixed by the first add
        self._next_auto_id = 0
        self._vectors = np.zeros((0, self.dim), dtype=np.float32)
        self._slot_ids: list[Id | None] = []  # None = tombstone
        self._slot_of: dict[Id, int] = {}
        self._texts: list[str | None] | None = None  # per slot, once any text was given
        self._faiss: Any = None  # built at the first add (IVF trains on it)
        self._bm25: Lexical | None = None
        self._bm25_slots = np.zeros(0, dtype=np.int64)  # BM25 document i -> slot
        self._bm25_stale = True
        if engine is not None:
            self.attach_engine(engine)

    def attach_engine(self, engine: Engine) -> None:
        """Embed text items and queries with `engine`; it must run the model of the vectors."""
        if engine.dim != self.dim:
            raise ModelMismatchError(
                f"engine makes {engine.dim}-d vectors, this index holds {self.dim}-d ones"
            )
        if self.fingerprint is None:
            self.fingerprint = engine.spec.fingerprint
        if self.fingerprint != engine.spec.fingerprint:
            raise ModelMismatchError(
                f"this index holds vectors of model {self.fingerprint}; the engine runs "
                f"{engine.spec.name} ({engine.spec.fingerprint}): re-index with this engine"
            )
        self.engine = engine

    # ---------------------------------------------------------------- size and contents

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, item: object) -> bool:
        return item in self._slot_of

    @property
    def ids(self) -> list[Id]:
        """Live ids in slot order."""
        return [i for i in self._slot_ids if i is not None]

    @property
    def dead(self) -> int:
        return len(self._slot_ids) - len(self._slot_of)

    def memory_bytes(self) -> int:
        """Bytes held: the vector table, the FAISS index (its serialised size) and BM25."""
        total = self._vectors.nbytes
        if self._faiss is not None:
            total += _faiss.serialize(self._faiss).nbytes
        if self._bm25 is not None:
            total += sum(a.nbytes for a in self._bm25.to_arrays()[0].values())
        return total

    def get(self, ids: Sequence[Id]) -> np.ndarray:
        """Vectors of `ids`: (len(ids), dim) float32 unit rows; KeyError for unknown ids."""
        return self._vectors[self._slots(ids)]

    def texts(self, ids: Sequence[Id]) -> list[str | None]:
        """Texts stored with `ids` (None where a vector was added without text)."""
        slots = self._slots(ids)
        return [None if self._texts is None else self._texts[s] for s in slots]

    # ---------------------------------------------------------------- mutation

    def add(
        self,
        items: Sequence[str] | np.ndarray,
        ids: Sequence[Id] | None = None,
        *,
        texts: Sequence[str] | None = None,
    ) -> list[Id]:
        """Add texts (embedded with the index's engine) or (n, dim) vectors; returns the ids.

        ids: one per item, all int >= 0 or all str, none already present (ValueError names
        the duplicates; use upsert to replace). None: consecutive ints after the largest so
        far. Vectors are L2-normalised; NaN/inf, a wrong dim or a count mismatch raise
        ValueError and change nothing. texts: stored for hybrid search (given texts as
        items, they are stored already).
        """
        vectors, texts = self._vectors_and_texts(items, texts)
        new_ids = self._check_new_ids(ids, len(vectors))
        if len(vectors) == 0:
            return new_ids
        if self._faiss is None and self._uses_faiss():  # IVF training may refuse: before changes
            self._faiss = _faiss.make_index(self.kind, self.dim, self.params, vectors)
            self._place_faiss()
        self.id_kind = "str" if isinstance(new_ids[0], str) else "int"
        if self.id_kind == "int":
            self._next_auto_id = max(self._next_auto_id, max(new_ids) + 1)  # type: ignore[type-var]
        start = len(self._slot_ids)
        self._vectors = np.concatenate([self._vectors, vectors])
        self._slot_ids.extend(new_ids)
        self._slot_of.update({i: start + n for n, i in enumerate(new_ids)})
        if texts is not None and self._texts is None:
            self._texts = [None] * start
        if self._texts is not None:
            self._texts.extend(texts if texts is not None else [None] * len(vectors))
        if self._faiss is not None:
            self._faiss.add(vectors)
        self._bm25_stale = True
        return new_ids

    def upsert(
        self,
        items: Sequence[str] | np.ndarray,
        ids: Sequence[Id],
        *,
        texts: Sequence[str] | None = None,
    ) -> None:
        """Add, replacing the vectors (and texts) of ids already present."""
        vectors, texts = self._vectors_and_texts(items, texts)
        new_ids = self._check_ids(ids, len(vectors))
        if len(set(new_ids)) != len(new_ids):
            raise ValueError(f"ids repeat within one upsert: {_repeats(new_ids)[:5]}")
        self._tombstone([i for i in new_ids if i in self._slot_of])
        self.add(vectors, new_ids, texts=texts)

    def remove(self, ids: Iterable[Id]) -> None:
        """Remove ids; KeyError naming unknown ids (and nothing is removed then)."""
        ids = list(ids)
        unknown = [i for i in ids if i not in self._slot_of]
        if unknown:
            raise KeyError(f"cannot remove {len(unknown)} unknown id(s): {unknown[:5]}")
        self._tombstone(ids)
        if self.dead > len(self._slot_ids) // 2:
            self._compact()

    def _tombstone(self, ids: list[Id]) -> None:
        for i in ids:
            self._slot_ids[self._slot_of.pop(i)] = None
        if ids:
            self._bm25_stale = True

    # ---------------------------------------------------------------- search

    def search(
        self,
        queries: Sequence[str] | np.ndarray,
        k: int = 10,
        *,
        allow: Iterable[Id] | None = None,
        mode: str = "dense",
        fusion: str = "rrf",
        weight: float = 0.5,
        depth: int = 100,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k per query: (scores, ids), each (n_queries, k), best first.

        queries: texts (needs an engine) or (n, dim) vectors (normalised here).
        allow: only these ids may be returned (KeyError for unknown ones); a filtered dense
        search is exact over the allowed rows whatever the kind.
        mode: "dense" (cosine), "lexical" (BM25 scores; only documents sharing a term with
        the query are returned) or "hybrid" (both need text queries
        and an index made with lexical=True): the top `depth` of each side are fused by
        `fusion` "rrf" (reciprocal rank) or "score" (min-max normalised scores), `weight`
        on the dense side; hybrid scores are fusion scores, not cosines.
        Missing results: score -inf, id -1 (int ids) or None (str ids).
        """
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        query_texts = _as_texts(queries)
        if mode != "dense":
            if query_texts is None:
                raise ValueError(f"mode={mode!r} needs text queries (BM25 scores words)")
            if not self.lexical:
                raise ValueError(f"mode={mode!r} needs an index made with lexical=True")
        allowed = None if allow is None else np.unique(self._slots(list(allow)))
        if mode == "lexical":
            scores, slots = self._lexical_search(query_texts, k, allowed)
        else:
            q = self._query_vectors(queries, query_texts)
            if mode == "dense":
                scores, slots = self._dense_search(q, k, allowed)
            else:
                if fusion not in FUSIONS:
                    raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
                scores, slots = self._hybrid_search(
                    q, query_texts, k, allowed, fusion, weight, max(depth, k)
                )
        return scores, self._external(slots)

    def _dense_search(
        self, q: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, slots) by inner product; exact over `allowed` slots when given."""
        if allowed is not None:
            if len(allowed) == 0:
                return _empty(len(q), k)
            scores, local = ops.topk_cosine(q, self._vectors[allowed], k)
            return scores, np.where(local >= 0, allowed[np.maximum(local, 0)], -1)
        if self._faiss is None:  # exact kernel path, or nothing added yet
            self._compact_if(self.dead > 0)
            if len(self._slot_ids) == 0:
                return _empty(len(q), k)
            return ops.topk_cosine(q, self._vectors, k)
        self._compact_if(self.dead > 0 and _faiss.is_gpu(self._faiss))
        live = self._live_mask() if self.dead else None
        return _faiss.search(self._faiss, q, k, self.params, live)

    def _lexical_search(
        self, query_texts: list[str], k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        return _top_k(_matches(self._lexical_scores(query_texts, allowed)), k)

    def _hybrid_search(
        self,
        q: np.ndarray,
        query_texts: list[str],
        k: int,
        allowed: np.ndarray | None,
        fusion: str,
        weight: float,
        depth: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fuse the top `depth` of the dense and the BM25 rankings, scored exactly."""
        _, dense_slots = self._dense_search(q, depth, allowed)
        bm25 = _matches(self._lexical_scores(query_texts, allowed))
        _, lexical_slots = _top_k(bm25, depth)
        candidates = np.full((len(q), 2 * depth), -1, dtype=np.int64)
        dense = np.full(candidates.shape, -np.inf, dtype=np.float32)
        lexical = np.full(candidates.shape, -np.inf, dtype=np.float32)
        for row in range(len(q)):
            union = np.union1d(dense_slots[row], lexical_slots[row])
            union = union[union >= 0]
            candidates[row, : len(union)] = union
            dense[row, : len(union)] = self._vectors[union] @ q[row]
            lexical[row, : len(union)] = bm25[row, union]
        fused = fuse(dense, lexical, method=fusion, weight=weight)
        scores, local = _top_k(fused, k)
        slots = np.where(local >= 0, np.take_along_axis(candidates, np.maximum(local, 0), 1), -1)
        return scores, slots

    def _lexical_scores(self, query_texts: list[str], allowed: np.ndarray | None) -> np.ndarray:
        """(n_queries, slots) BM25 scores; -inf for dead and disallowed slots."""
        if self._bm25_stale:
            self._build_bm25()
        out = np.full((len(query_texts), len(self._slot_ids)), -np.inf, dtype=np.float32)
        if self._bm25 is not None:
            out[:, self._bm25_slots] = self._bm25.scores(query_texts)
        if allowed is not None:
            keep = np.zeros(len(self._slot_ids), dtype=bool)
            keep[allowed] = True
            out[:, ~keep] = -np.inf
        return out

    def _build_bm25(self) -> None:
        slots = np.flatnonzero(self._live_mask())
        texts = [] if self._texts is None else [self._texts[s] for s in slots]
        if any(t is None for t in texts) or len(texts) < len(slots):
            raise ValueError("lexical search needs a text for every id: add texts with vectors")
        self._bm25 = Lexical.build(texts, stem=self.stem) if len(slots) else None
        self._bm25_slots = slots
        self._bm25_stale = False

    # ---------------------------------------------------------------- persistence

    def save(self, path: str | Path) -> None:
        """Write the index to one file, atomically (temp file, fsync, rename) and checksummed.

        A crash at any moment leaves either the previous file or the new one, complete.
        """
        if self.lexical and self._bm25_stale:
            self._build_bm25()
        arrays: dict[str, np.ndarray] = {
            "vectors": self._vectors,
            "live": self._live_mask(),
            "ids": _id_array(self._slot_ids, self.id_kind),
        }
        if self._texts is not None:
            arrays["texts"] = np.array([t or "" for t in self._texts], dtype=str)
            arrays["has_text"] = np.array([t is not None for t in self._texts], dtype=bool)
        if self._faiss is not None:
            arrays["faiss"] = _faiss.serialize(self._faiss)
        meta: dict[str, Any] = {
            "format": FORMAT,
            "dim": self.dim,
            "kind": self.kind,
            "exact": self.exact,
            "params": self.params.as_dict(),
            "id_kind": self.id_kind,
            "next_auto_id": self._next_auto_id,
            "fingerprint": self.fingerprint,
            "lexical": self.lexical,
            "stem": self.stem,
        }
        if self._bm25 is not None:
            bm25_arrays, meta["bm25"] = self._bm25.to_arrays()
            arrays.update(bm25_arrays)
            arrays["bm25_slots"] = self._bm25_slots
        save_arrays(path, arrays, meta)

    @classmethod
    @malformed_is_corrupt
    def load(
        cls, path: str | Path, *, engine: Engine | None = None, device: str = "auto"
    ) -> VectorIndex:
        """Read a saved index, verifying checksum, format, shapes and (given an engine) model.

        CorruptFileError for a damaged or foreign file, ModelMismatchError when `engine`
        runs another model than the one that made the vectors.
        """
        arrays, meta = load_arrays(path)
        if meta.get("format") != FORMAT:
            raise CorruptFileError(f"{path} is not a VectorIndex file ({meta.get('format')!r})")
        index = cls(
            meta["dim"],
            kind=meta["kind"],
            device=device,
            exact=meta["exact"],
            lexical=meta["lexical"],
            stem=meta["stem"],
            fingerprint=meta["fingerprint"],
            **meta["params"],
        )
        index._restore(path, arrays, meta)
        if engine is not None:
            index.attach_engine(engine)
        return index

    def _restore(self, path: str | Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
        vectors, live, ids = arrays["vectors"], arrays["live"], arrays["ids"]
        slots = len(vectors)
        if vectors.shape != (slots, self.dim) or live.shape != (slots,) or len(ids) != slots:
            raise CorruptFileError(
                f"{path}: shapes disagree (vectors {vectors.shape}, live {live.shape}, "
                f"ids {ids.shape}, dim {self.dim})"
            )
        self._vectors = vectors.astype(np.float32, copy=False)
        self.id_kind = meta["id_kind"]
        self._next_auto_id = meta["next_auto_id"]
        self._slot_ids = [
            (int(i) if self.id_kind == "int" else str(i)) if alive else None
            for i, alive in zip(ids.tolist(), live.tolist(), strict=True)
        ]
        self._slot_of = {i: s for s, i in enumerate(self._slot_ids) if i is not None}
        if "texts" in arrays:
            texts, has_text = arrays["texts"].tolist(), arrays["has_text"].tolist()
            if len(texts) != slots or len(has_text) != slots:
                raise CorruptFileError(f"{path}: {len(texts)} texts for {slots} rows")
            self._texts = [t if h else None for t, h in zip(texts, has_text, strict=True)]
        if "faiss" in arrays:
            self._faiss = _faiss.deserialize(arrays["faiss"])
            if self._faiss.ntotal != slots or self._faiss.d != self.dim:
                raise CorruptFileError(
                    f"{path}: FAISS index holds {self._faiss.ntotal} x {self._faiss.d}, "
                    f"expected {slots} x {self.dim}"
                )
            self._place_faiss()
        if "bm25" in meta:
            self._bm25 = Lexical.from_arrays(arrays, meta["bm25"])
            self._bm25_slots = arrays["bm25_slots"]
            self._bm25_stale = False

    # ---------------------------------------------------------------- internals

    def _vectors_and_texts(
        self, items: Sequence[str] | np.ndarray, texts: Sequence[str] | None
    ) -> tuple[np.ndarray, list[str] | None]:
        item_texts = _as_texts(items)
        if item_texts is not None:
            if texts is not None:
                raise ValueError("texts= is for vector items; text items are stored already")
            return self._embed(item_texts), item_texts
        vectors = ops.check_vectors(items, "vectors", self.dim).astype(np.float32, copy=True)
        ops.normalize_rows_(vectors)
        if texts is not None:
            from embengine.validation import check_texts

            texts = check_texts(texts)
            if len(texts) != len(vectors):
                raise ValueError(f"{len(texts)} texts for {len(vectors)} vectors")
        return vectors, texts

    def _embed(self, texts: list[str], cache: bool = True) -> np.ndarray:
        if self.engine is None:
            raise ValueError(
                "text input needs an engine: make the index with engine.index(...) or "
                "VectorIndex.load(path, engine=engine), or pass vectors"
            )
        return self.engine.embed(texts, cache=cache)

    def _query_vectors(self, queries: Any, query_texts: list[str] | None) -> np.ndarray:
        if query_texts is not None:
            return self._embed(query_texts, cache=False)  # queries stay out of the store
        q = ops.check_vectors(queries, "queries", self.dim).astype(np.float32, copy=True)
        return ops.normalize_rows_(q)

    def _check_ids(self, ids: Sequence[Id], n: int) -> list[Id]:
        ids = [int(i) if isinstance(i, np.integer) else i for i in ids]
        if len(ids) != n:
            raise ValueError(f"{len(ids)} ids for {n} items")
        kinds = {_id_kind(i, position) for position, i in enumerate(ids)}
        if self.id_kind is not None:
            kinds.add(self.id_kind)
        if len(kinds) > 1:
            raise TypeError(
                f"ids must all be int or all str; this index holds {self.id_kind or 'none yet'}"
                f" and got {sorted(kinds - {self.id_kind})}"
            )
        return ids

    def _check_new_ids(self, ids: Sequence[Id] | None, n: int) -> list[Id]:
        if ids is None:
            if self.id_kind == "str":
                raise ValueError("this index has str ids: pass ids= explicitly")
            ids = list(range(self._next_auto_id, self._next_auto_id + n))
        ids = self._check_ids(ids, n)
        repeated = _repeats(ids) + [i for i in ids if i in self._slot_of]
        if repeated:
            raise ValueError(
                f"duplicate ids (already in the index or repeated): {repeated[:5]}; "
                "use upsert() to replace"
            )
        return ids

    def _slots(self, ids: Sequence[Id]) -> np.ndarray:
        try:
            return np.array([self._slot_of[i] for i in ids], dtype=np.int64)
        except KeyError:
            unknown = [i for i in ids if i not in self._slot_of]
            raise KeyError(f"{len(unknown)} unknown id(s): {unknown[:5]}") from None

    def _external(self, slots: np.ndarray) -> np.ndarray:
        if self.id_kind == "str":
            out = np.full(slots.shape, None, dtype=object)
            found = slots >= 0
            out[found] = [self._slot_ids[s] for s in slots[found].tolist()]
            return out
        table = np.array([-1 if i is None else i for i in self._slot_ids] + [-1], np.int64)
        return table[slots]  # slot -1 picks the trailing -1

    def _live_mask(self) -> np.ndarray:
        return np.array([i is not None for i in self._slot_ids], dtype=bool)

    def _uses_faiss(self) -> bool:
        return not (self.kind == "flat" and self.exact == "kernel" and self.device == "cpu")

    def _place_faiss(self) -> None:
        if self.device == "cuda" and not _faiss.is_gpu(self._faiss):
            self._faiss = _faiss.to_gpu(self._faiss)

    def _compact_if(self, needed: bool) -> None:
        if needed:
            self._compact()

    def _compact(self) -> None:
        """Drop tombstoned slots: renumber live rows and rebuild FAISS on them."""
        started = time.perf_counter()
        live = self._live_mask()
        self._vectors = np.ascontiguousarray(self._vectors[live])
        self._slot_ids = [i for i in self._slot_ids if i is not None]
        self._slot_of = {i: s for s, i in enumerate(self._slot_ids)}
        if self._texts is not None:
            self._texts = [t for t, alive in zip(self._texts, live, strict=True) if alive]
        if self._faiss is not None:
            self._faiss.reset()  # keeps IVF training
            self._faiss.add(self._vectors)
        self._bm25_stale = True
        log.debug("compacted %d rows in %.3f s", len(self._slot_ids), time.perf_counter() - started)


def _resolve_device(device: str, kind: str) -> str:
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cpu":
        return "cpu"
    gpus = _faiss.faiss_gpu_count()
    if device == "cuda":
        if gpus == 0:
            raise ValueError("device='cuda' needs faiss with GPU support and a visible GPU")
        if kind not in _faiss.GPU_KINDS:
            raise ValueError(f"kind={kind!r} runs on the CPU only in FAISS: use device='cpu'")
        return "cuda"
    if gpus and kind in _faiss.GPU_KINDS:
        return "cuda"
    log.debug("VectorIndex device='auto' chose the CPU (%d FAISS GPUs, kind %s)", gpus, kind)
    return "cpu"


def _as_texts(items: Any) -> list[str] | None:
    """The items as a list of str when they are texts, None when they are vectors."""
    if isinstance(items, str):
        raise TypeError("pass a list of texts, not a single string")
    if isinstance(items, (list, tuple)) and items and all(isinstance(t, str) for t in items):
        return list(items)
    if isinstance(items, (list, tuple)) and any(isinstance(t, str) for t in items):
        from embengine.validation import check_texts

        check_texts(items)  # names the first non-str position
    return None


def _id_kind(i: object, position: int) -> str:
    if isinstance(i, (bool, np.bool_)):
        raise TypeError(f"ids[{position}] is a bool; ids are int >= 0 or str")
    if isinstance(i, (int, np.integer)):
        if i < 0:
            raise ValueError(f"ids[{position}] is {i}: int ids must be >= 0 (-1 means missing)")
        return "int"
    if isinstance(i, str):
        return "str"
    raise TypeError(f"ids[{position}] is {type(i).__name__}; ids are int >= 0 or str")


def _id_array(slot_ids: list[Id | None], id_kind: str | None) -> np.ndarray:
    if id_kind == "str":
        return np.array(["" if i is None else i for i in slot_ids], dtype=str)
    return np.array([-1 if i is None else i for i in slot_ids], dtype=np.int64)


def _repeats(ids: list[Id]) -> list[Id]:
    return [i for i, count in Counter(ids).items() if count > 1]


def _empty(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n, k), -np.inf, np.float32), np.full((n, k), -1, np.int64)


def _matches(bm25: np.ndarray) -> np.ndarray:
    """BM25 scores with documents that share no query term (score 0) set to -inf."""
    return np.where(bm25 > 0, bm25, -np.inf)


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k columns per row of a score matrix, -inf entries never returned."""
    out_scores, out_cols = _empty(len(scores), k)
    if scores.shape[1] == 0:
        return out_scores, out_cols
    take = min(k, scores.shape[1])
    part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    cols = np.take_along_axis(part, order, axis=1)
    best = np.take_along_axis(part_scores, order, axis=1)
    found = np.isfinite(best)
    out_scores[:, :take] = np.where(found, best, -np.inf)
    out_cols[:, :take] = np.where(found, cols, -1)
    return out_scores, out_cols
