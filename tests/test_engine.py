"""Engine.embed: equal to sentence-transformers, order and batch invariant, strict on input."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from embengine import Engine
from embengine.models import default_model_dir, load_model_spec

GOLDEN = Path(__file__).parent / "data" / "golden_minilm.npz"


@pytest.fixture(scope="module")
def golden() -> tuple[list[str], np.ndarray]:
    data = np.load(GOLDEN)
    return [str(t) for t in data["texts"]], data["embeddings"]


def test_embeddings_equal_sentence_transformers(
    engine: Engine, golden: tuple[list[str], np.ndarray]
) -> None:
    texts, expected = golden
    assert len(texts) >= 200
    got = engine.embed(texts)
    cosine = (got * expected).sum(axis=1)
    assert cosine.min() >= 0.9999, (
        f"min cosine {cosine.min():.6f} at {texts[int(cosine.argmin())]!r}"
    )


def test_shape_dtype_and_unit_rows(engine: Engine) -> None:
    x = engine.embed(["a cat sat on the mat", "", "stock markets fell sharply"])
    assert x.shape == (3, 384)
    assert x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


def test_results_do_not_depend_on_order_or_batching(golden: tuple[list[str], np.ndarray]) -> None:
    texts = golden[0][:60]
    big = Engine(device="cpu", batch_tokens=100_000, max_batch_size=512).embed(texts)
    one_by_one = Engine(device="cpu", max_batch_size=1).embed(texts)
    order = np.random.default_rng(0).permutation(len(texts))
    shuffled = Engine(device="cpu").embed([texts[i] for i in order])
    np.testing.assert_allclose(one_by_one, big, atol=2e-6)
    np.testing.assert_allclose(shuffled, big[order], atol=2e-6)


def test_repeated_texts_are_encoded_once(engine: Engine) -> None:
    x = engine.embed(["same", "other", "same", "same"])
    assert engine.last_stats.texts == 4
    assert engine.last_stats.unique_texts == 2
    np.testing.assert_array_equal(x[0], x[2])
    assert not np.array_equal(x[0], x[1])


def test_empty_input_gives_empty_matrix(engine: Engine) -> None:
    assert engine.embed([]).shape == (0, 384)


def test_overlong_text_is_truncated_and_counted(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    long_text = "lorem ipsum " * 500
    with caplog.at_level(logging.INFO, logger="embengine"):
        x = engine.embed([long_text, "short"])
    assert engine.last_stats.truncated == 1
    assert "truncated 1 of 2 texts to 256 tokens" in caplog.text
    # Truncation keeps the first 256 tokens: the same as embedding the text cut shorter.
    np.testing.assert_allclose(x[0], engine.embed(["lorem ipsum " * 200])[0], atol=1e-6)


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["ok", None], r"texts\[1\] is NoneType"),
        (["ok", "fine", 3], r"texts\[2\] is int"),
        ([b"bytes"], r"texts\[0\] is bytes"),
        ("a single string", "not a single string"),
    ],
)
def test_bad_input_names_the_position(engine: Engine, texts: object, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        engine.embed(texts)  # type: ignore[arg-type]


def test_any_local_sentence_transformers_dir_works(tmp_path: Path, engine: Engine) -> None:
    """A copy of the model with a shorter max length and CLS pooling is read from its files."""
    model_dir = tmp_path / "my-model"
    shutil.copytree(default_model_dir(), model_dir)
    (model_dir / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 16}))
    pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
    pooling.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    (model_dir / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    spec = load_model_spec(model_dir)
    assert (spec.max_seq_length, spec.pooling, spec.name) == (16, "cls", "my-model")
    custom = Engine(model_dir, device="cpu")
    x = custom.embed(["a long sentence with many more than sixteen word pieces " * 3])
    assert custom.last_stats.truncated == 1
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert float(x[0] @ engine.embed(["a fairly long sentence"])[0]) < 0.999  # CLS != mean


def test_missing_model_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        Engine(tmp_path / "nope")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"tokenizer\.json is missing"):
        Engine(tmp_path)


def test_bad_device_and_backend_are_rejected() -> None:
    with pytest.raises(ValueError, match="device must be"):
        Engine(device="tpu")
    with pytest.raises(ValueError, match="backend must be one of"):
        Engine(device="cpu", backend="tensorflow")


def test_explicit_cuda_without_a_gpu_raises() -> None:
    from embengine.device import cuda_available

    if cuda_available():
        pytest.skip("this machine has a usable GPU, so device='cuda' is valid here")
    with pytest.raises(RuntimeError, match="device='cuda' was requested"):
        Engine(device="cuda")


def test_import_without_torch_defers_the_error(tmp_path: Path) -> None:
    """`import embengine` works without torch; building a torch encoder names what to install."""
    import subprocess

    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import embengine\n"
        "from embengine._optional import MissingDependency\n"
        "try:\n    embengine.Engine(device='cpu', backend='torch')\n"
        "except MissingDependency as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert "the torch backend needs the 'torch' module" in out.stdout


@pytest.mark.gpu
def test_cuda_embeddings_match_cpu(golden: tuple[list[str], np.ndarray]) -> None:
    texts, expected = golden
    for precision, floor in (("fp32", 0.9999), ("fp16", 0.999), ("bf16", 0.995)):
        got = Engine(device="cuda", precision=precision).embed(texts)
        cosine = (got * expected).sum(axis=1)
        assert cosine.min() >= floor, f"{precision}: min cosine {cosine.min():.5f}"
