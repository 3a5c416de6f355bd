"""The files of an append-only EmbeddingStore: segments (written once) and the manifest.

A store is a directory:

    MANIFEST.json      the commit point: the segments in order, each with rows, bytes, sha256s
    seg-00000001.seg   one per append (or one per compaction), never modified afterwards
    LOCK               flock'd by a writing process (appends, compaction, clean-up on open)

A segment holds its rows' vectors, content hashes, ids and JSON metadata. Sections are
64-byte aligned so that each one is a zero-copy view of one read-only memory map, and the
variable-length columns are offsets + a UTF-8 blob (no fixed-width strings). Layout:

    vectors float32 (rows, dim) | hashes uint8 (rows, 32) | id offsets int64 (rows + 1)
    | id bytes | metadata offsets int64 (rows + 1) | metadata bytes
    | footer JSON (rows, dim, section offsets) | footer length uint64 | magic

The footer sits at the end so a segment is written in one streaming pass. Everything after
the vectors is the "row data"; the manifest keeps a sha256 of the whole file and one of the
row data, so opening can verify the row data always and the vectors when asked (docs/search.md).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from embengine.errors import CorruptFileError
from embengine.io import atomic_write

MAGIC = b"EMBSEG01"
ALIGN = 64
MANIFEST = "MANIFEST.json"
FORMAT = "embengine.EmbeddingStore/2"
_SECTIONS = ("vectors", "hashes", "id_offsets", "id_bytes", "meta_offsets", "meta_bytes")
_CHUNK_ROWS = 65536  # rows gathered per write when copying (bounds memory in compaction)


@dataclass(frozen=True)
class Segment:
    """Rows of the store: read-only views of one memory-mapped file, or arrays in memory."""

    vectors: np.ndarray  # (rows, dim) float32
    hashes: np.ndarray  # (rows, 32) uint8: sha256 of each text
    id_offsets: np.ndarray  # (rows + 1,) int64 into id_bytes
    id_bytes: np.ndarray  # uint8, UTF-8
    meta_offsets: np.ndarray  # (rows + 1,) int64 into meta_bytes
    meta_bytes: np.ndarray  # uint8, UTF-8 JSON ("" = none)
    name: str | None = None  # file name once on disk
    info: dict[str, Any] | None = None  # its manifest entry once on disk

    @property
    def rows(self) -> int:
        return len(self.hashes)

    @classmethod
    def build(
        cls, vectors: np.ndarray, keys: Sequence[bytes], ids: Sequence[str], metas: Sequence[str]
    ) -> Segment:
        """A new in-memory segment (ids and metadata already validated strings)."""
        id_offsets, id_bytes = _pack([i.encode("utf-8") for i in ids])
        meta_offsets, meta_bytes = _pack([m.encode("utf-8") for m in metas])
        hashes = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 32)
        return cls(vectors, hashes, id_offsets, id_bytes, meta_offsets, meta_bytes)

    def hash_keys(self) -> list[bytes]:
        """The content hashes as 32-byte keys, in row order."""
        flat = self.hashes.tobytes()
        return [flat[i : i + 32] for i in range(0, len(flat), 32)]

    def id(self, row: int) -> str:
        return _unpack(self.id_offsets, self.id_bytes, row)

    def metadata(self, row: int) -> str:
        return _unpack(self.meta_offsets, self.meta_bytes, row)

    def take(self, rows: np.ndarray) -> Segment:
        """The given rows (local row numbers) as a new in-memory segment."""
        id_offsets, id_bytes = _gather(self.id_offsets, self.id_bytes, rows)
        meta_offsets, meta_bytes = _gather(self.meta_offsets, self.meta_bytes, rows)
        vectors = np.ascontiguousarray(self.vectors[rows])
        hashes = np.ascontiguousarray(self.hashes[rows])
        return Segment(vectors, hashes, id_offsets, id_bytes, meta_offsets, meta_bytes)


def _pack(items: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(items) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in items], out=offsets[1:])
    return offsets, np.frombuffer(b"".join(items), dtype=np.uint8)


def _unpack(offsets: np.ndarray, blob: np.ndarray, row: int) -> str:
    return blob[int(offsets[row]) : int(offsets[row + 1])].tobytes().decode("utf-8")


def _gather(offsets: np.ndarray, blob: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, ...]:
    """Offsets and blob of the given rows of a variable-length column, vectorised."""
    starts, ends = offsets[rows], offsets[np.asarray(rows) + 1]
    lengths = ends - starts
    new_offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    index = np.repeat(starts - new_offsets[:-1], lengths) + np.arange(new_offsets[-1])
    return new_offsets, np.ascontiguousarray(blob[index])


# ------------------------------------------------------------------------- writing


class _HashingWriter:
    """Writes to a file, keeping the sha256 of everything and of the row data."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.pos = f, 0
        self.sha = hashlib.sha256()
        self.rows_sha: Any = None  # started after the vectors section

    def write(self, data: bytes | memoryview) -> None:
        data = memoryview(data).cast("B")  # len() in bytes, whatever the element type
        self.f.write(data)
        self.sha.update(data)
        if self.rows_sha is not None:
            self.rows_sha.update(data)
        self.pos += len(data)

    def pad(self) -> None:
        self.write(b"\0" * (-self.pos % ALIGN))


def write_segment(path: Path, parts: Sequence[tuple[Segment, np.ndarray | None]], dim: int) -> dict:
    """Write the rows `parts` select ((segment, local rows or None for all)) as one new file.

    Atomic (temp file, fsync, rename: embengine.io). Memory stays bounded by streaming each
    column in chunks. Returns the file's manifest entry.
    """
    picks = [
        (s, np.arange(s.rows) if r is None else np.asarray(r, dtype=np.int64)) for s, r in parts
    ]
    rows = sum(len(r) for _, r in picks)
    entry: dict[str, Any] = {"name": path.name, "rows": rows}

    def chunks() -> Iterator[tuple[Segment, np.ndarray]]:
        for segment, local in picks:
            for start in range(0, len(local), _CHUNK_ROWS):
                yield segment, local[start : start + _CHUNK_ROWS]

    def write(f: IO[bytes]) -> None:
        out = _HashingWriter(f)
        sections: dict[str, list[int]] = {}

        def section(name: str, pieces: Iterator[bytes | memoryview]) -> None:
            out.pad()
            if name == "hashes":
                out.rows_sha = hashlib.sha256()
            start = out.pos
            for piece in pieces:
                out.write(piece)
            sections[name] = [start, out.pos - start]

        section("vectors", (_le(s.vectors[r], np.float32) for s, r in chunks()))
        section("hashes", (np.ascontiguousarray(s.hashes[r]).data for s, r in chunks()))
        for column in ("id", "meta"):
            offsets = [np.zeros(1, dtype=np.int64)]
            total = 0
            for s, r in chunks():
                lengths = getattr(s, f"{column}_offsets")
                lengths = lengths[r + 1] - lengths[r]
                offsets.append(total + np.cumsum(lengths))
                total += int(lengths.sum())
            section(f"{column}_offsets", (_le(o, np.int64) for o in offsets))
            section(
                f"{column}_bytes",
                (
                    _gather(getattr(s, f"{column}_offsets"), getattr(s, f"{column}_bytes"), r)[
                        1
                    ].data
                    for s, r in chunks()
                ),
            )
        footer = json.dumps({"rows": rows, "dim": dim, "sections": sections}).encode()
        out.write(footer)
        out.write(len(footer).to_bytes(8, "little") + MAGIC)
        entry["bytes"] = out.pos
        entry["sha256"] = out.sha.hexdigest()
        entry["rows_sha256"] = out.rows_sha.hexdigest()

    atomic_write(path, write)
    return entry


def _le(a: np.ndarray, dtype: type) -> memoryview:
    return np.ascontiguousarray(a, dtype=np.dtype(dtype).newbyteorder("<")).data


# ------------------------------------------------------------------------- reading


def open_segment(directory: Path, entry: dict, dim: int, full: bool) -> Segment:
    """Memory-map a segment listed in the manifest, checking it against its entry.

    Always: the file size, the footer, every section's bounds and sizes, the offsets
    columns and the sha256 of the row data. full=True: the sha256 of the whole file too
    (reads the vectors once; without it they are mapped, not read).
    """
    path = directory / entry["name"]
    try:
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise CorruptFileError(f"{directory}: segment {entry['name']} is missing") from exc
    if size != entry["bytes"]:
        raise CorruptFileError(f"{path}: {size} bytes, the manifest says {entry['bytes']}")
    buf = np.memmap(path, dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)
    sections = _footer(path, buf, entry["rows"], dim)
    if _sha256(path, sections["hashes"][0]) != entry["rows_sha256"]:
        raise CorruptFileError(f"{path}: row data checksum mismatch")
    if full and _sha256(path, 0) != entry["sha256"]:
        raise CorruptFileError(f"{path}: checksum mismatch")

    def view(name: str, dtype: type) -> np.ndarray:
        start, length = sections[name]
        return buf[start : start + length].view(np.dtype(dtype).newbyteorder("<"))

    rows = entry["rows"]
    segment = Segment(
        vectors=view("vectors", np.float32).reshape(rows, dim),
        hashes=view("hashes", np.uint8).reshape(rows, 32),
        id_offsets=view("id_offsets", np.int64),
        id_bytes=view("id_bytes", np.uint8),
        meta_offsets=view("meta_offsets", np.int64),
        meta_bytes=view("meta_bytes", np.uint8),
        name=entry["name"],
        info=entry,
    )
    for column in ("id", "meta"):
        offsets, blob = getattr(segment, f"{column}_offsets"), getattr(segment, f"{column}_bytes")
        if offsets[0] != 0 or offsets[-1] != len(blob) or (np.diff(offsets) < 0).any():
            raise CorruptFileError(f"{path}: corrupt {column} offsets")
    return segment


def _footer(path: Path, buf: np.ndarray, rows: int, dim: int) -> dict[str, list[int]]:
    """The section table, checked against the file before any section is used."""
    size = len(buf)
    if size < 16 or bytes(buf[-8:]) != MAGIC:
        raise CorruptFileError(f"{path} is not a store segment (bad magic)")
    footer_len = int.from_bytes(bytes(buf[-16:-8]), "little")
    if footer_len > size - 16:
        raise CorruptFileError(f"{path}: footer length {footer_len} past the file")
    try:
        footer = json.loads(bytes(buf[size - 16 - footer_len : size - 16]))
        sections = {name: [int(v) for v in footer["sections"][name]] for name in _SECTIONS}
        ok = footer["rows"] == rows and footer["dim"] == dim
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptFileError(f"{path}: corrupt footer") from exc
    expected = {"vectors": rows * dim * 4, "hashes": rows * 32}
    expected |= {"id_offsets": (rows + 1) * 8, "meta_offsets": (rows + 1) * 8}
    end = size - 16 - footer_len
    for name, (start, length) in sections.items():
        ok = ok and start >= 0 and length >= 0 and start + length <= end
        ok = ok and start % ALIGN == 0 and length == expected.get(name, length)
    if not ok:
        raise CorruptFileError(f"{path}: footer disagrees with the manifest or the file size")
    return sections


def _sha256(path: Path, start: int) -> str:
    """sha256 of the file from `start`, read in chunks (page cache, not this process's RSS)."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(start)
        while chunk := f.read(8 << 20):
            sha.update(chunk)
    return sha.hexdigest()


# ------------------------------------------------------------------------- manifest


def write_manifest(directory: Path, manifest: dict) -> None:
    """Atomically replace the manifest (the commit point of every append and compaction)."""
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    text = json.dumps(body, sort_keys=True)
    data = json.dumps({**body, "checksum": hashlib.sha256(text.encode()).hexdigest()}, indent=1)
    atomic_write(directory / MANIFEST, lambda f: f.write(data.encode()))


def read_manifest(directory: Path) -> dict | None:
    """The verified manifest (less its checksum), or None when there is none (empty store)."""
    path = directory / MANIFEST
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        manifest = json.loads(data)
        body = {k: v for k, v in manifest.items() if k != "checksum"}
        text = json.dumps(body, sort_keys=True)
        ok = manifest["checksum"] == hashlib.sha256(text.encode()).hexdigest()
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptFileError(f"{path} is corrupt") from exc
    if not ok:
        raise CorruptFileError(f"{path}: checksum mismatch")
    if manifest.get("format") != FORMAT:
        raise CorruptFileError(
            f"{path} is not an EmbeddingStore manifest ({manifest.get('format')!r})"
        )
    try:
        for entry in manifest["segments"]:
            name = entry["name"]
            fine = isinstance(name, str) and name.startswith("seg-") and name.endswith(".seg")
            fine = (
                fine
                and os.sep not in name
                and all(isinstance(entry[k], int) and entry[k] >= 0 for k in ("rows", "bytes"))
                and all(isinstance(entry[k], str) for k in ("sha256", "rows_sha256"))
            )
            if not fine:
                raise CorruptFileError(f"{path}: bad segment entry {entry!r}")
        counts = (manifest["next"], manifest["dim"])
        if not all(type(c) is int and c >= 0 for c in counts):
            raise ValueError(f"next and dim must be counts, got {counts}")
        if not isinstance(manifest["fingerprint"], str):
            raise ValueError("the model fingerprint must be a string")
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptFileError(f"{path}: bad manifest fields ({exc})") from exc
    return body


def segment_name(number: int) -> str:
    return f"seg-{number:08d}.seg"


def is_ours(name: str) -> bool:
    """Files the store may delete: its segments and temp files (nothing a user put there)."""
    return (name.startswith("seg-") and name.endswith(".seg")) or (
        name.startswith(".") and name.endswith(".tmp")
    )
