"""Encoder backends: token ids in, pooled unit-norm embeddings out, and the choice between them."""

from __future__ import annotations

from embengine._optional import available
from embengine.device import Device
from embengine.encoders.base import Encoder, pool
from embengine.models import ModelSpec

__all__ = ["BACKENDS", "Encoder", "make_encoder", "pool"]

BACKENDS = ("auto", "torch", "onnx", "onnx-tensorrt")


def make_encoder(
    spec: ModelSpec, device: Device, backend: str, precision: str, *, device_was_auto: bool
) -> tuple[Encoder, str]:
    """Build the backend asked for, or for "auto" the fastest one available; (encoder, why).

    Measured in benchmarks/bench_encode.py: on the CPU, ONNX Runtime with the fused BERT
    graph beats torch eager; on CUDA, torch fp16 with SDPA is the default until a GPU run
    of the same benchmark says otherwise. int8 is never chosen by "auto".
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    reason = "asked for explicitly"
    if backend == "auto":
        backend, reason = _auto_backend(device)
    if backend == "torch":
        from embengine.encoders.torch_backend import TorchEncoder

        return TorchEncoder(spec, device, precision), reason
    from embengine.encoders.onnx_backend import OnnxEncoder

    encoder = OnnxEncoder(
        spec,
        device,
        precision,
        tensorrt=backend == "onnx-tensorrt",
        fallback_to_cpu=device_was_auto,
    )
    return encoder, reason


def _auto_backend(device: Device) -> tuple[str, str]:
    if device is Device.CUDA:
        return "torch", (
            "auto on CUDA: torch fp16 with SDPA (the ONNX CUDA path has not been measured "
            "faster yet; run benchmarks/bench_encode.py on the GPU)"
        )
    if not available("onnxruntime"):
        return "torch", (
            "auto on CPU: onnxruntime is not installed (pip install 'embengine[onnx]'), so torch"
        )
    return "onnx", "auto on CPU: ONNX Runtime with the fused BERT graph is the fastest CPU backend"
