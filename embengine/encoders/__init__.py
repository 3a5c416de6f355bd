"""Encoder backends: token ids in, pooled unit-norm embeddings out."""

from __future__ import annotations

from embengine.encoders.base import Encoder, pool

__all__ = ["Encoder", "pool"]
