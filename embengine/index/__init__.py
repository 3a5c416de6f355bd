"""Vector search: VectorIndex over FAISS (exact, IVF, HNSW; GPU when FAISS has one), with
external ids, add / upsert / remove, allow-lists, optional BM25 hybrid search and
verified, atomic save / load."""

from __future__ import annotations

from embengine.index.vector_index import VectorIndex
from embengine.io import CorruptFileError, ModelMismatchError

__all__ = ["CorruptFileError", "ModelMismatchError", "VectorIndex"]
