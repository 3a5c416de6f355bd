"""Embeddings of a whole dataset, cached under benchmarks/.cache so eval reruns are fast.

The key is the model fingerprint, the producer (backend and precision, a peer library, or a
dataset name) and a sha256 of the exact texts in order, so a different model, a changed
preprocessing step or a reordered dataset never reads a stale file. Files are written and
verified with embengine.io.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from embengine import Engine
from embengine.io import CorruptFileError, load_arrays, save_arrays

# EMBENGINE_BENCH_CACHE lets several checkouts share one cache (keys are content hashes).
CACHE_DIR = Path(
    os.environ.get("EMBENGINE_BENCH_CACHE") or Path(__file__).resolve().parent / ".cache"
)


def texts_digest(texts: Sequence[str]) -> str:
    """sha256 over the texts, each length-prefixed so that boundaries count."""
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()[:24]


def cached_embeddings(
    fingerprint: str,
    producer: str,
    texts: Sequence[str],
    embed: Callable[[list[str]], np.ndarray],
    *,
    directory: Path = CACHE_DIR,
) -> np.ndarray:
    """`embed(texts)`, or the stored result for the same model, producer and texts."""
    path = directory / f"{fingerprint}-{producer}-{texts_digest(texts)}.eeb"
    if path.is_file():
        try:
            arrays, _ = load_arrays(path)
            if len(arrays["embeddings"]) == len(texts):
                return arrays["embeddings"]
        except CorruptFileError:
            pass  # recompute and overwrite
    vectors = np.asarray(embed(list(texts)), dtype=np.float32)
    save_arrays(path, {"embeddings": vectors}, {"producer": producer, "texts": len(texts)})
    return vectors


def cached_embed(
    engine: Engine, texts: list[str], name: str, *, progress: bool = True
) -> np.ndarray:
    """engine.embed(texts) for a named dataset, through the cache."""
    return cached_embeddings(
        engine.spec.fingerprint, name, texts, lambda t: engine.embed(t, progress=progress)
    )


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
