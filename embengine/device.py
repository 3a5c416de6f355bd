"""Where work runs: the device contract, the native modules, and what was compiled.

The CPU module `_native` always exists. The CUDA module `_cuda` exists when the build found
nvcc; it links the CUDA runtime statically, so it imports on machines without a GPU and
simply reports zero devices there.
"""

from __future__ import annotations

import enum
import importlib
import os
import platform
from types import ModuleType
from typing import Any

from embengine import _native

_cuda: ModuleType | None
_cuda_import_error: str | None
try:
    _cuda = importlib.import_module("embengine._cuda")
    _cuda_import_error = None
except ImportError as exc:  # not built here, or built against a runtime this machine lacks
    _cuda = None
    _cuda_import_error = str(exc)


class Device(str, enum.Enum):
    """Where to run. AUTO picks CUDA when a usable GPU exists and says so; CUDA insists."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


def cuda_module() -> ModuleType | None:
    """The compiled CUDA kernels, or None when they were not built."""
    return _cuda


def cuda_available() -> bool:
    """True when the CUDA kernels were compiled and can run on a visible GPU."""
    if _cuda is None or _cuda.device_count() == 0:
        return False
    return arch_supported(_cuda.device_properties(0)["compute_capability"], compiled_archs())


def compiled_archs() -> list[str]:
    """CUDA architectures in the build, as CMake spells them ("80-real", "90-virtual")."""
    if _cuda is None:
        return []
    return [a for a in _cuda.build_info()["cuda_archs"].split(",") if a]


def arch_supported(capability: tuple[int, int], archs: list[str]) -> bool:
    """Can a device of `capability` run a build with `archs`?

    SASS built for sm_XY runs on devices of the same major version and minor >= Y; PTX for
    compute_XY is JIT-compiled by the driver for any device of capability >= XY.
    """
    major, minor = capability
    for arch in archs:
        number, _, kind = arch.partition("-")
        if not number.isdigit():
            continue
        a_major, a_minor = divmod(int(number), 10)
        if kind == "virtual" and (major, minor) >= (a_major, a_minor):
            return True
        if kind in ("real", "") and major == a_major and minor >= a_minor:
            return True
    return False


def resolve_device(device: str | Device) -> Device:
    """Turn a requested device into CPU or CUDA; an explicit CUDA without one raises."""
    try:
        wanted = Device(device)
    except ValueError:
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}") from None
    if wanted is Device.CPU:
        return Device.CPU
    # Our own kernels' device count first: it costs microseconds, while importing torch to
    # ask it costs seconds and ~250 MB, which device="auto" on a CPU machine never needs.
    usable = cuda_available() and _torch_cuda_available()
    if wanted is Device.CUDA and not usable:
        raise RuntimeError(f"device='cuda' was requested but {cuda_unavailable_reason()}")
    return Device.CUDA if usable else Device.CPU


def cuda_unavailable_reason() -> str:
    """Why CUDA is not used here, in words (empty when it is usable)."""
    if _cuda is None:
        return f"the CUDA kernels were not built ({_cuda_import_error})"
    if _cuda.device_count() == 0:
        return describe_cuda_status(dict(_cuda.device_status()))
    if not cuda_available():
        cap = _cuda.device_properties(0)["compute_capability"]
        return f"the build's archs {compiled_archs()} cannot run on compute capability {cap}"
    if not _torch_cuda_available():
        return "the installed torch has no CUDA support"
    return ""


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"


def describe_cuda_status(status: dict[str, Any]) -> str:
    """Why cudaGetDeviceCount found no device, from _cuda.device_status(), with the fix.

    No GPU, no driver and a driver too old for the runtime this module links are different
    problems: each gets its own words (a pure function, so the rule is tested without a GPU).
    """
    error, driver, runtime = (
        status.get("error", ""),
        status.get("driver", 0),
        status.get("runtime", 0),
    )
    if error in ("", "cudaErrorNoDevice"):
        return "no CUDA device is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)"
    if error == "cudaErrorInsufficientDriver":
        if not driver:
            return "no NVIDIA driver is loaded on this machine (no GPU, or libcuda is missing)"
        return (
            f"the NVIDIA driver supports CUDA {_cuda_version(driver)}, older than the CUDA "
            f"{_cuda_version(runtime)} runtime these kernels were built with: update the "
            "driver, or rebuild with a CUDA toolkit no newer than the driver"
        )
    return f"CUDA reports {error}: {status.get('message', '')}"


def _torch_cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def build_info() -> dict[str, Any]:
    """What was compiled: version, compiler, SIMD levels, OpenMP, CUDA archs and toolkit."""
    info: dict[str, Any] = {"cpu": dict(_native.build_info())}
    info["cpu"]["machine"] = platform.machine()
    info["cpu"]["cores"] = os.cpu_count()
    if _cuda is None:
        info["cuda"] = {"built": False, "reason": _cuda_import_error}
    else:
        info["cuda"] = {"built": True, **_cuda.build_info()}
    return info


def devices() -> list[dict[str, Any]]:
    """The GPUs the CUDA kernels can see, with their properties."""
    if _cuda is None:
        return []
    return [dict(_cuda.device_properties(i)) for i in range(_cuda.device_count())]
