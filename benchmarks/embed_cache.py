"""Embeddings of a whole dataset, cached on disk so that evaluation reruns are fast.

The cache key is the model fingerprint and a hash of the exact texts in order, so a
different model, a changed preprocessing step or a reordered dataset never reads a stale
file. Files live under benchmarks/.cache/ (gitignored) and are written with embengine.io.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from embengine import Engine
from embengine.io import CorruptFileError, load_arrays, save_arrays

CACHE_DIR = Path(__file__).resolve().parent / ".cache"


def texts_key(texts: list[str]) -> str:
    """sha256 over the texts, each length-prefixed so that boundaries count."""
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()[:20]


def cached_embed(
    engine: Engine, texts: list[str], name: str, *, progress: bool = True
) -> np.ndarray:
    """engine.embed(texts), read from / written to benchmarks/.cache/<name>-<key>.emb."""
    key = hashlib.sha256(f"{engine.spec.fingerprint}:{texts_key(texts)}".encode()).hexdigest()
    path = CACHE_DIR / f"{name}-{key[:16]}.emb"
    if path.exists():
        try:
            arrays, _ = load_arrays(path)
            if arrays["vectors"].shape == (len(texts), engine.dim):
                return arrays["vectors"]
        except CorruptFileError:
            pass  # rebuilt below
    vectors = engine.embed(texts, progress=progress)
    save_arrays(path, {"vectors": vectors}, {"name": name, "model": engine.spec.name})
    return vectors


class PrecomputedEngine:
    """Stands in for an Engine whose texts were embedded (and cached) beforehand.

    Tasks take the engine by injection and call only `embed`, `dim` and `spec`, so an
    evaluation can run the task's real code path over cached vectors. A text that was not
    precomputed is embedded by the wrapped engine.
    """

    def __init__(self, engine: Engine, datasets: dict[str, list[str]]) -> None:
        """`datasets` maps a cache name to its texts (see `cached_embed`)."""
        self.engine = engine
        self.spec = engine.spec
        self.dim = engine.dim
        self._rows: dict[str, np.ndarray] = {}
        for name, texts in datasets.items():
            self._rows.update(zip(texts, cached_embed(engine, texts, name), strict=True))

    def embed(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self._rows]
        if missing:
            self._rows.update(zip(missing, self.engine.embed(missing), strict=True))
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self._rows[t] for t in texts])
