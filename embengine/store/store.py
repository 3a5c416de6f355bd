"""EmbeddingStore: every text embedded once per model, kept on disk, append-only.

Rows are keyed by the sha256 of the text (its content hash) and hold the vector, plus an
optional id and JSON metadata. The store belongs to one model: its fingerprint is saved
with it and checked on open, so vectors of another model are never served.

On disk a store is a directory of segments written once and a checked manifest (see
embengine.store.segment). `put` adds rows in memory; `save()` appends them as one new
segment (cost O(new rows), whatever the store's size) and commits it by atomically
rewriting the manifest; `compact()` rewrites the live rows as one segment and drops the
replaced ones. Opening memory-maps the vectors (no copies) and builds the hash -> row map.
A crash at any point leaves the old or the new state; leftovers are removed on the next open.

Thread safety: lookups run concurrently; `put`, `save` and `compact` are exclusive and a
reader sees the state before or after one, never between (embengine._sync.RWLock; the
disk writes happen outside the readers' lock). Between processes, writers take an flock on
the directory's LOCK file, and an append first picks up segments another process added.

Vectors stay float32 here, also for compact indexes: the store is a cache of what the model
produced, returned bit for bit by `embed`; int8 codes and sign bits are lossy, belong to the
index that fitted their ranges (VectorIndex(compact=...)), and are built from these vectors.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embengine import ops
from embengine._sync import RWLock
from embengine.errors import (
    CorruptFileError,
    InvalidInputError,
    InvalidTypeError,
    ModelMismatchError,
)
from embengine.io import load_arrays
from embengine.store.segment import (
    FORMAT,
    MANIFEST,
    Segment,
    is_ours,
    open_segment,
    read_manifest,
    segment_name,
    write_manifest,
    write_segment,
)
from embengine.validation import check_texts

if TYPE_CHECKING:
    from embengine.engine import Engine

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: one writing process, unchecked
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("embengine")

FORMAT_V1 = "embengine.EmbeddingStore/1"  # the old single-file format, converted on open
FULL_VERIFY_BYTES = 256 << 20  # verify="auto" reads every byte of stores up to this size
VERIFY_MODES = ("auto", "full", "rows")


def content_hash(text: str) -> bytes:
    """The 32-byte sha256 of a text's UTF-8 bytes (InvalidInputError for lone surrogates)."""
    return _hash_all([text])[0]


class EmbeddingStore:
    """Vectors of one model by content hash, with optional ids and metadata.

    `path` None keeps the store in memory only. An existing store at `path` is opened and
    verified: CorruptFileError when damaged, ModelMismatchError when another model (another
    fingerprint) made it. verify: "rows" checks the manifest, every segment's size, footer
    and the sha256 of its row data (hashes, ids, metadata) and maps the vectors without
    reading them; "full" also checks each segment's whole-file sha256 (reads every byte once);
    "auto" (default) is "full" for stores up to 256 MiB and "rows" above (`verify()` checks
    the rest whenever wanted).
    """

    def __init__(
        self,
        path: str | Path | None,
        *,
        fingerprint: str,
        dim: int,
        model: str = "",
        verify: str = "auto",
    ) -> None:
        if verify not in VERIFY_MODES:
            raise InvalidInputError(f"verify must be one of {VERIFY_MODES}, got {verify!r}")
        self.path = None if path is None else Path(path).expanduser()
        self.fingerprint = fingerprint
        self.dim = int(dim)
        self.model = model
        self.verify_mode = verify
        self._lock = RWLock()  # readers vs the in-memory swap of a write
        self._writer = threading.Lock()  # one writing thread (put / save / compact) at a time
        self._segments: list[Segment] = []  # disk segments first, then unsaved ones
        self._starts = np.zeros(1, dtype=np.int64)  # first global row of each segment, + end
        self._row_of: dict[bytes, int] = {}  # content hash -> global row (the latest put)
        self._saved = 0  # leading segments that are on disk
        self._disk: dict[str, Any] | None = None  # the manifest our disk segments came from
        if self.path is not None:
            self._open(self.path)

    @classmethod
    def for_engine(cls, path: str | Path | None, engine: Engine) -> EmbeddingStore:
        """The store at `path` for `engine`'s model (created empty when absent)."""
        spec = engine.spec
        return cls(path, fingerprint=spec.fingerprint, dim=engine.dim, model=spec.name)

    @classmethod
    def load(
        cls, path: str | Path, *, engine: Engine | None = None, verify: str = "auto"
    ) -> EmbeddingStore:
        """Open the existing store at `path` (FileNotFoundError when there is none).

        With an engine, the store must hold that engine's model (ModelMismatchError);
        without one, it keeps the model recorded in the store.
        """
        p = Path(path).expanduser()
        if not p.exists():
            raise FileNotFoundError(f"no EmbeddingStore at {p}")
        if engine is not None:
            spec = engine.spec
            return cls(
                p, fingerprint=spec.fingerprint, dim=engine.dim, model=spec.name, verify=verify
            )
        meta = load_arrays(p)[1] if p.is_file() else (read_manifest(p) or {})
        if "fingerprint" not in meta or "dim" not in meta:
            raise CorruptFileError(f"{p} is not an EmbeddingStore")
        return cls(
            p,
            fingerprint=str(meta["fingerprint"]),
            dim=int(meta["dim"]),
            model=str(meta.get("model", "")),
            verify=verify,
        )

    # ------------------------------------------------------------------- reading

    def __len__(self) -> int:
        return len(self._row_of)

    def __contains__(self, text: object) -> bool:
        if not isinstance(text, str):
            return False
        try:
            key = content_hash(text)
        except InvalidInputError:
            return False
        with self._lock.read():
            return key in self._row_of

    @property
    def unsaved(self) -> int:
        """Rows put since the last save (in memory only until then)."""
        with self._lock.read():
            return int(self._starts[-1] - self._starts[self._saved])

    @property
    def segments(self) -> int:
        """Segments the store is made of (one per save; `compact()` makes it one)."""
        return len(self._segments)

    @property
    def dead_rows(self) -> int:
        """Rows replaced by a later put of the same text (dropped by `compact()`)."""
        with self._lock.read():
            return int(self._starts[-1]) - len(self._row_of)

    def lookup(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(vectors (n, dim) float32, found (n,) bool); rows not found are zeros."""
        keys = _hash_all(check_texts(texts))
        with self._lock.read():
            rows = np.fromiter((self._row_of.get(k, -1) for k in keys), np.int64, len(keys))
            return self._gather(rows), rows >= 0

    def info(self, texts: Sequence[str]) -> list[tuple[str, dict[str, Any]] | None]:
        """(id, metadata) stored with each text, or None for texts not in the store."""
        keys = _hash_all(check_texts(texts))
        out: list[tuple[str, dict[str, Any]] | None] = []
        with self._lock.read():
            for key in keys:
                row = self._row_of.get(key)
                if row is None:
                    out.append(None)
                    continue
                s = int(np.searchsorted(self._starts, row, side="right")) - 1
                segment, local = self._segments[s], row - int(self._starts[s])
                try:
                    out.append((segment.id(local), json.loads(segment.metadata(local) or "{}")))
                except ValueError as exc:  # bad UTF-8 or JSON: only a crafted file has them
                    raise CorruptFileError(
                        f"{self.path}: row {row} has corrupt id or metadata"
                    ) from exc
        return out

    def verify(self) -> None:
        """Check every saved byte against the manifest's sha256s (CorruptFileError if not)."""
        with self._lock.read():
            saved = self._segments[: self._saved]
        for segment in saved:
            assert self.path is not None
            assert segment.info is not None
            open_segment(self.path, segment.info, self.dim, full=True)

    # ------------------------------------------------------------------- writing

    def put(
        self,
        texts: Sequence[str],
        vectors: np.ndarray,
        *,
        ids: Sequence[str | int] | None = None,
        metadata: Sequence[dict[str, Any] | None] | None = None,
        replace: bool = True,
    ) -> int:
        """Store vectors under their texts' hashes, in memory until `save()`; rows added.

        ids / metadata: one per text (str or int ids; JSON-serialisable dicts), kept with
        the row. A text already stored gets the new row (replace=True) or is skipped
        (replace=False). Everything is checked and hashed before anything changes: a bad
        call (duplicate texts, a lone surrogate, a wrong shape, NaN) raises and adds nothing.
        """
        texts = check_texts(texts)
        try:
            v = ops.check_vectors(vectors, "vectors", self.dim)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from exc
        for name, column in (("texts", texts), ("ids", ids), ("metadata", metadata)):
            if column is not None and len(column) != len(v):
                raise InvalidInputError(f"{len(column)} {name} for {len(v)} vectors")
        keys = _hash_all(texts)
        _refuse_repeats(keys)
        id_text = [_id(i, n) for n, i in enumerate(ids)] if ids is not None else [""] * len(v)
        meta = [_json(m, n) for n, m in enumerate(metadata)] if metadata is not None else None
        meta = meta or [""] * len(v)
        segment = Segment.build(np.array(v, dtype=np.float32), keys, id_text, meta)
        with self._writer:
            if not replace:
                keep = np.array([k not in self._row_of for k in keys], dtype=bool)
                if not keep.all():
                    segment = segment.take(np.flatnonzero(keep))
                    keys = [k for k, kept in zip(keys, keep, strict=True) if kept]
            if keys:
                with self._lock.write():
                    self._append_segment(segment, keys)
        return len(keys)

    def save(self, path: str | Path | None = None) -> None:
        """Persist the store: append unsaved rows to its own path, or write a copy elsewhere.

        `save()` (or the store's own path) appends the rows put since the last save as one
        new segment: O(new rows). Another `path` gets a compacted copy of every live row
        (replacing a store there atomically); this store stays bound to its own path.
        """
        target = None if path is None else Path(path).expanduser()
        if target is None or (self.path is not None and _same(target, self.path)):
            if self.path is None:
                raise InvalidInputError("this store has no path: pass save(path)")
            with self._writer:
                self._append_unsaved()
            return
        with self._writer:
            _check_target(target)
            with _process_lock(target):
                number = _fresh_number(target)
                entry = self._write_live(target, number)
                self._commit(target, [entry] if entry else [], number + 1)

    def compact(self) -> None:
        """Rewrite the live rows as one segment (saving unsaved rows too); drop replaced rows.

        Costs O(rows); memory stays bounded (rows are copied in chunks). Readers keep using
        the old segments until the new one is committed.
        """
        with self._writer:
            if self.path is None:
                live = self._live_parts()
                segment = _concat([s.take(r) for s, r in live], self.dim)
                saved = 0
            else:
                with _process_lock(self.path):
                    self._sync_with_disk()
                    number = int(self._disk["next"]) if self._disk else 1
                    entry = self._write_live(self.path, number)
                    self._commit(self.path, [entry] if entry else [], number + 1)
                segment = _empty(self.dim) if entry is None else self._open_new(entry)
                saved = 1
            keys = segment.hash_keys()
            with self._lock.write():
                self._segments, self._row_of = [], {}
                self._starts = np.zeros(1, dtype=np.int64)
                if keys:
                    self._append_segment(segment, keys)
                self._saved = saved if keys else 0

    # ------------------------------------------------------------------- internals

    def _append_segment(self, segment: Segment, keys: list[bytes]) -> None:
        """Add a segment's rows (caller holds the write lock): O(its rows)."""
        start = int(self._starts[-1])
        self._segments.append(segment)
        self._starts = np.append(self._starts, start + segment.rows)
        self._row_of.update(zip(keys, range(start, start + segment.rows), strict=True))

    def _gather(self, rows: np.ndarray) -> np.ndarray:
        out = np.zeros((len(rows), self.dim), dtype=np.float32)
        where = np.flatnonzero(rows >= 0)
        owner = np.searchsorted(self._starts, rows[where], side="right") - 1
        for s in np.unique(owner):
            pick = owner == s
            out[where[pick]] = self._segments[s].vectors[rows[where[pick]] - self._starts[s]]
        return out

    def _append_unsaved(self) -> None:
        """Write the unsaved segments as one new segment and commit it (caller: _writer)."""
        assert self.path is not None
        if self._saved == len(self._segments):
            return
        with _process_lock(self.path):
            self._sync_with_disk()
            unsaved = self._segments[self._saved :]
            number = int(self._disk["next"]) if self._disk else 1
            path = self.path / segment_name(number)
            entry = write_segment(path, [(s, None) for s in unsaved], self.dim)
            entries = self._disk["segments"] if self._disk else []
            try:
                self._commit(self.path, [*entries, entry], number + 1, remove_unlisted=False)
            except BaseException:
                path.unlink(missing_ok=True)
                raise
        segment = self._open_new(entry)
        with self._lock.write():  # same rows, now memory-mapped: row numbers unchanged
            self._segments[self._saved :] = [segment]
            self._saved += 1
            self._starts = np.append(self._starts[: self._saved], self._starts[-1])
        count = len(self._segments)
        if count >= 256 and count & (count - 1) == 0:  # at 256, 512, 1024, ... segments
            log.info("%s has %d segments: store.compact() merges them", self.path, count)

    def _write_live(self, directory: Path, number: int) -> dict | None:
        parts = self._live_parts()
        if not sum(len(r) for _, r in parts):
            return None
        return write_segment(directory / segment_name(number), parts, self.dim)

    def _live_parts(self) -> list[tuple[Segment, np.ndarray]]:
        """(segment, local rows) of every live row, in row order."""
        with self._lock.read():
            rows = np.fromiter(self._row_of.values(), np.int64, len(self._row_of))
            segments, starts = list(self._segments), self._starts
        rows.sort()
        owner = np.searchsorted(starts, rows, side="right") - 1
        bounds = np.searchsorted(owner, np.arange(len(segments) + 1))
        return [
            (segments[s], rows[bounds[s] : bounds[s + 1]] - starts[s])
            for s in range(len(segments))
            if bounds[s + 1] > bounds[s]
        ]

    def _commit(
        self, directory: Path, entries: list[dict], next_number: int, remove_unlisted: bool = True
    ) -> None:
        """Atomically write the manifest listing `entries`; then drop files it does not list."""
        manifest = {
            "format": FORMAT,
            "fingerprint": self.fingerprint,
            "model": self.model,
            "dim": self.dim,
            "next": next_number,
            "segments": entries,
        }
        write_manifest(directory, manifest)
        if directory == self.path:
            self._disk = manifest
        if remove_unlisted:
            _remove_unlisted(directory, {e["name"] for e in entries})

    def _open_new(self, entry: dict) -> Segment:
        assert self.path is not None
        return open_segment(self.path, entry, self.dim, full=False)

    def _open(self, path: Path) -> None:
        backup = _v1_backup(path)
        if not path.exists() and backup.exists():  # a crash in the middle of converting
            os.replace(backup, path)
        if path.is_file():
            self._convert_v1(path)
        if not path.exists():
            return
        if not path.is_dir():
            raise InvalidInputError(f"{path} is not a directory: it cannot hold an EmbeddingStore")
        manifest = read_manifest(path)
        listed = {e["name"] for e in manifest["segments"]} if manifest else set()
        names = set(os.listdir(path)) - {MANIFEST, "LOCK"}
        strangers = sorted(n for n in names if not is_ours(n))
        if manifest is None and strangers:
            raise InvalidInputError(
                f"{path} holds other files ({', '.join(strangers[:3])}) and no store manifest: "
                "use an empty or new directory for an EmbeddingStore"
            )
        if manifest is not None:
            self._check_model(path, manifest)
        if {n for n in names if is_ours(n)} - listed:  # leftovers of a crashed write
            with _process_lock(path):
                manifest = read_manifest(path)
                _remove_unlisted(
                    path, {e["name"] for e in manifest["segments"]} if manifest else set()
                )
        if manifest is not None:
            self._load_disk(path, manifest)

    def _check_model(self, path: Path, manifest: dict) -> None:
        if manifest["fingerprint"] != self.fingerprint:
            raise ModelMismatchError(
                f"{path} holds vectors of model {manifest.get('model')!r} "
                f"({manifest['fingerprint']}), not of {self.model!r} ({self.fingerprint}): "
                "use another path for this model"
            )
        if int(manifest["dim"]) != self.dim:
            raise CorruptFileError(f"{path}: dim {manifest['dim']}, expected {self.dim}")
        self.model = self.model or str(manifest.get("model", ""))

    def _load_disk(self, path: Path, manifest: dict) -> None:
        """Replace the saved part of the state by the manifest's segments (unsaved rows kept)."""
        total = sum(e["bytes"] for e in manifest["segments"])
        full = self.verify_mode == "full" or (
            self.verify_mode == "auto" and total <= FULL_VERIFY_BYTES
        )
        disk = [open_segment(path, e, self.dim, full) for e in manifest["segments"]]
        with self._lock.write():
            unsaved = self._segments[self._saved :]
            self._segments, self._row_of = [], {}
            self._starts = np.zeros(1, dtype=np.int64)
            for segment in [*disk, *unsaved]:
                self._append_segment(segment, segment.hash_keys())
            self._saved, self._disk = len(disk), manifest

    def _sync_with_disk(self) -> None:
        """Pick up what another process committed since we read the manifest (rare: O(rows))."""
        assert self.path is not None
        manifest = read_manifest(self.path)
        if manifest is None or manifest == self._disk:
            return
        self._check_model(self.path, manifest)
        ours = [s.info for s in self._segments[: self._saved]]
        if manifest["segments"][: len(ours)] != ours:  # compacted elsewhere: reopen all
            self._load_disk(self.path, manifest)
            return
        fresh = manifest["segments"][len(ours) :]  # only appended to: map the new ones
        new = [open_segment(self.path, e, self.dim, False) for e in fresh]
        with self._lock.write():
            unsaved = self._segments[self._saved :]
            for segment in unsaved:  # unsaved rows move after the new ones
                for key in segment.hash_keys():
                    self._row_of.pop(key, None)
            del self._segments[self._saved :]
            self._starts = self._starts[: self._saved + 1]
            for segment in [*new, *unsaved]:
                self._append_segment(segment, segment.hash_keys())
            self._saved += len(new)
            self._disk = manifest

    def _convert_v1(self, path: Path) -> None:
        """Turn a single-file store of format 1 into a store directory, crash-safely.

        The converted directory is built beside the file, the file renamed to a backup, the
        directory renamed into place, the backup removed; a crash between the renames is
        completed on the next open.
        """
        arrays, meta = load_arrays(path)
        if meta.get("format") != FORMAT_V1:
            raise CorruptFileError(f"{path} is not an EmbeddingStore ({meta.get('format')!r})")
        if meta.get("fingerprint") != self.fingerprint:
            raise ModelMismatchError(
                f"{path} holds vectors of model {meta.get('model')!r} ({meta.get('fingerprint')}), "
                f"not of {self.model!r} ({self.fingerprint}): use another path for this model"
            )
        hashes, vectors = arrays["hashes"], arrays["vectors"]
        n = len(hashes)
        if hashes.shape != (n, 32) or vectors.shape != (n, self.dim):
            raise CorruptFileError(f"{path}: shapes disagree")
        keys = [h.tobytes() for h in hashes]
        segment = Segment.build(
            vectors.astype(np.float32), keys, arrays["ids"].tolist(), arrays["metadata"].tolist()
        )
        staging = path.parent / f".{path.name}.v2.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        entries = (
            [write_segment(staging / segment_name(1), [(segment, None)], self.dim)] if n else []
        )
        self._commit(staging, entries, 2, remove_unlisted=False)
        os.replace(path, _v1_backup(path))
        os.rename(staging, path)
        _v1_backup(path).unlink()


# --------------------------------------------------------------------------- helpers


def _hash_all(texts: Sequence[str]) -> list[bytes]:
    """sha256 of each text's UTF-8 bytes; InvalidInputError naming a text UTF-8 cannot encode."""
    keys = []
    for position, text in enumerate(texts):
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidInputError(
                f"texts[{position}] ({text[:40]!r}) is not valid Unicode ({exc.reason} at "
                f"character {exc.start}): it has no UTF-8 form to hash or store"
            ) from exc
        keys.append(hashlib.sha256(data).digest())
    return keys


def _refuse_repeats(keys: list[bytes]) -> None:
    if len(set(keys)) == len(keys):
        return
    first: dict[bytes, int] = {}
    for position, key in enumerate(keys):
        if key in first:
            raise InvalidInputError(
                f"texts[{first[key]}] and texts[{position}] are the same text: "
                "put each text once per call"
            )
        first[key] = position


def _id(value: str | int, position: int) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, np.integer)):
        raise InvalidTypeError(f"ids[{position}] is {type(value).__name__}, expected str or int")
    text = str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(f"ids[{position}] is not valid Unicode ({exc.reason})") from exc
    return text


def _json(meta: dict[str, Any] | None, position: int) -> str:
    if meta is None:
        return ""
    if not isinstance(meta, dict):
        raise InvalidTypeError(
            f"metadata[{position}] is {type(meta).__name__}, expected dict or None"
        )
    try:
        return json.dumps(meta, sort_keys=True, allow_nan=False)
    except TypeError as exc:
        raise InvalidTypeError(f"metadata[{position}] is not JSON-serialisable: {exc}") from exc
    except ValueError as exc:
        raise InvalidInputError(f"metadata[{position}] is not JSON-serialisable: {exc}") from exc


def _concat(segments: list[Segment], dim: int) -> Segment:
    if not segments:
        return _empty(dim)
    keys = [k for s in segments for k in s.hash_keys()]
    ids = [s.id(i) for s in segments for i in range(s.rows)]
    metas = [s.metadata(i) for s in segments for i in range(s.rows)]
    return Segment.build(np.concatenate([s.vectors for s in segments]), keys, ids, metas)


def _empty(dim: int) -> Segment:
    return Segment.build(np.zeros((0, dim), dtype=np.float32), [], [], [])


def _same(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def _v1_backup(path: Path) -> Path:
    return path.parent / f".{path.name}.v1.bak"


def _check_target(target: Path) -> None:
    """save(path) may replace a store, or fill an empty or new directory; nothing else."""
    if target.is_file():
        raise InvalidInputError(f"{target} is a file: save a store to a directory path")
    if target.is_dir():
        names = set(os.listdir(target)) - {MANIFEST, "LOCK"}
        strangers = [n for n in names if not is_ours(n)]
        if strangers:
            raise InvalidInputError(
                f"{target} holds other files ({', '.join(sorted(strangers)[:3])}): "
                "save a store to a new or empty directory, or over another store"
            )


def _fresh_number(directory: Path) -> int:
    """A segment number no file in `directory` and no manifest there has used yet."""
    numbers = [0]
    for name in os.listdir(directory):
        if name.startswith("seg-") and name.endswith(".seg") and name[4:-4].isdigit():
            numbers.append(int(name[4:-4]))
    try:
        manifest = read_manifest(directory)
    except CorruptFileError:
        manifest = None
    return max(max(numbers) + 1, int(manifest["next"]) if manifest else 1)


def _remove_unlisted(directory: Path, listed: set[str]) -> None:
    """Delete the store's own files the manifest does not list (old segments, temp files)."""
    for name in os.listdir(directory):
        if is_ours(name) and name not in listed:
            (directory / name).unlink(missing_ok=True)


@contextmanager
def _process_lock(directory: Path) -> Iterator[None]:
    """One writing process per store directory (flock on its LOCK file; freed on exit)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
