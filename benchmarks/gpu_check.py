"""`make gpu-check`: build, run every GPU test and the GPU benchmarks, write one report.

For a machine with a CUDA GPU and no network whose Python already has torch (CUDA build),
CuPy, numpy, pytest, pybind11, cmake and nvcc. Nothing is installed: the native modules are
built in place (build/gpu-check, copied into embengine/ as `make dev` does), for this card's
architecture. The report, benchmarks/results/gpu-<card>.md, holds the card, the build, the
test outcome and the benchmark table; the command fails when a GPU test fails.

    python3 benchmarks/gpu_check.py [--quick]
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT, text=True, **kwargs)  # type: ignore[call-overload]


def card_arch() -> str:
    """This card's compute capability as a CMake arch ("90-real"), from nvidia-smi."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError) as exc:
        sys.exit(f"gpu-check: nvidia-smi cannot report this machine's GPU ({exc})")
    return out[0].replace(".", "") + "-real"


def build() -> None:
    for tool in ("cmake", "nvcc"):
        if shutil.which(tool) is None:
            sys.exit(f"gpu-check: {tool} is not on PATH")
    pybind11_dir = subprocess.run(
        [sys.executable, "-m", "pybind11", "--cmakedir"], capture_output=True, text=True
    )
    if pybind11_dir.returncode:
        sys.exit("gpu-check: this Python has no pybind11 (pip install pybind11 from a local wheel)")
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    run(
        [
            "cmake",
            "-S",
            ".",
            "-B",
            "build/gpu-check",
            *generator,
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11_dir.stdout.strip()}",
            f"-DEMBENGINE_CUDA_ARCHS={card_arch()}",
        ],
        check=True,
    )
    run(["cmake", "--build", "build/gpu-check", "--parallel"], check=True)
    for so in glob.glob(str(ROOT / "build/gpu-check/_*.so")):
        shutil.copy(so, ROOT / "embengine")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="benchmarks at a tenth of the size")
    parser.add_argument("--no-build", action="store_true", help="use the modules already built")
    args = parser.parse_args()
    if not args.no_build:
        build()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    probe = run(
        [
            sys.executable,
            "-c",
            "from embengine.device import cuda_available as a, "
            "cuda_unavailable_reason as r, build_info as b, devices as d; "
            "import sys; print(d()[0]['name'] if a() else ''); print(b()); a() or sys.exit(r())",
        ],
        env=env,
        capture_output=True,
    )
    if probe.returncode:
        sys.exit(f"gpu-check: no usable GPU: {probe.stdout}{probe.stderr}")
    card, build_line = probe.stdout.splitlines()[:2]
    # every test marked gpu, in every test file; pytest-timeout may be absent here
    tests = run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests",
            "-m",
            "gpu",
            "-q",
            "-rfE",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            "-W",
            "ignore::pytest.PytestConfigWarning",
            "--continue-on-collection-errors",
        ],
        env=env,
        capture_output=True,
    )
    print(tests.stdout[-4000:], tests.stderr[-2000:], flush=True)
    slug = re.sub(r"[^a-z0-9]+", "-", card.lower()).strip("-")
    table = ROOT / "benchmarks" / "results" / f".gpu-{slug}.table.md"
    bench = run(
        [
            sys.executable,
            "benchmarks/bench_kernels.py",
            "--gpu-only",
            "--markdown",
            str(table),
            "--json",
            str(ROOT / "benchmarks" / "results" / f"gpu-{slug}.json"),
            *(["--quick"] if args.quick else []),
        ],
        env=env,
        capture_output=True,
    )
    print(bench.stdout[-4000:], bench.stderr[-2000:], flush=True)
    summary = (tests.stdout.strip().splitlines() or ["(no pytest output)"])[-1]
    report = [
        f"# GPU check: {card}",
        "",
        f"- build: `{build_line}`",
        f"- GPU tests (`pytest -m gpu`): **{summary}** (exit {tests.returncode})",
        f"- benchmarks: exit {bench.returncode}",
        "",
        "## Benchmarks",
        "",
        table.read_text()
        if table.exists()
        else f"```\n{bench.stdout[-3000:]}{bench.stderr[-3000:]}\n```",
        "",
        "## Test output (tail)",
        "",
        "```",
        tests.stdout[-6000:].strip(),
        "```",
    ]
    out = ROOT / "benchmarks" / "results" / f"gpu-{slug}.md"
    out.write_text("\n".join(report) + "\n")
    table.unlink(missing_ok=True)
    print(f"wrote {out}")
    if tests.returncode or bench.returncode:
        sys.exit(1)


if __name__ == "__main__":
    main()
