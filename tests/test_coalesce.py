"""The request coalescer and the engine under many concurrent callers.

Tolerance: coalesced rows must equal a direct `embed` of the same texts to 1e-6 (absolute).
Measured on the 2-core CPU (ONNX fp32): 300 texts of 1-120 words embedded in one call, one
at a time, and in groups of 7 gave bit-identical rows (max difference 0.0); the margin is
for other CPUs' kernels, whose summation order may depend on the batch shape.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import os
import random
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import embengine
from embengine import EmbedStats, Engine
from embengine.device import cuda_available
from embengine.errors import InvalidTypeError, OverloadedError
from embengine.serve.coalesce import Coalescer

ATOL = 1e-6


def _texts(n: int, seed: int = 0) -> list[str]:
    """Texts of very different lengths, so gathered batches mix short and long."""
    rnd = random.Random(seed)
    words = [
        "refund",
        "invoice",
        "login",
        "error",
        "crash",
        "billing",
        "stock",
        "market",
        "fox",
        "dog",
        "quick",
        "lazy",
    ]
    return [" ".join(rnd.choice(words) for _ in range(rnd.randint(1, 40))) for _ in range(n)]


@pytest.fixture
def fresh(engine: Engine) -> Engine:
    """The session engine's model with its own coalescer, counters and per-thread stats."""
    clone = copy.copy(engine)
    clone._coalescer, clone._local = None, threading.local()
    clone._stats_lock, clone.stats = threading.Lock(), EmbedStats()
    return clone


def test_concurrent_requests_share_batches_and_get_their_own_rows(
    engine: Engine, gated: Callable[..., Any]
) -> None:
    texts = _texts(48)
    expected = engine.embed(texts)
    gated = gated()
    coalescer = Coalescer([gated], max_wait_ms=5)
    first = coalescer.submit(texts[:1])
    assert gated.entered.wait(10)  # the first request is in the encoder, the rest queue
    groups = [texts[i : i + 1 + i % 3] for i in range(1, 48, 3)]
    with ThreadPoolExecutor(16) as pool:
        futures = list(pool.map(coalescer.submit, groups))
    gated.gate.set()
    rows = [first.result(10)[0], *(f.result(10)[0] for f in futures)]
    got = np.vstack(rows)
    want = np.vstack(
        [
            expected[:1],
            *(expected[i : i + len(g)] for i, g in zip(range(1, 48, 3), groups, strict=True)),
        ]
    )
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)
    assert sum(gated.calls) == 1 + sum(len(g) for g in groups)
    # 16 queued requests of 2 texts: batches cut by length, several requests per batch
    assert len(gated.calls) - 1 < len(groups), f"requests were not gathered: {gated.calls}"
    assert max(gated.calls) > 2
    assert coalescer.close(10)


def test_a_plan_is_cut_by_length_and_each_batch_is_answered_when_it_ends(
    engine: Engine, gated: Callable[..., Any]
) -> None:
    gated = gated()
    started: list[list[bool]] = []  # at each encoder call: which requests were answered
    futures: list[Any] = []
    embed = gated.embed_tokenized

    def recording(texts: list[str], tokenized: Any) -> Any:
        started.append([f.done() for f in futures])
        return embed(texts, tokenized)

    gated.embed_tokenized = recording
    coalescer = Coalescer([gated], max_wait_ms=0)
    holder = coalescer.submit(["hold the encoder"])
    assert gated.entered.wait(10)
    short = ["refund please"] * 3
    long = [" ".join(["invoice error in the billing system"] * 12)] * 3
    futures.extend(coalescer.submit([t]) for t in [*short, *long])
    gated.gate.set()
    holder.result(10)
    rows = np.vstack([f.result(10)[0] for f in futures])
    np.testing.assert_allclose(rows, engine.embed([*short, *long]), rtol=0, atol=ATOL)
    # the first request's batch, then the short texts (queued first), then the long ones
    assert gated.calls == [1, 3, 3]
    assert started[2] == [True] * 3 + [False] * 3, "short texts answered before long ran"
    assert coalescer.close(10)


class CountingTokenizer:
    """The engine's tokenizer, counting the texts it tokenises."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer, self.texts = tokenizer, 0
        self.lock = threading.Lock()

    def __getattr__(self, name: str) -> object:
        return getattr(self.tokenizer, name)

    def __call__(self, texts: Any) -> Any:
        with self.lock:
            self.texts += len(texts)
        return self.tokenizer(texts)


def test_embed_tokenized_is_embed_bit_for_bit(engine: Engine) -> None:
    long = " ".join(["invoice error in the billing system"] * 80)  # truncated
    texts = [*_texts(20, seed=3), long, "dog", "dog", _texts(1, seed=3)[0]]  # repeats
    vectors, stats = engine.embed_tokenized(texts, engine.tokenizer(texts))
    want, want_stats = engine.embed_with_stats(texts)
    np.testing.assert_array_equal(vectors, want)
    assert (stats.texts, stats.unique_texts, stats.tokens, stats.truncated) == (
        want_stats.texts,
        want_stats.unique_texts,
        want_stats.tokens,
        want_stats.truncated,
    )
    assert stats.truncated == 1
    assert stats.unique_texts == len(texts) - 2


def test_served_texts_are_tokenised_once(fresh: Engine) -> None:
    """The coalescer tokenises each request for its budgets; the engine reuses the ids."""
    texts = _texts(60, seed=2)
    expected = fresh.embed(texts)
    counting = CountingTokenizer(fresh.tokenizer)
    fresh.tokenizer = counting  # type: ignore[assignment]
    coalescer = Coalescer([fresh, fresh], max_wait_ms=2)
    starts = [0, 1, 3, 6, 10, 11, 13, 16, 20, 21, 23, 26, 30, 31, 33, 36, 40, 45, 52, 60]
    groups = [texts[a:b] for a, b in itertools.pairwise(starts)]  # 1-8 texts each
    with ThreadPoolExecutor(8) as pool:
        rows = list(pool.map(lambda g: coalescer.embed(g)[0], groups))
    np.testing.assert_allclose(np.vstack(rows), expected, rtol=0, atol=ATOL)
    assert counting.texts == len(texts), "each served text tokenised once"
    assert coalescer.close(10)


def test_aembed_from_asyncio_tasks_matches_embed(fresh: Engine) -> None:
    texts = _texts(24, seed=1)
    expected = fresh.embed(texts)

    async def many() -> list[np.ndarray]:
        return await asyncio.gather(*(fresh.aembed([t]) for t in texts))

    got = np.vstack(asyncio.run(many()))
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)
    assert fresh.last_stats.texts == 1  # this thread's latest call: one text


def test_full_queue_fails_fast_and_the_queued_requests_still_finish(
    engine: Engine, gated: Callable[..., Any]
) -> None:
    gated = gated()
    coalescer = Coalescer([gated], max_wait_ms=0, max_queue_texts=4)
    running = coalescer.submit(["in the encoder"])
    assert gated.entered.wait(10)
    queued = [coalescer.submit([f"queued {i}", f"second {i}"]) for i in range(2)]
    with pytest.raises(OverloadedError, match="queue is full"):
        coalescer.submit(["one too many"])
    assert coalescer.queue_texts == 4
    gated.gate.set()
    assert running.result(10)[0].shape == (1, engine.dim)
    assert [f.result(10)[0].shape for f in queued] == [(2, engine.dim)] * 2
    assert coalescer.close(10)
    with pytest.raises(OverloadedError, match="shutting down"):
        coalescer.submit(["after close"])


def test_encoder_failure_reaches_every_caller_of_the_batch(gated: Callable[..., Any]) -> None:
    gated = gated(fail=True)
    coalescer = Coalescer([gated], max_wait_ms=0)
    futures = [coalescer.submit([f"text {i}"]) for i in range(5)]
    gated.gate.set()
    for future in futures:
        with pytest.raises(RuntimeError, match="encoder exploded"):
            future.result(10)
    assert coalescer.close(10)


def test_bad_request_is_refused_alone(engine: Engine) -> None:
    coalescer = Coalescer([engine])
    with pytest.raises(InvalidTypeError, match=r"texts\[1\] is int"):
        coalescer.submit(["fine", 3])  # type: ignore[list-item]
    assert coalescer.embed(["fine"])[0].shape == (1, engine.dim)
    assert coalescer.embed([])[0].shape == (0, engine.dim)
    assert coalescer.close(10)


def test_replicas_take_work_from_one_queue(engine: Engine, gated: Callable[..., Any]) -> None:
    first, second = gated(), gated()
    coalescer = Coalescer([first, second], max_wait_ms=0, batch_texts=1)
    texts = _texts(6, seed=2)
    futures = [coalescer.submit([t]) for t in texts]
    assert first.entered.wait(10), "the first replica took a request"
    assert second.entered.wait(10), "so did the second, from the same queue"
    first.gate.set()
    second.gate.set()
    rows = np.vstack([f.result(10)[0] for f in futures])
    np.testing.assert_allclose(rows, engine.embed(texts), rtol=0, atol=ATOL)
    assert sorted(first.calls + second.calls) == [1] * 6
    assert coalescer.close(10)


def test_engine_is_safe_from_many_threads_and_stats_are_per_thread(fresh: Engine) -> None:
    texts = _texts(24, seed=3)
    serial = [fresh.embed(texts[i : i + 1 + i % 4]) for i in range(16)]
    barrier = threading.Barrier(8)

    def call(i: int) -> tuple[np.ndarray, int]:
        if i < 8:
            barrier.wait(10)
        vectors = fresh.embed(texts[i : i + 1 + i % 4])
        return vectors, fresh.last_stats.texts

    before = fresh.stats.texts
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(16)))
    for i, (vectors, seen) in enumerate(results):
        np.testing.assert_array_equal(vectors, serial[i])
        assert seen == 1 + i % 4, "last_stats belongs to the calling thread"
    assert fresh.stats.texts - before == sum(1 + i % 4 for i in range(16))


def test_coalesce_true_routes_concurrent_calls_and_keeps_results(fresh: Engine) -> None:
    fresh.coalesce = True
    texts = _texts(24, seed=4)
    expected = fresh.embed(texts)
    with ThreadPoolExecutor(12) as pool:
        rows = list(pool.map(lambda t: fresh.embed([t]), texts))
    np.testing.assert_allclose(np.vstack(rows), expected, rtol=0, atol=ATOL)
    assert fresh.coalescer.close(10)


@pytest.mark.skipif(cuda_available(), reason="a GPU is visible: auto rightly looks at torch")
def test_auto_device_does_not_import_torch_on_a_cpu_machine(tmp_path: Path) -> None:
    # The first ONNX export needs torch by design; make it here, in the session's cache
    # (EMBENGINE_CACHE_DIR, inherited), so the child measures only the device choice.
    Engine(device="cpu", backend="onnx")
    code = (
        "import sys; from embengine import Engine; e = Engine(device='auto'); "
        "e.embed(['x']); print(e.encoder.name, 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=tmp_path,  # outside the source tree, which would shadow the installed package
        env={**os.environ, "PYTHONPATH": str(Path(embengine.__file__).resolve().parents[1])},
    ).stdout.split()
    if out[0] == "torch":
        pytest.skip("onnxruntime missing: the torch backend imports torch by design")
    assert out == ["onnx", "False"]
