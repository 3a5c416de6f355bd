"""The store shared between threads (issue 15): readers see whole writes, the engine's cache
never serves another text's vector, and what autosave wrote reopens."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from embengine import EmbedStats, Engine
from embengine.store import EmbeddingStore

DIM = 8
BATCH = 20


def batch(j: int) -> tuple[list[str], np.ndarray]:
    """Batch j: its texts and vectors, each vector a function of its text only."""
    texts = [f"batch {j} row {i}" for i in range(BATCH)]
    vectors = np.random.default_rng(j).standard_normal((BATCH, DIM)).astype(np.float32)
    return texts, vectors


def run_threads(targets: list[Callable[[], None]]) -> list[BaseException]:
    errors: list[BaseException] = []

    def guard(target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=guard, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    return errors


def test_readers_see_before_or_after_each_write(tmp_path: Path) -> None:
    """One writer puts, saves and compacts; readers only ever see whole batches, right vectors."""
    store = EmbeddingStore(tmp_path / "s.emb", fingerprint="m", dim=DIM)
    batches = 60
    done = threading.Event()
    seen = [0]

    def writer() -> None:
        try:
            for j in range(batches):
                texts, vectors = batch(j)
                store.put(texts, vectors)
                if j % 3 == 0:
                    store.save()
                if j % 7 == 6:
                    store.put(*batch(j - 3))  # the same rows again: dead rows to compact
                if j % 20 == 19:
                    store.compact()
        finally:
            done.set()

    def reader(seed: int) -> Callable[[], None]:
        def read() -> None:
            rng = np.random.default_rng(seed)
            while not done.is_set():
                j = int(rng.integers(batches))
                texts, want = batch(j)
                got, found = store.lookup(texts)
                assert found.all() or not found.any(), f"batch {j} half there: {found}"
                if found.all():
                    np.testing.assert_array_equal(got, want)
                    seen[0] += 1
                assert len(store) % BATCH == 0

        return read

    errors = run_threads([writer] + [reader(s) for s in range(4)])
    assert errors == [], errors[:3]
    assert len(store) == batches * BATCH
    reopened = EmbeddingStore(tmp_path / "s.emb", fingerprint="m", dim=DIM)
    assert len(reopened) == batches * BATCH
    for j in range(batches):
        texts, want = batch(j)
        np.testing.assert_array_equal(reopened.lookup(texts)[0], want)


def test_concurrent_puts_and_saves_keep_every_row(tmp_path: Path) -> None:
    """Eight writer threads with their own batches (some shared): nothing lost or mixed."""
    store = EmbeddingStore(tmp_path / "s.emb", fingerprint="m", dim=DIM)

    def writer(w: int) -> Callable[[], None]:
        def write() -> None:
            for j in range(w, 64, 4):  # threads w and w + 4 write the same batches
                store.put(*batch(j), replace=False)
                store.save()

        return write

    errors = run_threads([writer(w % 4) for w in range(8)])
    assert errors == [], errors[:3]
    reopened = EmbeddingStore(tmp_path / "s.emb", fingerprint="m", dim=DIM)
    assert len(reopened) == 64 * BATCH
    for j in range(64):
        texts, want = batch(j)
        np.testing.assert_array_equal(reopened.lookup(texts)[0], want)


def test_engine_with_a_store_from_eight_threads(engine: Engine, tmp_path: Path) -> None:
    """Issue 15: 200 of 720 cached vectors belonged to other texts and the file did not reopen."""
    eng = copy.copy(engine)
    eng.stats, eng.store = EmbedStats(), None
    eng.attach_store(tmp_path / "cache.emb")
    words = ["apple", "river", "stone", "cloud", "paper", "violin", "tiger", "lamp"]
    words += ["ocean", "garden"]
    texts = [f"{a} {b} {c}" for a in words for b in words[:4] for c in "xyzwvu"]  # 240 texts
    reference = copy.copy(engine).embed(texts)
    results: list[tuple[list[str], np.ndarray]] = []
    lock = threading.Lock()

    def worker(seed: int) -> Callable[[], None]:
        def work() -> None:
            rng = np.random.default_rng(seed)
            for _ in range(20):  # 160 small calls: failed on the old store
                chosen = [texts[i] for i in rng.choice(len(texts), size=3, replace=False)]
                vectors = eng.embed(chosen)
                with lock:
                    results.append((chosen, vectors))

        return work

    errors = run_threads([worker(s) for s in range(8)])
    assert errors == [], errors[:3]
    row = {t: i for i, t in enumerate(texts)}
    for chosen, vectors in results:
        want = reference[[row[t] for t in chosen]]
        np.testing.assert_allclose(vectors, want, atol=1e-4)  # never another text's vector
    reopened = EmbeddingStore.load(tmp_path / "cache.emb", engine=eng)
    stored = sorted({t for chosen, _ in results for t in chosen})
    assert len(reopened) == len(stored)
    np.testing.assert_allclose(
        reopened.lookup(stored)[0], reference[[row[t] for t in stored]], atol=1e-4
    )
