"""Vector search: VectorIndex over the native top-k kernel and FAISS (exact, IVF, HNSW; GPU
when FAISS has one), with external ids, add / upsert / remove, allow-lists, optional BM25
hybrid search, thread safety, and verified, atomic save / load."""

from __future__ import annotations

from embengine.errors import CorruptFileError, ModelMismatchError
from embengine.index.vector_index import VectorIndex

__all__ = ["CorruptFileError", "ModelMismatchError", "VectorIndex"]
