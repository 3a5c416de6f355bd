"""EmbeddingStore: every text embedded once per model, kept on disk.

Rows are keyed by the sha256 of the text (its content hash) and hold the vector, plus an
optional external id and JSON metadata. The store belongs to one model: its fingerprint is
saved with it and checked on open, so vectors of another model are never served. The file
is written whole, atomically and checksummed (embengine.io), so a crash during a save
leaves the previous complete store.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embengine import ops
from embengine.io import (
    CorruptFileError,
    ModelMismatchError,
    load_arrays,
    malformed_is_corrupt,
    save_arrays,
)

FORMAT = "embengine.EmbeddingStore/1"


def content_hash(text: str) -> bytes:
    """The 32-byte sha256 of a text's UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).digest()


class EmbeddingStore:
    """Vectors of one model by content hash, with optional ids and metadata.

    `path` None keeps the store in memory only. An existing file at `path` is loaded and
    verified: CorruptFileError when damaged, ModelMismatchError when another model (another
    fingerprint) made it.
    """

    def __init__(
        self, path: str | Path | None, *, fingerprint: str, dim: int, model: str = ""
    ) -> None:
        self.path = None if path is None else Path(path).expanduser()
        self.fingerprint = fingerprint
        self.dim = int(dim)
        self.model = model
        self._row_of: dict[bytes, int] = {}
        self._vectors = np.zeros((0, self.dim), dtype=np.float32)
        self._ids: list[str] = []
        self._metadata: list[str] = []  # JSON text per row ("" = none)
        self._unsaved = 0
        if self.path is not None and self.path.exists():
            self._load(self.path)

    @classmethod
    def for_engine(cls, path: str | Path | None, engine: Any) -> EmbeddingStore:
        """The store at `path` for `engine`'s model (created empty when absent)."""
        spec = engine.spec
        return cls(path, fingerprint=spec.fingerprint, dim=engine.dim, model=spec.name)

    def __len__(self) -> int:
        return len(self._row_of)

    def __contains__(self, text: object) -> bool:
        return isinstance(text, str) and content_hash(text) in self._row_of

    @property
    def unsaved(self) -> int:
        """Rows added or changed since the last save."""
        return self._unsaved

    def lookup(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(vectors (n, dim) float32, found (n,) bool); rows not found are zeros."""
        rows = np.array([self._row_of.get(content_hash(t), -1) for t in texts], dtype=np.int64)
        found = rows >= 0
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        vectors[found] = self._vectors[rows[found]]
        return vectors, found

    def put(
        self,
        texts: Sequence[str],
        vectors: np.ndarray,
        *,
        ids: Sequence[str] | None = None,
        metadata: Sequence[dict[str, Any] | None] | None = None,
    ) -> None:
        """Store vectors under their texts' hashes (replacing rows of the same text).

        ids / metadata: one per text (str ids; JSON-serialisable dicts), kept with the row.
        """
        from embengine.validation import check_texts

        texts = check_texts(texts)
        v = ops.check_vectors(vectors, "vectors", self.dim).astype(np.float32)
        for name, column in (("texts", texts), ("ids", ids), ("metadata", metadata)):
            if column is not None and len(column) != len(v):
                raise ValueError(f"{len(column)} {name} for {len(v)} vectors")
        meta_json = [_json(m, i) for i, m in enumerate(metadata)] if metadata else None
        new_rows: list[int] = []
        for n, text in enumerate(texts):
            key = content_hash(text)
            row = self._row_of.get(key)
            if row is None:
                row = len(self._ids)
                self._row_of[key] = row
                self._ids.append("")
                self._metadata.append("")
                new_rows.append(n)
            else:
                self._vectors[row] = v[n]
            if ids is not None:
                self._ids[row] = str(ids[n])
            if meta_json is not None:
                self._metadata[row] = meta_json[n]
        if new_rows:
            self._vectors = np.concatenate([self._vectors, v[new_rows]])
        self._unsaved += len(texts)

    def info(self, texts: Sequence[str]) -> list[tuple[str, dict[str, Any]] | None]:
        """(id, metadata) stored with each text, or None for texts not in the store."""
        out: list[tuple[str, dict[str, Any]] | None] = []
        for text in texts:
            row = self._row_of.get(content_hash(text))
            meta = None if row is None else self._metadata[row]
            out.append(None if row is None else (self._ids[row], json.loads(meta or "{}")))
        return out

    def save(self, path: str | Path | None = None) -> None:
        """Write the store atomically (to `path`, or the path it was opened with)."""
        target = Path(path).expanduser() if path is not None else self.path
        if target is None:
            raise ValueError("this store has no path: pass save(path)")
        hashes = sorted(self._row_of, key=self._row_of.__getitem__)
        arrays = {
            "hashes": np.frombuffer(b"".join(hashes), dtype=np.uint8).reshape(len(hashes), 32),
            "vectors": self._vectors,
            "ids": np.array(self._ids, dtype=str).reshape(len(self._ids)),
            "metadata": np.array(self._metadata, dtype=str).reshape(len(self._metadata)),
        }
        meta = {"format": FORMAT, "fingerprint": self.fingerprint, "dim": self.dim}
        meta["model"] = self.model
        save_arrays(target, arrays, meta)
        if target == self.path:
            self._unsaved = 0

    @malformed_is_corrupt
    def _load(self, path: Path) -> None:
        arrays, meta = load_arrays(path)
        if meta.get("format") != FORMAT:
            raise CorruptFileError(f"{path} is not an EmbeddingStore ({meta.get('format')!r})")
        if meta["fingerprint"] != self.fingerprint:
            raise ModelMismatchError(
                f"{path} holds vectors of model {meta.get('model')!r} ({meta['fingerprint']}), "
                f"not of {self.model!r} ({self.fingerprint}): use another path for this model"
            )
        hashes, vectors = arrays["hashes"], arrays["vectors"]
        n = len(hashes)
        columns_ok = len(arrays["ids"]) == n and len(arrays["metadata"]) == n
        if hashes.shape != (n, 32) or vectors.shape != (n, self.dim) or not columns_ok:
            raise CorruptFileError(
                f"{path}: shapes disagree (hashes {hashes.shape}, vectors {vectors.shape}, "
                f"dim {self.dim})"
            )
        self._row_of = {h.tobytes(): row for row, h in enumerate(hashes)}
        if len(self._row_of) != n:
            raise CorruptFileError(f"{path}: content hashes repeat")
        self._vectors = vectors.astype(np.float32, copy=False)
        self._ids = arrays["ids"].tolist()
        self._metadata = arrays["metadata"].tolist()


def _json(meta: dict[str, Any] | None, position: int) -> str:
    if meta is None:
        return ""
    if not isinstance(meta, dict):
        raise TypeError(f"metadata[{position}] is {type(meta).__name__}, expected dict or None")
    try:
        return json.dumps(meta, sort_keys=True)
    except TypeError as exc:
        raise TypeError(f"metadata[{position}] is not JSON-serialisable: {exc}") from exc
