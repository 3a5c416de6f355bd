"""Jobs on the engine's GPU: embed there, run the kernels there, bring back only results.

On a device-resident engine (a CUDA encoder and no store attached: `Engine.embed(...,
output="torch")` then leaves the vectors on the GPU) a job embeds with `embed` and hands the
tensor to embengine.ops, which runs the CUDA kernels on it; only the small results (pairs,
ids, scores) come to the host, where the job's logic runs as on the CPU. Anywhere else
`embed` is plain `Engine.embed` (numpy) and the job's host code runs as before.
`device_runs` counts, per job, the calls that took the device path (what tests and logs
check).
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

from embengine import ops
from embengine.ops._arrays import is_cuda_array, is_torch, to_host

if TYPE_CHECKING:
    from embengine.engine import Engine

device_runs: Counter[str] = Counter()  # job name -> calls that ran on the engine's device
_runs_lock = threading.Lock()


def resident(engine: Engine) -> bool:
    """Does `engine.embed(output="torch")` leave vectors on the GPU? (a store sends them
    through the host, where it lives; an engine stand-in without these is a host one)"""
    device_resident = getattr(engine, "_device_resident", None)
    return getattr(engine, "store", None) is None and bool(device_resident and device_resident())


def embed(engine: Engine, texts: list[str]) -> Any:
    """(n, dim) unit rows: a torch tensor on the engine's device when it is resident,
    numpy otherwise (exactly `engine.embed(texts)`). A call small enough to join the
    request coalescer of an engine made with coalesce=True still does (numpy: the coalescer
    batches with other callers' texts, which a device result cannot)."""
    coalesced = getattr(engine, "coalesce", False) and len(texts) < engine.max_batch_size
    if resident(engine) and not coalesced:
        return engine.embed(texts, output="torch")
    return engine.embed(texts)


def anchor(engine: Engine | None) -> Any | None:
    """An empty (0, dim) float32 tensor on the device where a resident `engine` leaves its
    vectors, for a job whose queries are ids, not vectors (`placed` copies its state next to
    it); None when the engine is not resident (the job runs on the host)."""
    if engine is None or not resident(engine):
        return None
    import torch

    device = engine.encoder.torch_device  # type: ignore[attr-defined]
    return torch.empty((0, int(engine.dim)), dtype=torch.float32, device=device)


def on_device(x: Any) -> bool:
    """Is x a device array (CUDA torch / CuPy), or a tensor a resident engine returned?

    Tests stand in a CPU torch tensor for the CUDA one (tests/gpu_fakes.FakeCudaEncoder);
    the ops run their CPU kernels on it and every step below is the same.
    """
    return is_torch(x) or is_cuda_array(x)


def record(job: str) -> None:
    """Count one call of `job` that ran on the device."""
    with _runs_lock:
        device_runs[job] += 1


def rows(x: Any, index: np.ndarray) -> Any:
    """x[index] for a host index array, on x's device."""
    if is_torch(x):
        import torch

        return x[torch.as_tensor(index, device=x.device)]
    return x[index]


def like(a: np.ndarray, x: Any) -> Any:
    """Host array `a` copied to where x lives (torch / CuPy), as float32 rows."""
    if is_torch(x):
        import torch

        rows = np.ascontiguousarray(a, np.float32)
        if not rows.flags.writeable:  # a frozen state array: torch wants one it may write
            rows = rows.copy()
        return torch.as_tensor(rows, device=x.device)
    if isinstance(x, np.ndarray):  # a numpy-backed stand-in for a device array (tests)
        return np.ascontiguousarray(a, np.float32).view(type(x))
    cupy = _cupy()
    with x.device:
        return cupy.asarray(a, dtype=cupy.float32)


def placed(cache: dict[tuple[str, str], Any], name: str, a: np.ndarray, x: Any) -> Any:
    """Host array `a` (called `name`) where x lives: `a` itself for a host x, else a device
    copy kept in `cache` (one per device). The cache belongs to one never-mutated state, so
    the copy stays true; two readers may both build it, but each sees a whole one."""
    if not on_device(x):
        return a
    key = (name, _where(x))
    copy = cache.get(key)
    if copy is None:
        copy = cache.setdefault(key, like(a, x))
    return copy


def _where(x: Any) -> str:
    if is_torch(x):
        return str(x.device)
    return f"cuda:{x.device.id}"


def check(x: Any, name: str, dim: int | None = None) -> Any:
    """A device (n, dim) float array with finite values, or InvalidInputError naming the
    array and its first bad row (what ops.check_vectors says of a host one)."""
    if not is_cuda_array(x):  # a host array (a CPU tensor: a stand-in, kept a tensor)
        checked = ops.check_vectors(x, name, dim)
        return x if is_torch(x) else checked
    return ops.check_cuda_vectors(x, name, dim, check_finite=True).original


def row_keys(x: Any) -> np.ndarray:
    """(n,) int64 host labels, equal exactly where two rows of device array x are equal
    bit for bit (the device's torch.unique over the rows' bits; only labels come back)."""
    import torch

    t = x if is_torch(x) else torch.from_dlpack(x)
    bits = t.contiguous().view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])
    _, inverse = torch.unique(bits, dim=0, return_inverse=True)
    return to_host(inverse).astype(np.int64, copy=False)


def _cupy() -> Any:
    import cupy

    return cupy
