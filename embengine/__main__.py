"""`python -m embengine`: what was built, what this machine has, and whether the model loads.

With arguments it is the command line: `python -m embengine embed ...` = `embengine embed ...`
(for environments where the console script is not on PATH).
"""

from __future__ import annotations

import json
import sys

from embengine.device import build_info, cuda_available, cuda_unavailable_reason, devices


def report() -> dict[str, object]:
    info: dict[str, object] = {"python": sys.version.split()[0], "build": build_info()}
    info["gpus"] = devices()
    info["cuda_usable"] = cuda_available() or cuda_unavailable_reason()
    try:
        import torch

        info["torch"] = {
            "version": torch.__version__,
            "cuda": torch.version.cuda,
            "cuda_available": torch.cuda.is_available(),
        }
    except ImportError:
        info["torch"] = "not installed"
    info["onnxruntime"] = _onnxruntime()
    try:
        from embengine.models import load_model_spec

        spec = load_model_spec()
        info["default_model"] = {"name": spec.name, "path": str(spec.path), "dim": spec.dim}
    except (FileNotFoundError, ValueError) as exc:
        info["default_model"] = f"unavailable: {exc}"
    return info


def _onnxruntime() -> dict[str, object] | str:
    """Which ONNX Runtime package is installed and the providers it offers."""
    from embengine.encoders.onnx_backend import ort_distribution

    try:
        import onnxruntime
    except ImportError:
        return "not installed (pip install 'embengine[onnx]')"
    return {"package": ort_distribution(), "providers": onnxruntime.get_available_providers()}


if __name__ == "__main__":
    if len(sys.argv) > 1:
        from embengine.cli import main

        sys.exit(main(sys.argv[1:]))
    print(json.dumps(report(), indent=2, default=str))
