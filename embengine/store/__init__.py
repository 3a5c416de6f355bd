"""The append-only, memory-mapped embedding store (see embengine.store.store)."""

from __future__ import annotations

from embengine.store.store import FULL_VERIFY_BYTES, EmbeddingStore, content_hash

__all__ = ["FULL_VERIFY_BYTES", "EmbeddingStore", "content_hash"]
