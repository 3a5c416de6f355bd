"""Encoder backends: parity with sentence-transformers per backend and precision, invariance
to batching and order, the ONNX export cache, device and backend choice.

Tolerances (min cosine to the golden sentence-transformers embeddings, CPU):
  torch fp32, onnx fp32: 0.9999   (measured 0.9999996)
  onnx int8:             0.97     (measured 0.988 on STS-B sentences, 0.976 on the empty text;
                                   dynamic per-channel int8 weights)
GPU (skipped without one): onnx fp32 0.9999, onnx fp16 0.999.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from embengine import Engine
from embengine.batching import TextTokenizer, plan_batches, stream_batches
from embengine.device import Device
from embengine.encoders.onnx_backend import OnnxEncoder, ort_distribution
from embengine.io import load_arrays
from embengine.models import onnx_export
from embengine.models.onnx_export import cache_path, cached_export, export_key

GOLDEN = Path(__file__).parent / "data" / "golden_minilm.npz"
CPU_FLOORS = {("torch", "fp32"): 0.9999, ("onnx", "fp32"): 0.9999, ("onnx", "int8"): 0.97}


@pytest.fixture(scope="module")
def golden() -> tuple[list[str], np.ndarray]:
    data = np.load(GOLDEN)
    return [str(t) for t in data["texts"]], data["embeddings"]


@pytest.fixture(scope="module")
def engines() -> dict[tuple[str, str], Engine]:
    """One engine per CPU backend and precision, built once for this module."""
    return {key: Engine(device="cpu", backend=key[0], precision=key[1]) for key in CPU_FLOORS}


@pytest.mark.parametrize("key", list(CPU_FLOORS), ids=lambda k: "-".join(k))
def test_every_backend_and_precision_matches_sentence_transformers(
    engines: dict[tuple[str, str], Engine],
    golden: tuple[list[str], np.ndarray],
    key: tuple[str, str],
) -> None:
    texts, expected = golden
    engine = engines[key]
    assert (engine.encoder.name, engine.encoder.precision) == key
    got = engine.embed(texts)
    cosine = (got * expected).sum(axis=1)
    assert cosine.min() >= CPU_FLOORS[key], (
        f"{key}: min cosine {cosine.min():.5f} at {texts[int(cosine.argmin())]!r}"
    )
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("key", list(CPU_FLOORS), ids=lambda k: "-".join(k))
def test_batch_size_and_order_do_not_change_results(
    engines: dict[tuple[str, str], Engine], golden: tuple[list[str], np.ndarray], key: tuple
) -> None:
    texts = golden[0][:40]
    engine = engines[key]
    reference = engine.embed(texts)
    one_by_one = Engine(device="cpu", backend=key[0], precision=key[1], max_batch_size=1)
    order = np.random.default_rng(0).permutation(len(texts))
    shuffled = engine.embed([texts[i] for i in order])
    single = one_by_one.embed(texts)
    if key[1] == "int8":
        # int8 quantises activations with one scale per batch, so its vectors move a little
        # with the batch they are in: bounded by cosine, not elementwise.
        assert (single * reference).sum(axis=1).min() >= 0.97
        assert (shuffled * reference[order]).sum(axis=1).min() >= 0.97
        return
    np.testing.assert_allclose(single, reference, atol=2e-6)
    np.testing.assert_allclose(shuffled, reference[order], atol=2e-6)


def test_overlapped_chunks_give_the_same_vectors(
    engines: dict[tuple[str, str], Engine],
    golden: tuple[list[str], np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Tokenising chunk k+1 while chunk k is encoded changes nothing but the timing."""
    texts = golden[0][:50]
    engine = engines[("onnx", "fp32")]
    whole = engine.embed(texts)
    monkeypatch.setattr("embengine.batching.CHUNK_TEXTS", 7)
    chunked = engine.embed(texts)
    assert engine.last_stats.batches >= 8  # 50 texts in chunks of 7
    np.testing.assert_allclose(chunked, whole, atol=2e-6)


def test_stream_batches_cover_every_text_once_within_budget(
    engines: dict[tuple[str, str], Engine], golden: tuple[list[str], np.ndarray]
) -> None:
    texts = golden[0]
    tokenizer: TextTokenizer = engines[("onnx", "fp32")].tokenizer
    chunks = list(
        stream_batches(texts, tokenizer, batch_tokens=300, max_batch_size=16, chunk_texts=50)
    )
    assert [c.texts for c in chunks] == [50] * (len(texts) // 50) + [len(texts) % 50]
    seen = np.concatenate([b.indices for c in chunks for b in c.batches])
    np.testing.assert_array_equal(np.sort(seen), np.arange(len(texts)))
    lengths = tokenizer(texts).lengths
    for batch in (b for c in chunks for b in c.batches):
        assert len(batch.indices) <= 16
        assert batch.input_ids.size <= 300 or len(batch.indices) == 1
        np.testing.assert_array_equal(batch.attention_mask.sum(axis=1), lengths[batch.indices])
    assert sum(c.tokens for c in chunks) == int(lengths.sum())
    assert sum(c.truncated for c in chunks) == 1  # the one over-long golden text


def test_stream_batches_of_pretokenised_texts_are_the_same_batches(
    engines: dict[tuple[str, str], Engine], golden: tuple[list[str], np.ndarray]
) -> None:
    """The coalescer's token ids given to stream_batches: same chunks and batches, and the
    tokenizer is not called."""
    texts = golden[0]
    tokenizer: TextTokenizer = engines[("onnx", "fp32")].tokenizer

    class Refuse:
        pad_id = tokenizer.pad_id

        def __call__(self, texts: object) -> None:
            raise AssertionError("tokenised again")

    options = {"batch_tokens": 300, "max_batch_size": 16, "chunk_texts": 50}
    plain = list(stream_batches(texts, tokenizer, **options))
    tokenized = tokenizer(texts)
    given = list(stream_batches(texts, Refuse(), tokenized=tokenized, **options))  # type: ignore[arg-type]
    assert [(c.texts, c.tokens, c.truncated) for c in given] == [
        (c.texts, c.tokens, c.truncated) for c in plain
    ]
    for want, got in zip(
        (b for c in plain for b in c.batches), (b for c in given for b in c.batches), strict=True
    ):
        np.testing.assert_array_equal(got.indices, want.indices)
        np.testing.assert_array_equal(got.input_ids, want.input_ids)
        np.testing.assert_array_equal(got.attention_mask, want.attention_mask)


def test_length_aware_plan_is_the_cheapest_cut_within_the_limits() -> None:
    def cost(batches: list[np.ndarray], lengths: np.ndarray, sizes: np.ndarray) -> float:
        return sum(8.0 + sizes[b].sum() * lengths[b].max() for b in batches)

    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 9))
        lengths, sizes = rng.integers(1, 120, n), rng.integers(1, 4, n)
        max_size, budget = int(rng.integers(1, 12)), int(rng.integers(40, 600))
        plan = plan_batches(lengths, budget, max_size, overhead_tokens=8.0, sizes=sizes)
        np.testing.assert_array_equal(np.sort(np.concatenate(plan)), np.arange(n))
        for b in plan:  # an entry over the limits runs alone
            texts = sizes[b].sum()
            assert len(b) == 1 or (texts <= max_size and texts * lengths[b].max() <= budget)
        # brute force: every cut of the length-sorted order that keeps the limits
        order = np.argsort(-lengths, kind="stable")
        best = float("inf")
        for mask in range(2 ** (n - 1)):
            bounds = [0, *(i + 1 for i in range(n - 1) if mask >> i & 1), n]
            cut = [order[a:z] for a, z in itertools.pairwise(bounds)]
            if all(
                len(b) == 1
                or (sizes[b].sum() <= max_size and sizes[b].sum() * lengths[b].max() <= budget)
                for b in cut
            ):
                best = min(best, cost(cut, lengths, sizes))
        assert cost(plan, lengths, sizes) == pytest.approx(best)
    # alike lengths share a batch, very different ones do not; without an overhead every
    # batch is as full as the limits allow
    lengths = np.array([100, 5, 99, 6])
    assert [b.tolist() for b in plan_batches(lengths, 2048, 8, overhead_tokens=8.0)] == [
        [0, 2],
        [3, 1],
    ]
    assert [b.tolist() for b in plan_batches(lengths, 2048, 8)] == [[0, 2, 3, 1]]


def test_auto_picks_onnx_on_cpu_and_says_why(engine: Engine) -> None:
    info = engine.describe()
    assert info["backend"] == "onnx"
    assert info["precision"] == "fp32"  # int8 is never a default
    assert "auto on CPU" in str(info["backend_reason"])
    assert info["providers"] == ["CPUExecutionProvider"]
    assert str(info["onnxruntime"]).startswith("onnxruntime")


def test_auto_without_onnxruntime_uses_torch_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    engine = Engine(device="cpu")
    assert engine.describe()["backend"] == "torch"
    assert "pip install 'embengine[onnx]'" in engine.backend_reason


def test_ort_distribution_reports_the_package_and_warns_about_both(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from importlib import metadata

    assert ort_distribution() == f"onnxruntime {metadata.version('onnxruntime')}"
    monkeypatch.setattr(metadata, "version", lambda name: "1.0")
    assert "overwrite each other's files" in ort_distribution()


def test_precisions_are_checked_per_backend_and_device(engine: Engine) -> None:
    with pytest.raises(ValueError, match="bf16 runs on the torch backend"):
        OnnxEncoder(engine.spec, Device.CPU, "bf16")
    with pytest.raises(ValueError, match=r"runs fp16 only on \['cuda'\]"):
        OnnxEncoder(engine.spec, Device.CPU, "fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        Engine(device="cpu", backend="torch", precision="int8")
    with pytest.raises(RuntimeError, match="onnx-tensorrt backend needs a CUDA device"):
        OnnxEncoder(engine.spec, Device.CPU, tensorrt=True)


def test_cuda_without_an_ort_cuda_provider_raises_or_falls_back(engine: Engine) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    with pytest.raises(RuntimeError, match="onnxruntime-gpu"):
        OnnxEncoder(engine.spec, Device.CUDA)
    fallen = OnnxEncoder(engine.spec, Device.CUDA, fallback_to_cpu=True)
    assert fallen.device is Device.CPU
    assert "no CUDA provider" in str(fallen.details["fallback"])


def test_export_cache_is_reused_and_keyed_by_fingerprint_opset_precision(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exports: list[tuple[str, str, int]] = []

    def fake_export(spec, *, precision, variant, opset):
        exports.append((spec.fingerprint, precision, opset))
        return f"{spec.fingerprint}/{precision}/{opset}".encode()

    monkeypatch.setattr(onnx_export, "export", fake_export)
    spec = engine.spec
    other = dataclasses.replace(spec)
    other.__dict__["fingerprint"] = "0" * 32  # as if the weights had changed
    calls = [
        (spec, "fp32", 17),
        (spec, "fp32", 17),  # reused
        (spec, "int8", 17),
        (spec, "fp32", 18),
        (other, "fp32", 17),
        (other, "fp32", 17),  # reused
    ]
    for s, precision, opset in calls:
        model, path = cached_export(s, precision=precision, opset=opset, directory=tmp_path)
        assert model == f"{s.fingerprint}/{precision}/{opset}".encode()
        assert path == cache_path(export_key(s, precision=precision, opset=opset), tmp_path)
    assert len(exports) == 4
    assert len(list((tmp_path / "onnx").iterdir())) == 4


def test_corrupt_or_mismatched_cache_file_is_exported_again(
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    exports: list[str] = []
    monkeypatch.setattr(
        onnx_export, "export", lambda spec, **key: exports.append("x") or b"fresh model"
    )
    key = export_key(engine.spec, precision="fp32")
    path = cache_path(key, tmp_path)
    cached_export(engine.spec, precision="fp32", directory=tmp_path)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="embengine"):
        model, _ = cached_export(engine.spec, precision="fp32", directory=tmp_path)
    assert model == b"fresh model"
    assert len(exports) == 2
    assert "is unusable" in caplog.text
    assert "exporting again" in caplog.text
    # A valid file under the wrong name (another precision's export) is not trusted either.
    int8_path = cache_path(export_key(engine.spec, precision="int8"), tmp_path)
    int8_path.write_bytes(path.read_bytes())
    cached_export(engine.spec, precision="int8", directory=tmp_path)
    assert len(exports) == 3


def test_corrupt_real_export_gives_a_fresh_export_and_right_vectors(
    engine: Engine,
    golden: tuple[list[str], np.ndarray],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """End to end: flip bytes in the weights of a real cached export, then embed."""
    source = Path(str(engine.describe()["export"]))
    monkeypatch.setenv("EMBENGINE_CACHE_DIR", str(tmp_path))
    target = cache_path(export_key(engine.spec, precision="fp32"), tmp_path)
    target.parent.mkdir(parents=True)
    data = bytearray(source.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # zero a run of weights
    target.write_bytes(bytes(data))
    fresh = Engine(device="cpu", backend="onnx")
    texts, expected = golden
    cosine = (fresh.embed(texts[:20]) * expected[:20]).sum(axis=1)
    assert cosine.min() >= 0.9999
    load_arrays(target)  # replaced by a fresh export that verifies


@pytest.mark.gpu
@pytest.mark.parametrize(("precision", "floor"), [("fp32", 0.9999), ("fp16", 0.999)])
def test_onnx_on_cuda_matches_sentence_transformers(
    golden: tuple[list[str], np.ndarray], precision: str, floor: float
) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip(f"onnxruntime has no CUDA provider here ({ort_distribution()})")
    engine = Engine(device="cuda", backend="onnx", precision=precision)
    assert engine.describe()["providers"][0] == "CUDAExecutionProvider"
    texts, expected = golden
    cosine = (engine.embed(texts) * expected).sum(axis=1)
    assert cosine.min() >= floor, f"onnx {precision}: min cosine {cosine.min():.5f}"
