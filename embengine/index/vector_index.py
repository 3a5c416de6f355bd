"""VectorIndex: unit vectors under external ids, searched exactly or approximately.

Layout. Rows live in slots: the n-th vector added since the last compaction is slot n.
Per slot, numpy arrays with spare capacity (grown by half, so adds cost O(rows added),
amortised): the float32 vector, the external id (an int64 array, or an object array of
str), a live flag, and the same flags as a bitmap for FAISS's ID selector. A dict maps
external id -> slot; FAISS (when used) numbers its rows by slot too. Nothing is rebuilt
per search: the work above the kernel is O(queries x k).

Removal tombstones a slot. The exact kernel cannot skip rows, so a search over-fetches a
few more candidates than k (about twice the expected number of dead rows among them),
drops dead ones, and redoes the rare rows that lost too many with a fetch of k + dead.
FAISS searches skip tombstones through the bitmap selector. The table is compacted (live
rows renumbered, FAISS rebuilt) inside `remove` once a quarter of the slots are dead on
the kernel path (half for FAISS kinds, whose rebuild costs more; at once on a GPU index,
which takes no selector), so the cost is amortised over the removes that caused it.

Results do not depend on the batch. The kernel (or FAISS) only nominates candidates, a
few more than k; each candidate is re-scored by itself (products, then a pairwise sum
over that one pair: the same arithmetic whatever else is in the call), sorted by (score
desc, slot asc), and for exact searches kept only when the k-th score beats the last
nominated one by the proven float32 rounding bound (as `ops.pairs_above` does); rows that
do not (near-ties at the cut, many dead candidates) are fetched again deeper, up to the
whole table. Ties go to the earlier slot (the id added first). ANN results are re-scored
and ordered the same way; their candidate sets are FAISS's.

Compact vectors (compact="int8" | "binary"; kind="flat" on the CPU): rows are kept as int8
codes (1 byte per dimension) and/or sign bits (1 bit per dimension) instead of float32 and
searched by embengine.quantize.search_int8 / search_binary (native int8-dot / Hamming top-k,
the best k * oversample rescored). The int8 ranges are calibrated once, on the corpus: the
first `calibrate_rows` rows are held and searched as float32, then the ranges are fitted on
them, every row is coded and the float32 copy dropped (`quantizer=` fixes the ranges from
the start instead). Later rows are coded with those ranges, clipping at their ends. The
ranges are never refitted: that would recode every row from its codes (rounding twice) and
make a row's code depend on when it was added; an add that clips more than
CLIP_WARN_FRACTION of its values logs a warning instead (refit by building a new index).
Removed rows are skipped by over-fetching, as above. Results still do not depend on the
batch: a query's int8 weights and its rescoring depend on that query alone.

On a GPU (device="cuda", or "auto" with a GPU that FAISS cannot use, or an attached engine
that keeps its vectors on one), a float32 flat index searched by the kernel keeps a device
copy of its rows (index/_mirror.py): the kernel nominates candidates there, from queries
already on the device (CUDA torch tensors are used as they are, numpy is uploaded once), and
only the (queries x candidates) scores and slots, with the queries, come to the host for the
re-scoring above; results are the host path's. The host rows stay the source of truth: the
copy follows them lazily (new rows uploaded by the next search, all of them after a
compaction); removals are the host's live flags. allow= searches run on the host.

Threads: one readers-writer lock (embengine._sync.RWLock). Searches, `get`, `save` hold
it shared; add / upsert / remove hold it exclusively (FAISS HNSW and IVF mutate in place,
so a search must never overlap a write). Texts are embedded before the lock is taken.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embengine import ops
from embengine._sync import RWLock
from embengine.errors import (
    CorruptFileError,
    EmbengineError,
    InvalidInputError,
    InvalidTypeError,
    ModelMismatchError,
    NotFoundError,
)
from embengine.index import _faiss, _mirror, lexical
from embengine.index.fusion import FUSIONS, fuse
from embengine.io import (
    load_arrays,
    malformed_is_corrupt,
    pack_strings,
    save_arrays,
    unpack_strings,
)
from embengine.ops.similarity import rounding_margin
from embengine.quantize import (
    DEFAULT_BINARY_OVERSAMPLE,
    DEFAULT_INT8_OVERSAMPLE,
    Int8Quantizer,
    binarize,
    search_binary,
    search_int8,
)
from embengine.quantize import STATE_KIND as QUANTIZER_STATE

if TYPE_CHECKING:
    from embengine.engine import Engine

log = logging.getLogger("embengine")

FORMAT = "embengine.VectorIndex/2"
FORMAT_COMPACT = "embengine.VectorIndex/3"  # /2 plus int8 codes, sign bits, int8 ranges
COMPACTS = (None, "int8", "binary")
RESCORES = ("int8", "float32")  # what binary candidates are rescored against
CALIBRATE_ROWS = 1000  # rows held as float32 before the int8 ranges are fitted on them
CLIP_WARN_FRACTION = 0.001
OLD_FORMATS = ("embengine.VectorIndex/1",)  # fixed-width str ids / texts; BM25 rebuilt
EXACT_BACKENDS = ("faiss", "kernel")
MODES = ("dense", "lexical", "hybrid")
# k above the number of ids pads with sentinels; past this many columns it is refused
# (a k of 10**9 on 30 documents would otherwise allocate gigabytes of padding).
MAX_PADDED_K = 1024
# compact once this fraction of slots is dead: the kernel scans dead rows, FAISS skips them
DEAD_FRACTION_KERNEL = 0.25
DEAD_FRACTION_FAISS = 0.5
INT64_MAX = 2**63 - 1
GPU_MAX_K = 2048  # FAISS GPU flat search takes k <= 2048
Id = int | str


@dataclass(frozen=True)
class _OnDevice:
    """A search's dense scan on the device mirror: the queries there (None: uploaded when
    the scan needs them)."""

    mirror: _mirror.DeviceMirror
    queries: Any | None


@dataclass(frozen=True)
class _Bm25:
    """The BM25 side as built at one generation of the index: document i is slot slots[i]."""

    lexical: lexical.Lexical | None
    slots: np.ndarray
    generation: int


class VectorIndex:
    """Unit vectors under external ids (all int in [0, 2**63), or all str), by inner product.

    kind: "flat" (exact, the default), "ivf" or "hnsw" (approximate, for large collections).
    device: "auto" (GPU when FAISS has one; else, for flat with exact="kernel", when
    embengine's CUDA kernels and CUDA torch can run, or when the attached engine keeps its
    vectors on a GPU; else CPU), "cpu" or "cuda" (raises when neither is usable). On a GPU
    without FAISS's, the kernel scans a device copy of the rows (see the module docstring;
    `describe()` says where searches ran). hnsw is CPU-only (FAISS has no GPU HNSW).
    exact: how kind="flat" searches on the CPU: "kernel" (the default:
    embengine.ops.topk_cosine, no FAISS copy of the vectors) or "faiss" (IndexFlatIP).
    lexical: also keep a BM25 index of the texts, for mode="lexical" / "hybrid" searches.
    engine / fingerprint: the model that made the vectors; an engine lets add and search take
    texts, and a fingerprint is checked when loading with an engine.
    nlist, nprobe (ivf), m, ef_construction, ef_search (hnsw): see `_faiss.AnnParams`.
    compact: None (float32 rows, 4 bytes per dimension), "int8" (1 byte per dimension:
    per-dimension ranges calibrated on the corpus, see the module docstring) or "binary"
    (sign bits, 1 bit per dimension, searched by Hamming distance, the best candidates
    rescored against `rescore` = "int8" codes (the default: 1 + 1/8 bytes per dimension
    kept) or "float32" vectors (4 + 1/8)). kind="flat" on the CPU only. oversample: the
    candidates rescored per result (default 4 for int8, 10 for binary). quantizer: fixed
    int8 ranges (e.g. `Int8Quantizer.fit(sample)`); without it the ranges are fitted on the
    first `calibrate_rows` rows, which are searched as float32 until then.
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
        nlist: int | None = None,
        nprobe: int = 48,
        m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 128,
        compact: str | None = None,
        rescore: str | None = None,
        oversample: int | None = None,
        quantizer: Int8Quantizer | None = None,
        calibrate_rows: int = CALIBRATE_ROWS,
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise InvalidInputError(f"dim must be a positive int, got {dim!r}")
        if kind not in _faiss.KINDS:
            raise InvalidInputError(f"kind must be one of {_faiss.KINDS}, got {kind!r}")
        if exact not in EXACT_BACKENDS:
            raise InvalidInputError(f"exact must be one of {EXACT_BACKENDS}, got {exact!r}")
        self.dim = int(dim)
        self.kind = kind
        self.exact = exact
        self.compact, self.rescore = _check_compact(compact, rescore, kind, exact, device)
        self.oversample = _check_positive_int(
            oversample
            if oversample is not None
            else (DEFAULT_INT8_OVERSAMPLE if compact == "int8" else DEFAULT_BINARY_OVERSAMPLE),
            "oversample",
        )
        self.calibrate_rows = _check_positive_int(calibrate_rows, "calibrate_rows")
        if quantizer is not None and (
            not isinstance(quantizer, Int8Quantizer) or quantizer.dim != self.dim
        ):
            raise InvalidInputError(
                f"quantizer must be an Int8Quantizer of dim {self.dim}, got {quantizer!r}"
            )
        if quantizer is not None and not self._uses_codes():
            raise InvalidInputError("quantizer= is for compact='int8' or rescore='int8'")
        self._quantizer = quantizer
        self.device, on_device = "cpu", False
        if not self.compact:
            self.device, on_device = _resolve_device(device, kind, exact)
        # the exact kernel's rows on a torch device (set here, or by attach_engine on "auto")
        self._mirror = _mirror.DeviceMirror(_mirror.default_device()) if on_device else None
        self._device_auto = device == "auto" and not self.compact and self._kernel_flat()
        self.params = _faiss.AnnParams(
            nlist=nlist, nprobe=nprobe, m=m, ef_construction=ef_construction, ef_search=ef_search
        )
        self.engine: Engine | None = None
        self.fingerprint = fingerprint
        self.lexical = bool(lexical)
        self.stem = bool(stem)
        self.id_kind: str | None = None  # "int" or "str", fixed by the first add
        self._lock = RWLock()
        self._bm25_mutex = threading.Lock()  # one reader builds a stale BM25 side at a time
        self._next_auto_id = 0
        self._n = 0  # slots in use (live + dead)
        self._vectors: np.ndarray | None = np.zeros((0, self.dim), dtype=np.float32)
        self._codes: np.ndarray | None = None  # int8 codes (int8, or binary rescored on int8)
        self._signs: np.ndarray | None = None  # packed sign bits (binary)
        self._set_tables()
        self._live = np.zeros(0, dtype=bool)
        self._bits = np.zeros(0, dtype=np.uint8)  # _live as a little-endian bitmap
        self._slot_ids: np.ndarray = np.zeros(0, dtype=np.int64)  # object array for str ids
        self._slot_of: dict[Id, int] = {}
        self._texts: list[str | None] | None = None  # per slot, once any text was given
        self._tokens: list[list[str] | None] | None = None  # BM25 tokens per slot (lexical)
        self._faiss: Any = None  # built at the first add (IVF trains on it)
        self._generation = 0  # bumped by adds and compactions: the BM25 side is then stale
        self._renumbered = 0  # bumped by compactions: a device mirror is then rebuilt whole
        self._bm25: _Bm25 | None = None
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
        self._follow_engine(engine)

    def _follow_engine(self, engine: Engine) -> None:
        """Search where a GPU engine leaves its vectors: a mirror already made moves to the
        engine's device; device="auto" on the host gets one there (the engine proved the
        GPU usable). The mirror is set before `device`, each one reference swap: a search
        running meanwhile keeps the mirror (or none) it started with (two threads racing
        here make one spare mirror, dropped)."""
        place = _engine_device(engine)
        if place is None:
            return
        place = _mirror.torch_device(place)
        if self._mirror is not None:
            if self._mirror.device != place:
                self._mirror = _mirror.DeviceMirror(place)
        elif self._device_auto and self.device == "cpu":
            self._mirror = _mirror.DeviceMirror(place)
            self.device = "cuda"

    # ---------------------------------------------------------------- compact vectors

    def _uses_codes(self) -> bool:
        return self.compact == "int8" or self.rescore == "int8"

    def _calibrating(self) -> bool:
        """int8 ranges not fitted yet: the rows are held (and searched) as float32."""
        return self._uses_codes() and self._quantizer is None

    def _set_tables(self) -> None:
        """Empty per-row tables for what this index keeps: float32 rows, int8 codes, signs."""
        keep_floats = self.compact is None or self.rescore == "float32" or self._calibrating()
        self._vectors = np.zeros((0, self.dim), np.float32) if keep_floats else None
        codes = self._uses_codes() and self._quantizer is not None
        self._codes = np.zeros((0, self.dim), np.int8) if codes else None
        binary = self.compact == "binary"
        self._signs = np.zeros((0, -(-self.dim // 8)), np.uint8) if binary else None

    def _row_tables(self) -> dict[str, np.ndarray]:
        tables = {"_vectors": self._vectors, "_codes": self._codes, "_signs": self._signs}
        return {name: table for name, table in tables.items() if table is not None}

    @property
    def bytes_per_vector(self) -> int:
        """Bytes kept per row for its vector: float32, int8 codes and / or sign bits."""
        return sum(t.itemsize * t.shape[1] for t in self._row_tables().values())

    @property
    def quantizer(self) -> Int8Quantizer | None:
        """The int8 ranges (None before calibration, or when no int8 codes are kept)."""
        return self._quantizer

    def _quantize(self, vectors: np.ndarray) -> np.ndarray:
        """int8 codes of unit rows with the fixed ranges (in chunks: quantize works in
        float64); warns when more than CLIP_WARN_FRACTION of the values clip."""
        q = self._quantizer
        assert q is not None
        codes = np.empty(vectors.shape, np.int8)
        clipped = 0
        # past a range by under half a step rounds to the end code anyway: not clipped (the
        # index renormalises rows, which moves the ranges' own rows by an ulp or so)
        low, high = q.low - q.step / 2, q.high + q.step / 2
        for r0 in range(0, len(vectors), 65536):
            block = vectors[r0 : r0 + 65536]
            clipped += int(np.count_nonzero((block < low) | (block > high)))
            codes[r0 : r0 + 65536] = q.quantize(block)
        if clipped > CLIP_WARN_FRACTION * vectors.size:
            log.warning(
                "int8 index: %d of %d values fell outside the calibrated ranges and were "
                "clipped; if the new rows differ from the calibration rows, build a new "
                "index (or pass quantizer=Int8Quantizer.fit(representative rows))",
                clipped,
                vectors.size,
            )
        return codes

    def _calibrate(self) -> None:
        """Fit the int8 ranges on the live float32 rows, code every row, drop the floats
        unless binary rescoring needs them (write lock held)."""
        n = self._n
        rows = self._vectors[:n]  # type: ignore[index]
        alive = self._live[:n]
        if not alive.any():
            return
        self._quantizer = Int8Quantizer.fit(rows[alive])
        codes = np.empty((len(self._vectors), self.dim), np.int8)  # type: ignore[arg-type]
        codes[:n] = self._quantize(rows)
        self._codes = codes
        if self.rescore != "float32":
            self._vectors = None
        log.debug("int8 ranges calibrated on %d rows", int(alive.sum()))

    # ---------------------------------------------------------------- size and contents

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, item: object) -> bool:
        try:
            return item in self._slot_of
        except TypeError:  # unhashable
            return False

    @property
    def ids(self) -> list[Id]:
        """Live ids in slot order."""
        with self._lock.read():
            return self._slot_ids[: self._n][self._live[: self._n]].tolist()

    @property
    def dead(self) -> int:
        """Removed rows still holding a slot (until the next compaction)."""
        return self._n - len(self._slot_of)

    def describe(self) -> dict[str, object]:
        """Where this index searches, for logs and reports: `dense_search` names the backend
        ("kernel", "kernel on cuda:0", "faiss", "faiss on the GPU", "int8", "binary");
        `device_searches` counts dense searches whose scan ran on the device mirror and
        `device_rows` the rows it holds (0 until the first such search)."""
        mirror = self._mirror
        if self.compact:
            backend = self.compact
        elif not self._uses_faiss():
            backend = "kernel" if mirror is None else f"kernel on {mirror.device}"
        else:
            backend = "faiss on the GPU" if self.device == "cuda" else "faiss"
        return {
            "kind": self.kind,
            "exact": self.exact,
            "compact": self.compact,
            "device": self.device,
            "dense_search": backend,
            "device_searches": 0 if mirror is None else mirror.searches,
            "device_rows": 0 if mirror is None else mirror.rows_held,
        }

    def memory_bytes(self) -> int:
        """Bytes held: the vector tables (float32 / int8 / sign bits, with spare capacity),
        the FAISS index (its serialised size) and BM25."""
        with self._lock.read():
            total = sum(t.nbytes for t in self._row_tables().values())
            if self._faiss is not None:
                total += _faiss.serialize(self._faiss).nbytes
            if self._bm25 is not None and self._bm25.lexical is not None:
                total += sum(a.nbytes for a in self._bm25.lexical.to_arrays().values())
            return total

    def get(self, ids: Sequence[Id]) -> np.ndarray:
        """Vectors of `ids`: (len(ids), dim) float32 unit rows; NotFoundError for unknown ids.

        An index that keeps int8 codes only returns them dequantized and renormalised (an
        approximation of the vectors added)."""
        with self._lock.read():
            slots = self._slots(list(ids))
            if self._vectors is not None:
                return self._vectors[slots]
            return ops.normalize_rows_(self._quantizer.dequantize(self._codes[slots]))  # type: ignore[union-attr,index]

    def texts(self, ids: Sequence[Id]) -> list[str | None]:
        """Texts stored with `ids` (None where a vector was added without text)."""
        with self._lock.read():
            slots = self._slots(list(ids))
            return [None if self._texts is None else self._texts[s] for s in slots.tolist()]

    # ---------------------------------------------------------------- mutation

    def add(
        self,
        items: Sequence[str] | np.ndarray,
        ids: Sequence[Id] | None = None,
        *,
        texts: Sequence[str] | None = None,
    ) -> list[Id]:
        """Add texts (embedded with the index's engine) or (n, dim) vectors; returns the ids.

        ids: one per item, all int in [0, 2**63) or all str, none already present
        (InvalidInputError names the duplicates; use upsert to replace). None: consecutive
        ints after the largest so far. Vectors are copied and L2-normalised (any layout,
        float16/32/64); NaN/inf, a wrong dim or a count mismatch raise InvalidInputError and
        change nothing. texts: stored for hybrid search (text items are stored already).
        """
        vectors, texts = self._vectors_and_texts(items, texts)
        tokens = self._tokenize(texts)
        with self._lock.write():
            new_ids = self._check_new_ids(ids, len(vectors))
            self._append(vectors, new_ids, texts, tokens)
        return new_ids

    def upsert(
        self,
        items: Sequence[str] | np.ndarray,
        ids: Sequence[Id],
        *,
        texts: Sequence[str] | None = None,
    ) -> None:
        """Add, replacing the vectors (and texts) of ids already present; all or nothing."""
        vectors, texts = self._vectors_and_texts(items, texts)
        tokens = self._tokenize(texts)
        with self._lock.write():
            new_ids = self._check_ids(ids, len(vectors))
            if len(set(new_ids)) != len(new_ids):
                raise InvalidInputError(f"ids repeat within one upsert: {_repeats(new_ids)[:5]}")
            present = [i for i in new_ids if i in self._slot_of]
            self._tombstone(present, self._slots(present))
            self._append(vectors, new_ids, texts, tokens)
            self._compact_if_needed()

    def remove(self, ids: Iterable[Id]) -> None:
        """Remove ids, all or nothing: NotFoundError naming unknown ids, InvalidInputError
        for an id given twice; nothing is removed then."""
        ids = list(ids)
        with self._lock.write():
            slots = self._slots(ids)
            if len(np.unique(slots)) != len(slots):
                raise InvalidInputError(f"ids repeat within one remove: {_repeats(ids)[:5]}")
            self._tombstone(ids, slots)
            self._compact_if_needed()

    def _append(
        self,
        vectors: np.ndarray,
        new_ids: list[Id],
        texts: list[str] | None,
        tokens: list[list[str]] | None,
    ) -> None:
        """Write validated rows after the last slot (write lock held)."""
        if len(vectors) == 0:
            return
        if self._faiss is None and self._uses_faiss():  # IVF training may refuse: before changes
            self._faiss = _faiss.make_index(self.kind, self.dim, self.params, vectors)
            self._place_faiss()
        kind = "str" if isinstance(new_ids[0], str) else "int"
        start, end = self._n, self._n + len(vectors)
        self._reserve(vectors, kind)
        if self._faiss is not None:
            self._faiss.add(vectors)
        if self._vectors is not None and self._vectors is not vectors:
            self._vectors[start:end] = vectors
        if self._codes is not None:
            self._codes[start:end] = self._quantize(vectors)
        if self._signs is not None:
            self._signs[start:end] = binarize(vectors)
        self._slot_ids[start:end] = new_ids
        self._live[start:end] = True
        self._set_bits(start, end)
        if texts is not None and self._texts is None:
            self._texts = [None] * start
        if self._texts is not None:
            self._texts.extend(texts if texts is not None else [None] * len(vectors))
        if self.lexical:
            if self._tokens is None:
                self._tokens = [None] * start
            self._tokens.extend(tokens if tokens is not None else [None] * len(vectors))
        self._slot_of.update(zip(new_ids, range(start, end), strict=True))
        self.id_kind = kind
        if kind == "int":
            self._next_auto_id = max(self._next_auto_id, max(new_ids) + 1)  # type: ignore[type-var]
        self._n = end
        self._generation += 1
        if self._calibrating() and end >= self.calibrate_rows:
            self._calibrate()

    def _reserve(self, vectors: np.ndarray, kind: str) -> None:
        """Room for `vectors` after the last slot: grow by half (amortised O(1) per row).

        The first add adopts the caller-independent copy `vectors` as the table itself.
        """
        need = self._n + len(vectors)
        if self._n == 0 and kind == "str" and self._slot_ids.dtype != object:
            self._slot_ids = np.full(len(self._slot_ids), None, dtype=object)
        tables = self._row_tables()
        if need <= len(self._live) and all(need <= len(t) for t in tables.values()):
            return
        cap = need if self._n == 0 else max(need, len(self._live) * 3 // 2)
        for name, table in tables.items():
            if self._n == 0 and name == "_vectors":
                grown = vectors  # a fresh C-contiguous float32 copy made by add
            else:
                grown = np.empty((cap, *table.shape[1:]), dtype=table.dtype)
                grown[: self._n] = table[: self._n]
            setattr(self, name, grown)
        cap8 = -(-cap // 8) * 8
        live = np.zeros(cap8, dtype=bool)
        live[: self._n] = self._live[: self._n]
        bits = np.zeros(cap8 // 8, dtype=np.uint8)
        bits[: len(self._bits)] = self._bits[: cap8 // 8]
        ids = np.full(cap8, None if kind == "str" else -1, dtype=self._slot_ids.dtype)
        ids[: self._n] = self._slot_ids[: self._n]
        self._live, self._bits, self._slot_ids = live, bits, ids

    def _set_bits(self, start: int, end: int) -> None:
        b0, b1 = start // 8, -(-end // 8)
        self._bits[b0:b1] = np.packbits(self._live[b0 * 8 : b1 * 8], bitorder="little")

    def _tombstone(self, ids: list[Id], slots: np.ndarray) -> None:
        """Mark validated ids' slots dead (write lock held)."""
        if not ids:
            return
        for i in ids:
            del self._slot_of[i]
        self._live[slots] = False
        self._slot_ids[slots] = None if self.id_kind == "str" else -1
        np.bitwise_and.at(self._bits, slots >> 3, ~(1 << (slots & 7)).astype(np.uint8))

    def _compact_if_needed(self) -> None:
        dead = self.dead
        if not dead:
            return
        if self._faiss is None:
            limit = DEAD_FRACTION_KERNEL * self._n
        elif _faiss.is_gpu(self._faiss):
            limit = 0  # GPU indexes take no ID selector
        else:
            limit = DEAD_FRACTION_FAISS * self._n
        if dead > limit:
            self._compact()

    def _compact(self) -> None:
        """Drop dead slots: renumber live rows and rebuild FAISS on them (write lock held)."""
        started = time.perf_counter()
        keep = np.flatnonzero(self._live[: self._n])
        n = len(keep)
        for name, table in self._row_tables().items():
            setattr(self, name, np.ascontiguousarray(table[keep]))
        cap8 = -(-n // 8) * 8
        ids = np.full(cap8, None if self.id_kind == "str" else -1, dtype=self._slot_ids.dtype)
        ids[:n] = self._slot_ids[keep]
        self._slot_ids = ids
        self._live = np.zeros(cap8, dtype=bool)
        self._live[:n] = True
        self._bits = np.zeros(cap8 // 8, dtype=np.uint8)
        self._set_bits(0, n)
        self._slot_of = dict(zip(ids[:n].tolist(), range(n), strict=True))
        kept = keep.tolist()
        if self._texts is not None:
            self._texts = [self._texts[s] for s in kept]
        if self._tokens is not None:
            self._tokens = [self._tokens[s] for s in kept]
        self._n = n
        if self._faiss is not None:
            self._faiss.reset()  # keeps IVF training
            self._faiss.add(self._vectors)
        self._generation += 1
        self._renumbered += 1
        log.debug("compacted to %d rows in %.3f s", n, time.perf_counter() - started)

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
        prompt: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k per query: (scores, ids), each (n_queries, k), best first.

        queries: texts (needs an engine) or (n, dim) vectors (normalised here); [] or a
        (0, dim) array gives (0, k) results. k: at most max(len(index), MAX_PADDED_K);
        columns past the available results hold score -inf and id -1 (int ids) / None.
        allow: only these ids may be returned (NotFoundError for unknown ones); a filtered
        dense search is exact over the allowed rows whatever the kind.
        mode: "dense" (cosine), "lexical" (BM25 scores; only documents sharing a term with
        the query are returned) or "hybrid" (both need text queries and an index made with
        lexical=True): the top `depth` of each side are fused by `fusion` "rrf" (reciprocal
        rank) or "score" (min-max normalised scores; a candidate missing from one side's
        top `depth` gets that side's minimum), `weight` on the dense side; hybrid scores
        are fusion scores, not cosines.
        prompt: prefixed to text queries when the engine embeds them (the dense side only:
        BM25 scores the query's own words); Engine.search passes the model's query prompt.
        """
        k = _check_positive_int(k, "k")
        depth = _check_positive_int(depth, "depth")
        if mode not in MODES:
            raise InvalidInputError(f"mode must be one of {MODES}, got {mode!r}")
        if fusion not in FUSIONS:
            raise InvalidInputError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        if not isinstance(weight, (int, float, np.floating)) or not 0.0 <= weight <= 1.0:
            raise InvalidInputError(f"weight must be a number in [0, 1], got {weight!r}")
        query_texts = _as_texts(queries)
        if prompt is not None and (query_texts is None or not isinstance(prompt, str)):
            raise InvalidInputError(f"prompt= is a str for text queries, got {prompt!r}")
        if mode != "dense":
            if query_texts is None:
                raise InvalidInputError(f"mode={mode!r} needs text queries (BM25 scores words)")
            if not self.lexical:
                raise InvalidInputError(f"mode={mode!r} needs an index made with lexical=True")
        mirror = self._mirror  # one for the whole search (attach_engine may swap it)
        q, gpu = None, None
        if mode != "lexical":
            q, q_dev = self._query_vectors(queries, query_texts, prompt, mirror)
            gpu = None if mirror is None else _OnDevice(mirror, q_dev)
        n_queries = len(query_texts) if query_texts is not None else len(q)  # type: ignore[arg-type]
        with self._lock.read():
            live = len(self._slot_of)
            if k > max(live, MAX_PADDED_K):
                raise InvalidInputError(
                    f"k={k} is more than the {live} ids in the index and more than "
                    f"{MAX_PADDED_K} padded columns: pass k <= {max(live, MAX_PADDED_K)}"
                )
            allowed = None if allow is None else np.unique(self._slots(list(allow)))
            width = min(k, live if allowed is None else len(allowed))
            if n_queries == 0 or width == 0:
                return _pad(*_empty(n_queries, 0), k, self.id_kind)
            if mode == "lexical":
                scores, slots = self._lexical_search(query_texts, width, allowed)  # type: ignore[arg-type]
            elif mode == "dense":
                scores, slots = self._dense_search(q, width, allowed, gpu)  # type: ignore[arg-type]
            else:
                deep = min(max(depth, k), live if allowed is None else len(allowed))
                scores, slots = self._hybrid_search(
                    q,
                    query_texts,
                    width,
                    deep,
                    allowed,
                    fusion,
                    weight,  # type: ignore[arg-type]
                    gpu,
                )
            return _pad(scores, self._external(slots), k, self.id_kind)

    def _dense_search(
        self, q: np.ndarray, k: int, allowed: np.ndarray | None, gpu: _OnDevice | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, slots), (n, <= k), by inner product; exact over `allowed` slots when given
        (compact indexes: the compact search over the allowed rows); `gpu`: the kernel scans
        the device mirror (unfiltered searches)."""
        if self._signs is not None or self._codes is not None:
            return self._compact_search(q, k, allowed)
        if allowed is not None:
            scores, rows = _exact_topk(q, self._vectors[allowed], k, None, 0)
            return scores, np.where(rows >= 0, allowed[np.maximum(rows, 0)], -1)
        n = self._n
        if self._faiss is None:
            live = self._live[:n] if self.dead else None
            if gpu is not None:
                return self._device_topk(gpu, q, k, live)
            return _exact_topk(q, self._vectors[:n], k, live, self.dead)
        return self._faiss_search(q, k)

    def _device_topk(
        self, gpu: _OnDevice, q: np.ndarray, k: int, live: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """_exact_topk with the kernel's scan on the device mirror: only the candidates (and
        the queries) come to the host, re-scored there as on the host path."""
        mirror, n = gpu.mirror, self._n
        rows = mirror.rows(self._vectors, n, self._renumbered)  # type: ignore[arg-type]
        q_dev = mirror.upload(q) if gpu.queries is None else gpu.queries
        mirror.count_search()

        def nominate(todo: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
            return mirror.topk(q_dev, rows, todo, fetch)

        base = self._vectors[:n]  # type: ignore[index]
        return _exact_topk(q, base, k, live, self.dead, nominate=nominate, tf32=mirror.tf32)

    def _compact_search(
        self, q: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, slots), (n, <= k), from int8 codes or sign bits (+ rescoring).

        Dead rows are scanned and dropped: a search fetches k plus about twice the expected
        dead rows among them, and rows left with fewer than k are fetched again 4x deeper.
        """
        n = self._n
        if allowed is not None:
            size, live, dead = len(allowed), None, 0
        else:
            size, live, dead = n, (self._live[:n] if self.dead else None), self.dead
        k = min(k, size - dead)
        if k <= 0:
            return _empty(len(q), 0)

        def step(todo: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            got, rows = self._compact_candidates(q[todo], fetch, allowed)
            usable = rows >= 0
            if live is not None:
                usable &= live[np.maximum(rows, 0)]
            order = np.argsort(~usable, axis=1, kind="stable")[:, :k]  # best usable first
            top = np.take_along_axis(np.where(usable, got, -np.inf), order, 1)
            rows = np.where(np.isfinite(top), np.take_along_axis(rows, order, 1), -1)
            if allowed is not None:
                rows = np.where(rows >= 0, allowed[np.maximum(rows, 0)], -1)
            return top, rows, usable.sum(axis=1) >= k

        fetch = min(size, k + (_extra(k, dead, size) if dead else 0))
        return _deepen(len(q), k, fetch, size, step)

    def _compact_candidates(
        self, q: np.ndarray, fetch: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """quantize.search_int8 / search_binary over all slots or the `allowed` ones."""
        n = self._n

        def rows(table: np.ndarray) -> np.ndarray:
            return table[:n] if allowed is None else table[allowed]

        if self._signs is None:
            return search_int8(
                q,
                rows(self._codes),
                self._quantizer,
                fetch,
                oversample=self.oversample,  # type: ignore[arg-type]
            )
        if self._vectors is not None:  # rescore="float32", or int8 ranges not calibrated yet
            return search_binary(
                q,
                rows(self._signs),
                fetch,
                rescore_with=rows(self._vectors),
                oversample=self.oversample,
            )
        return search_binary(
            q,
            rows(self._signs),
            fetch,
            rescore_with=rows(self._codes),  # type: ignore[arg-type]
            quantizer=self._quantizer,
            oversample=self.oversample,
        )

    def _faiss_search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """FAISS candidates re-scored exactly; flat results checked, failures redone exactly."""
        n, live = self._n, len(self._slot_of)
        bits = self._bits[: -(-n // 8)] if self.dead else None
        base = self._vectors[:n]
        if self.kind != "flat":  # approximate: FAISS's candidates, ordered deterministically
            approx, slots = _faiss.search(self._faiss, q, k, self.params, bits)
            scores, rows, _ = _rescore(q, base, approx, slots, None, k, None)
            return scores, rows
        fetch = min(live, k + _extra(k, 0, n))
        if fetch > GPU_MAX_K and _faiss.is_gpu(self._faiss):  # FAISS GPU's k limit
            return _exact_topk(q, base, k, None, 0)  # GPU indexes hold no dead rows
        approx, slots = _faiss.search(self._faiss, q, fetch, self.params, bits)
        margin = _margin(self.dim) if fetch < live else None
        scores, rows, ok = _rescore(q, base, approx, slots, None, k, margin)
        if not ok.all():
            bad = np.flatnonzero(~ok)
            mask = self._live[:n] if self.dead else None
            scores[bad], rows[bad] = _exact_topk(q[bad], base, k, mask, self.dead)
        return scores, rows

    def _lexical_search(
        self, query_texts: list[str], k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(BM25 scores, slots), (n, k): documents sharing a term with the query, best first."""
        bm25 = self._bm25_current()
        if bm25.lexical is None:
            return _empty(len(query_texts), k)
        mask = None
        if self.dead or allowed is not None:
            keep = self._live[: self._n].copy()
            if allowed is not None:
                keep[:] = False
                keep[allowed] = True
            mask = keep[bm25.slots].astype(np.float32)
        scores, docs = bm25.lexical.retrieve(query_texts, k, mask)
        found = (scores > 0) & (docs >= 0)
        slots = np.where(found, bm25.slots[np.maximum(docs, 0)], -1)
        scores = np.where(found, scores, -np.inf).astype(np.float32)
        # best first, ties to the earlier slot; unfound (-inf) last
        order = np.lexsort((np.where(found, slots, np.iinfo(np.int64).max), -scores), axis=1)
        return np.take_along_axis(scores, order, 1), np.take_along_axis(slots, order, 1)

    def _hybrid_search(
        self,
        q: np.ndarray,
        query_texts: list[str],
        k: int,
        depth: int,
        allowed: np.ndarray | None,
        fusion: str,
        weight: float,
        gpu: _OnDevice | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fuse the top `depth` of the dense and the BM25 rankings over their union."""
        _, dense_slots = self._dense_search(q, depth, allowed, gpu)
        lexical_scores, lexical_slots = self._lexical_search(query_texts, depth, allowed)
        width = dense_slots.shape[1] + lexical_slots.shape[1]
        candidates = np.full((len(q), width), -1, dtype=np.int64)
        lex = np.full(candidates.shape, -np.inf, dtype=np.float32)
        for row in range(len(q)):
            found = lexical_slots[row] >= 0
            words = lexical_slots[row][found]
            union = np.union1d(dense_slots[row][dense_slots[row] >= 0], words)
            candidates[row, : len(union)] = union
            lex[row, np.searchsorted(union, words)] = lexical_scores[row][found]
        if self._vectors is not None:
            pair_scores = _scores(q, self._vectors, candidates)
        else:
            pair_scores = _scores(q, self._codes, candidates, self._quantizer)  # type: ignore[arg-type]
        dense = np.where(candidates >= 0, pair_scores, -np.inf)
        fused = fuse(dense, lex, method=fusion, weight=weight)
        scores, local = _top_k(fused, k)
        slots = np.where(local >= 0, np.take_along_axis(candidates, np.maximum(local, 0), 1), -1)
        return scores, slots

    def _bm25_current(self) -> _Bm25:
        """The BM25 side for the current generation, rebuilt when adds made it stale.

        Called with the read lock held: the slots cannot change, so building it is a pure
        function of the state; the mutex keeps concurrent readers from building it twice.
        """
        current = self._bm25
        if current is not None and current.generation == self._generation:
            return current
        with self._bm25_mutex:
            current = self._bm25
            if current is None or current.generation != self._generation:
                current = self._build_bm25()
                self._bm25 = current
            return current

    def _build_bm25(self) -> _Bm25:
        started = time.perf_counter()
        slots = np.flatnonzero(self._live[: self._n])
        texts = self._texts
        if len(slots) and (texts is None or any(texts[s] is None for s in slots.tolist())):
            raise InvalidInputError(
                "lexical search needs a text for every id: add texts with the vectors"
            )
        tokens = self._tokens if self._tokens is not None else [None] * self._n
        missing = [s for s in slots.tolist() if tokens[s] is None]
        if missing:  # e.g. after loading a file: tokenise once, keep for later rebuilds
            for s, words in zip(
                missing,
                lexical.tokenize([texts[s] for s in missing], stem=self.stem),  # type: ignore[index,misc]
                strict=True,
            ):
                tokens[s] = words
            self._tokens = tokens
        built = (
            lexical.Lexical.build([tokens[s] for s in slots.tolist()], stem=self.stem)  # type: ignore[misc]
            if len(slots)
            else None
        )
        log.debug("BM25 over %d texts built in %.3f s", len(slots), time.perf_counter() - started)
        return _Bm25(built, slots, self._generation)

    # ---------------------------------------------------------------- persistence

    def save(self, path: str | Path) -> None:
        """Write the index to one file, atomically (temp file, fsync, rename) and checksummed.

        A crash at any moment leaves either the previous file or the new one, complete.
        """
        with self._lock.read():
            n = self._n
            arrays: dict[str, np.ndarray] = {"live": self._live[:n]}
            for name, table in self._row_tables().items():
                arrays[name[1:]] = table[:n]  # vectors, codes, signs
            if self._quantizer is not None:
                arrays.update(self._quantizer.to_state()[0])  # int8_low, int8_high
            if self.id_kind == "str":
                ids = [i if i is not None else "" for i in self._slot_ids[:n].tolist()]
                arrays["ids_utf8"], arrays["ids_offsets"] = pack_strings(ids)
            else:
                arrays["ids"] = self._slot_ids[:n].astype(np.int64)
            if self._texts is not None:
                arrays["texts_utf8"], arrays["texts_offsets"] = pack_strings(
                    [t or "" for t in self._texts]
                )
                arrays["has_text"] = np.array([t is not None for t in self._texts], dtype=bool)
            if self._faiss is not None and self.kind != "flat":  # flat is rebuilt on load
                arrays["faiss"] = _faiss.serialize(self._faiss)
            meta: dict[str, Any] = {
                "format": FORMAT_COMPACT if self.compact else FORMAT,
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
            if self.compact:
                meta.update(
                    compact=self.compact,
                    rescore=self.rescore,
                    oversample=self.oversample,
                    calibrate_rows=self.calibrate_rows,
                )
            bm25 = self._bm25_if_possible()
            if bm25 is not None and bm25.lexical is not None:
                arrays.update(bm25.lexical.to_arrays())
                arrays["bm25_slots"] = bm25.slots
                meta["bm25"] = True
            save_arrays(path, arrays, meta)

    def _bm25_if_possible(self) -> _Bm25 | None:
        """The current BM25 side to save, or None (not lexical, empty, or texts missing)."""
        if not self.lexical or not self._slot_of:
            return None
        try:
            return self._bm25_current()
        except InvalidInputError:  # vectors added without texts: nothing to save
            return None

    @classmethod
    @malformed_is_corrupt
    def load(
        cls, path: str | Path, *, engine: Engine | None = None, device: str = "auto"
    ) -> VectorIndex:
        """Read a saved index, verifying checksum, format, shapes and (given an engine) model.

        CorruptFileError for a damaged, crafted or foreign file, ModelMismatchError when
        `engine` runs another model than the one that made the vectors. Loading holds about
        the file's size in memory at its peak (the arrays, read straight into place), twice
        it for IVF or HNSW (FAISS's own copy of its part); the FAISS part is walked and
        bounds-checked before FAISS reads it.
        """
        arrays, meta = load_arrays(path)
        if meta.get("format") not in (FORMAT, FORMAT_COMPACT, *OLD_FORMATS):
            raise CorruptFileError(f"{path} is not a VectorIndex file ({meta.get('format')!r})")
        if meta["format"] == FORMAT_COMPACT and device not in ("auto", "cpu"):
            raise InvalidInputError(
                f"{path} holds compact vectors, searched on the CPU: device must be 'auto' or "
                f"'cpu', got {device!r}"
            )
        try:
            index = cls(
                meta["dim"],
                kind=meta["kind"],
                device=device,
                exact=meta["exact"],
                lexical=meta["lexical"],
                stem=meta["stem"],
                fingerprint=meta["fingerprint"],
                **_params(meta["params"]),
                **_compact_options(arrays, meta),
            )
            index._restore(path, arrays, meta)
        except CorruptFileError:
            raise
        except (EmbengineError, KeyError, TypeError, ValueError, IndexError) as exc:
            raise CorruptFileError(f"{path}: inconsistent VectorIndex file: {exc}") from exc
        if engine is not None:
            index.attach_engine(engine)
        return index

    def _restore(self, path: str | Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
        live = arrays["live"]
        n = len(live)
        if live.dtype != bool or live.shape != (n,):
            raise CorruptFileError(f"{path}: live flags {live.dtype} {live.shape} are malformed")
        tables = {}
        for name, want in self._row_tables().items():  # what this kind of index keeps
            got = arrays[name[1:]]
            if got.dtype != want.dtype or got.shape != (n, want.shape[1]):
                raise CorruptFileError(
                    f"{path}: {name[1:]} {got.dtype} {got.shape} do not match {n} rows of "
                    f"{want.dtype} {want.shape[1]}"
                )
            tables[name] = got
        vectors = tables.get("_vectors")
        if vectors is not None and not np.isfinite(
            np.add.reduce(vectors, axis=None, dtype=np.float64)
        ):
            raise CorruptFileError(f"{path}: vectors hold NaN or inf")
        id_kind = meta["id_kind"]
        if id_kind not in (None, "int", "str"):
            raise CorruptFileError(f"{path}: unknown id kind {id_kind!r}")
        old = meta["format"] in OLD_FORMATS
        if id_kind == "str":
            ids = arrays["ids"].tolist() if old else _unpack_strings(arrays, "ids", n, path)
            slot_ids = np.full(n, None, dtype=object)
            flags = live.tolist()
            slot_ids[:] = [i if alive else None for i, alive in zip(ids, flags, strict=True)]
        else:
            slot_ids = np.asarray(arrays["ids"], dtype=np.int64)
            if slot_ids.shape != (n,) or (n and slot_ids[live].min(initial=0) < 0):
                raise CorruptFileError(f"{path}: ids do not match the vectors")
            slot_ids = np.where(live, slot_ids, -1)
        live_ids = slot_ids[live].tolist()
        slot_of = dict(zip(live_ids, np.flatnonzero(live).tolist(), strict=True))
        if len(slot_of) != len(live_ids):
            raise CorruptFileError(f"{path}: ids repeat")
        next_auto_id = meta["next_auto_id"]
        if not isinstance(next_auto_id, int) or (
            id_kind == "int" and live_ids and next_auto_id <= max(live_ids)
        ):
            raise CorruptFileError(f"{path}: next id {next_auto_id!r} is not past the ids")
        texts = None
        if "has_text" in arrays:
            has_text = arrays["has_text"]
            values = arrays["texts"].tolist() if old else _unpack_strings(arrays, "texts", n, path)
            if has_text.shape != (n,) or len(values) != n:
                raise CorruptFileError(f"{path}: {len(values)} texts for {n} rows")
            texts = [t if h else None for t, h in zip(values, has_text.tolist(), strict=True)]
        if self.kind == "flat":  # IndexFlatIP is just the vectors: rebuilt, never parsed
            if n and self._uses_faiss():
                self._faiss = _faiss.make_index("flat", self.dim, self.params, vectors)
                self._faiss.add(vectors)
                self._place_faiss()
        elif "faiss" in arrays:
            blob = arrays["faiss"]
            self._faiss = _faiss.deserialize(blob, kind=self.kind, dim=self.dim, ntotal=n)
            self._place_faiss()
        elif n:
            raise CorruptFileError(f"{path}: the FAISS part is missing")
        # everything checked: install
        cap8 = -(-n // 8) * 8
        for name, table in tables.items():
            setattr(self, name, table)
        self._live = np.zeros(cap8, dtype=bool)
        self._live[:n] = live
        self._bits = np.zeros(cap8 // 8, dtype=np.uint8)
        self._n = n
        self._set_bits(0, n)
        self._slot_ids = np.full(cap8, None if id_kind == "str" else -1, dtype=slot_ids.dtype)
        self._slot_ids[:n] = slot_ids
        self._slot_of = slot_of
        self.id_kind = id_kind
        self._next_auto_id = next_auto_id
        self._texts = texts
        if self.lexical:
            self._tokens = [None] * n
        if meta.get("bm25") is True and not old:
            built = lexical.Lexical.from_arrays(arrays, stem=self.stem, path=path)
            slots = np.asarray(arrays["bm25_slots"], dtype=np.int64)
            if (
                slots.shape != (built.size,)
                or (len(slots) and (slots.min() < 0 or slots.max() >= n))
                or len(np.unique(slots)) != len(slots)
            ):
                raise CorruptFileError(f"{path}: the BM25 part does not match the rows")
            self._bm25 = _Bm25(built, slots, self._generation)

    # ---------------------------------------------------------------- internals

    def _vectors_and_texts(
        self, items: Sequence[str] | np.ndarray, texts: Sequence[str] | None
    ) -> tuple[np.ndarray, list[str] | None]:
        item_texts = _as_texts(items)
        if item_texts is not None:
            if texts is not None:
                raise InvalidInputError("texts= is for vector items; text items are stored already")
            if not item_texts:
                return np.zeros((0, self.dim), dtype=np.float32), []
            return self._embed(item_texts), item_texts
        vectors = _unit_rows(items, "vectors", self.dim)
        if texts is not None:
            from embengine.validation import check_texts

            texts = check_texts(texts)
            if len(texts) != len(vectors):
                raise InvalidInputError(f"{len(texts)} texts for {len(vectors)} vectors")
        return vectors, texts

    def _tokenize(self, texts: list[str] | None) -> list[list[str]] | None:
        if not self.lexical or texts is None:
            return None
        return lexical.tokenize(texts, stem=self.stem)

    def _embed(
        self,
        texts: list[str],
        cache: bool = True,
        prompt: str | None = None,
        on_device: bool = False,
    ) -> Any:
        """The engine's vectors of `texts`: numpy, or (on_device) a torch tensor left where
        the engine made it."""
        if self.engine is None:
            raise InvalidInputError(
                "text input needs an engine: make the index with engine.index(...) or "
                "VectorIndex.load(path, engine=engine), or pass vectors"
            )
        options: dict[str, Any] = {"cache": cache}
        if prompt is not None:
            options["prompt"] = prompt
        if on_device:
            return self.engine.embed(texts, output="torch", **options)
        return np.ascontiguousarray(self.engine.embed(texts, **options), dtype=np.float32)

    def _query_vectors(
        self,
        queries: Any,
        query_texts: list[str] | None,
        prompt: str | None = None,
        mirror: _mirror.DeviceMirror | None = None,
    ) -> tuple[np.ndarray, Any | None]:
        """Unit query rows on the host, and on the mirror's device when they are there
        already (torch tensors on it; text queries embedded by an engine that leaves them
        there), else None."""
        if query_texts is not None:
            if not query_texts:
                return np.zeros((0, self.dim), dtype=np.float32), None
            # not stored in the engine's store (cache=False)
            queries = self._embed(query_texts, False, prompt, on_device=mirror is not None)
        if mirror is not None and mirror.holds(queries):
            return mirror.queries(queries, self.dim)
        return _unit_rows(queries, "queries", self.dim), None

    def _check_ids(self, ids: Sequence[Id], n: int) -> list[Id]:
        try:
            ids = [int(i) if isinstance(i, np.integer) else i for i in ids]
        except TypeError:
            raise InvalidTypeError(f"ids must be a sequence, got {type(ids).__name__}") from None
        if len(ids) != n:
            raise InvalidInputError(f"{len(ids)} ids for {n} items")
        kinds = {_id_kind(i, position) for position, i in enumerate(ids)}
        if self.id_kind is not None:
            kinds.add(self.id_kind)
        if len(kinds) > 1:
            raise InvalidTypeError(
                f"ids must all be int or all str; this index holds {self.id_kind or 'none yet'}"
                f" and got {sorted(kinds - {self.id_kind})}"
            )
        return ids

    def _check_new_ids(self, ids: Sequence[Id] | None, n: int) -> list[Id]:
        if ids is None:
            if self.id_kind == "str":
                raise InvalidInputError("this index has str ids: pass ids= explicitly")
            if self._next_auto_id + n - 1 > INT64_MAX:
                raise InvalidInputError("automatic ids would pass 2**63 - 1: pass ids=")
            # fresh ints past every id so far: valid and unique by construction
            return list(range(self._next_auto_id, self._next_auto_id + n))
        ids = self._check_ids(ids, n)
        repeated = _repeats(ids) + [i for i in ids if i in self._slot_of]
        if repeated:
            raise InvalidInputError(
                f"duplicate ids (already in the index or repeated): {repeated[:5]}; "
                "use upsert() to replace"
            )
        return ids

    def _slots(self, ids: list[Id]) -> np.ndarray:
        try:
            return np.array([self._slot_of[i] for i in ids], dtype=np.int64)
        except (KeyError, TypeError):
            unknown = [i for i in ids if not _hashable(i) or i not in self._slot_of]
            raise NotFoundError(f"{len(unknown)} unknown id(s): {unknown[:5]}") from None

    def _external(self, slots: np.ndarray) -> np.ndarray:
        """External ids of (n, k) slots; -1 (int ids) or None (str ids) where slot is -1."""
        out = self._slot_ids[np.maximum(slots, 0)]
        out[slots < 0] = None if self.id_kind == "str" else -1
        return out

    def _kernel_flat(self) -> bool:
        return self.kind == "flat" and self.exact == "kernel"

    def _uses_faiss(self) -> bool:
        return not (self._kernel_flat() and (self.device == "cpu" or self._mirror is not None))

    def _place_faiss(self) -> None:
        if self.device == "cuda" and not _faiss.is_gpu(self._faiss):
            self._faiss = _faiss.to_gpu(self._faiss)


# -------------------------------------------------------------------- exact top-k


def _margin(dim: int, tf32: bool = False) -> float:
    """Bound on |kernel fp32 score - re-scored score| for unit rows, padded.

    Any float32 dot (the kernel's SIMD scan, a BLAS tile, FAISS, the pairwise re-score) is
    within gamma_d = d u / (1 - d u) of the exact dot, whatever its summation order
    (|fl(x.y) - x.y| <= gamma_d |x| |y|); twice gamma_d covers two of them. tf32: the
    kernel's tiles may come from TF32 tensor cores (ops.similarity.rounding_margin).
    """
    return rounding_margin(dim, 1.0, 1.0, tf32=tf32) * 1.01


def _extra(k: int, dead: int, n: int) -> int:
    """Candidates fetched past k: some for the rounding check, some to cover dead rows
    (twice their expected number among the candidates)."""
    extra = 2 + k // 8  # the check fails on near-ties only; those rows are fetched again
    if dead:
        extra += min(dead, math.ceil(2 * (k + extra) * dead / n) + 2)
    return extra


_Nominate = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def _exact_topk(
    q: np.ndarray,
    base: np.ndarray,
    k: int,
    live: np.ndarray | None,
    dead: int,
    *,
    nominate: _Nominate | None = None,
    tf32: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k rows of `base` (skipping rows where `live` is False): (n, min(k, live)).

    The kernel nominates candidates; `_rescore` scores them exactly and checks that no row
    left out could compete. Rows that fail (near-ties at the cut, many dead candidates)
    are fetched again four times deeper, up to the whole table, where the check holds.
    nominate(queries, fetch): the kernel's (scores, rows) elsewhere (the device mirror, whose
    tiles may be TF32: `tf32`); default ops.topk_cosine over `base`.
    """
    n = len(base)
    k = min(k, n - dead)
    if k <= 0:
        return _empty(len(q), 0)

    def step(todo: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if nominate is None:
            approx, cand = ops.topk_cosine(q[todo], base, fetch)
        else:
            approx, cand = nominate(todo, fetch)
        margin = _margin(base.shape[1], tf32) if fetch < n else None
        return _rescore(q[todo], base, approx, cand, live, k, margin)

    return _deepen(len(q), k, min(n, k + _extra(k, dead, n)), n, step)


_Step = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray, np.ndarray]]


def _deepen(nq: int, k: int, fetch: int, size: int, step: _Step) -> tuple[np.ndarray, np.ndarray]:
    """(scores, slots) of nq queries, (nq, k): `step(queries, fetch)` gives each query's best
    k of `fetch` candidates and whether that settles it; unsettled queries are fetched again
    four times deeper, until the whole table (`size` rows) has been fetched."""
    scores, slots = _empty(nq, k)
    todo = np.arange(nq)
    while len(todo):
        got_scores, got_slots, settled = step(todo, fetch)
        scores[todo], slots[todo] = got_scores, got_slots
        todo = todo[~settled] if fetch < size else todo[:0]
        fetch = min(size, fetch * 4)
    return scores, slots


def _rescore(
    q: np.ndarray,
    base: np.ndarray,
    approx: np.ndarray,
    cand: np.ndarray,
    live: np.ndarray | None,
    k: int,
    margin: float | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The best k usable candidates per row by `_scores`, ties to the lower row; and per row
    whether that is provably the exact top-k of the whole table.

    margin: check that the k-th re-scored score beats the last fetched kernel score by it
    (anything not fetched scored at most that in the kernel); None: no check (the whole
    table was fetched, or the search is approximate anyway).
    """
    usable = cand >= 0
    if live is not None:
        usable &= live[np.maximum(cand, 0)]
    exact = np.where(usable, _scores(q, base, cand), -np.inf).astype(np.float32)
    key = np.where(usable, cand, np.iinfo(np.int64).max)
    order = np.lexsort((key, -exact), axis=1)[:, :k]
    scores = np.take_along_axis(exact, order, 1)
    rows = np.where(np.isfinite(scores), np.take_along_axis(cand, order, 1), -1)
    ok = usable.sum(axis=1) >= k
    if margin is not None and k:
        ok &= scores[:, -1] > approx[:, -1] + margin
    return scores, rows, ok


def _scores(
    q: np.ndarray, base: np.ndarray, cand: np.ndarray, quantizer: Int8Quantizer | None = None
) -> np.ndarray:
    """(n, c) float32 dots of query r with base[cand[r]], one pair at a time: the products,
    then numpy's pairwise sum over the contiguous last axis, the same for every pair, so a
    score never depends on which other rows or queries share the call. -1 candidates: 0.
    quantizer: `base` holds its int8 codes, dequantized per candidate."""
    out = np.empty(cand.shape, dtype=np.float32)
    step = max(1, (1 << 22) // max(1, cand.shape[1] * q.shape[1]))  # ~16 MiB of products
    for r0 in range(0, len(q), step):
        rows = base[np.maximum(cand[r0 : r0 + step], 0)]
        if quantizer is not None:
            rows = quantizer.dequantize(rows.reshape(-1, q.shape[1])).reshape(rows.shape)
        rows *= q[r0 : r0 + step, None, :]
        out[r0 : r0 + step] = rows.sum(axis=2)
    return out


# -------------------------------------------------------------------- helpers


def _resolve_device(device: str, kind: str, exact: str) -> tuple[str, bool]:
    """("cpu" | "cuda", whether the exact kernel scans a device mirror): FAISS's GPU where
    it has one, else embengine's kernels for kind="flat", exact="kernel"."""
    if device not in ("auto", "cpu", "cuda"):
        raise InvalidInputError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cpu":
        return "cpu", False
    gpus = _faiss.faiss_gpu_count()
    if gpus and kind in _faiss.GPU_KINDS:
        return "cuda", False
    kernel = kind == "flat" and exact == "kernel"
    if kernel and _mirror.usable():
        return "cuda", True
    if device == "cuda":
        if gpus and kind not in _faiss.GPU_KINDS:
            raise InvalidInputError(
                f"kind={kind!r} runs on the CPU only in FAISS: use device='cpu'"
            )
        also = ""
        if kernel:
            from embengine.device import cuda_unavailable_reason

            also = f", or embengine's CUDA kernels with CUDA torch ({cuda_unavailable_reason()})"
        raise InvalidInputError(
            f"device='cuda' needs faiss with GPU support and a visible GPU{also}"
        )
    log.debug("VectorIndex device='auto' chose the CPU (%d FAISS GPUs, kind %s)", gpus, kind)
    return "cpu", False


def _engine_device(engine: Any) -> Any | None:
    """The torch device where `engine` leaves its vectors (None: it returns them on the host)."""
    resident = getattr(engine, "_device_resident", None)
    if resident is None or not resident():
        return None
    return engine.encoder.torch_device


def _check_compact(
    compact: object, rescore: object, kind: str, exact: str, device: str
) -> tuple[str | None, str | None]:
    """(compact, rescore) checked: rescore is "int8" / "float32" for binary, else None."""
    if not (compact is None or isinstance(compact, str)) or compact not in COMPACTS:
        raise InvalidInputError(f"compact must be one of {COMPACTS}, got {compact!r}")
    if compact != "binary" and rescore is not None:
        raise InvalidInputError(
            f"rescore= is for compact='binary' (int8 rescores with its own codes), got {rescore!r}"
        )
    if compact is None:
        return None, None
    if kind != "flat" or exact != "kernel":
        raise InvalidInputError(
            f"compact={compact!r} needs kind='flat' and exact='kernel', got {kind!r} / {exact!r}"
        )
    if device not in ("auto", "cpu"):
        raise InvalidInputError(
            f"compact={compact!r} indexes search on the CPU: device must be 'auto' or 'cpu', "
            f"got {device!r}"
        )
    if compact == "int8":
        return "int8", None
    rescore = "int8" if rescore is None else rescore
    if not isinstance(rescore, str) or rescore not in RESCORES:
        raise InvalidInputError(f"rescore must be one of {RESCORES}, got {rescore!r}")
    return "binary", rescore


def _compact_options(arrays: dict[str, np.ndarray], meta: dict) -> dict[str, Any]:
    """VectorIndex keywords for a saved compact index (none for a float32 one)."""
    if meta["format"] != FORMAT_COMPACT:
        return {}
    quantizer = None
    if "int8_low" in arrays or "int8_high" in arrays:
        quantizer = Int8Quantizer.from_state(arrays, {"kind": QUANTIZER_STATE})
    return {
        "compact": meta["compact"],
        "rescore": meta["rescore"],
        "oversample": meta["oversample"],
        "calibrate_rows": meta["calibrate_rows"],
        "quantizer": quantizer,
    }


def _params(params: Any) -> dict[str, Any]:
    if not isinstance(params, dict) or not set(params) <= set(_faiss.AnnParams().as_dict()):
        raise CorruptFileError(f"bad ANN parameters {params!r}")
    return params


def _check_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidInputError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def _unit_rows(x: Any, name: str, dim: int) -> np.ndarray:
    """A fresh C-contiguous float32 copy of x (any layout / float dtype, on the host or a
    GPU), rows normalised."""
    if ops.is_cuda_array(x):
        x = ops.to_host(x)
    try:
        a = ops.check_vectors(x, name, dim)
    except EmbengineError:
        raise
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None
    out = np.array(a, dtype=np.float32, order="C", copy=True)
    return ops.normalize_rows_(out)


def _as_texts(items: Any) -> list[str] | None:
    """The items as a list of str when they are texts ([] for none), None for vectors."""
    if isinstance(items, str):
        raise InvalidTypeError("pass a list of texts, not a single string")
    if isinstance(items, (list, tuple)):
        if not items:
            return []
        if all(isinstance(t, str) for t in items):
            return list(items)
        if any(isinstance(t, str) for t in items):
            from embengine.validation import check_texts

            check_texts(items)  # names the first non-str position
    return None


def _id_kind(i: object, position: int) -> str:
    if isinstance(i, (bool, np.bool_)):
        raise InvalidTypeError(f"ids[{position}] is a bool; ids are int >= 0 or str")
    if isinstance(i, (int, np.integer)):
        if i < 0:
            raise InvalidInputError(
                f"ids[{position}] is {i}: int ids must be >= 0 (-1 means missing)"
            )
        if i > INT64_MAX:
            raise InvalidInputError(f"ids[{position}] is {i}: int ids must be < 2**63")
        return "int"
    if isinstance(i, str):
        return "str"
    raise InvalidTypeError(f"ids[{position}] is {type(i).__name__}; ids are int >= 0 or str")


def _hashable(i: object) -> bool:
    try:
        hash(i)
    except TypeError:
        return False
    return True


def _repeats(ids: list[Id]) -> list[Id]:
    try:
        return [i for i, count in Counter(ids).items() if count > 1]
    except TypeError:
        raise InvalidTypeError("ids must be int or str") from None


def _unpack_strings(arrays: dict[str, np.ndarray], name: str, n: int, path: object) -> list[str]:
    data, offsets = arrays[f"{name}_utf8"], arrays[f"{name}_offsets"]
    return unpack_strings(data, offsets, n, f"{path}: the {name} strings")


def _empty(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n, k), -np.inf, np.float32), np.full((n, k), -1, np.int64)


def _pad(
    scores: np.ndarray, ids: np.ndarray, k: int, id_kind: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """(n, k) results: the found columns, then score -inf and id -1 / None."""
    n, width = scores.shape
    if width == k and (id_kind == "str") == (ids.dtype == object):
        return scores, ids
    out_scores = np.full((n, k), -np.inf, np.float32)
    out_scores[:, :width] = scores
    if id_kind == "str":
        out_ids = np.full((n, k), None, dtype=object)
    else:
        out_ids = np.full((n, k), -1, dtype=np.int64)
    out_ids[:, :width] = ids
    return out_scores, out_ids


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k columns per row of a score matrix, ties to the lower column, -inf never returned."""
    out_scores, out_cols = _empty(len(scores), k)
    if scores.shape[1] == 0 or k == 0:
        return out_scores, out_cols
    take = min(k, scores.shape[1])
    cols = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    order = np.lexsort((cols, -scores), axis=1)[:, :take]
    best = np.take_along_axis(scores, order, axis=1)
    found = np.isfinite(best)
    out_scores[:, :take] = np.where(found, best, -np.inf)
    out_cols[:, :take] = np.where(found, order, -1)
    return out_scores, out_cols
