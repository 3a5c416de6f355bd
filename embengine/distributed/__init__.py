"""Past one machine: bulk embedding and dedup on Ray (`embengine.distributed.ray`, extra `ray`)."""

from __future__ import annotations
