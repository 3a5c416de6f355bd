"""One registry of optional dependencies: import on use, and fail naming the pip extra."""

from __future__ import annotations

import importlib
from types import ModuleType

# module name -> the extra (or package) that brings it
_EXTRAS = {
    "torch": "torch (pip install torch; CPU build: pip install torch==2.13.0)",
    "cupy": "cupy (GPU users: pip install cupy-cuda12x)",
    "onnxruntime": "embengine[onnx]",
    "onnx": "embengine[onnx]",
    "faiss": "embengine[faiss]",
    "pyarrow": "embengine[io]",
    "bm25s": "embengine[hybrid]",
    "Stemmer": "embengine[hybrid]",
    "rapidfuzz": "embengine[dedup]",
    "sklearn": "embengine[bench]",
    "ray": "embengine[ray]",
    "sentence_transformers": "embengine[bench]",
}


class MissingDependency(ImportError):
    """An optional dependency needed for the requested feature is not installed."""


def require(name: str, feature: str) -> ModuleType:
    """Import `name` for `feature`, or raise MissingDependency saying what to install."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        hint = _EXTRAS.get(name.split(".")[0], name)
        raise MissingDependency(f"{feature} needs the '{name}' module: install {hint}") from exc


def available(name: str) -> bool:
    """True when `name` imports (a module set to None in sys.modules counts as missing)."""
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True
