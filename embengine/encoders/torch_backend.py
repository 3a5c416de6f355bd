"""PyTorch backend: the model (models/hf.py) on CPU (fp32) or CUDA (fp16 / bf16 / fp32)."""

from __future__ import annotations

from typing import Any

import numpy as np

from embengine._optional import require
from embengine.device import Device
from embengine.encoders.base import pool
from embengine.models import ModelSpec

PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


class TorchEncoder:
    """Runs the model with torch; pooling and normalisation go through embengine.ops."""

    name = "torch"

    def __init__(self, spec: ModelSpec, device: Device, precision: str = "auto") -> None:
        torch = require("torch", "the torch backend")
        from embengine.models.hf import load_token_module

        if precision == "auto":
            precision = "fp16" if device is Device.CUDA else "fp32"
        if precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {sorted(PRECISIONS)} or 'auto', got {precision!r}"
            )
        if device is Device.CPU and precision != "fp32":
            raise ValueError(f"the torch backend runs fp32 on the CPU, not {precision}")
        self.device = device
        self.precision = precision
        self.spec = spec
        self.details: dict[str, object] = {"torch": torch.__version__}
        self._torch = torch
        self.torch_device = torch.device("cuda" if device is Device.CUDA else "cpu")
        model = load_token_module(spec)  # BERT: models/bert.py; others: transformers
        self.model = model.to(self.torch_device, dtype=getattr(torch, PRECISIONS[precision]))

    def encode(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.encode_device(input_ids, attention_mask).cpu().numpy()

    def encode_device(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> Any:
        """Pooled unit rows as a float32 torch tensor where the model runs (no host copy)."""
        torch = self._torch
        with torch.inference_mode():
            ids = torch.from_numpy(input_ids).to(self.torch_device, non_blocking=True)
            mask = torch.from_numpy(attention_mask).to(self.torch_device, non_blocking=True)
            return pool(self.model(ids, mask), mask, self.spec.pooling)
