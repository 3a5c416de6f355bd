"""Embeddings of a whole dataset, cached on disk so evaluation reruns are fast.

The cache key is the model fingerprint plus a hash of the exact texts in order; files are
written and verified with embengine.io, so a stale or corrupt entry is never used.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from embengine import Engine
from embengine.io import CorruptFileError, load_arrays, save_arrays

CACHE_DIR = Path(__file__).resolve().parent / ".cache"


def texts_digest(texts: list[str]) -> str:
    """sha256 over the texts, length-prefixed so that ["ab", "c"] != ["a", "bc"]."""
    h = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def cached_embed(engine: Engine, texts: list[str], *, name: str) -> np.ndarray:
    """engine.embed(texts), read from benchmarks/.cache when this model embedded them before."""
    key = f"{engine.spec.fingerprint}-{texts_digest(texts)}"[:80]
    path = CACHE_DIR / f"{name}-{key}.emb"
    if path.exists():
        try:
            arrays, meta = load_arrays(path)
            if meta.get("texts") == len(texts):
                return arrays["vectors"]
        except CorruptFileError:
            pass  # recompute and overwrite below
    vectors = engine.embed(texts, progress=len(texts) > 5000)
    save_arrays(path, {"vectors": vectors}, {"texts": len(texts), "name": name})
    return vectors
