"""Serving: the request coalescer (also behind `Engine.aembed`) and the HTTP server.

`embengine.serve.app` needs the `serve` extra (Starlette + uvicorn); the coalescer needs
nothing beyond the engine.
"""

from __future__ import annotations

from embengine.serve.coalesce import Coalescer

__all__ = ["Coalescer"]
