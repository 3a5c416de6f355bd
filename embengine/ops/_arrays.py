"""Array interop for the ops layer: tell where an array lives and hand kernels what they need.

numpy arrays and CPU torch tensors go to the C++ kernels (torch tensors are viewed, not
copied); CuPy arrays and CUDA torch tensors go to the CUDA kernels as raw device pointers on
the framework's current stream, and results come back in the caller's framework.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

# dtype codes shared with csrc/include/embengine/cuda_check.h (DType)
CUDA_DTYPE_CODES = {"float32": 0, "float16": 1, "bfloat16": 2}


def is_cuda_array(a: Any) -> bool:
    """True for CuPy arrays and CUDA torch tensors (anything with __cuda_array_interface__)."""
    try:
        return hasattr(a, "__cuda_array_interface__")
    except RuntimeError:  # some frameworks raise instead of AttributeError
        return False


def is_torch(a: Any) -> bool:
    return type(a).__module__.startswith("torch")


def to_numpy(a: Any, name: str) -> np.ndarray:
    """View a CPU array (numpy, torch CPU tensor, array-like) as numpy without copying."""
    if is_torch(a):
        return a.detach().numpy()
    if isinstance(a, np.ndarray):
        return a
    try:
        return np.asarray(a)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be an array, got {type(a).__name__}") from exc


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

    @property
    def framework(self) -> str:
        return "torch" if is_torch(self.original) else "cupy"

    @property
    def dtype_code(self) -> int:
        if self.dtype not in CUDA_DTYPE_CODES:
            raise ValueError(f"CUDA kernels take float32, float16 or bfloat16, got {self.dtype}")
        return CUDA_DTYPE_CODES[self.dtype]

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

    def empty(self, shape: tuple[int, ...], dtype: str = "float32") -> Any:
        """A new device array on the same GPU and framework."""
        if self.framework == "torch":
            import torch

            return torch.empty(shape, dtype=getattr(torch, dtype), device=self.original.device)
        import cupy

        return cupy.empty(shape, dtype=dtype)

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
    """Describe a CuPy array or CUDA torch tensor for the CUDA bindings."""
    if is_torch(a):
        return CudaArray(
            original=a,
            ptr=int(a.data_ptr()),
            shape=tuple(a.shape),
            dtype=str(a.dtype).removeprefix("torch."),
            contiguous=bool(a.is_contiguous()),
        )
    return CudaArray(
        original=a,
        ptr=int(a.data.ptr),
        shape=tuple(a.shape),
        dtype=str(a.dtype),
        contiguous=bool(a.flags.c_contiguous),
    )
