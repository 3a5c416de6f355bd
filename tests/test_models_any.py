"""Any local sentence-transformers directory: BERT, MPNet, XLM-RoBERTa and DistilBERT.

Each model is tiny (hidden 32, 2 layers) with random weights from a transformers config and a
tokenizer built here from a small vocabulary (nothing is downloaded), saved by
sentence-transformers itself. embengine's vectors (torch and ONNX backends) must match
sentence-transformers' encode on the same directory, prompts included.
"""

from __future__ import annotations

import json
import shutil
import string
import warnings
from pathlib import Path

import numpy as np
import pytest

from embengine import Engine
from embengine.errors import InvalidInputError
from embengine.models import load_model_spec

transformers = pytest.importorskip("transformers")
st = pytest.importorskip("sentence_transformers")
st_modules = pytest.importorskip("sentence_transformers.sentence_transformer.modules")
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors  # noqa: E402

WORDS = [
    *("the", "a", "cat", "dog", "sat", "on", "mat", "query", "passage", "document", "search"),
    *("hello", "world", "is", "what", "how", "why", "fast", "engine", "vector", "model"),
    *("text", "find", "near", "duplicate", "log", "error"),
]
TEXTS = [
    "the cat sat on the mat",
    "hello world",
    "what is a fast vector search engine",
    "a dog",
    "find the near duplicate log error in the text",
    "why",
]
PROMPTS = {"query": "query: ", "passage": "passage: "}


def _wordpiece(first: list[str], special: dict[str, str]) -> Tokenizer:
    """A BERT-style WordPiece tokenizer: `first` are the special tokens in id order,
    `special` maps role (pad, unk, cls, sep) -> token."""
    pieces = [*WORDS, *string.ascii_lowercase, *":.,?!"]
    pieces += ["##" + c for c in string.ascii_lowercase]
    vocab = {t: i for i, t in enumerate(first + pieces)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token=special["unk"]))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    cls, sep = special["cls"], special["sep"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B {sep}",
        special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])],
    )
    return tok


def _unigram() -> Tokenizer:
    """An XLM-R-style Unigram tokenizer: <s>=0, <pad>=1, </s>=2, <unk>=3, '▁' word starts."""
    pieces = ["<s>", "<pad>", "</s>", "<unk>"]
    pieces += ["▁" + w for w in WORDS] + ["▁", *string.ascii_lowercase, *":.,?!"]
    tok = Tokenizer(models.Unigram([(p, -float(i % 7) - 1.0) for i, p in enumerate(pieces)], 3))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    return tok


BERT_SPECIAL = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]"}
ROBERTA_SPECIAL = {"pad": "<pad>", "unk": "<unk>", "cls": "<s>", "sep": "</s>"}
SIZES = {"num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}


def _architecture(name: str) -> tuple[object, Tokenizer, dict[str, str]]:
    """(transformers config, tokenizer, special tokens) of one tiny architecture."""
    if name == "xlm-roberta":
        tok, special = _unigram(), ROBERTA_SPECIAL
    elif name == "mpnet":  # MPNet's WordPiece with RoBERTa's special tokens
        tok, special = (
            _wordpiece(["<s>", "<pad>", "</s>", "<unk>"], ROBERTA_SPECIAL),
            ROBERTA_SPECIAL,
        )
    else:
        tok, special = _wordpiece(["[PAD]", "[UNK]", "[CLS]", "[SEP]"], BERT_SPECIAL), BERT_SPECIAL
    vocab, pad = tok.get_vocab_size(), tok.token_to_id(special["pad"])
    common = {"vocab_size": vocab, "pad_token_id": pad, "initializer_range": 0.2}
    if name == "bert":
        config = transformers.BertConfig(
            hidden_size=32, max_position_embeddings=64, **SIZES, **common
        )
    elif name == "distilbert":
        config = transformers.DistilBertConfig(
            dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64, **common
        )
    elif name == "mpnet":
        config = transformers.MPNetConfig(
            hidden_size=32, max_position_embeddings=66, **SIZES, **common
        )
    else:
        config = transformers.XLMRobertaConfig(
            hidden_size=32,
            max_position_embeddings=66,
            bos_token_id=0,
            eos_token_id=2,
            **SIZES,
            **common,
        )
    return config, tok, special


def make_st_dir(
    root: Path, name: str, *, pooling: str = "mean", normalize: bool = True, seed: int = 0
) -> Path:
    """A tiny random-weight model of architecture `name`, saved by sentence-transformers."""
    import torch

    config, tok, special = _architecture(name)
    torch.manual_seed(seed)
    hf_dir, out = root / f"{name}-hf", root / f"{name}-{pooling}"
    model = transformers.AutoModel.from_config(config)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token=special["unk"],
        pad_token=special["pad"],
        cls_token=special["cls"],
        sep_token=special["sep"],
        bos_token=special["cls"],
        eos_token=special["sep"],
    )
    model.save_pretrained(hf_dir)
    fast.save_pretrained(hf_dir)
    modules = [
        st_modules.Transformer(str(hf_dir), max_seq_length=32),
        st_modules.Pooling(32, pooling_mode=pooling),
    ]
    if normalize:
        modules.append(st_modules.Normalize())
    st.SentenceTransformer(modules=modules, prompts=PROMPTS, device="cpu").save(str(out))
    return out


@pytest.fixture(scope="module")
def st_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("st-models")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {name: make_st_dir(root, name) for name in ARCHITECTURES}


ARCHITECTURES = ("bert", "mpnet", "xlm-roberta", "distilbert")


def st_encode(path: Path, texts: list[str], **options: object) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = st.SentenceTransformer(str(path), device="cpu", local_files_only=True)
        return model.encode(texts, convert_to_numpy=True, batch_size=4, **options)


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


@pytest.mark.parametrize("backend", ["torch", "onnx"])
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_vectors_match_sentence_transformers(
    st_dirs: dict[str, Path], name: str, backend: str
) -> None:
    expected = st_encode(st_dirs[name], TEXTS)
    # The models' vectors differ from text to text, so a wrong pad id or pooling would show.
    cos = expected @ expected.T
    assert cos[~np.eye(len(TEXTS), dtype=bool)].max() < 0.995
    engine = Engine(st_dirs[name], device="cpu", backend=backend)
    assert engine.describe()["architecture"] == name
    assert min_cosine(engine.embed(TEXTS), expected) >= 0.9999


def test_pad_token_is_the_tokenizers_own(st_dirs: dict[str, Path]) -> None:
    assert load_model_spec(st_dirs["bert"]).pad_token_id == 0
    assert load_model_spec(st_dirs["xlm-roberta"]).pad_token_id == 1
    assert load_model_spec(st_dirs["mpnet"]).pad_token_id == 1
    # XLM-R positions start after the padding index: 66 positions hold 64 tokens; the
    # sentence-transformers config asked for 32.
    assert load_model_spec(st_dirs["xlm-roberta"]).max_seq_length == 32


@pytest.mark.parametrize("name", ["xlm-roberta", "bert"])
def test_prompts_as_sentence_transformers_applies_them(st_dirs: dict[str, Path], name: str) -> None:
    engine = Engine(st_dirs[name], device="cpu", backend="torch")
    for options in ({"prompt_name": "query"}, {"prompt": "search: "}):
        expected = st_encode(st_dirs[name], TEXTS, **options)
        got = engine.embed(TEXTS, **options)  # type: ignore[arg-type]
        assert min_cosine(got, expected) >= 0.9999
        assert min_cosine(got, engine.embed(TEXTS)) < 0.9999  # the prompt changed the vectors
    # encode_query / encode_document: the "query" prompt, and sentence-transformers 6.x
    # saved an empty "document" prompt, which comes before "passage"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = st.SentenceTransformer(str(st_dirs[name]), device="cpu", local_files_only=True)
        query, document = model.encode_query(TEXTS), model.encode_document(TEXTS)
    assert min_cosine(engine.embed_queries(TEXTS), query) >= 0.9999
    assert min_cosine(engine.embed_documents(TEXTS), document) >= 0.9999
    assert min_cosine(engine.embed_documents(TEXTS), engine.embed(TEXTS, prompt="")) >= 0.99999
    with pytest.raises(InvalidInputError, match="'nope' is not one of"):
        engine.embed(TEXTS, prompt_name="nope")
    with pytest.raises(InvalidInputError, match="not both"):
        engine.embed(TEXTS, prompt="x", prompt_name="query")


def with_prompts(source: Path, target: Path, **changes: object) -> Path:
    """A copy of the model directory `source` with config_sentence_transformers.json changed."""
    shutil.copytree(source, target)
    cfg_file = target / "config_sentence_transformers.json"
    cfg_file.write_text(json.dumps({**json.loads(cfg_file.read_text()), **changes}))
    return target


def test_index_and_search_use_document_and_query_prompts(
    st_dirs: dict[str, Path], tmp_path: Path
) -> None:
    prompts = {"query": "query: ", "passage": "passage: "}  # no "document": passage is used
    path = with_prompts(st_dirs["bert"], tmp_path / "e5-like", prompts=prompts)
    engine = Engine(path, device="cpu", backend="torch")
    passage = engine.embed(TEXTS, prompt="passage: ")
    assert min_cosine(engine.embed_documents(TEXTS), passage) >= 0.99999
    assert min_cosine(engine.embed_documents(TEXTS), engine.embed(TEXTS)) < 0.9999
    index = engine.index(TEXTS)
    np.testing.assert_allclose(index.get([0, 1]), engine.embed_documents(TEXTS[:2]), atol=1e-6)
    assert index.texts([0]) == [TEXTS[0]]  # stored without the prompt
    scores, ids = engine.search(TEXTS[:2], index, k=1)
    want = engine.embed_queries(TEXTS[:2]) @ engine.embed_documents(TEXTS).T
    np.testing.assert_array_equal(ids[:, 0], want.argmax(axis=1))
    np.testing.assert_allclose(scores[:, 0], want.max(axis=1), atol=1e-5)


def test_default_prompt_name_applies_when_none_is_given(
    st_dirs: dict[str, Path], tmp_path: Path
) -> None:
    path = with_prompts(st_dirs["bert"], tmp_path / "with-default", default_prompt_name="query")
    engine = Engine(path, device="cpu", backend="torch")
    assert min_cosine(engine.embed(TEXTS), st_encode(path, TEXTS)) >= 0.9999
    assert min_cosine(engine.embed(TEXTS), engine.embed(TEXTS, prompt="query: ")) >= 0.99999
    assert min_cosine(engine.embed(TEXTS, prompt=""), st_encode(path, TEXTS, prompt="")) >= 0.9999


@pytest.mark.parametrize("pooling", ["cls", "max", "lasttoken"])
def test_pooling_modes_match(tmp_path: Path, pooling: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = make_st_dir(tmp_path, "xlm-roberta", pooling=pooling, normalize=False)
    spec = load_model_spec(path)
    assert (spec.pooling, spec.normalize) == (pooling, False)
    expected = st_encode(path, TEXTS)
    for backend in ("torch", "onnx"):
        got = Engine(path, device="cpu", backend=backend).embed(TEXTS)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # unit rows
        assert min_cosine(got, expected) >= 0.9999


def test_both_pooling_config_forms_load(st_dirs: dict[str, Path], tmp_path: Path) -> None:
    new_form = json.loads((st_dirs["bert"] / "1_Pooling" / "config.json").read_text())
    assert new_form["pooling_mode"] == "mean"  # what sentence-transformers 6.x writes
    path = tmp_path / "old-form"
    shutil.copytree(st_dirs["bert"], path)
    old = {"word_embedding_dimension": 32, "pooling_mode_cls_token": True}
    (path / "1_Pooling" / "config.json").write_text(json.dumps(old))
    assert load_model_spec(path).pooling == "cls"
    (path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": ["cls", "max"]}))
    with pytest.raises(InvalidInputError, match=r"pooling \['cls', 'max'\] is not supported"):
        load_model_spec(path)


def test_directory_onnx_model_is_used(st_dirs: dict[str, Path], tmp_path: Path) -> None:
    """A directory's own onnx/model.onnx (token_type_ids input, last_hidden_state output)."""
    import torch

    path = tmp_path / "with-onnx"
    shutil.copytree(st_dirs["mpnet"], path)

    class WithTokenTypes(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = transformers.AutoModel.from_pretrained(path, attn_implementation="eager")

        def forward(self, input_ids, attention_mask, token_type_ids):  # type: ignore[no-untyped-def]
            out = self.model(input_ids=input_ids, attention_mask=attention_mask)
            return -out.last_hidden_state  # negated: shows this file's graph is the one run

    (path / "onnx").mkdir()
    ids = torch.ones((2, 5), dtype=torch.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            WithTokenTypes().eval(),
            (ids, ids, ids * 0),
            str(path / "onnx" / "model.onnx"),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            dynamic_axes={
                n: {0: "b", 1: "t"} for n in ("input_ids", "attention_mask", "token_type_ids")
            },
            opset_version=17,
            dynamo=False,
        )
    assert load_model_spec(path).onnx_file == path.resolve() / "onnx" / "model.onnx"
    engine = Engine(path, device="cpu", backend="onnx")
    assert min_cosine(-engine.embed(TEXTS), st_encode(st_dirs["mpnet"], TEXTS)) >= 0.9999
    assert load_model_spec(path).fingerprint != load_model_spec(st_dirs["mpnet"]).fingerprint


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_truncate_dim_is_matryoshka(st_dirs: dict[str, Path], backend: str) -> None:
    full = Engine(st_dirs["mpnet"], device="cpu", backend=backend).embed(TEXTS)
    engine = Engine(st_dirs["mpnet"], device="cpu", backend=backend, truncate_dim=8)
    got = engine.embed(TEXTS)
    assert got.shape == (len(TEXTS), 8)
    assert engine.dim == 8
    want = full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True)
    np.testing.assert_allclose(got, want, atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = st.SentenceTransformer(str(st_dirs["mpnet"]), device="cpu", truncate_dim=8)
        assert min_cosine(got, model.encode(TEXTS, convert_to_numpy=True)) >= 0.9999
    assert engine.spec.fingerprint != load_model_spec(st_dirs["mpnet"]).fingerprint
    with pytest.raises(InvalidInputError, match="truncate_dim must be"):
        load_model_spec(st_dirs["mpnet"], truncate_dim=33)


def test_not_a_sentence_transformers_dir_names_what_is_missing(
    st_dirs: dict[str, Path], tmp_path: Path
) -> None:
    path = tmp_path / "broken"
    shutil.copytree(st_dirs["bert"], path)
    (path / "modules.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"modules\.json is missing"):
        Engine(path, device="cpu")
    shutil.copy(st_dirs["bert"] / "modules.json", path / "modules.json")
    (path / "model.safetensors").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"model\.safetensors or pytorch_model\.bin is missing"
    ):
        Engine(path, device="cpu")
    hf_only = tmp_path / "hf-only"  # a plain transformers directory, no sentence-transformers files
    shutil.copytree(
        st_dirs["bert"], hf_only, ignore=shutil.ignore_patterns("modules.json", "1_*", "2_*")
    )
    with pytest.raises(
        FileNotFoundError, match="not a usable sentence-transformers model directory"
    ):
        load_model_spec(hf_only)
    modules = json.loads((st_dirs["bert"] / "modules.json").read_text())
    modules.insert(
        2, {"idx": 9, "name": "9", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    )
    (path / "modules.json").write_text(json.dumps(modules))
    shutil.copy(st_dirs["bert"] / "model.safetensors", path / "model.safetensors")
    with pytest.raises(InvalidInputError, match=r"\['Dense'\] not supported"):
        load_model_spec(path)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_cuda_torch_matches_sentence_transformers(st_dirs: dict[str, Path], name: str) -> None:
    """The same parity on CUDA: fp32 as on the CPU, fp16 within half precision, truncation too."""
    expected = st_encode(st_dirs[name], TEXTS)
    fp32 = Engine(st_dirs[name], device="cuda", backend="torch", precision="fp32")
    assert min_cosine(fp32.embed(TEXTS), expected) >= 0.9999
    fp16 = Engine(st_dirs[name], device="cuda", backend="torch", precision="fp16", truncate_dim=8)
    assert min_cosine(fp16.embed(TEXTS), expected[:, :8]) >= 0.999  # min_cosine renormalises
    prompted = st_encode(st_dirs[name], TEXTS, prompt="query: ")[:, :8]
    assert min_cosine(fp16.embed(TEXTS, prompt="query: "), prompted) >= 0.999
