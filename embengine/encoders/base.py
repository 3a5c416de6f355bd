"""The narrow protocol every backend implements, and the pooling step they share."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from embengine import ops
from embengine.device import Device


class Encoder(Protocol):
    """A backend: padded token ids of one batch -> (batch, dim) float32 unit rows.

    `input_ids` and `attention_mask` are int64 arrays of shape (batch, tokens); rows come
    back in the same order. Backends hold the model; batching and ordering live above them.
    """

    name: str
    device: Device
    precision: str
    details: dict[str, object]  # backend facts for Engine.describe() (providers, export file)

    def encode(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...


def pool(states: Any, mask: Any, mode: str) -> Any:
    """Token states (batch, tokens, dim) -> unit rows, in the states' framework and device.

    Mean pooling is the fused kernel; cls, max and lasttoken use plain array ops (numpy or torch),
    then the normalisation kernel.
    """
    if mode == "mean":
        return ops.mean_pool_normalize(states, mask)
    if mode not in ("cls", "max", "lasttoken"):
        raise ValueError(f"unknown pooling mode {mode!r}")
    if isinstance(states, np.ndarray):
        if mode == "lasttoken":  # batches are right-padded: the last real token
            last = np.maximum(mask.sum(axis=1) - 1, 0)
            pooled = states[np.arange(len(states)), last].astype(np.float32)
        elif mode == "cls":
            pooled = states[:, 0].astype(np.float32)
        else:
            masked = np.where(mask[:, :, None] != 0, states.astype(np.float32), -np.inf)
            pooled = np.nan_to_num(masked.max(axis=1), neginf=0.0)
        return ops.normalize_rows_(np.ascontiguousarray(pooled, dtype=np.float32))
    if mode == "lasttoken":
        last = (mask.sum(dim=1) - 1).clamp(min=0)[:, None, None].expand(-1, 1, states.shape[-1])
        pooled = states.gather(1, last).squeeze(1).float()
    elif mode == "cls":
        pooled = states[:, 0].float()
    else:
        masked = states.float().masked_fill(mask[:, :, None] == 0, float("-inf"))
        pooled = masked.amax(dim=1).nan_to_num(neginf=0.0)
    return ops.normalize_rows_(pooled.contiguous())
