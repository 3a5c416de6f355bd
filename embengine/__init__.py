"""embengine: one fast embedding layer for search, classification, dedup, anomaly and recs."""

from __future__ import annotations

from embengine._native import __version__
from embengine.device import Device, build_info, cuda_available
from embengine.engine import EmbedStats, Engine

__all__ = ["Device", "EmbedStats", "Engine", "__version__", "build_info", "cuda_available"]
