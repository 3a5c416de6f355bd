"""ONNX export of a model, once, cached on disk and verified on every load.

The graph comes from our own torch BERT module (`models/bert.py`, attention spelled out so
ONNX Runtime's BERT optimizer fuses it), then goes through `onnxruntime.transformers`'
optimizer (fused Attention, SkipLayerNormalization, BiasGelu) and, per precision, fp16
conversion or int8 dynamic quantisation. The graph ends at the token states; pooling and
normalisation stay in embengine's kernel, shared by every backend.
Other architectures (models/hf.py) use the directory's own onnx/model.onnx when it has one,
else an export of transformers' AutoModel, unfused.

A cache file is keyed by the model fingerprint (weights, config, tokenizer), the opset, the
precision, the graph variant and this module's export version: change any of them and a new
export is made. Files are written atomically and checksummed (embengine.io); a corrupt or
mismatched file is logged and replaced by a fresh export, never loaded. When the cache
cannot be written (read-only cache directory or HOME, no home at all), the export is kept
in memory for this process and a warning says so.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from embengine._optional import require
from embengine.io import CorruptFileError, load_arrays, save_arrays
from embengine.models import ModelSpec

log = logging.getLogger("embengine")

OPSET = 17
EXPORT_VERSION = 1  # bump when the export recipe changes, so old cache files are not reused
PRECISIONS = ("fp32", "fp16", "int8")
# "fused": ORT's BERT fusions (CPU and CUDA EPs). "plain": unfused ops, for TensorRT, which
# does not implement ORT's contrib ops and fuses the graph itself.
VARIANTS = ("fused", "plain")


def cache_dir() -> Path:
    """Where exports are kept: $EMBENGINE_CACHE_DIR, else $XDG_CACHE_HOME/embengine."""
    explicit = os.environ.get("EMBENGINE_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "embengine"


def export_key(
    spec: ModelSpec, *, precision: str, variant: str = "fused", opset: int = OPSET
) -> dict[str, object]:
    """Everything the exported graph depends on; stored in the file and checked on load."""
    if precision not in PRECISIONS:
        raise ValueError(f"ONNX precision must be one of {PRECISIONS}, got {precision!r}")
    if variant not in VARIANTS:
        raise ValueError(f"ONNX graph variant must be one of {VARIANTS}, got {variant!r}")
    return {
        "fingerprint": spec.fingerprint,
        "opset": opset,
        "precision": precision,
        "variant": variant,
        "export_version": EXPORT_VERSION,
    }


def cache_path(key: dict[str, object], directory: Path | None = None) -> Path:
    name = "{fingerprint}-opset{opset}-{precision}-{variant}-v{export_version}.onnx.eeb"
    return (directory or cache_dir()) / "onnx" / name.format(**key)


def cached_export(
    spec: ModelSpec,
    *,
    precision: str,
    variant: str = "fused",
    opset: int = OPSET,
    directory: Path | None = None,
) -> tuple[bytes, Path]:
    """The serialized ONNX model for (spec, precision, variant, opset), exporting on a miss.

    Returns (model bytes, cache file). A file that fails verification or holds another key
    is logged and replaced by a fresh export. A cache that cannot be written costs an
    export per process, with a warning, never an error.
    """
    key = export_key(spec, precision=precision, variant=variant, opset=opset)
    try:
        path = cache_path(key, directory)
    except RuntimeError as exc:  # Path.home(): no HOME and no password entry
        log.warning("no ONNX export cache (%s); exporting in memory", exc)
        return export(spec, precision=precision, variant=variant, opset=opset), Path("<memory>")
    if path.is_file():
        try:
            arrays, meta = load_arrays(path)
            if meta != key:
                raise CorruptFileError(f"{path} holds the export for {meta}, expected {key}")
            return arrays["onnx"].tobytes(), path
        except (CorruptFileError, KeyError, ValueError, OSError) as exc:
            log.warning("ONNX cache file %s is unusable (%s); exporting again", path, exc)
    log.info(
        "exporting %s to ONNX (%s, %s, opset %d) into %s",
        spec.name,
        precision,
        variant,
        opset,
        path,
    )
    model = export(spec, precision=precision, variant=variant, opset=opset)
    try:
        save_arrays(path, {"onnx": np.frombuffer(model, dtype=np.uint8)}, key)
    except OSError as exc:
        log.warning(
            "cannot write the ONNX export cache %s (%s); using the export in memory, which "
            "is made again by each process: set EMBENGINE_CACHE_DIR to a writable directory",
            path,
            exc,
        )
    return model, path


def export(spec: ModelSpec, *, precision: str, variant: str = "fused", opset: int = OPSET) -> bytes:
    """Export the model's token-state graph to ONNX bytes (no caching).

    BERT: our module, then ORT's BERT fusions. Other architectures: the directory's own
    onnx/model.onnx when present, else an export of transformers' AutoModel (unfused).
    """
    export_key(spec, precision=precision, variant=variant, opset=opset)  # validates
    torch = require("torch", "exporting the model to ONNX")
    require("onnx", "exporting the model to ONNX")
    from embengine.models.hf import adapt_onnx, load_token_module

    if variant == "plain" and precision != "fp32":
        raise ValueError("the plain graph (TensorRT) is exported in fp32; TensorRT picks fp16")
    if spec.onnx_file is not None:
        return _lower_precision(adapt_onnx(spec.onnx_file, spec.dim), precision)
    module = load_token_module(spec, for_export=True)
    if spec.fast_path:
        module.inner.explicit_attention = True
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The legacy exporter is chosen on purpose (dynamo=False below); the tracer's notes
        # about sizes turned into constants concern fixed sizes only (the head dimension).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        if not spec.fast_path:  # the exporter's notes on transformers' indexing (no negatives)
            warnings.simplefilter("ignore", UserWarning)
        example = torch.ones((2, 8), dtype=torch.int64)
        torch.onnx.export(
            module,
            (example, example),
            buffer,
            input_names=["input_ids", "attention_mask"],
            output_names=["states"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "tokens"},
                "attention_mask": {0: "batch", 1: "tokens"},
                "states": {0: "batch", 1: "tokens"},
            },
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,  # the TorchScript exporter gives the node pattern ORT's fusions expect
        )
    if variant == "plain":
        return buffer.getvalue()
    if not spec.fast_path:
        return _lower_precision(buffer.getvalue(), precision)
    bert = module.inner
    return _optimize(buffer.getvalue(), bert.num_heads, bert.hidden_size, precision)


def _optimize(model: bytes, num_heads: int, hidden_size: int, precision: str) -> bytes:
    """ORT's BERT fusions, then fp16 conversion or int8 dynamic quantisation."""
    import onnx

    require("onnxruntime", "optimizing the ONNX export")
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(
        onnx.load_from_string(model),
        model_type="bert",
        num_heads=num_heads,
        hidden_size=hidden_size,
        opt_level=0,  # graph fusions in Python only; the session applies ORT's own at load
    )
    fused = optimized.get_fused_operator_statistics()
    if not fused.get("Attention"):
        log.warning("ONNX export: attention was not fused (%s); the graph will run slower", fused)
    return _convert(optimized, precision)


def _lower_precision(model: bytes, precision: str) -> bytes:
    """An unfused graph (not BERT) in `precision`: fp32 as is, else converted as _optimize does."""
    if precision == "fp32":
        return model
    import onnx

    require("onnxruntime", "converting the ONNX export")
    from onnxruntime.transformers.onnx_model import OnnxModel

    return _convert(OnnxModel(onnx.load_from_string(model)), precision)


def _convert(optimized: Any, precision: str) -> bytes:
    """fp16 conversion or int8 dynamic quantisation of an ORT OnnxModel (fp32: serialised)."""
    import onnx

    if precision == "fp16":
        optimized.convert_float_to_float16(keep_io_types=True)
    if precision != "int8":
        return optimized.model.SerializeToString()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if not any(o.domain == "com.microsoft" for o in optimized.model.opset_import):
        # The fused ops live in ORT's domain; shape inference in the quantiser needs it declared.
        optimized.model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    with tempfile.TemporaryDirectory(prefix="embengine-onnx-") as tmp:
        fp32_path, int8_path = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(optimized.model, fp32_path)
        quantize_dynamic(
            fp32_path,
            int8_path,
            weight_type=QuantType.QInt8,
            per_channel=True,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        return int8_path.read_bytes()
