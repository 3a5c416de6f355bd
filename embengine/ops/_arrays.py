"""Array interop for the ops layer: tell where an array lives and hand kernels what they need.

numpy arrays and CPU torch tensors go to the C++ kernels (torch tensors are viewed, not
copied); CuPy arrays, CUDA torch tensors and anything else exposing
`__cuda_array_interface__` go to the CUDA kernels as raw device pointers on the framework's
current stream, and results come back in the caller's framework. Torch tensors that
require grad are detached (the kernels compute no gradients).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from embengine.errors import InvalidInputError, InvalidTypeError

# dtype codes shared with csrc/include/embengine/cuda_check.h (DType)
CUDA_DTYPE_CODES = {"float32": 0, "float16": 1, "bfloat16": 2}
# __cuda_array_interface__ typestr -> dtype name (little-endian; bfloat16 has no typestr)
_TYPESTRS = {"<f4": "float32", "<f2": "float16", "<f8": "float64", "<i8": "int64", "<i4": "int32"}


def is_torch(a: Any) -> bool:
    return type(a).__module__.startswith("torch")


def is_cuda_array(a: Any) -> bool:
    """True for CUDA torch tensors (with or without grad) and CuPy-like device arrays.

    A torch tensor that requires grad refuses __cuda_array_interface__, so torch is asked
    directly; anything else counts when it exposes the interface.
    """
    if is_torch(a):
        return bool(getattr(a, "is_cuda", False))
    try:
        return hasattr(a, "__cuda_array_interface__")
    except RuntimeError:  # some frameworks raise instead of AttributeError
        return False


def to_numpy(a: Any, name: str) -> np.ndarray:
    """View a CPU array (numpy, torch CPU tensor, array-like) as numpy without copying."""
    if is_torch(a):
        device = str(getattr(a, "device", "cpu"))
        if device != "cpu":
            raise InvalidInputError(
                f"{name} is a torch tensor on {device}: embengine.ops runs on the CPU "
                "(numpy / CPU tensors) or on CUDA (CUDA tensors / CuPy)"
            )
        return a.detach().numpy()
    if isinstance(a, np.ndarray):
        return a
    try:
        return np.asarray(a)
    except (TypeError, ValueError) as exc:
        raise InvalidTypeError(f"{name} must be an array, got {type(a).__name__}") from exc


def to_host(a: Any) -> np.ndarray:
    """An array's values on the host as numpy: numpy as is (a subclass as plain numpy), a
    torch tensor copied over (bfloat16 as float32: numpy has none), CuPy via .get()."""
    if isinstance(a, np.ndarray):
        return np.asarray(a)
    if is_torch(a):
        t = a.detach()
        if str(t.dtype) == "torch.bfloat16":
            t = t.float()
        return t.cpu().numpy()
    return a.get()


def like_input(result: np.ndarray, original: Any) -> Any:
    """Return a CPU result in the caller's framework (torch in, torch out)."""
    if is_torch(original):
        import torch

        return torch.from_numpy(result)
    return result


@dataclass
class CudaArray:
    """A device array as the CUDA bindings take it."""

    original: Any
    ptr: int
    shape: tuple[int, ...]
    dtype: str
    contiguous: bool
    device_id: int

    @property
    def framework(self) -> str:
        return "torch" if is_torch(self.original) else "cupy"

    @property
    def itemsize(self) -> int:
        return 4 if self.dtype in ("float32", "int32") else 8 if "64" in self.dtype else 2

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def dtype_code(self) -> int:
        if self.dtype not in CUDA_DTYPE_CODES:
            raise InvalidInputError(
                f"CUDA kernels take float32, float16 or bfloat16, got {self.dtype}"
            )
        return CUDA_DTYPE_CODES[self.dtype]

    def row_ptr(self, row: int) -> int:
        """Address of row `row` of this C-contiguous 2-D array."""
        return self.ptr + row * self.shape[1] * self.itemsize

    def stream(self) -> int:
        """The framework's current stream on this array's device (0 = legacy default)."""
        if self.framework == "torch":
            import torch

            return int(torch.cuda.current_stream(self.original.device).cuda_stream)
        import cupy

        return int(cupy.cuda.get_current_stream().ptr)

    @contextlib.contextmanager
    def on_device(self) -> Iterator[None]:
        """Make this array's GPU the current one while kernels are launched."""
        if self.framework == "torch":
            import torch

            with torch.cuda.device(self.original.device):
                yield
        else:
            with self.original.device:
                yield

    def astype(self, dtype: str) -> CudaArray:
        """A contiguous copy in `dtype` (on the device), or self when nothing changes."""
        if self.dtype == dtype and self.contiguous:
            return self
        if self.framework == "torch":
            import torch

            return cuda_array(self.original.to(getattr(torch, dtype)).contiguous())
        import cupy

        return cuda_array(cupy.ascontiguousarray(self.original, dtype=dtype))


def cuda_array(a: Any) -> CudaArray:
    """Describe a CUDA torch tensor or a __cuda_array_interface__ array for the bindings.

    Nothing here dereferences the pointer: an empty array may report address 0, and the
    ops check sizes before any kernel sees a pointer.
    """
    if is_torch(a):
        a = a.detach()  # requires_grad tensors: the kernels compute values, not gradients
        return CudaArray(
            original=a,
            ptr=int(a.data_ptr()),
            shape=tuple(a.shape),
            dtype=str(a.dtype).removeprefix("torch."),
            contiguous=bool(a.is_contiguous()),
            device_id=int(a.device.index or 0),
        )
    interface = a.__cuda_array_interface__
    shape = tuple(int(s) for s in interface["shape"])
    dtype = str(getattr(a, "dtype", "")) or _TYPESTRS.get(interface["typestr"], "")
    strides = interface.get("strides")
    itemsize = int(np.dtype(interface["typestr"]).itemsize)
    contiguous = strides is None or tuple(strides) == _c_strides(shape, itemsize)
    device = getattr(a, "device", None)
    return CudaArray(
        original=a,
        ptr=int(interface["data"][0]),
        shape=shape,
        dtype=dtype,
        contiguous=contiguous,
        device_id=int(getattr(device, "id", 0) or 0),
    )


def _c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    strides, step = [], itemsize
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def same_device(arrays: dict[str, CudaArray]) -> None:
    """Every array on one GPU, or InvalidInputError naming where each one is."""
    devices = {name: a.device_id for name, a in arrays.items()}
    if len(set(devices.values())) > 1:
        where = ", ".join(f"{name} on cuda:{d}" for name, d in devices.items())
        raise InvalidInputError(f"arrays must be on one GPU: {where}")
