"""VectorIndex search at the API level: batch independence, empty queries, huge k,
tombstones without compaction, hybrid through bm25s, the (n, k) contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embengine.errors import InvalidInputError, NotFoundError
from embengine.index import VectorIndex
from embengine.index import lexical as lexical_side
from embengine.ops import reference

DIM = 32


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def data(rng: np.random.Generator) -> np.ndarray:
    """3,000 unit rows around 20 centres, with exact duplicates (ties) and near-ties."""
    centres = rng.standard_normal((20, DIM))
    x = unit(centres[rng.integers(0, 20, 3000)] + 0.3 * rng.standard_normal((3000, DIM)))
    x[100:110] = x[5]  # ten exact copies of row 5: ties broken by slot
    x[200] = unit(x[[6]] + 1e-7)[0]  # a near-tie with row 6
    return x


KINDS = [
    {"kind": "flat", "exact": "kernel"},
    {"kind": "flat", "exact": "faiss"},
    {"kind": "hnsw"},
    {"kind": "ivf", "nlist": 16, "nprobe": 16},
]


@pytest.mark.parametrize("options", KINDS, ids=lambda o: "-".join(map(str, o.values())))
def test_a_row_gets_the_same_top_k_whatever_else_is_in_the_batch(
    options: dict, data: np.ndarray, rng: np.random.Generator
) -> None:
    """1-query, 40-query (BLAS tiles in the kernel) and 300-query calls agree bit for bit."""
    index = VectorIndex(DIM, device="cpu", **options)
    index.add(data)
    index.remove(list(range(0, 3000, 97)))  # tombstones too
    queries = np.concatenate([data[[5, 6, 200]], unit(rng.standard_normal((297, DIM)))])
    all_scores, all_ids = index.search(queries, 10)
    for size in (1, 7, 40):
        for start in (0, 3, 260):
            s, i = index.search(queries[start : start + size], 10)
            np.testing.assert_array_equal(i, all_ids[start : start + size])
            np.testing.assert_array_equal(s, all_scores[start : start + size])
    found = [i for i in all_ids[0].tolist() if i in (5, *range(100, 110))]
    assert found == sorted(found), "exact ties go to the earlier id"
    if options["kind"] == "flat":
        assert all_ids[0].tolist() == [5, *range(100, 109)]
        alive = np.setdiff1d(np.arange(3000), np.arange(0, 3000, 97))
        want_scores, want = reference.topk_cosine(queries, data[alive], 10)
        np.testing.assert_allclose(all_scores, want_scores, atol=1e-6)
        assert np.mean(all_ids == alive[want]) > 0.99  # ids differ only inside near-ties


def test_empty_queries_give_empty_results(data: np.ndarray) -> None:
    index = VectorIndex(DIM, device="cpu")
    index.add(data[:10], [f"d{i}" for i in range(10)])
    for empty in ([], (), np.zeros((0, DIM), np.float32)):
        scores, ids = index.search(empty, 3)
        assert scores.shape == ids.shape == (0, 3)
        assert scores.dtype == np.float32
        assert ids.dtype == object
    ints = VectorIndex(DIM, device="cpu")
    ints.add(data[:10])
    assert ints.search([], 4)[1].shape == (0, 4)
    assert ints.search([], 4)[1].dtype == np.int64


def test_huge_k_is_refused_clearly_and_small_padding_works(data: np.ndarray) -> None:
    """Issue 16 item 7: k = 10**9 on 30 rows must not allocate (n, 10**9) padding."""
    index = VectorIndex(DIM, device="cpu")
    index.add(data[:30])
    with pytest.raises(InvalidInputError, match=r"k=1000000000 is more than the 30 ids"):
        index.search(data[:2], 10**9)
    scores, ids = index.search(data[:2], 1024)  # padding up to MAX_PADDED_K is fine
    assert ids.shape == (2, 1024)
    assert (ids[:, 30:] == -1).all()
    assert np.isneginf(scores[:, 30:]).all()
    assert sorted(ids[0, :30].tolist()) == list(range(30))
    big = VectorIndex(DIM, device="cpu")
    big.add(data)
    assert big.search(data[:1], 3000)[1].shape == (1, 3000), "k up to len(index) is fine"


def test_a_remove_does_not_compact_and_search_skips_the_dead(
    data: np.ndarray, tmp_path: Path
) -> None:
    index = VectorIndex(DIM, device="cpu")
    index.add(data)
    table = index._vectors
    index.remove([5, 100, 101])
    _, ids = index.search(data[[5]], 8)
    assert index.dead == 3, "searching does not compact"
    assert index._vectors is table, "the table was not copied"
    assert not {5, 100, 101} & set(ids[0].tolist())
    assert ids[0, 0] == 102, "the next exact copy of row 5 comes first"
    # many dead rows among one query's candidates: the over-fetch is redone deeper
    index.remove(list(range(102, 110)))
    _, ids = index.search(data[[5]], 5)
    assert not set(range(100, 110)) & set(ids[0].tolist())
    index.save(tmp_path / "i.emb")
    loaded = VectorIndex.load(tmp_path / "i.emb", device="cpu")
    np.testing.assert_array_equal(ids, loaded.search(data[[5]], 5)[1])


def test_compaction_is_amortised_by_removes(data: np.ndarray) -> None:
    index = VectorIndex(DIM, device="cpu")
    index.add(data)
    index.remove(list(range(700)))  # < a quarter: tombstones only
    assert index.dead == 700
    index.remove(list(range(700, 800)))  # past a quarter: compacted inside this remove
    assert index.dead == 0
    assert len(index) == 2200
    assert index.search(data[[900]], 1)[1][0, 0] == 900


def test_adds_grow_the_table_amortised(data: np.ndarray) -> None:
    index = VectorIndex(DIM, device="cpu")
    reallocations = 0
    last = None
    for start in range(0, 3000, 30):
        index.add(data[start : start + 30])
        if index._vectors is not last:
            reallocations += 1
            last = index._vectors
    assert reallocations < 15, "grown by half, not copied at every add"
    np.testing.assert_array_equal(index.search(data[:5], 3)[1][:, 0], np.arange(5))


def test_upsert_is_all_or_nothing(data: np.ndarray) -> None:
    index = VectorIndex(DIM, device="cpu")
    index.add(data[:5], ["a", "b", "c", "d", "e"])
    with pytest.raises(InvalidInputError, match="repeat"):
        index.upsert(data[5:7], ["a", "a"])
    with pytest.raises(InvalidInputError, match="NaN"):
        index.upsert(np.full((1, DIM), np.nan), ["a"])
    assert index.ids == ["a", "b", "c", "d", "e"]
    np.testing.assert_allclose(index.get(["a"]), data[:1], atol=1e-6)


def test_allow_list_unknown_id_is_not_found(data: np.ndarray) -> None:
    index = VectorIndex(DIM, device="cpu")
    index.add(data[:50])
    with pytest.raises(NotFoundError):
        index.search(data[:1], 3, allow=[999])
    _, ids = index.search(data[:3], 2, allow=[7, 9])
    assert set(ids.ravel().tolist()) <= {7, 9}


# ------------------------------------------------------------------- hybrid / BM25

TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "a fast auburn fox leaped above a sleepy hound",
    "stock prices fell after the central bank raised rates",
    "zyxquor calibration protocol 7741 failed",
    "the lazy dog slept all afternoon",
    "interest rates and inflation worry investors",
]


def _bm25_index(rng: np.random.Generator) -> tuple[VectorIndex, np.ndarray]:
    vectors = unit(rng.standard_normal((len(TEXTS), DIM)))
    index = VectorIndex(DIM, device="cpu", lexical=True)
    index.add(vectors, [f"t{i}" for i in range(len(TEXTS))], texts=TEXTS)
    return index, vectors


class _Fixed:
    """An engine stand-in that maps known query texts to fixed vectors."""

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors
        self.dim = DIM
        self.spec = type("Spec", (), {"name": "fixed", "fingerprint": "fixed"})()

    def embed(self, texts: list[str], *, cache: bool = True) -> np.ndarray:
        return np.stack([self.vectors[t] for t in texts])


def test_lexical_search_goes_through_bm25s_retrieve_with_depth(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    index, _ = _bm25_index(rng)
    calls: list[int] = []
    real = lexical_side.Lexical.retrieve

    def spy(self: lexical_side.Lexical, queries: list[str], k: int, mask: object) -> object:
        calls.append(k)
        return real(self, queries, k, mask)

    monkeypatch.setattr(lexical_side.Lexical, "retrieve", spy)
    _scores, ids = index.search(["lazy dog"], 3, mode="lexical")
    assert ids[0, :2].tolist() == ["t4", "t0"]  # the shorter document scores higher
    assert calls == [3]
    index.search(["lazy dog"], 2, mode="lexical", allow=["t0", "t2"])
    assert calls[-1] == 2


def test_bm25_removes_mask_and_adds_rebuild_lazily(rng: np.random.Generator) -> None:
    index, _vectors = _bm25_index(rng)
    index.search(["fox"], 2, mode="lexical")
    built = index._bm25
    index.remove(["t0"])
    _, ids = index.search(["fox"], 2, mode="lexical")
    assert index._bm25 is built, "a remove masks, it does not rebuild"
    assert ids[0].tolist() == ["t1", None]
    index.add(unit(rng.standard_normal((1, DIM))), ["t9"], texts=["a red fox"])
    assert index._bm25 is built, "an add only marks the BM25 side stale"
    _, ids = index.search(["fox"], 3, mode="lexical")
    assert index._bm25 is not built
    assert set(ids[0].tolist()) == {"t1", "t9", None}


def test_hybrid_fuses_both_sides_and_round_trips(rng: np.random.Generator, tmp_path: Path) -> None:
    index, vectors = _bm25_index(rng)
    query = "zyxquor 7741"
    index.attach_engine(_Fixed({query: vectors[2]}))  # type: ignore[arg-type]
    for fusion in ("rrf", "score"):
        _scores, ids = index.search([query], 6, mode="hybrid", fusion=fusion)
        assert set(ids[0, :2].tolist()) == {"t2", "t3"}, "the dense and the lexical winner"
        assert ids.shape == (1, 6)
    index.remove(["t5"])
    index.save(tmp_path / "h.emb")
    loaded = VectorIndex.load(tmp_path / "h.emb", device="cpu")
    loaded.attach_engine(_Fixed({query: vectors[2]}))  # type: ignore[arg-type]
    for mode in ("lexical", "hybrid"):
        want = index.search([query], 4, mode=mode)
        got = loaded.search([query], 4, mode=mode)
        np.testing.assert_array_equal(want[1], got[1])
        np.testing.assert_array_equal(want[0], got[0])
    loaded.add(unit(rng.standard_normal((1, DIM))), ["t7"], texts=["zyxquor again"])
    assert "t7" in loaded.search([query], 3, mode="lexical")[1][0].tolist()
