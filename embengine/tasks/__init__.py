"""The jobs built on Engine.embed and embengine.ops: thin modules, the engine injected."""

from __future__ import annotations
