"""EmbeddingStore and the Engine's content-hash cache: each text is embedded once per model."""

from __future__ import annotations

import copy
import json
import mmap
import os
from pathlib import Path

import numpy as np
import pytest

from embengine import EmbedStats, Engine
from embengine.errors import (
    CorruptFileError,
    InvalidInputError,
    InvalidTypeError,
    ModelMismatchError,
)
from embengine.io import save_arrays
from embengine.store import EmbeddingStore, content_hash
from embengine.store.segment import write_manifest


@pytest.fixture
def fresh(engine: Engine) -> Engine:
    """The session engine (shared model) with its own store slot and counters."""
    clone = copy.copy(engine)
    clone.stats, clone.store = EmbedStats(), None
    return clone


def unit(rng: np.random.Generator, n: int, dim: int = 4) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def segment_files(path: Path) -> list[str]:
    return sorted(n for n in os.listdir(path) if n.endswith(".seg"))


def is_mapped(a: np.ndarray) -> bool:
    """True when `a` is a view of a memory-mapped file (no copy in this process's heap)."""
    while a is not None:
        if isinstance(a, (np.memmap, mmap.mmap)):
            return True
        a = getattr(a, "base", None)
    return False


def test_put_lookup_save_load(tmp_path: Path, rng: np.random.Generator) -> None:
    store = EmbeddingStore(tmp_path / "s.emb", fingerprint="m1", dim=4, model="tiny")
    x = unit(rng, 3)
    store.put(["a", "b", "c"], x, ids=["1", 2, "3"], metadata=[{"k": 1}, None, {"k": ["é"]}])
    assert store.put(["b"], x[[0]]) == 1  # same text again: a new row replaces it
    assert store.put(["b", "d"], x[:2], replace=False) == 1  # "b" kept, "d" added
    assert (len(store), store.dead_rows, store.unsaved) == (4, 1, 5)
    assert "b" in store
    assert "zz" not in store
    assert "bad\ud800" not in store
    store.save()
    assert store.unsaved == 0
    for loaded in (
        EmbeddingStore(tmp_path / "s.emb", fingerprint="m1", dim=4),
        EmbeddingStore.load(tmp_path / "s.emb"),
    ):
        vectors, found = loaded.lookup(["c", "zz", "b"])
        assert found.tolist() == [True, False, True]
        np.testing.assert_array_equal(vectors, [x[2], np.zeros(4), x[0]])
        assert loaded.info(["a", "b", "c", "nope"]) == [
            ("1", {"k": 1}),
            ("", {}),
            ("3", {"k": ["é"]}),
            None,
        ]
        assert (loaded.fingerprint, loaded.dim, loaded.model) == ("m1", 4, "tiny")
    assert len(content_hash("é")) == 32
    assert content_hash("a") != content_hash("a ")
    with pytest.raises(FileNotFoundError):
        EmbeddingStore.load(tmp_path / "absent")


def test_load_with_an_engine_checks_its_model(fresh: Engine, tmp_path: Path) -> None:
    ours = EmbeddingStore.for_engine(tmp_path / "ours", fresh)
    ours.put(["x"], np.ones((1, fresh.dim)))
    ours.save()
    assert "x" in EmbeddingStore.load(tmp_path / "ours", engine=fresh)
    other = EmbeddingStore(tmp_path / "other", fingerprint="other", dim=fresh.dim)
    other.put(["x"], np.ones((1, fresh.dim)))
    other.save()
    with pytest.raises(ModelMismatchError, match="use another path"):
        EmbeddingStore.load(tmp_path / "other", engine=fresh)


def test_a_failed_put_changes_nothing(tmp_path: Path, rng: np.random.Generator) -> None:
    """Issue 16.1: every check and hash runs before the first change, so nothing half-applies."""
    path = tmp_path / "s.emb"
    store = EmbeddingStore(path, fingerprint="m1", dim=4)
    x = unit(rng, 2)
    store.put(["alpha", "beta"], x)
    store.save()
    bad_calls = [
        (InvalidInputError, "texts\\[0\\] and texts\\[1\\] are the same", ["imported", "imported"]),
        (InvalidInputError, "texts\\[1\\] has a lone surrogate", ["good", "bad\ud800"]),
    ]
    for error, message, texts in bad_calls:
        with pytest.raises(error, match=message):
            store.put(texts, np.vstack([x[0], x[0]]))
    with pytest.raises(InvalidInputError, match="NaN or inf"):
        store.put(["n1", "n2"], np.array([[1, 0, 0, 0], [np.nan, 0, 0, 0]]))
    with pytest.raises(InvalidInputError, match="dim 3, expected 4"):
        store.put(["w"], np.ones((1, 3)))
    with pytest.raises(InvalidInputError, match="shape"):
        store.put(["w"], np.ones(4))
    with pytest.raises(InvalidInputError, match="2 texts for 1 vectors"):
        store.put(["w", "v"], np.ones((1, 4)))
    with pytest.raises(InvalidInputError, match="1 ids for 2 vectors"):
        store.put(["w", "v"], np.ones((2, 4)), ids=["only one"])
    with pytest.raises(InvalidTypeError, match=r"metadata\[1\] is not JSON"):
        store.put(["w", "v"], np.ones((2, 4)), metadata=[{}, {"x": object()}])
    with pytest.raises(InvalidInputError, match=r"metadata\[0\] is not JSON"):
        store.put(["w"], np.ones((1, 4)), metadata=[{"x": float("nan")}])
    with pytest.raises(InvalidTypeError, match=r"ids\[0\] is NoneType"):
        store.put(["w"], np.ones((1, 4)), ids=[None])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match=r"ids\[0\] is not valid Unicode"):
        store.put(["w"], np.ones((1, 4)), ids=["\udfff"])
    with pytest.raises(InvalidTypeError, match=r"texts\[1\] is int"):
        store.put(["w", 3], np.ones((2, 4)))  # type: ignore[list-item]
    assert (len(store), store.unsaved, store.dead_rows) == (2, 0, 0)
    vectors, found = store.lookup(["alpha", "beta", "imported", "good", "n1", "w"])
    assert found.tolist() == [True, True, False, False, False, False]
    np.testing.assert_array_equal(vectors[:2], x)
    store.save()  # the file written after the failures opens and holds the good rows
    again = EmbeddingStore(path, fingerprint="m1", dim=4)
    np.testing.assert_array_equal(again.lookup(["alpha", "beta"])[0], x)
    with pytest.raises(InvalidInputError, match="no path"):
        EmbeddingStore(None, fingerprint="m1", dim=4).save()


def test_engine_store_survives_a_failed_put(fresh: Engine, tmp_path: Path) -> None:
    """The issue's sequence: a bad put, then embeds: no poisoned vectors, the file reopens."""
    fresh.attach_store(tmp_path / "cache.emb")
    alpha = fresh.embed(["alpha"])
    v = alpha[0]
    with pytest.raises(InvalidInputError):
        fresh.store.put(["imported", "imported"], np.vstack([v, v]))
    with pytest.raises(InvalidInputError):
        fresh.store.put(["good", "bad\ud800"], np.vstack([v, v]))
    beta = fresh.embed(["beta", "alpha"])
    np.testing.assert_array_equal(beta[1], v)
    assert float(beta[0] @ v) < 0.99, "beta must not get alpha's vector"
    reopened = EmbeddingStore.load(tmp_path / "cache.emb", engine=fresh)
    assert len(reopened) == 2
    np.testing.assert_array_equal(reopened.lookup(["alpha", "beta"])[0], np.vstack([v, beta[0]]))


def test_append_writes_only_the_new_rows(tmp_path: Path, rng: np.random.Generator) -> None:
    """save() adds one segment sized by the new rows; committed segments are never rewritten."""
    path = tmp_path / "s.emb"
    store = EmbeddingStore(path, fingerprint="m1", dim=16)
    store.put([f"t{i}" for i in range(2000)], unit(rng, 2000, 16))
    store.save()
    (first,) = segment_files(path)
    before = (path / first).stat()
    store.put(["late one", "late two"], unit(rng, 2, 16))
    store.save()
    assert store.segments == 2
    files = segment_files(path)
    assert files[0] == first
    after = (path / first).stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (
        before.st_ino,
        before.st_mtime_ns,
        before.st_size,
    )
    new_size = (path / files[1]).stat().st_size
    assert new_size < 2 * (16 * 4 + 32 + 16) + 1024, "the new segment holds only the new rows"
    assert new_size * 100 < before.st_size
    store.save()  # nothing unsaved: nothing written
    assert segment_files(path) == files


def test_load_memory_maps_the_vectors(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "s.emb"
    store = EmbeddingStore(path, fingerprint="m1", dim=8)
    x = unit(rng, 50, 8)
    store.put([f"t{i}" for i in range(50)], x)
    store.save()
    assert is_mapped(store._segments[0].vectors), "a save swaps the rows for the mapped file"
    loaded = EmbeddingStore(path, fingerprint="m1", dim=8)
    assert all(is_mapped(s.vectors) for s in loaded._segments)
    np.testing.assert_array_equal(loaded.lookup([f"t{i}" for i in range(50)])[0], x)


def test_long_metadata_keeps_the_store_small(tmp_path: Path, rng: np.random.Generator) -> None:
    """Issue 13: 300 rows, one with 20 KB of metadata, made a 23 MB file (fixed-width str)."""
    path = tmp_path / "s.emb"
    store = EmbeddingStore(path, fingerprint="m1", dim=384)
    metadata: list[dict | None] = [{"n": i} for i in range(300)]
    metadata[7] = {"long": "x" * 20_000}
    store.put([f"text {i}" for i in range(300)], unit(rng, 300, 384), metadata=metadata)
    store.save()
    size = sum(p.stat().st_size for p in path.iterdir())
    vectors = 300 * 384 * 4
    assert size < vectors + 20_000 + 300 * 64 + 16_384, f"{size} bytes"
    assert EmbeddingStore(path, fingerprint="m1", dim=384).info(["text 7"])[0] == (
        "",
        {"long": "x" * 20_000},
    )


def test_other_model_or_damage_is_refused_and_files_kept(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    path = tmp_path / "s.emb"
    store = EmbeddingStore(path, fingerprint="m1", dim=4, model="first")
    store.put(["a", "b"], unit(rng, 2), ids=["1", "2"])
    store.save()
    (segment,) = segment_files(path)
    good = {name: (path / name).read_bytes() for name in os.listdir(path)}
    with pytest.raises(ModelMismatchError, match="model 'first'"):
        EmbeddingStore(path, fingerprint="m2", dim=4, model="second")
    manifest = json.loads(good["MANIFEST.json"])
    damages = {
        "truncated": lambda b: b[:-7],
        "flipped row data": lambda b: b[:-60] + bytes([b[-60] ^ 1]) + b[-59:],
        "flipped vector": lambda b: b[:8] + bytes([b[8] ^ 1]) + b[9:],
        "zeroed": lambda b: bytes(len(b)),
    }
    for what, damage in damages.items():
        (path / segment).write_bytes(damage(good[segment]))
        with pytest.raises(CorruptFileError):
            EmbeddingStore(path, fingerprint="m1", dim=4)  # small store: every byte checked
        assert (path / segment).exists(), f"{what}: a damaged store is never cleaned up"
    (path / segment).write_bytes(damages["flipped vector"](good[segment]))
    unchecked = EmbeddingStore(path, fingerprint="m1", dim=4, verify="rows")
    with pytest.raises(CorruptFileError, match="checksum"):
        unchecked.verify()
    (path / segment).write_bytes(good[segment])
    for text in ("not json", json.dumps({**manifest, "dim": 5}), "[]"):
        (path / "MANIFEST.json").write_text(text)
        with pytest.raises(CorruptFileError):
            EmbeddingStore(path, fingerprint="m1", dim=4)
    for field, value in (("next", float("inf")), ("next", -1), ("dim", 4.0), ("fingerprint", 1)):
        write_manifest(path, {**manifest, field: value})  # a forger's valid checksum
        with pytest.raises(CorruptFileError, match="must be"):
            EmbeddingStore(path, fingerprint="m1", dim=4)
    (path / "MANIFEST.json").write_bytes(good["MANIFEST.json"])
    (path / segment).unlink()
    with pytest.raises(CorruptFileError, match="missing"):
        EmbeddingStore(path, fingerprint="m1", dim=4)
    (path / segment).write_bytes(good[segment])
    for name, data in good.items():
        assert (path / name).read_bytes() == data
    assert EmbeddingStore(path, fingerprint="m1", dim=4).info(["b"]) == [("2", {})]
    EmbeddingStore(path, fingerprint="m1", dim=4, verify="full").verify()


def test_leftovers_of_a_crash_are_removed_on_open(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "s.emb"
    store = EmbeddingStore(path, fingerprint="m1", dim=4)
    store.put(["a"], unit(rng, 1))
    store.save()
    listed = segment_files(path)
    leftovers = [".seg-00000002.seg.x1y2.tmp", "seg-00000002.seg", ".MANIFEST.json.abc.tmp"]
    for name in leftovers:
        (path / name).write_bytes(b"half written")
    (path / "notes.txt").write_text("a user's file: never ours to delete")
    reopened = EmbeddingStore(path, fingerprint="m1", dim=4)
    assert "a" in reopened
    assert segment_files(path) == listed
    assert not [n for n in os.listdir(path) if n.endswith(".tmp")]
    assert (path / "notes.txt").exists()
    (path / "notes.txt").unlink()
    (path / "MANIFEST.json").unlink()
    (path / "seg-00000007.seg").write_bytes(b"x")  # crash before the first manifest
    assert len(EmbeddingStore(path, fingerprint="m1", dim=4)) == 0
    assert segment_files(path) == []


def test_compact_drops_replaced_rows(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "s.emb"
    store = EmbeddingStore(path, fingerprint="m1", dim=4)
    x = unit(rng, 6)
    for i in range(3):
        store.put([f"t{i}", "same"], x[2 * i : 2 * i + 2], ids=[str(i), f"same{i}"])
        store.save()
    store.put(["unsaved"], x[[0]])
    assert (store.segments, store.dead_rows, len(store)) == (4, 2, 5)
    store.compact()
    assert (store.segments, store.dead_rows, len(store), store.unsaved) == (1, 0, 5, 0)
    assert len(segment_files(path)) == 1
    for s in (store, EmbeddingStore(path, fingerprint="m1", dim=4)):
        vectors, found = s.lookup(["t0", "t1", "t2", "same", "unsaved"])
        assert found.all()
        np.testing.assert_array_equal(vectors, x[[0, 2, 4, 5, 0]])
        assert s.info(["same"]) == [("same2", {})]
    memory = EmbeddingStore(None, fingerprint="m1", dim=4)
    memory.put(["a", "b"], x[:2])
    memory.put(["a"], x[[2]])
    memory.compact()
    assert (len(memory), memory.dead_rows, memory.segments) == (2, 0, 1)
    np.testing.assert_array_equal(memory.lookup(["a", "b"])[0], x[[2, 1]])


def test_save_elsewhere_writes_a_compact_copy(tmp_path: Path, rng: np.random.Generator) -> None:
    memory = EmbeddingStore(None, fingerprint="m1", dim=4, model="tiny")
    x = unit(rng, 3)
    memory.put(["a", "b", "c"], x, metadata=[None, {"b": 1}, None])
    memory.put(["a"], x[[1]])
    memory.save(tmp_path / "copy")
    memory.save(tmp_path / "copy")  # over an existing store: replaced atomically
    copy_ = EmbeddingStore.load(tmp_path / "copy")
    assert (len(copy_), copy_.dead_rows, copy_.segments, copy_.model) == (3, 0, 1, "tiny")
    np.testing.assert_array_equal(copy_.lookup(["a", "b", "c"])[0], x[[1, 1, 2]])
    assert len(segment_files(tmp_path / "copy")) == 1
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidInputError, match="is a file"):
        memory.save(tmp_path / "file")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "mine.txt").write_text("x")
    with pytest.raises(InvalidInputError, match="other files"):
        memory.save(tmp_path / "dir")
    with pytest.raises(InvalidInputError, match="other files"):
        EmbeddingStore(tmp_path / "dir", fingerprint="m1", dim=4)


def test_a_version_1_file_is_converted(tmp_path: Path, rng: np.random.Generator) -> None:
    """Stores saved by the previous single-file format open and become store directories."""
    path = tmp_path / "old.emb"
    x = unit(rng, 2)
    hashes = np.frombuffer(content_hash("a") + content_hash("b"), np.uint8).reshape(2, 32)
    arrays = {"hashes": hashes, "vectors": x, "ids": np.array(["1", ""])}
    arrays["metadata"] = np.array(['{"k": 1}', ""])
    meta = {"format": "embengine.EmbeddingStore/1", "fingerprint": "m1", "dim": 4, "model": ""}
    save_arrays(path, arrays, meta)
    with pytest.raises(ModelMismatchError):
        EmbeddingStore(path, fingerprint="m2", dim=4)
    assert path.is_file(), "refused: left as it was"
    os.replace(path, tmp_path / ".old.emb.v1.bak")  # as if killed between the two renames
    store = EmbeddingStore(path, fingerprint="m1", dim=4)
    assert path.is_dir()
    assert not (tmp_path / ".old.emb.v1.bak").exists()
    np.testing.assert_array_equal(store.lookup(["a", "b"])[0], x)
    assert store.info(["a"]) == [("1", {"k": 1})]


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
    assert fresh.store.segments == 2, "autosave appended one segment per call"

    reopened = copy.copy(fresh)
    reopened.stats, reopened.store = EmbedStats(), None
    reopened.attach_store(path)  # a new process would see the same directory
    again = reopened.embed(texts)
    assert reopened.last_stats.cache_hits == 3
    assert reopened.last_stats.tokens == 0
    assert reopened.last_stats.batches == 0, "the encoder never ran"
    np.testing.assert_array_equal(again, first)
    uncached = copy.copy(fresh)
    uncached.store = None
    np.testing.assert_allclose(uncached.embed(texts), first, atol=1e-6)


def test_search_queries_are_not_added_to_the_store(fresh: Engine, tmp_path: Path) -> None:
    """Issue 13: each query used to become a document row and cost a full rewrite."""
    fresh.attach_store(tmp_path / "cache.emb")
    docs = ["the cat sat on the mat", "stock prices fell", "a recipe for bread"]
    index = fresh.index(docs)
    files = segment_files(tmp_path / "cache.emb")
    assert len(fresh.store) == 3
    _, ids = fresh.search(["where is the cat", "the cat sat on the mat"], index, k=1)
    assert ids[:, 0].tolist() == [0, 0]
    assert fresh.last_stats.cache_hits == 1, "a query that is a stored text is read from it"
    index.search(["bread baking"], 1)
    assert len(fresh.store) == 3
    assert "where is the cat" not in fresh.store
    assert "bread baking" not in fresh.store
    assert segment_files(tmp_path / "cache.emb") == files, "nothing written by a search"
    fresh.embed(["bread baking"], cache=False)
    assert "bread baking" not in fresh.store
    fresh.embed(["bread baking"])  # asked: now kept
    assert "bread baking" in fresh.store


def test_engine_refuses_a_store_of_another_model(fresh: Engine, tmp_path: Path) -> None:
    other = EmbeddingStore(tmp_path / "o.emb", fingerprint="other", dim=fresh.dim)
    with pytest.raises(ModelMismatchError, match="other"):
        fresh.attach_store(other)
    other.put(["x"], np.ones((1, fresh.dim)))
    other.save()
    with pytest.raises(ModelMismatchError, match="use another path"):
        fresh.attach_store(tmp_path / "o.emb")
    assert fresh.store is None


def test_two_writers_on_one_directory_lose_nothing(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    """Two store objects (as two processes would) append and compact the same directory."""
    path = tmp_path / "s.emb"
    a = EmbeddingStore(path, fingerprint="m1", dim=4)
    b = EmbeddingStore(path, fingerprint="m1", dim=4)
    x = unit(rng, 6)
    a.put(["a1"], x[[0]])
    a.save()
    b.put(["b1", "a1"], x[[1, 2]])  # b replaces a1 after a wrote it
    b.save()  # picks up a's segment first, then appends after it
    assert len(b) == 2
    np.testing.assert_array_equal(b.lookup(["a1", "b1"])[0], x[[2, 1]])
    a.put(["a2"], x[[3]])
    a.save()  # picks up b's segment
    a.compact()
    b.put(["b2"], x[[4]])
    b.save()  # the directory was compacted by a: b reopens it, then appends
    for s in (b, EmbeddingStore(path, fingerprint="m1", dim=4)):
        vectors, found = s.lookup(["a1", "b1", "a2", "b2"])
        assert found.all()
        np.testing.assert_array_equal(vectors, x[[2, 1, 3, 4]])
        assert len(s) == 4
