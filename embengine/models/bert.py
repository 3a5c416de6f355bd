"""A compact BERT encoder in PyTorch, loading sentence-transformers / Hugging Face weights.

Written here rather than taken from `transformers` so that the runtime needs only torch and
safetensors, and so attention can use torch's fused scaled_dot_product_attention.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

SUPPORTED_MODEL_TYPES = ("bert",)


def supports(config: dict) -> bool:
    """True when this module computes exactly what Hugging Face's BertModel does for `config`
    (other BERT variants, and every other architecture, run through models/hf.py)."""
    return (
        config.get("model_type") in SUPPORTED_MODEL_TYPES
        and config.get("hidden_act", "gelu") == "gelu"
        and config.get("position_embedding_type", "absolute") == "absolute"
    )


class BertLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, intermediate: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=eps)
        self.ffn_in = nn.Linear(hidden, intermediate)
        self.ffn_out = nn.Linear(intermediate, hidden)
        self.ffn_norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        """`attn_mask`: bool (batch, 1, 1, tokens), or an additive float mask for export."""
        b, t, h = x.shape
        if attn_mask.dtype == torch.bool:
            q, k, v = self.qkv(x).view(b, t, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        else:
            ctx = self._explicit_attention(x, attn_mask)
        x = self.attn_norm(x + self.attn_out(ctx.transpose(1, 2).reshape(b, t, h)))
        return self.ffn_norm(x + self.ffn_out(F.gelu(self.ffn_in(x))))

    def _explicit_attention(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        """Attention spelled out (separate q/k/v, matmul, scale, mask, softmax) for ONNX export.

        This is the shape ONNX Runtime's BERT optimizer recognises and fuses into one
        Attention op; the SDPA form exports as a tangle it cannot fuse.
        """
        b, t, h = x.shape
        d = h // self.heads
        weights, biases = self.qkv.weight.chunk(3), self.qkv.bias.chunk(3)
        q, k, v = (
            F.linear(x, w, bias).view(b, t, self.heads, d).permute(0, 2, 1, 3)
            for w, bias in zip(weights, biases, strict=True)
        )
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d) + additive_mask
        return torch.matmul(scores.softmax(dim=-1), v)


class BertEncoder(nn.Module):
    """Token states of a BERT model: (input_ids, attention_mask) -> (batch, tokens, hidden)."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        model_type = config.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"model_type {model_type!r} is not supported by the torch backend "
                f"(supported: {SUPPORTED_MODEL_TYPES})"
            )
        if config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"hidden_act {config['hidden_act']!r} is not supported (only 'gelu')")
        hidden, eps = config["hidden_size"], config.get("layer_norm_eps", 1e-12)
        self.num_heads = int(config["num_attention_heads"])
        self.hidden_size = int(hidden)
        self.explicit_attention = False  # True while exporting to ONNX (see BertLayer)
        self.word = nn.Embedding(config["vocab_size"], hidden)
        self.position = nn.Embedding(config["max_position_embeddings"], hidden)
        self.token_type = nn.Embedding(config.get("type_vocab_size", 2), hidden)
        self.embed_norm = nn.LayerNorm(hidden, eps=eps)
        self.layers = nn.ModuleList(
            BertLayer(hidden, config["num_attention_heads"], config["intermediate_size"], eps)
            for _ in range(config["num_hidden_layers"])
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        t = input_ids.shape[1]
        positions = torch.arange(t, device=input_ids.device)
        x = self.word(input_ids) + self.position(positions)[None] + self.token_type.weight[0]
        x = self.embed_norm(x)
        if self.explicit_attention:
            # Additive mask (batch, 1, 1, tokens): 0 where a key may be attended to, -1e4 not.
            attn_mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0
        else:
            # Boolean mask (batch, 1, 1, tokens): True where a key may be attended to.
            attn_mask = attention_mask.bool()[:, None, None, :]
        for layer in self.layers:
            x = layer(x, attn_mask)
        return x

    @classmethod
    def from_dir(cls, path: Path, config: dict, weights_file: Path) -> BertEncoder:
        """Build the module and load Hugging Face BERT weights into it."""
        model = cls(config)
        model.load_state_dict(_convert_state_dict(_read_weights(weights_file), config))
        return model.eval()


def _read_weights(file: Path) -> dict[str, torch.Tensor]:
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(file))
    return torch.load(file, map_location="cpu", weights_only=True)


def _convert_state_dict(hf: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """Rename Hugging Face BERT weights to this module's names (q, k, v fused into one)."""
    hf = {k.removeprefix("bert."): v for k, v in hf.items()}
    out = {
        "word.weight": hf["embeddings.word_embeddings.weight"],
        "position.weight": hf["embeddings.position_embeddings.weight"],
        "token_type.weight": hf["embeddings.token_type_embeddings.weight"],
        "embed_norm.weight": hf["embeddings.LayerNorm.weight"],
        "embed_norm.bias": hf["embeddings.LayerNorm.bias"],
    }
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        for kind in ("weight", "bias"):
            out[f"layers.{i}.qkv.{kind}"] = torch.cat(
                [hf[f"{p}attention.self.{n}.{kind}"] for n in ("query", "key", "value")]
            )
            out[f"layers.{i}.attn_out.{kind}"] = hf[f"{p}attention.output.dense.{kind}"]
            out[f"layers.{i}.attn_norm.{kind}"] = hf[f"{p}attention.output.LayerNorm.{kind}"]
            out[f"layers.{i}.ffn_in.{kind}"] = hf[f"{p}intermediate.dense.{kind}"]
            out[f"layers.{i}.ffn_out.{kind}"] = hf[f"{p}output.dense.{kind}"]
            out[f"layers.{i}.ffn_norm.{kind}"] = hf[f"{p}output.LayerNorm.{kind}"]
    return {k: v.float() for k, v in out.items()}
