"""The build is inspectable: what was compiled, which devices exist, and the arch rule."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import embengine
from embengine.device import arch_supported, build_info


def test_build_info_reports_cpu_build() -> None:
    info = build_info()["cpu"]
    assert info["version"] == embengine.__version__
    assert "x86-64" in info["simd_compiled"] or info["machine"] != "x86_64"
    assert info["openmp"] is not None, "the CPU kernels were built without OpenMP"


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on this machine")
def test_cuda_kernels_were_compiled_where_nvcc_exists() -> None:
    cuda = build_info()["cuda"]
    assert cuda["built"], cuda.get("reason")
    archs = cuda["cuda_archs"].split(",")
    assert "80-real" in archs
    assert "90-real" in archs


def test_python_dash_m_reports_build_and_devices(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "embengine"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,  # the installed package, not the source tree
    )
    report = json.loads(result.stdout)
    assert report["build"]["cpu"]["version"] == embengine.__version__
    assert isinstance(report["gpus"], list)
    assert report["default_model"]["dim"] == 384


def test_python_dash_m_with_arguments_is_the_command_line(tmp_path: Path) -> None:
    """Where the console script is not on PATH, `python -m embengine CMD` is `embengine CMD`."""
    run = [sys.executable, "-m", "embengine"]
    usage = subprocess.run([*run, "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert usage.returncode == 0
    assert "embed" in usage.stdout
    assert "serve" in usage.stdout
    wrong = subprocess.run([*run, "no-such-command"], capture_output=True, text=True, cwd=tmp_path)
    assert wrong.returncode == 2
    assert "invalid choice: 'no-such-command'" in wrong.stderr


@pytest.mark.parametrize(
    ("capability", "archs", "expected"),
    [
        ((9, 0), ["80-real", "90-real"], True),  # exact SASS
        ((8, 6), ["80-real"], True),  # same major, newer minor runs sm_80 SASS
        ((8, 0), ["86-real"], False),  # older minor cannot run sm_86 SASS
        ((10, 0), ["80-real", "90-real"], False),  # no SASS for Blackwell, no PTX
        ((10, 0), ["80-real", "90-virtual"], True),  # PTX for 9.0 JIT-compiles on 10.0
        ((7, 5), ["80-real", "90-virtual"], False),  # too old for everything
        ((9, 0), [], False),
    ],
)
def test_arch_supported(capability: tuple[int, int], archs: list[str], expected: bool) -> None:
    assert arch_supported(capability, archs) is expected
