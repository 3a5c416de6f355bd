"""GPU stand-ins on the host, shared by the tests that exercise CUDA code paths without a GPU.

`FakeDeviceArray` is host memory that exposes __cuda_array_interface__ (so the ops dispatch
it to the CUDA path); the kernels come in two kinds: `FakeKernels` does what each CUDA kernel
does, in numpy, on the raw addresses the driver hands it; `SimKernels` runs the real kernel
code of csrc/cuda, compiled for the CPU by the block/warp emulator (embengine._cuda_sim).
`NumpyGpu` plays the framework (allocation, matmul) on the host; `install_host_gpu` wires
them into embengine.ops; `FakeCudaEncoder` makes an engine's encoder pose as a CUDA one.
Fixtures using them: `fake_gpu` (test_gpu_dispatch.py) and `sim_gpu` (conftest.py).
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
import pytest

from embengine import _native, ops
from embengine.device import Device
from embengine.ops import similarity
from embengine.ops._arrays import CudaArray


class _FakeDevice:
    def __init__(self, index: int) -> None:
        self.id = index

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class FakeDeviceArray(np.ndarray):
    """Host memory posing as a CuPy array on GPU `gpu` (0 unless set)."""

    gpu = 0

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        address = self.__array_interface__["data"][0] if self.size else 0  # as CuPy: 0 if empty
        strides = None if self.flags.c_contiguous else self.strides
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (address, False),
                "strides": strides, "version": 3}  # fmt: skip

    @property
    def device(self) -> _FakeDevice:
        return _FakeDevice(self.gpu)

    def get(self) -> np.ndarray:  # CuPy's copy to the host
        return np.array(self.view(np.ndarray))


def dev(a: np.ndarray, gpu: int = 0) -> FakeDeviceArray:
    out = np.ascontiguousarray(a).view(FakeDeviceArray)
    out.gpu = gpu
    return out


_CTYPES = {"float32": ctypes.c_float, "float16": ctypes.c_uint16, "int64": ctypes.c_int64}
_CODES = {0: "float32", 1: "float16"}


def view(address: int, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """The memory at a raw address as numpy: what a kernel sees through its pointer."""
    assert address != 0, "a kernel was handed a null pointer"
    count = int(np.prod(shape))
    raw = np.ctypeslib.as_array((_CTYPES[dtype] * count).from_address(address))
    return raw.view(np.float16 if dtype == "float16" else raw.dtype).reshape(shape)


def best_first(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((ids.astype(np.uint64), -scores))[:k]
    s = np.full(k, -np.inf, np.float32)
    i = np.full(k, -1, np.int64)
    s[: len(order)], i[: len(order)] = scores[order], ids[order]
    return s, i


class FakeKernels:
    """numpy twins of the CUDA kernels, addressed by raw pointers like the real ones."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def device_properties(self, device: int) -> dict[str, int]:
        return {"multiprocessors": 132}

    def dot_scores(self, q, nq, base, dtype, n, d, out, ld, stream) -> None:  # type: ignore[no-untyped-def]
        self.calls.append("dot_scores")
        queries = view(q, "float32", (nq, d))
        rows = view(base, _CODES[dtype], (n, d)).astype(np.float32)
        with np.errstate(all="ignore"):
            view(out, "float32", (nq, ld))[:, :n] = queries @ rows.T

    def topk_select(  # type: ignore[no-untyped-def]
        self, tile, q, m, ld, tile_ids, base_offset, splits, span, exclude_self, self_offset,
        ls, li, ss, si, k, init, not_finite, stream,
    ) -> None:  # fmt: skip
        self.calls.append(f"topk_select(splits={splits}, init={init})")
        assert splits * span >= m
        scores = view(tile, "float32", (q, ld))[:, :m]
        ids = (
            view(tile_ids, "int64", (q, ld))[:, :m]
            if tile_ids
            else np.broadcast_to(base_offset + np.arange(m), (q, m))
        )
        lists_s = view(ls, "float32", (q * splits, k))
        lists_i = view(li, "int64", (q * splits, k))
        bad = 0
        for r in range(q):
            for s in range(splits):
                cols = slice(s * span, min(m, (s + 1) * span))
                sc, idx = scores[r, cols], ids[r, cols]
                real = idx != -1
                finite = np.isfinite(sc)
                bad += int((real & ~finite).sum())
                keep = real & finite
                if exclude_self:
                    keep &= idx != self_offset + r
                row = r * splits + s
                old_s = np.empty(0, np.float32) if init else lists_s[row]
                old_i = np.empty(0, np.int64) if init else lists_i[row]
                lists_s[row], lists_i[row] = best_first(
                    np.concatenate([old_s, sc[keep]]), np.concatenate([old_i, idx[keep]]), k
                )
        if not_finite:
            view(not_finite, "int64", (1,))[0] += bad

    def pairs_in_tile(  # type: ignore[no-untyped-def]
        self, tile, nr, nc, ld, rows, cols, d, row0, col0, threshold, margin, upper_only,
        out_i, out_j, out_s, capacity, count, not_finite, stream,
    ) -> None:  # fmt: skip
        self.calls.append("pairs_in_tile")
        t = view(tile, "float32", (nr, ld))[:, :nc]
        a, b = view(rows, "float32", (nr, d)), view(cols, "float32", (nc, d))
        candidate = np.float32(threshold) - np.float32(margin)
        counter = view(count, "int64", (1,))
        bad = int((~np.isfinite(t)).sum())
        for r, c in np.argwhere(np.isfinite(t) & (t >= candidate)):
            if upper_only and row0 + r >= col0 + c:
                continue
            score = _native.dot_lanes8(a[r : r + 1], b[c : c + 1])[0]
            if score >= np.float32(threshold):
                pos = int(counter[0])
                if pos < capacity:
                    view(out_i, "int64", (capacity,))[pos] = row0 + r
                    view(out_j, "int64", (capacity,))[pos] = col0 + c
                    view(out_s, "float32", (capacity,))[pos] = score
                counter[0] += 1
        if not_finite:
            view(not_finite, "int64", (1,))[0] += bad

    def nearest_centroid(self, x, dtype, n, c, nc, d, best, index, not_finite, stream) -> None:  # type: ignore[no-untyped-def]
        self.calls.append("nearest_centroid")
        scores = view(x, _CODES[dtype], (n, d)).astype(np.float32) @ view(c, "float32", (nc, d)).T
        self._argmax(scores, view(best, "float32", (n,)), view(index, "int64", (n,)), not_finite)

    def tile_argmax(self, tile, n, c, ld, best, index, not_finite, stream) -> None:  # type: ignore[no-untyped-def]
        self.calls.append("tile_argmax")
        scores = view(tile, "float32", (n, ld))[:, :c]
        self._argmax(scores, view(best, "float32", (n,)), view(index, "int64", (n,)), not_finite)

    @staticmethod
    def _argmax(scores: np.ndarray, best: np.ndarray, index: np.ndarray, nf: int) -> None:
        finite = np.where(np.isfinite(scores), scores, -np.inf)
        index[:] = np.argmax(finite, axis=1)
        best[:] = finite[np.arange(len(scores)), index]
        if nf:
            view(nf, "int64", (1,))[0] += int((~np.isfinite(scores)).sum())


def cuda_sim() -> Any:
    """The CUDA kernels built for the CPU emulator, or a skip saying why they are absent."""
    try:
        from embengine import _cuda_sim
    except ImportError as exc:
        pytest.skip(f"embengine._cuda_sim was not built (EMBENGINE_CUDA_SIM=OFF?): {exc}")
    return _cuda_sim


class SimKernels:
    """The real CUDA kernels (emulated on the CPU), logging calls as FakeKernels does."""

    def __init__(self) -> None:
        self.module = cuda_sim()
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        kernel = getattr(self.module, name)

        def call(*args: Any) -> Any:
            if name == "topk_select":
                self.calls.append(f"topk_select(splits={args[6]}, init={args[15]})")
            elif name not in ("device_properties", "device_status", "build_info"):
                self.calls.append(name)
            return kernel(*args)

        return call


class NumpyGpu(similarity._Gpu):
    """similarity._Gpu on host memory: framework calls in numpy, kernels from FakeKernels."""

    kernels_in_use = FakeKernels()
    converted: list[int] = []  # noqa: RUF012 -- elements converted to float32 per call of f32
    reads = 0

    def __init__(self, like: CudaArray) -> None:
        self.like, self.torch = like, False
        self.kernels = NumpyGpu.kernels_in_use

    def full(self, shape: tuple[int, ...], value: float, dtype: str) -> Any:
        return dev(np.full(shape, value, dtype=dtype))

    def empty(self, shape: tuple[int, ...], dtype: str = "float32") -> Any:
        return dev(np.empty(shape, dtype=dtype))

    def f32(self, block: Any, buffer: Any) -> Any:
        if block.dtype != np.float32:
            NumpyGpu.converted.append(block.size)
        return super().f32(block, buffer)

    def copy_into(self, out: Any, block: Any) -> None:
        np.copyto(out, block, casting="unsafe")

    def matmul(self, a: Any, b: Any) -> Any:
        with np.errstate(all="ignore"):
            return dev(np.asarray(a) @ np.asarray(b).T)

    def read(self, counter: Any) -> int:
        NumpyGpu.reads += 1
        return int(counter[0])

    def copy(self, a: Any) -> Any:
        return dev(np.array(a))

    def concat(self, parts: list[Any]) -> Any:
        return dev(np.concatenate([np.asarray(p) for p in parts]))

    def argsort(self, key: Any) -> Any:
        return np.argsort(np.asarray(key), kind="stable")

    def max_row_norm(self, x: Any) -> float:
        norms = np.linalg.norm(np.asarray(x, dtype=np.float64), axis=1)
        norms = norms[np.isfinite(norms)]
        return float(norms.max()) if len(norms) else 0.0

    def tf32(self) -> bool:
        return False

    half_tiles = False  # a test turns on float16 pair nomination (torch-only on a real GPU)

    def half_copy(self, x: Any) -> Any:
        a = np.asarray(x)
        return dev(a.astype(np.float16)) if NumpyGpu.half_tiles else None

    def half_product(self, a: Any, b: Any) -> Any:
        # float16 products are exact in float32 and summed in float32, as on tensor cores
        return dev(np.asarray(a, np.float32) @ np.asarray(b, np.float32).T)

    def count_not_finite(self, a: Any) -> int:
        return int((~np.isfinite(np.asarray(a))).sum())


def install_host_gpu(kernels: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make the ops' CUDA path run on the host: NumpyGpu for the framework, `kernels` below."""
    monkeypatch.setattr(NumpyGpu, "kernels_in_use", kernels)
    monkeypatch.setattr(ops, "cuda_module", lambda: kernels)
    monkeypatch.setattr(NumpyGpu, "converted", [])
    monkeypatch.setattr(NumpyGpu, "reads", 0)
    monkeypatch.setattr(NumpyGpu, "half_tiles", False)
    monkeypatch.setattr(similarity, "_Gpu", NumpyGpu)
    monkeypatch.setattr(CudaArray, "stream", lambda self: 0)
    return kernels


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def host(a: Any) -> np.ndarray:
    return np.asarray(a).view(np.ndarray)


class FakeCudaEncoder:
    """The session's CPU encoder posing as a CUDA one: rows come back as torch tensors."""

    def __init__(self, real: Any) -> None:
        import torch

        self.real, self.name, self.precision = real, real.name, real.precision
        self.device, self.details = Device.CUDA, dict(real.details)
        self.torch_device = torch.device("cpu")  # where a CUDA encoder would say "cuda:0"
        self.device_batches = 0

    def encode(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        raise AssertionError("the host path was taken on a CUDA engine")

    def encode_device(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> Any:
        import torch

        self.device_batches += 1
        return torch.from_numpy(self.real.encode(input_ids, attention_mask))
