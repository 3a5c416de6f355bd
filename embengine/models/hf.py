"""Token-state modules for every architecture, and the directory's own ONNX graph.

BERT runs on embengine's module (models/bert.py: fused SDPA, an export ORT's BERT optimizer
fuses). Every other architecture (MPNet, XLM-RoBERTa, DistilBERT, ...) runs through
transformers' AutoModel, loaded from the directory only (local_files_only: nothing is
fetched). Both give (input_ids, attention_mask) -> token states (batch, tokens, dim), where
dim is the Matryoshka truncation when one is set: pooling is per dimension, so pooling the
first dims of the states equals truncating the pooled vector.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from embengine.errors import BackendError
from embengine.models import ModelSpec

log = logging.getLogger("embengine")


class TokenStates(nn.Module):
    """`inner`'s token states, cut to the first `dim` features."""

    def __init__(self, inner: nn.Module, dim: int, hidden_size: int) -> None:
        super().__init__()
        self.inner = inner
        self.dim = dim
        self.hidden_size = hidden_size

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.inner(input_ids, attention_mask)
        return states if self.dim == self.hidden_size else states[..., : self.dim]


class AutoModelStates(nn.Module):
    """transformers' AutoModel, returning last_hidden_state."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def load_token_module(spec: ModelSpec, *, for_export: bool = False) -> TokenStates:
    """The model as a token-state module in eval mode, float32 on the CPU.

    for_export: transformers models use eager attention, which the ONNX exporter traces
    into plain ops (the torch backend uses SDPA).
    """
    hidden = spec.hidden_size or spec.dim
    if spec.fast_path:
        from embengine.models.bert import BertEncoder

        inner: nn.Module = BertEncoder.from_dir(spec.path, spec.config, spec.weights_file)
    else:
        inner = AutoModelStates(_auto_model(spec.path, "eager" if for_export else "sdpa"))
    return TokenStates(inner, spec.dim, hidden).eval()


def _auto_model(path: Path, attention: str) -> nn.Module:
    try:
        from transformers import AutoModel
    except ImportError as exc:
        raise BackendError(
            f"{path.name} is not a BERT model, so it runs through transformers' AutoModel: "
            "pip install 'embengine[hf]' (transformers)"
        ) from exc
    options = {"local_files_only": True, "trust_remote_code": False, "dtype": torch.float32}
    try:
        try:
            return AutoModel.from_pretrained(path, attn_implementation=attention, **options).eval()
        except ValueError as exc:  # this architecture has no SDPA attention: eager is exact too
            if attention == "eager":
                raise
            log.debug("%s: no SDPA attention (%s); using eager", path.name, exc)
            return AutoModel.from_pretrained(path, attn_implementation="eager", **options).eval()
    except (OSError, ValueError, KeyError) as exc:
        raise BackendError(
            f"transformers cannot load {path} as a local AutoModel ({exc}); models needing "
            "remote code or files outside the directory are not supported"
        ) from exc


def adapt_onnx(file: Path, dim: int) -> bytes:
    """The directory's onnx/model.onnx, reshaped to embengine's interface.

    Inputs become (input_ids, attention_mask): a token_type_ids input is replaced by zeros
    shaped like input_ids. The output is `states`, the token states (last_hidden_state, or
    the first output) cut to `dim` features.
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(file))
    graph = model.graph
    inputs = {i.name for i in graph.input}
    if not {"input_ids", "attention_mask"} <= inputs:
        raise BackendError(f"{file}: inputs {sorted(inputs)} lack input_ids / attention_mask")
    nodes = []
    if "token_type_ids" in inputs:
        keep = [i for i in graph.input if i.name != "token_type_ids"]
        del graph.input[:]
        graph.input.extend(keep)
        nodes += [
            helper.make_node("Shape", ["input_ids"], ["embengine_ids_shape"]),
            helper.make_node(
                "ConstantOfShape",
                ["embengine_ids_shape"],
                ["token_type_ids"],
                value=helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
            ),
        ]
    outputs = [o.name for o in graph.output]
    source = "last_hidden_state" if "last_hidden_state" in outputs else outputs[0]
    nodes.append(
        helper.make_node(
            "Slice",
            [source, "embengine_slice_start", "embengine_slice_end", "embengine_slice_axis"],
            ["states"],
        )
    )
    for name, value in (
        ("embengine_slice_start", 0),
        ("embengine_slice_end", dim),
        ("embengine_slice_axis", 2),
    ):
        graph.initializer.append(helper.make_tensor(name, TensorProto.INT64, [1], [value]))
    for node in reversed(nodes[:-1]):
        graph.node.insert(0, node)
    graph.node.append(nodes[-1])
    del graph.output[:]
    graph.output.append(
        helper.make_tensor_value_info("states", TensorProto.FLOAT, ["batch", "tokens", dim])
    )
    return model.SerializeToString()
