"""A device copy of a flat index's float32 rows, for exact searches on the GPU.

The host table stays the source of truth (save / load, removals, filters, hybrid and the
exact re-scoring read it); the mirror only lets `embengine.ops.topk_cosine` nominate
candidates where the queries already are. It follows the host table lazily: a search finds
it behind, uploads the rows added since (into spare capacity, grown by half like the host
table) or, after the slots were renumbered, all of them. Readers of the index hold its read
lock, so every reader of one moment needs the same rows: the first brings the mirror up to
date under a mutex and publishes it with one reference swap; rows a published view covers
are never written again (appends go past them, a rebuild makes a new buffer).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from embengine import ops
from embengine.device import Device, resolve_device
from embengine.ops._arrays import is_torch
from embengine.ops.similarity import torch_allows_tf32


def usable() -> bool:
    """Can the exact kernel search run on a GPU here: embengine's CUDA kernels + CUDA torch
    (what an Engine's device="auto" asks; torch is imported only where the kernels see a GPU)."""
    return resolve_device("auto") is Device.CUDA


def default_device() -> Any:
    """The torch device a mirror goes to when no engine says which: the current GPU."""
    return torch_device("cuda")


def torch_device(device: Any) -> Any:
    """`device` as a torch device with its index: tensors on "cuda" report "cuda:<n>"."""
    import torch

    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


@dataclass(frozen=True)
class _Rows:
    buffer: Any  # (capacity, dim) float32 tensor on the device; rows [0, n) are valid
    n: int
    layout: int  # the host table's renumbering count these rows belong to


class DeviceMirror:
    """The first n host rows as a float32 torch tensor on `device`, and the searches on it."""

    def __init__(self, device: Any) -> None:
        self.device = torch_device(device)
        self._rows: _Rows | None = None
        self._mutex = threading.Lock()  # one reader brings the rows up to date at a time
        self._count_lock = threading.Lock()
        self.searches = 0  # dense searches whose scan ran here (describe() reports it)

    def holds(self, x: Any) -> bool:
        """Is x a torch tensor already on this mirror's device (used as is, no copy)?"""
        return is_torch(x) and x.device == self.device

    @property
    def tf32(self) -> bool:
        """May the scan's matrix products round to TF32 (the margin must then cover it)?"""
        return self.device.type == "cuda" and torch_allows_tf32()

    @property
    def rows_held(self) -> int:
        rows = self._rows
        return 0 if rows is None else rows.n

    def queries(self, x: Any, dim: int) -> tuple[np.ndarray, Any]:
        """Device queries as unit float32 rows on the device, and their host copy (the
        exact re-scoring reads it: n x dim floats, the size of a small result)."""
        check = ops.check_cuda_vectors if ops.is_cuda_array(x) else ops.check_vectors
        check(x, "queries", dim)  # InvalidInputError naming the shape (NaN / inf: below)
        import torch

        q = x.detach().to(dtype=torch.float32, copy=True).contiguous()
        ops.normalize_rows_(q)  # NaN / inf raise here, naming the row
        return q.cpu().numpy(), q

    def upload(self, q: np.ndarray) -> Any:
        """Host queries on the device: one copy."""
        import torch

        return torch.from_numpy(q).to(self.device)

    def rows(self, host: np.ndarray, n: int, layout: int) -> Any:
        """host[:n] on the device, brought up to date first if the host table moved on."""
        current = self._rows
        if current is None or current.n != n or current.layout != layout:
            with self._mutex:
                current = self._rows
                if current is None or current.n != n or current.layout != layout:
                    current = self._follow(current, host, n, layout)
                    self._rows = current  # published whole: readers never see a partial one
        return current.buffer[:n]

    def _follow(self, old: _Rows | None, host: np.ndarray, n: int, layout: int) -> _Rows:
        import torch

        start = old.n if old is not None and old.layout == layout and old.n <= n else 0
        if start and n <= len(old.buffer):  # type: ignore[union-attr]
            buffer = old.buffer  # type: ignore[union-attr]
        else:
            capacity = n if not start else max(n, len(old.buffer) * 3 // 2)  # type: ignore[union-attr]
            buffer = torch.empty((capacity, host.shape[1]), dtype=torch.float32, device=self.device)
            if start:
                buffer[:start] = old.buffer[:start]  # type: ignore[union-attr]
        buffer[start:n].copy_(torch.from_numpy(host[start:n]))  # straight into place
        if self.device.type == "cuda":  # other threads' streams may read it next
            torch.cuda.synchronize(self.device)
        return _Rows(buffer, n, layout)

    def topk(
        self, q: Any, rows: Any, todo: np.ndarray, fetch: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, slots) of queries q[todo] over `rows`, (len(todo), fetch), on the host."""
        import torch

        if len(todo) != len(q):
            q = q[torch.as_tensor(todo, device=q.device)]
        scores, slots = ops.topk_cosine(q, rows, fetch)
        return scores.cpu().numpy(), slots.cpu().numpy()

    def count_search(self) -> None:
        with self._count_lock:
            self.searches += 1
