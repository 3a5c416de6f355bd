"""VectorIndex with compact vectors (issue 17): compact="int8" and "binary" (+ rescoring) keep
the index's contract: batch-independent results, removals, filters, (n, k) results with
sentinels, str ids, hybrid search, save/load (exact round trip, corruption refused), and
readers that see only whole states while a writer changes the index."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from embengine import ops
from embengine.errors import CorruptFileError, InvalidInputError
from embengine.index import VectorIndex
from embengine.io import load_arrays, save_arrays
from embengine.quantize import Int8Quantizer

DIM = 48
COMPACTS = [
    {"compact": "int8"},
    {"compact": "binary"},  # rescored on int8 codes
    {"compact": "binary", "rescore": "float32"},
]


def ident(options: dict) -> str:
    return "-".join(map(str, options.values()))


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return unit(np.random.default_rng(17).standard_normal((600, DIM)))


def make(rows: np.ndarray, options: dict, **extra) -> VectorIndex:
    index = VectorIndex(DIM, calibrate_rows=200, **options, **extra)
    index.add(rows)
    return index


def test_ranges_fitted_on_the_rows_themselves_do_not_warn(rows: np.ndarray, caplog) -> None:
    """The index renormalises what it is given, so a row that set a range comes back an ulp
    or so past it: that rounds to the same code and is no clipping (two rows: every value
    is a range end, and the warning fired on 3 in 4 of them)."""
    sample = rows[:2] * np.float32(1.0000001)  # unit up to rounding, as a model's rows are
    index = VectorIndex(DIM, compact="int8", quantizer=Int8Quantizer.fit(sample))
    with caplog.at_level(logging.WARNING, logger="embengine"):
        index.add(sample)
    assert "clipped" not in caplog.text


@pytest.mark.parametrize("options", COMPACTS, ids=ident)
def test_one_query_equals_the_same_query_in_a_batch(rows: np.ndarray, options: dict) -> None:
    index = make(rows, options)
    assert index.quantizer is not None or options.get("rescore") == "float32"
    queries = unit(rows[:12] + 0.3 * np.random.default_rng(1).standard_normal((12, DIM)))
    batch = index.search(queries, 7)
    for r in range(len(queries)):
        alone = index.search(queries[r : r + 1], 7)
        np.testing.assert_array_equal(alone[0][0], batch[0][r])
        np.testing.assert_array_equal(alone[1][0], batch[1][r])
    # a stored row finds itself first; scores are best first
    _, ids = index.search(rows[:20], 3)
    assert (ids[:, 0] == np.arange(20)).all()
    assert (np.diff(batch[0], axis=1) <= 0).all()


def test_int8_calibrates_on_the_first_rows_then_drops_the_float32_copy(rows: np.ndarray) -> None:
    index = VectorIndex(DIM, compact="int8", calibrate_rows=200)
    index.add(rows[:150])
    assert index.quantizer is None
    assert index.bytes_per_vector == 4 * DIM
    np.testing.assert_array_equal(index.get([3]), rows[3:4])
    index.add(rows[150:250])  # passes calibrate_rows: ranges fitted on all 250 rows
    assert index.bytes_per_vector == DIM
    fitted = Int8Quantizer.fit(ops.normalize_rows_(rows[:250].copy()))  # as the index stores
    np.testing.assert_array_equal(index.quantizer.low, fitted.low)
    np.testing.assert_array_equal(index.quantizer.high, fitted.high)
    index.add(rows[250:])
    # the same as an index given those ranges from the start
    fixed = VectorIndex(DIM, compact="int8", quantizer=fitted)
    fixed.add(rows)
    for a, b in zip(index.search(rows[:30], 5), fixed.search(rows[:30], 5), strict=True):
        np.testing.assert_array_equal(a, b)
    assert np.abs(index.get([7])[0] @ rows[7] - 1) < 1e-3  # dequantized, renormalised


def test_rows_past_the_ranges_clip_never_wrap(rows: np.ndarray, caplog) -> None:
    quantizer = Int8Quantizer(np.full(DIM, -0.2), np.full(DIM, 0.2))
    index = VectorIndex(DIM, compact="int8", quantizer=quantizer)
    index.add(rows[:100])
    spike = np.zeros((1, DIM), np.float32)
    spike[0, 0] = 1.0  # far past high = 0.2: wrapping would make it the most negative code
    with caplog.at_level(logging.WARNING, logger="embengine"):
        (spike_id,) = index.add(spike)
    assert "clipped" in caplog.text
    got = index.get([spike_id])[0]
    assert got[0] > 0.99  # clipped to +0.2 then renormalised: still +x
    # its own score is the clipped +0.2 (wrapped around it would be -0.2)
    scores, ids = index.search(spike, 1, allow=[spike_id])
    assert ids[0, 0] == spike_id
    assert scores[0, 0] == pytest.approx(0.2, abs=1e-6)


@pytest.mark.parametrize("options", COMPACTS, ids=ident)
def test_removals_upserts_filters_and_sentinels(rows: np.ndarray, options: dict) -> None:
    ids = [f"doc-{i}" for i in range(len(rows))]
    index = VectorIndex(DIM, calibrate_rows=200, **options)
    index.add(rows, ids)
    gone = ids[::3]
    index.remove(gone)
    assert index.dead == 0 or index.dead == len(gone)
    scores, got = index.search(rows[:30], 10)
    assert not set(got.ravel().tolist()) & set(gone)
    for r in range(30):
        if ids[r] not in gone:
            assert got[r, 0] == ids[r]
    # upsert: the row now points the other way
    index.upsert(-rows[1:2], ["doc-1"])
    assert index.search(-rows[1:2], 1)[1][0, 0] == "doc-1"
    # allowed rows only, fewer than k: padded with -inf / None
    allow = ["doc-4", "doc-5", "doc-7"]
    scores, got = index.search(rows[:5], 5, allow=allow)
    assert scores.shape == (5, 5)
    assert got.shape == (5, 5)
    assert all(set(row[:3]) == set(allow) for row in got.tolist())
    assert np.equal(got[:, 3:], None).all()
    assert np.isneginf(scores[:, 3:]).all()
    # k past the live rows: sentinels
    small = VectorIndex(DIM, **options)
    small.add(rows[:4])
    small.remove([2])
    scores, got = small.search(rows[:2], 6)
    assert (got[:, 3:] == -1).all()
    assert np.isneginf(scores[:, 3:]).all()
    assert sorted(got[0, :3].tolist()) == [0, 1, 3]


@pytest.mark.parametrize("options", COMPACTS, ids=ident)
def test_many_removals_compact_the_tables(rows: np.ndarray, options: dict) -> None:
    index = make(rows, options)
    before = index.memory_bytes()
    index.remove(range(0, 400))
    assert index.dead == 0  # compacted inside remove
    assert len(index) == 200
    assert index.memory_bytes() < before
    _, got = index.search(rows[400:420], 1)
    assert (got[:, 0] == np.arange(400, 420)).all()


@pytest.mark.parametrize("options", [*COMPACTS, {"compact": "int8", "calibrate_rows": 10_000}])
def test_save_load_round_trips_exactly(rows: np.ndarray, options: dict, tmp_path: Path) -> None:
    options = {"calibrate_rows": 200, **options}
    index = VectorIndex(DIM, lexical=True, **options)
    index.add(rows, [f"d{i}" for i in range(len(rows))], texts=[f"text t{i}x" for i in range(600)])
    index.remove(["d5", "d9"])
    path = tmp_path / "compact.idx"
    index.save(path)
    loaded = VectorIndex.load(path)
    assert (loaded.compact, loaded.rescore, loaded.oversample) == (
        index.compact,
        index.rescore,
        index.oversample,
    )
    assert loaded.bytes_per_vector == index.bytes_per_vector
    if index.quantizer is not None:
        np.testing.assert_array_equal(loaded.quantizer.low, index.quantizer.low)
        np.testing.assert_array_equal(loaded.quantizer.high, index.quantizer.high)
    for a, b in zip(loaded.search(rows[:40], 8), index.search(rows[:40], 8), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.get(["d1", "d500"]), index.get(["d1", "d500"]))
    _, got = loaded.search(["text t3x"], 5, mode="lexical")
    assert got[0, 0] == "d3"
    # later adds code the same way in both
    more = unit(np.random.default_rng(3).standard_normal((50, DIM)))
    new_ids = [f"n{i}" for i in range(50)]
    index.add(more, new_ids)
    loaded.add(more, new_ids)
    for a, b in zip(loaded.search(more, 8), index.search(more, 8), strict=True):
        np.testing.assert_array_equal(a, b)


class _RowEngine:
    """Just enough of an Engine for text queries: text "row i" embeds as rows[i]."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows, self.dim = rows, DIM
        self.spec = type("Spec", (), {"fingerprint": "rows", "name": "rows"})()

    def embed(self, texts: list[str], cache: bool = True) -> np.ndarray:
        return self.rows[[int(t.split()[1]) for t in texts]]


@pytest.mark.parametrize("options", COMPACTS, ids=ident)
def test_hybrid_search_on_a_compact_index(rows: np.ndarray, options: dict) -> None:
    engine = _RowEngine(rows)
    index = VectorIndex(DIM, lexical=True, engine=engine, calibrate_rows=200, **options)
    index.add([f"row {i}" for i in range(len(rows))])
    scores, got = index.search(["row 42", "row 7"], 4, mode="hybrid")
    assert got[:, 0].tolist() == [42, 7]  # first on both sides
    assert scores.shape == (2, 4)
    assert (np.diff(scores, axis=1) <= 0).all()
    # the dense side's scores are the compact index's own
    dense, ids = index.search(["row 42"], 3)
    assert ids[0, 0] == 42
    assert dense[0, 0] == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("options", COMPACTS, ids=ident)
def test_damaged_or_crafted_compact_files_are_refused(
    rows: np.ndarray, options: dict, tmp_path: Path
) -> None:
    index = make(rows, options)
    path = tmp_path / "compact.idx"
    index.save(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    damaged = tmp_path / "damaged.idx"
    damaged.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError):
        VectorIndex.load(damaged)
    arrays, meta = load_arrays(path)
    crafted = tmp_path / "crafted.idx"
    table = "signs" if options["compact"] == "binary" else "codes"
    bad = dict(arrays)
    bad[table] = arrays[table][:-1]  # one row short
    save_arrays(crafted, bad, meta)
    with pytest.raises(CorruptFileError, match=table):
        VectorIndex.load(crafted)
    if "int8_low" in arrays:
        bad = dict(arrays)
        bad["int8_high"] = arrays["int8_low"] - 1  # high < low
        save_arrays(crafted, bad, meta)
        with pytest.raises(CorruptFileError):
            VectorIndex.load(crafted)
    with pytest.raises(InvalidInputError, match="cuda"):  # a wrong argument, not a bad file
        VectorIndex.load(path, device="cuda")
    bad_meta = {**meta, "compact": "int4"}
    save_arrays(crafted, arrays, bad_meta)
    with pytest.raises(CorruptFileError, match="int4"):
        VectorIndex.load(crafted)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"compact": "int4"}, "int4"),
        ({"compact": "int8", "rescore": "float32"}, "rescore"),
        ({"compact": "binary", "rescore": "float16"}, "float16"),
        ({"compact": "int8", "kind": "hnsw"}, "hnsw"),
        ({"compact": "binary", "exact": "faiss"}, "faiss"),
        ({"compact": "int8", "device": "cuda"}, "cuda"),
        ({"compact": "int8", "oversample": 0}, "oversample"),
        ({"compact": "int8", "quantizer": Int8Quantizer(np.zeros(3), np.ones(3))}, "dim"),
        ({"compact": "int8", "calibrate_rows": 0}, "calibrate_rows"),
    ],
)
def test_bad_options_name_the_value(options: dict, named: str) -> None:
    with pytest.raises(InvalidInputError, match=named):
        VectorIndex(DIM, **options)


def test_bad_vectors_change_nothing(rows: np.ndarray) -> None:
    index = make(rows[:300], {"compact": "int8"})
    before = index.search(rows[:5], 5)
    bad = rows[:3].copy()
    bad[1, 2] = np.nan
    with pytest.raises(InvalidInputError):
        index.add(bad)
    assert len(index) == 300
    for a, b in zip(index.search(rows[:5], 5), before, strict=True):
        np.testing.assert_array_equal(a, b)


class _PromptEngine(_RowEngine):
    """Embeds "row i" as rows[i], or as -rows[i] when a prompt is given; records prompts."""

    def __init__(self, rows: np.ndarray) -> None:
        super().__init__(rows)
        self.prompts: list[str | None] = []

    def embed(self, texts: list[str], cache: bool = True, prompt: str | None = None) -> np.ndarray:
        self.prompts.append(prompt)
        vectors = super().embed(texts)
        return -vectors if prompt else vectors


def test_hybrid_search_embeds_the_dense_side_with_the_query_prompt(rows: np.ndarray) -> None:
    engine = _PromptEngine(rows[:50])
    index = VectorIndex(DIM, lexical=True, engine=engine)
    index.add([f"row {i}" for i in range(50)])
    plain = index.search(["row 4"], 50, mode="hybrid", fusion="score", weight=1.0)
    prompted = index.search(["row 4"], 50, mode="hybrid", fusion="score", weight=1.0, prompt="q: ")
    assert engine.prompts[-2:] == [None, "q: "]
    # weight 1: the dense side alone; the prompted query is -rows[4], so row 4 comes last
    assert plain[1][0, 0] == 4
    assert prompted[1][0, -1] == 4
    with pytest.raises(InvalidInputError, match="prompt"):
        index.search(rows[:1], 3, prompt="q: ")  # vectors take no prompt


def test_engine_index_makes_a_compact_index() -> None:
    from embengine import Engine

    engine = Engine(device="cpu")
    docs = [f"document number {i} about topic {i % 7}" for i in range(40)]
    index = engine.index(docs, compact="binary", rescore="float32")
    assert (index.compact, index.rescore, index.bytes_per_vector) == ("binary", "float32", 1584)
    _, ids = engine.search(docs[:3], index, k=2)
    assert ids[:, 0].tolist() == [0, 1, 2]
