"""embengine: one fast embedding layer for search, classification, dedup, anomaly and recs."""

from __future__ import annotations

import os

# No network: ONNX Runtime's built-in telemetry (DNS lookups of Microsoft's event endpoint,
# files under ~/.cache/Microsoft and $TMPDIR) is read from this variable when onnxruntime is
# first imported, so it is set before any embengine module can import it. An explicit
# ORT_DISABLE_TELEMETRY=0 in the environment is respected.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


def _native_missing(exc: ModuleNotFoundError) -> ImportError:
    """The error for a package without its compiled module, saying what to do instead."""
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    if os.path.isfile(os.path.join(root, "CMakeLists.txt")):
        return ImportError(
            f"embengine's native module is not built in the source tree {here}, which "
            "Python imported instead of the installed package because it runs from the "
            f"repository root ({root}). Run from another directory to use the installed "
            "package, or build in place with `make dev` (then PYTHONPATH=$PWD works here)."
        )
    return ImportError(
        f"embengine's native module (embengine._native) is missing from {here}: the "
        f"installation is incomplete; reinstall embengine ({exc})"
    )


try:
    from embengine._native import __version__
except ModuleNotFoundError as _exc:
    if _exc.name != "embengine._native":
        raise
    raise _native_missing(_exc) from None

from embengine.device import Device, build_info, cuda_available  # noqa: E402
from embengine.engine import EmbedStats, Engine  # noqa: E402

__all__ = ["Device", "EmbedStats", "Engine", "__version__", "build_info", "cuda_available"]
