"""ONNX Runtime backend: the exported, fused BERT graph on the CPU, CUDA or TensorRT EP.

`onnxruntime` (CPU) and `onnxruntime-gpu` install the same Python module, so installing one
over the other overwrites files and uninstalling either breaks both; `ort_distribution()`
says which one is here (and warns when both are). ONNX Runtime silently drops a provider it
cannot load, so every session is checked for the provider it was asked for.

ONNX Runtime's telemetry stays off: ORT_DISABLE_TELEMETRY=1 is set before onnxruntime is
imported (embengine/__init__.py, and here), and `disable_telemetry_events()` is called on
every encoder in case the caller imported onnxruntime first.
"""

from __future__ import annotations

import logging
import os
from importlib import metadata
from typing import Any

import numpy as np

from embengine._optional import require
from embengine.device import Device
from embengine.encoders.base import pool
from embengine.models import ModelSpec
from embengine.models.onnx_export import cache_dir, cached_export

log = logging.getLogger("embengine")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # read when onnxruntime is imported

ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu")
# precision -> devices it runs on. bf16 stays with the torch backend: ORT's CUDA EP lacks
# bf16 kernels for most of the fused BERT ops.
PRECISION_DEVICES = {
    "fp32": (Device.CPU, Device.CUDA),
    "int8": (Device.CPU,),
    "fp16": (Device.CUDA,),
}


def ort_distribution() -> str:
    """Which ONNX Runtime package is installed, e.g. "onnxruntime-gpu 1.20.1"."""
    found = []
    for name in ORT_DISTRIBUTIONS:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    if len(found) > 1:
        return (
            f"{' and '.join(found)} are both installed and overwrite each other's files: "
            "pip uninstall -y onnxruntime onnxruntime-gpu, then install exactly one"
        )
    return found[0] if found else "none"


class OnnxEncoder:
    """Runs the exported graph with ONNX Runtime; pooling goes through embengine.ops.

    `device` is where the Engine wants to run; with `fallback_to_cpu` (device="auto") a
    CUDA request that ONNX Runtime cannot serve drops to the CPU EP and says why in
    `details`, otherwise it raises. `tensorrt` uses the TensorRT EP (CUDA only).
    """

    def __init__(
        self,
        spec: ModelSpec,
        device: Device,
        precision: str = "auto",
        *,
        tensorrt: bool = False,
        fallback_to_cpu: bool = False,
    ) -> None:
        ort = require("onnxruntime", "the onnx backend")
        if os.environ.get("ORT_DISABLE_TELEMETRY") == "1":
            ort.disable_telemetry_events()  # no uploads, even if onnxruntime came first
        self.spec = spec
        self.details: dict[str, object] = {"onnxruntime": ort_distribution()}
        available = ort.get_available_providers()
        if device is Device.CUDA and "CUDAExecutionProvider" not in available:
            reason = (
                f"ONNX Runtime has no CUDA provider (installed: {ort_distribution()}; "
                "for CUDA install onnxruntime-gpu instead: pip uninstall -y onnxruntime && "
                "pip install 'embengine[onnx-gpu]')"
            )
            if not fallback_to_cpu:
                raise RuntimeError(f"device='cuda' with the onnx backend: {reason}")
            log.warning("onnx backend falls back to the CPU: %s", reason)
            self.details["fallback"] = reason
            device = Device.CPU
        if tensorrt and (device is not Device.CUDA or "TensorrtExecutionProvider" not in available):
            raise RuntimeError(
                "the onnx-tensorrt backend needs a CUDA device and onnxruntime-gpu with the "
                f"TensorRT provider (providers here: {available})"
            )
        if precision == "auto":
            precision = "fp16" if device is Device.CUDA else "fp32"
        if precision not in PRECISION_DEVICES:
            raise ValueError(
                f"the onnx backend's precision must be one of {sorted(PRECISION_DEVICES)} or "
                f"'auto', got {precision!r} (bf16 runs on the torch backend)"
            )
        if device not in PRECISION_DEVICES[precision]:
            devices = [d.value for d in PRECISION_DEVICES[precision]]
            raise ValueError(f"the onnx backend runs {precision} only on {devices}")
        self.device = device
        self.precision = precision
        self.name = "onnx-tensorrt" if tensorrt else "onnx"
        graph_precision = "fp32" if tensorrt else precision  # TensorRT lowers precision itself
        model, path = cached_export(
            spec, precision=graph_precision, variant="plain" if tensorrt else "fused"
        )
        self.details["export"] = str(path)
        providers = self._providers(device, precision, tensorrt)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(model, options, providers=providers)
        got = self.session.get_providers()
        wanted = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
        if got[0] != wanted:
            raise RuntimeError(
                f"ONNX Runtime was asked for {wanted} but the session got {got} "
                f"(installed: {ort_distribution()}); check the CUDA / TensorRT libraries"
            )
        self.details["providers"] = got
        self._torch: Any = None
        if device is Device.CUDA:
            self._torch = require("torch", "the onnx backend on CUDA (IO binding)")
            self.torch_device = self._torch.device("cuda", self._torch.cuda.current_device())

    @staticmethod
    def _providers(device: Device, precision: str, tensorrt: bool) -> list[Any]:
        if device is Device.CPU:
            return ["CPUExecutionProvider"]
        import torch

        cuda = ("CUDAExecutionProvider", {"device_id": torch.cuda.current_device()})
        if not tensorrt:
            return [cuda, "CPUExecutionProvider"]
        trt_options = {
            "device_id": torch.cuda.current_device(),
            "trt_fp16_enable": precision == "fp16",
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache_dir() / "tensorrt"),
        }
        return [("TensorrtExecutionProvider", trt_options), cuda, "CPUExecutionProvider"]

    def encode(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        if self.device is Device.CUDA:
            return self._encode_cuda(input_ids, attention_mask)
        (states,) = self.session.run(
            None, {"input_ids": input_ids, "attention_mask": attention_mask}
        )
        return pool(states, attention_mask, self.spec.pooling)

    def _encode_cuda(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.encode_device(input_ids, attention_mask).cpu().numpy()

    def encode_device(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> Any:
        """IO binding: inputs copied once to the GPU, states stay there for the pooling kernel;
        the pooled rows come back as a CUDA torch tensor (no host copy). CUDA only."""
        torch = self._torch
        if torch is None:
            from embengine.errors import BackendError

            raise BackendError("encode_device needs the onnx backend on CUDA")
        device = self.torch_device
        ids = torch.from_numpy(input_ids).to(device)
        mask = torch.from_numpy(attention_mask).to(device)
        b, t = ids.shape
        states = torch.empty((b, t, self.spec.dim), dtype=torch.float32, device=device)
        torch.cuda.current_stream().synchronize()  # ORT runs on its own stream
        binding = self.session.io_binding()
        for name, tensor in (("input_ids", ids), ("attention_mask", mask)):
            binding.bind_input(name, "cuda", device.index, np.int64, (b, t), tensor.data_ptr())
        binding.bind_output(
            "states", "cuda", device.index, np.float32, (b, t, self.spec.dim), states.data_ptr()
        )
        self.session.run_with_iobinding(binding)  # synchronises ORT's stream before returning
        return pool(states, mask, self.spec.pooling)
