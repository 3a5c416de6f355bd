"""Embeddings of a whole dataset, cached under benchmarks/.cache so eval reruns are fast.

The key is the model fingerprint, the producer (backend and precision, or a peer library)
and a sha256 of the exact texts; files are written and verified with embengine.io.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from embengine.io import CorruptFileError, load_arrays, save_arrays

CACHE_DIR = Path(__file__).resolve().parent / ".cache"


def texts_digest(texts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\x00")
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
            return arrays["embeddings"]
        except CorruptFileError:
            pass  # recompute and overwrite
    vectors = np.asarray(embed(list(texts)), dtype=np.float32)
    save_arrays(path, {"embeddings": vectors}, {"producer": producer, "texts": len(texts)})
    return vectors
