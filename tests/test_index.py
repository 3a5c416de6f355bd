"""VectorIndex: exact and approximate search, ids, mutation, filters, bad input, round trips."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embengine import Engine
from embengine.errors import InvalidInputError
from embengine.index import CorruptFileError, ModelMismatchError, VectorIndex
from embengine.index import _faiss as faiss_side
from embengine.io import save_arrays
from embengine.ops import reference

DIM = 24
KINDS = [("flat", "faiss"), ("flat", "kernel"), ("ivf", "faiss"), ("hnsw", "faiss")]
ANN = {"nlist": 8, "nprobe": 8}  # every list visited: IVF is exact on this small data


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def data(rng: np.random.Generator) -> np.ndarray:
    """400 unit vectors around 8 centres: structure like real embeddings, distinct rows."""
    centres = rng.standard_normal((8, DIM))
    return unit(centres[rng.integers(0, 8, 400)] + 0.5 * rng.standard_normal((400, DIM)))


def make(kind: str, exact: str, **options: object) -> VectorIndex:
    return VectorIndex(DIM, kind=kind, exact=exact, device="cpu", **ANN, **options)


@pytest.mark.parametrize(("kind", "exact"), KINDS)
def test_search_matches_the_numpy_reference(kind: str, exact: str, data: np.ndarray) -> None:
    index = make(kind, exact)
    index.add(data)
    queries = data[:20] + 0.01
    scores, ids = index.search(queries, 10)
    want_scores, want_ids = reference.topk_cosine(unit(queries), data, 10)
    assert scores.shape == ids.shape == (20, 10)
    assert ids.dtype == np.int64
    if kind == "hnsw":  # approximate: nearly all of the true neighbours
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, want_ids, strict=True)])
        assert overlap >= 0.95
    else:
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_allclose(scores, want_scores, atol=1e-5)


@pytest.mark.parametrize(("kind", "exact"), KINDS)
def test_remove_and_upsert(kind: str, exact: str, data: np.ndarray) -> None:
    index = make(kind, exact)
    index.add(data[:300], [f"d{i}" for i in range(300)])
    index.remove(["d0", "d1", "d2"])
    _, ids = index.search(data[:3], 5)
    assert not {"d0", "d1", "d2"} & set(ids.ravel().tolist())
    assert len(index) == 297
    assert "d1" not in index

    index.upsert(data[[3]] * -1, ["d5"])  # d5 now points the other way
    np.testing.assert_allclose(index.get(["d5"]), -data[[3]], atol=1e-6)
    scores, ids = index.search(-data[[3]], 1)
    assert ids[0, 0] == "d5"
    assert scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert "d5" not in set(index.search(data[[5]], 5)[1].ravel().tolist())

    index.upsert(data[300:310], [f"d{i}" for i in range(300, 310)])  # upsert of new ids adds
    assert len(index) == 307


@pytest.mark.parametrize(("kind", "exact"), KINDS)
def test_removing_most_rows_compacts_and_matches_a_fresh_index(
    kind: str, exact: str, data: np.ndarray
) -> None:
    index = make(kind, exact)
    index.add(data)
    keep = np.arange(0, 400, 3)
    index.remove([i for i in range(400) if i % 3])
    assert index.dead == 0, "more than half dead: compacted"
    _, ids = index.search(data[:10], 5)
    want = keep[reference.topk_cosine(data[:10], data[keep], 5)[1]]
    if kind != "hnsw":
        np.testing.assert_array_equal(ids, want)
    assert set(ids.ravel().tolist()) <= set(keep.tolist())
    assert index.add(data[:2]) == [400, 401], "auto ids continue after the largest"


def test_sentinels_when_k_exceeds_the_rows(data: np.ndarray) -> None:
    index = make("flat", "faiss")
    index.add(data[:3], ["a", "b", "c"])
    scores, ids = index.search(data[:2], 5)
    assert ids.dtype == object
    assert ids[0, 0] == "a"
    assert (ids[:, 3:] == None).all()  # noqa: E711 (elementwise)
    assert np.isneginf(scores[:, 3:]).all()
    assert np.isfinite(scores[:, :3]).all()

    ints = make("flat", "faiss")
    ints.add(data[:3])
    scores, ids = ints.search(data[:1], 4)
    assert ids.tolist() == [[0, 1, 2, -1]]
    assert np.isneginf(scores[0, 3])


@pytest.mark.parametrize(("kind", "exact"), KINDS)
def test_empty_index_search_returns_sentinels(kind: str, exact: str) -> None:
    scores, ids = make(kind, exact).search(np.ones((2, DIM)), 3)
    assert scores.shape == ids.shape == (2, 3)
    assert np.isneginf(scores).all()
    assert (ids == -1).all()


def test_allow_list_is_exact_over_the_allowed_rows(data: np.ndarray) -> None:
    index = make("hnsw", "faiss")
    index.add(data, [f"d{i}" for i in range(400)])
    allowed = [f"d{i}" for i in range(0, 400, 7)]
    scores, ids = index.search(data[:5], 4, allow=allowed)
    rows = np.arange(0, 400, 7)
    want_scores, want = reference.topk_cosine(data[:5], data[rows], 4)
    assert ids.tolist() == [[f"d{rows[j]}" for j in row] for row in want]
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    assert (index.search(data[:1], 2, allow=[])[1] == None).all()  # noqa: E711
    with pytest.raises(KeyError, match="nope"):
        index.search(data[:1], 2, allow=["nope"])


# ------------------------------------------------------------------- bad input


@settings(max_examples=25, deadline=None)
@given(
    row=st.integers(0, 9),
    col=st.integers(0, DIM - 1),
    bad=st.sampled_from([np.nan, np.inf, -np.inf]),
)
def test_nonfinite_vectors_are_refused_and_change_nothing(row: int, col: int, bad: float) -> None:
    x = unit(np.random.default_rng(row).standard_normal((10, DIM)))
    index = make("flat", "faiss")
    index.add(x[:2])
    x[row, col] = bad
    with pytest.raises(ValueError, match=rf"NaN or inf values \(first in row {row}"):
        index.add(x)
    with pytest.raises(ValueError, match="NaN or inf"):
        index.search(x, 2)
    assert len(index) == 2
    assert index.ids == [0, 1]


@settings(max_examples=20, deadline=None)
@given(dim=st.integers(1, 60).filter(lambda d: d != DIM), n=st.integers(0, 5))
def test_wrong_dimension_is_refused(dim: int, n: int) -> None:
    index = make("flat", "faiss")
    with pytest.raises(ValueError, match=f"dim {dim}, expected {DIM}"):
        index.add(np.ones((n, dim)))
    with pytest.raises(ValueError, match=f"dim {dim}, expected {DIM}"):
        index.search(np.ones((1, dim)), 1)
    with pytest.raises(ValueError, match="shape"):
        index.add(np.ones(DIM))  # 1-D
    assert len(index) == 0


@settings(max_examples=30, deadline=None)
@given(
    present=st.lists(st.integers(0, 50), min_size=1, max_size=10, unique=True),
    asked=st.lists(st.integers(0, 60), min_size=1, max_size=10),
)
def test_remove_with_any_unknown_id_raises_and_removes_nothing(
    present: list[int], asked: list[int]
) -> None:
    index = make("flat", "faiss")
    index.add(np.ones((len(present), DIM)), present)
    unknown = [i for i in asked if i not in present]
    if unknown:
        with pytest.raises(KeyError, match=str(unknown[0])):
            index.remove(asked)
        assert sorted(index.ids) == sorted(present)
    elif len(set(asked)) < len(asked):  # an id twice: refused as a whole (issue 16 item 10)
        with pytest.raises(InvalidInputError, match="repeat"):
            index.remove(asked)
        assert sorted(index.ids) == sorted(present)
    else:
        index.remove(asked)
        assert sorted(index.ids) == sorted(set(present) - set(asked))


@settings(max_examples=30, deadline=None)
@given(
    first=st.lists(st.text(min_size=1, max_size=3), min_size=1, max_size=6, unique=True),
    second=st.lists(st.text(min_size=1, max_size=3), min_size=1, max_size=6),
)
def test_duplicate_ids_on_add_raise_and_add_nothing(first: list[str], second: list[str]) -> None:
    index = make("flat", "faiss")
    index.add(np.ones((len(first), DIM)), first)
    clash = set(first) & set(second) or len(set(second)) < len(second)
    if clash:
        with pytest.raises(ValueError, match="duplicate ids"):
            index.add(np.ones((len(second), DIM)), second)
        assert index.ids == first
    else:
        index.add(np.ones((len(second), DIM)), second)
        assert index.ids == first + second


def test_bad_ids_and_arguments_are_named() -> None:
    index = make("flat", "faiss")
    index.add(np.ones((2, DIM)), [1, 2])
    with pytest.raises(TypeError, match="must all be int or all str"):
        index.add(np.ones((1, DIM)), ["x"])
    with pytest.raises(ValueError, match=r"ids\[0\] is -3"):
        index.add(np.ones((1, DIM)), [-3])
    with pytest.raises(TypeError, match=r"ids\[1\] is a bool"):
        index.add(np.ones((2, DIM)), [7, True])
    assert index.add(np.ones((1, DIM)), np.array([5])) == [5]  # numpy ints are ints
    with pytest.raises(ValueError, match="2 ids for 1 items"):
        index.add(np.ones((1, DIM)), [8, 9])
    with pytest.raises(ValueError, match="k must be"):
        index.search(np.ones((1, DIM)), 0)
    with pytest.raises(ValueError, match="needs an engine"):
        index.search(["a text"], 1)
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        index.search(["a", 3], 1)
    with pytest.raises(ValueError, match="mode='hybrid' needs text queries"):
        index.search(np.ones((1, DIM)), 1, mode="hybrid")
    with pytest.raises(ValueError, match="kind must be"):
        VectorIndex(DIM, kind="lsh")
    ivf = VectorIndex(DIM, kind="ivf", nlist=50, device="cpu")
    with pytest.raises(ValueError, match="at least 50 vectors"):
        ivf.add(np.ones((10, DIM)), [f"a{i}" for i in range(10)])
    assert len(ivf) == 0
    assert ivf.add(np.ones((50, DIM)))[:2] == [0, 1], "nothing of the failed add remains"


def test_device_cuda_without_faiss_gpu_is_an_error() -> None:
    if faiss_side.faiss_gpu_count():
        pytest.skip("FAISS has a GPU here")
    with pytest.raises(ValueError, match="needs faiss with GPU support"):
        VectorIndex(DIM, device="cuda")


# ------------------------------------------------------------------- persistence


@pytest.mark.parametrize(("kind", "exact"), KINDS)
def test_save_load_round_trip_with_tombstones(
    kind: str, exact: str, data: np.ndarray, tmp_path: Path
) -> None:
    index = make(kind, exact)
    index.add(data[:200], [f"d{i}" for i in range(200)], texts=[f"text {i}" for i in range(200)])
    index.remove(["d3", "d4"])
    index.save(tmp_path / "i.emb")
    loaded = VectorIndex.load(tmp_path / "i.emb", device="cpu")
    for a, b in zip(index.search(data[:9], 7), loaded.search(data[:9], 7), strict=True):
        np.testing.assert_array_equal(a, b)
    assert loaded.ids == index.ids
    assert loaded.texts(["d5"]) == ["text 5"]
    loaded.add(data[200:210], [f"d{i}" for i in range(200, 210)])  # still mutable (IVF trained)
    assert loaded.search(data[[205]], 1)[1][0, 0] == "d205"


def test_damaged_or_foreign_files_are_refused(data: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "i.emb"
    index = make("flat", "faiss")
    index.add(data[:50])
    index.save(path)
    blob = bytearray(path.read_bytes())
    blob[-100] ^= 1
    (tmp_path / "flipped.emb").write_bytes(bytes(blob))
    with pytest.raises(CorruptFileError, match="checksum"):
        VectorIndex.load(tmp_path / "flipped.emb")
    (tmp_path / "cut.emb").write_bytes(bytes(blob[: len(blob) // 2]))
    with pytest.raises(CorruptFileError, match="truncated"):
        VectorIndex.load(tmp_path / "cut.emb")
    save_arrays(tmp_path / "other.emb", {"x": np.zeros(3)}, {"format": "something else"})
    with pytest.raises(CorruptFileError, match="not a VectorIndex"):
        VectorIndex.load(tmp_path / "other.emb")
    assert VectorIndex.load(path).ids == index.ids, "the good copy is untouched"


# ------------------------------------------------------------------- with the engine

DOCS = [
    "The mitochondria is the powerhouse of the cell.",
    "Photosynthesis turns sunlight into chemical energy in plants.",
    "Stock markets fell sharply after the interest rate decision.",
    "The striker scored twice in the second half of the final.",
    "Vaccines train the immune system to recognise a pathogen.",
    "Zyxquor protocol 7741 failed its calibration run.",
]


def test_engine_index_text_search_hybrid_and_model_check(engine: Engine, tmp_path: Path) -> None:
    index = engine.index(DOCS, ids=[f"doc{i}" for i in range(6)], lexical=True)
    _, ids = index.search(["how do plants make energy from light?"], 2)
    assert ids[0, 0] == "doc1"
    _, ids = engine.search(["football match goals"], index, 1)
    assert ids.tolist() == [["doc3"]]
    scores, ids = index.search(["zyxquor 7741"], 3, mode="lexical")
    assert ids[0, 0] == "doc5"
    assert scores[0, 0] > 0
    assert np.isneginf(scores[0, 1:]).all()
    for fusion in ("rrf", "score"):
        _, ids = index.search(["zyxquor calibration"], 6, mode="hybrid", fusion=fusion)
        assert ids[0, 0] == "doc5"
        assert set(ids[0]) == {f"doc{i}" for i in range(6)}

    index.remove(["doc5"])  # BM25 side rebuilt from the live texts
    _, ids = index.search(["zyxquor 7741"], 3, mode="lexical")
    assert "doc5" not in ids[0].tolist()
    index.save(tmp_path / "i.emb")
    loaded = VectorIndex.load(tmp_path / "i.emb", engine=engine)
    for mode in ("dense", "lexical", "hybrid"):
        want = index.search(["cell energy"], 3, mode=mode)
        got = loaded.search(["cell energy"], 3, mode=mode)
        np.testing.assert_array_equal(want[1], got[1])
        np.testing.assert_allclose(want[0], got[0], rtol=1e-5)

    other = VectorIndex(engine.dim, fingerprint="another-model")
    other.add(engine.embed(DOCS[:2]))
    other.save(tmp_path / "other.emb")
    with pytest.raises(ModelMismatchError, match="another-model"):
        VectorIndex.load(tmp_path / "other.emb", engine=engine)
    with pytest.raises(ModelMismatchError, match="re-index"):
        engine.search(["x"], other, 1)


@pytest.mark.gpu
def test_gpu_index_matches_the_cpu_index(data: np.ndarray) -> None:
    pytest.importorskip("faiss", reason="FAISS is not installed (the GPU image has none)")
    if faiss_side.faiss_gpu_count() == 0:
        pytest.skip("faiss has no GPU support here (install faiss-gpu)")
    for kind in ("flat", "ivf"):
        cpu, gpu = make(kind, "faiss"), VectorIndex(DIM, kind=kind, device="cuda", **ANN)
        for index in (cpu, gpu):
            index.add(data)
            index.remove(list(range(0, 400, 5)))
            index.upsert(data[:3] * -1, [1, 2, 3])
        assert faiss_side.is_gpu(gpu._faiss)
        cs, ci = cpu.search(data[:30], 10)
        gs, gi = gpu.search(data[:30], 10)
        np.testing.assert_array_equal(ci, gi)
        np.testing.assert_allclose(cs, gs, atol=1e-5)


def test_the_exact_flat_index_needs_no_faiss(
    data: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the faiss extra (a bare GPU image, a slim install) the exact flat index runs
    on embengine's kernels; the kinds that need FAISS say what to install when used."""
    monkeypatch.setitem(sys.modules, "faiss", None)
    index = VectorIndex(data.shape[1])
    index.add(data)
    index.remove([3])
    _, ids = index.search(data[:4], 2)
    np.testing.assert_array_equal(ids[:3, 0], [0, 1, 2])
    assert 3 not in ids
    index.save(tmp_path / "flat.emb")
    loaded = VectorIndex.load(tmp_path / "flat.emb")
    np.testing.assert_array_equal(loaded.search(data[:4], 2)[1], ids)
    ivf = VectorIndex(data.shape[1], kind="ivf")
    with pytest.raises(ImportError, match="faiss"):
        ivf.add(data)
