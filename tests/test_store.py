"""EmbeddingStore and the Engine's content-hash cache: each text is embedded once per model."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from embengine import EmbedStats, Engine
from embengine.io import CorruptFileError, ModelMismatchError
from embengine.store import EmbeddingStore, content_hash


@pytest.fixture
def fresh(engine: Engine) -> Engine:
    """The session engine (shared model) with its own store slot and counters."""
    clone = copy.copy(engine)
    clone.stats, clone.store = EmbedStats(), None
    return clone


def test_put_lookup_save_load(tmp_path: Path, rng: np.random.Generator) -> None:
    store = EmbeddingStore(tmp_path / "s.emb", fingerprint="m1", dim=4, model="tiny")
    x = rng.standard_normal((3, 4)).astype(np.float32)
    store.put(["a", "b", "c"], x, ids=["1", "2", "3"], metadata=[{"k": 1}, None, {"k": [3]}])
    store.put(["b"], x[[0]])  # same text again: replaces the row
    assert len(store) == 3
    assert "b" in store
    assert "zz" not in store
    store.save()
    loaded = EmbeddingStore(tmp_path / "s.emb", fingerprint="m1", dim=4)
    vectors, found = loaded.lookup(["c", "zz", "b"])
    assert found.tolist() == [True, False, True]
    np.testing.assert_array_equal(vectors, [x[2], np.zeros(4), x[0]])
    assert loaded.info(["a", "b", "nope"]) == [("1", {"k": 1}), ("2", {}), None]
    assert len(content_hash("é")) == 32
    assert content_hash("a") != content_hash("a ")


def test_bad_input_to_put_is_named(tmp_path: Path) -> None:
    store = EmbeddingStore(None, fingerprint="m1", dim=4)
    with pytest.raises(ValueError, match="NaN or inf"):
        store.put(["a"], np.full((1, 4), np.nan))
    with pytest.raises(ValueError, match="dim 3, expected 4"):
        store.put(["a"], np.ones((1, 3)))
    with pytest.raises(ValueError, match="2 texts for 1 vectors"):
        store.put(["a", "b"], np.ones((1, 4)))
    with pytest.raises(TypeError, match=r"metadata\[0\] is not JSON"):
        store.put(["a"], np.ones((1, 4)), metadata=[{"x": object()}])
    with pytest.raises(ValueError, match="no path"):
        store.save()
    assert len(store) == 0


def test_other_model_or_damage_is_refused_and_the_file_kept(tmp_path: Path) -> None:
    path = tmp_path / "s.emb"
    store = EmbeddingStore(path, fingerprint="m1", dim=4, model="first")
    store.put(["a"], np.ones((1, 4)))
    store.save()
    good = path.read_bytes()
    with pytest.raises(ModelMismatchError, match="model 'first'"):
        EmbeddingStore(path, fingerprint="m2", dim=4, model="second")
    path.write_bytes(good[:-7])
    with pytest.raises(CorruptFileError, match="truncated"):
        EmbeddingStore(path, fingerprint="m1", dim=4)
    path.write_bytes(good)
    assert path.read_bytes() == good
    assert "a" in EmbeddingStore(path, fingerprint="m1", dim=4)


def test_engine_never_embeds_a_text_twice(fresh: Engine, tmp_path: Path) -> None:
    path = tmp_path / "cache.emb"
    fresh.attach_store(path)
    texts = ["alpha beta", "gamma delta", "alpha beta", "epsilon"]
    first = fresh.embed(texts)
    assert (fresh.last_stats.cache_hits, fresh.last_stats.cache_misses) == (0, 3)
    assert path.exists(), "autosaved"

    second = fresh.embed(["epsilon", "alpha beta", "new one"])
    stats = fresh.last_stats
    assert (stats.cache_hits, stats.cache_misses, stats.unique_texts) == (2, 1, 1)
    np.testing.assert_array_equal(second[:2], first[[3, 0]])

    reopened = copy.copy(fresh)
    reopened.stats, reopened.store = EmbedStats(), None
    reopened.attach_store(path)  # a new process would see the same file
    again = reopened.embed(texts)
    assert reopened.last_stats.cache_hits == 3
    assert reopened.last_stats.tokens == 0
    assert reopened.last_stats.batches == 0, "the encoder never ran"
    np.testing.assert_array_equal(again, first)
    uncached = copy.copy(fresh)
    uncached.store = None
    np.testing.assert_allclose(uncached.embed(texts), first, atol=1e-6)


def test_engine_refuses_a_store_of_another_model(fresh: Engine, tmp_path: Path) -> None:
    other = EmbeddingStore(tmp_path / "o.emb", fingerprint="other", dim=fresh.dim)
    with pytest.raises(ModelMismatchError, match="other"):
        fresh.attach_store(other)
    other.put(["x"], np.ones((1, fresh.dim)))
    other.save()
    with pytest.raises(ModelMismatchError, match="use another path"):
        fresh.attach_store(tmp_path / "o.emb")
    assert fresh.store is None
