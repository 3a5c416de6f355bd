"""The jobs on a device-resident engine: vectors stay on the device from encoder to result.

`FakeCudaEncoder` makes the session engine pose as a CUDA one (its host `encode` raises, so
a job that took the host path fails); its rows come back as CPU torch tensors, on which the
ops run their CPU kernels, so every result must equal the host path's bit for bit. The
`sim_gpu` tests hand the jobs numpy-backed "CUDA arrays" instead: the real CUDA kernels
run on the CPU emulator.
"""

from __future__ import annotations

import importlib.util
import threading
from typing import Any

import numpy as np
import pytest
from gpu_fakes import FakeCudaEncoder, dev, unit_rows

from embengine import Engine
from embengine.demo import bundled_events, bundled_tickets
from embengine.errors import InvalidInputError
from embengine.records import record_texts
from embengine.tasks import _device, dedup
from embengine.tasks.anomaly import AnomalyDetector
from embengine.tasks.classify import Classifier
from embengine.tasks.dedup import dedup_vectors, match_vectors
from embengine.tasks.recommend import Recommender

torch = pytest.importorskip("torch")

HOWS = ("profile", "mean", "max")
PRODUCTS = [
    {"name": "Apple iPhone 12, 64GB, black", "brand": "Apple"},
    {"name": "Bosch cordless drill PSR 1800", "brand": "Bosch"},
    {"name": "iPhone 12 black 64 GB", "brand": "Apple"},
    {"name": "Fresh organic bananas, one bunch", "brand": ""},
    {"name": "Bosch PSR1800 cordless drill driver", "brand": "Bosch"},
    {"name": "Apple iPhone 12, 64GB, black", "brand": "Apple"},  # an exact copy of row 0
    {"name": "Fresh organic bananas, one bunch", "brand": ""},
    {"name": "Sony KDL-46V4100 46in Bravia LCD TV", "brand": "Sony"},
]


def on_cuda(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> FakeCudaEncoder:
    """Make the session engine pose as a resident CUDA one (monkeypatch restores it)."""
    fake = FakeCudaEncoder(engine.encoder)
    monkeypatch.setattr(engine, "encoder", fake)
    monkeypatch.setattr(engine, "store", None)
    assert _device.resident(engine)
    return fake


def same_pairs(got: Any, want: Any) -> None:
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def with_copies(rng: np.random.Generator, n: int = 400, dim: int = 24) -> np.ndarray:
    """Unit rows with near-duplicates and exact copies (one row copied 30 times)."""
    x = unit_rows(rng, n, dim)
    near = rng.choice(n, 40, replace=False)
    x[near[20:]] = x[near[:20]] + 0.02 * rng.standard_normal((20, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    others = rng.permutation(np.setdiff1d(np.arange(n), [7, 11]))
    x[others[:30]] = x[7]
    x[others[30:35]] = x[11]
    return x


# ---- dedup -------------------------------------------------------------------------------


@pytest.mark.parametrize("confirm", [None, True])
def test_engine_dedup_runs_on_the_device_with_the_host_result(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, confirm: bool | None
) -> None:
    want = engine.dedup(PRODUCTS, 0.8, template="{brand} {name}", confirm=confirm)
    fake = on_cuda(engine, monkeypatch)
    runs = _device.device_runs["dedup"]
    got = engine.dedup(PRODUCTS, 0.8, template="{brand} {name}", confirm=confirm)
    assert _device.device_runs["dedup"] == runs + 1
    assert fake.device_batches >= 1
    assert engine.last_stats.device_outputs == 1
    np.testing.assert_array_equal(got.labels, want.labels)
    same_pairs(got.pairs, want.pairs)
    assert got.labels[5] == 0  # the exact copy
    assert got.labels[2] == 0  # the near-duplicate


@pytest.mark.parametrize("method", ["exact", "partitioned"])
def test_dedup_vectors_on_a_tensor_equals_the_host(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    monkeypatch.setattr(dedup, "_BLOCK", 64)  # several tiles, cross-tile pairs included
    x = with_copies(rng)
    texts = [f"row {i % 50}" for i in range(len(x))]  # copies whose texts differ stay apart
    options = {"method": method, "partitions": 4, "texts": texts, "confirm": lambda a, b: True}
    want = dedup_vectors(x, 0.9, **options)
    runs = _device.device_runs["dedup"]
    got = dedup_vectors(torch.from_numpy(x.copy()), 0.9, **options)
    assert _device.device_runs["dedup"] == runs + 1
    np.testing.assert_array_equal(got.labels, want.labels)
    same_pairs(got.pairs, want.pairs)
    plain = dedup_vectors(torch.from_numpy(x.copy()), 0.9, method=method, partitions=4)
    assert (plain.labels == plain.labels[7]).sum() == 31  # every copy of row 7 joins it


def test_dedup_vectors_on_cuda_arrays_runs_the_kernels_there(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch, sim_gpu: Any
) -> None:
    monkeypatch.setattr(dedup, "_BLOCK", 128)
    x = with_copies(rng, n=300)
    want = dedup_vectors(x, 0.9)
    got = dedup_vectors(dev(x), 0.9)
    assert "pairs_in_tile" in sim_gpu.calls  # the CUDA pair kernel, emulated
    np.testing.assert_array_equal(got.labels, want.labels)
    same_pairs(got.pairs, want.pairs)


def test_device_vectors_are_checked_as_host_ones(rng: np.random.Generator, sim_gpu: Any) -> None:
    x = unit_rows(rng, 20, 8)
    x[13, 2] = np.nan
    for bad in (torch.from_numpy(x), dev(x)):
        with pytest.raises(InvalidInputError, match=r"vectors has NaN or inf values.*row 13"):
            dedup_vectors(bad, 0.9)
    with pytest.raises(InvalidInputError, match=r"must have shape \(n, dim\)"):
        dedup_vectors(dev(x[0]), 0.9)


# ---- match -------------------------------------------------------------------------------


def test_engine_match_runs_on_the_device_with_the_host_result(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    left = ["Sony Bravia 40 inch LCD TV - KDL40V4100", "Canon PowerShot camera - SD1100IS",
            "Bosch cordless drill PSR 1800", "organic bananas"]  # fmt: skip
    right = ["Canon PowerShot SD1100 IS digital camera", "Sony KDL-46V4100 46in Bravia LCD TV",
             "Bosch PSR1800 drill driver"]  # fmt: skip
    want = [engine.match(left, right, cut, confirm=True) for cut in ("auto", 0.3)]
    fake = on_cuda(engine, monkeypatch)
    runs = _device.device_runs["match"]
    got = [engine.match(left, right, cut, confirm=True) for cut in ("auto", 0.3)]
    assert _device.device_runs["match"] == runs + 2
    assert fake.device_batches >= 2
    for g, w in zip(got, want, strict=True):
        same_pairs(g, w)
    assert (1, 0) in set(zip(got[1].i.tolist(), got[1].j.tolist(), strict=True))


def test_match_vectors_on_cuda_arrays_runs_top_k_there(
    rng: np.random.Generator, sim_gpu: Any
) -> None:
    left = unit_rows(rng, 60, 32)
    right = np.concatenate([left[:40] + 0.05 * unit_rows(rng, 40, 32), unit_rows(rng, 30, 32)])
    right /= np.linalg.norm(right, axis=1, keepdims=True)
    want = match_vectors(left, right, 0.8, candidates=3)
    got = match_vectors(dev(left), dev(right), 0.8, candidates=3)
    assert any(call.startswith("topk_select") for call in sim_gpu.calls)
    np.testing.assert_array_equal(got.i, want.i)
    np.testing.assert_array_equal(got.j, want.j)
    np.testing.assert_allclose(got.score, want.score, atol=1e-5)
    np.testing.assert_array_equal(got.j, np.arange(40))  # each planted partner, no other


# ---- anomaly detector --------------------------------------------------------------------


def test_anomaly_scores_run_on_the_device_with_the_host_scores(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    history, stream = bundled_events()
    det = engine.anomaly_detector(centroids=2)
    det.fit(history)
    sessions = [i % 4 for i in range(len(stream))]
    want = det.score(stream), det.is_anomalous(stream)
    want_groups = {how: det.score_groups(stream, sessions, how=how) for how in HOWS}
    fake = on_cuda(engine, monkeypatch)
    runs = _device.device_runs["anomaly"]
    got = det.score(stream), det.is_anomalous(stream)
    assert _device.device_runs["anomaly"] == runs + 2
    assert fake.device_batches >= 2
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert got[1].sum() == 5  # the disk and memory faults
    for how in HOWS:
        groups = det.score_groups(stream, sessions, how=how)
        assert groups.groups == want_groups[how].groups
        np.testing.assert_array_equal(groups.scores, want_groups[how].scores)
    assert _device.device_runs["anomaly"] == runs + 4  # mean and max: line scores there
    det.update(stream[:5])  # a write: the next score copies the new state's arrays over
    monkeypatch.undo()
    want_after = det.score(stream)
    on_cuda(engine, monkeypatch)
    np.testing.assert_array_equal(det.score(stream), want_after)


def test_device_copies_of_the_state_are_made_once_per_state(rng: np.random.Generator) -> None:
    det = AnomalyDetector(_Dim8(), mask=None).fit_vectors(_unit(rng, 200))
    probe = _unit(rng, 30)
    st = det._state
    first = det.score_vectors(torch.from_numpy(probe))
    copies = dict(st.device)
    assert set(copies) == {("centroids", "cpu"), ("patterns", "cpu")}
    np.testing.assert_array_equal(det.score_vectors(torch.from_numpy(probe)), first)
    assert all(st.device[key] is copy for key, copy in copies.items())  # reused, not remade
    np.testing.assert_array_equal(first, det.score_vectors(probe))
    det.update_vectors(_unit(rng, 50))
    assert det._state.device == {}  # a new state starts without copies
    np.testing.assert_array_equal(
        det.score_vectors(torch.from_numpy(probe)), det.score_vectors(probe)
    )


def test_anomaly_scores_on_cuda_arrays_run_the_kernels_there(
    rng: np.random.Generator, sim_gpu: Any
) -> None:
    det = AnomalyDetector(_Dim8(), mask=None).fit_vectors(_unit(rng, 200))
    probe = np.concatenate([_unit(rng, 30), np.eye(8, dtype=np.float32)])
    want = det.score_vectors(probe)
    got = det.score_vectors(dev(probe))
    assert "nearest_centroid" in sim_gpu.calls
    assert any(call.startswith("topk_select") for call in sim_gpu.calls)
    np.testing.assert_allclose(got, want, atol=1e-5)
    det.update_vectors(dev(probe[:4]))  # a write takes device rows too: the window is host
    assert len(det) == 204
    with pytest.raises(InvalidInputError, match="has dim 4, expected 8"):
        det.score_vectors(dev(probe[:, :4]))


class _Dim8:
    """A stand-in engine for vector-only tests (no store, no GPU)."""

    dim = 8
    spec = type("Spec", (), {"fingerprint": "test-8"})()


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    """Noisy copies of one direction: unimodal normal traffic."""
    x = np.eye(8, dtype=np.float32)[0] + 0.1 * rng.standard_normal((n, 8)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ---- classifier --------------------------------------------------------------------------


def _tickets() -> tuple[dict[str, list[str]], list[str]]:
    """The bundled tickets: training examples by label, and the test texts."""
    examples: dict[str, list[str]] = {}
    for split, label, text in bundled_tickets():
        if split == "train":
            examples.setdefault(label, []).append(text)
    queries = [text for split, _, text in bundled_tickets() if split != "train"]
    return examples, [*queries, "what is the weather like on mars", "a recipe for pancakes"]


@pytest.mark.parametrize("mode", ["auto", "neighbours", "centroid"])
def test_classifier_predicts_on_the_device_with_the_host_result(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    examples, queries = _tickets()
    clf = Classifier(engine, examples, mode=mode, threshold="auto")
    want = clf.predict(queries), clf.predict_proba(queries), clf.oos_score(queries)
    fake = on_cuda(engine, monkeypatch)
    runs = _device.device_runs["classify"]
    got = clf.predict(queries), clf.predict_proba(queries), clf.oos_score(queries)
    assert _device.device_runs["classify"] == runs + 3
    assert fake.device_batches >= 3
    assert got[0] == want[0]
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[2], want[2])
    snap = clf._snap
    assert ("examples", "cpu") in snap.device or mode == "centroid"  # the kNN's copy
    assert ("vectors", "cpu") in snap.device  # the out-of-scope neighbour score's


def test_classifier_on_cuda_arrays_runs_the_searches_there(
    rng: np.random.Generator, sim_gpu: Any
) -> None:
    centres = np.eye(16, dtype=np.float32)[:3]
    x = np.concatenate([c + 0.1 * rng.standard_normal((12, 16)) for c in centres])
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    labels = np.repeat(["a", "b", "c"], 12).tolist()
    probe = np.concatenate([x[::5], np.eye(16, dtype=np.float32)[8:10]])
    for mode in ("knn", "centroid", "neighbours"):
        clf = Classifier.from_vectors(x, labels, mode=mode, threshold=0.9)
        want = clf.predict_vectors(probe), clf.predict_proba_vectors(probe)
        want_oos = clf.oos_score_vectors(probe)
        sim_gpu.calls.clear()
        got = clf.predict_vectors(dev(probe)), clf.predict_proba_vectors(dev(probe))
        assert "normalize_rows" in sim_gpu.calls  # centred on the device
        assert any(call.startswith("topk_select") for call in sim_gpu.calls), mode
        assert got[0] == want[0]
        np.testing.assert_allclose(got[1], want[1], atol=1e-4)
        np.testing.assert_allclose(clf.oos_score_vectors(dev(probe)), want_oos, atol=1e-6)
    clf.add_vectors("d", probe[-2:])  # a write: a new snapshot, no device copies yet
    assert clf._snap.device == {}
    proba = clf.predict_proba_vectors(dev(probe))
    assert proba.shape == (len(probe), 4)
    np.testing.assert_allclose(proba, clf.predict_proba_vectors(probe), atol=1e-4)
    assert len(clf._snap.device) > 0


def test_device_readers_racing_a_writer_see_whole_states(rng: np.random.Generator) -> None:
    """Device copies belong to one state: readers racing writes never mix two states."""
    det = AnomalyDetector(_Dim8(), mask=None, novelty_weight=None).fit_vectors(_unit(rng, 200))
    probe = _unit(rng, 40)
    drift = [np.roll(_unit(rng, 30), 1 + i % 3, axis=1) for i in range(12)]
    states = [det.score_vectors(probe)]
    seen: list[np.ndarray] = []
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(40):
                seen.append(det.score_vectors(torch.from_numpy(probe)))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for batch in drift:
        det.update_vectors(batch)
        states.append(det.score_vectors(probe))
    for t in threads:
        t.join()
    assert errors == []
    assert len(seen) == 120
    for scores in seen:
        assert any(np.array_equal(scores, state) for state in states)


def test_an_engine_with_a_store_or_without_a_gpu_is_not_resident(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not _device.resident(engine)  # the CPU engine
    assert not _device.resident(_Dim8())  # a stand-in with neither store nor encoder
    on_cuda(engine, monkeypatch)
    monkeypatch.setattr(engine, "store", object())  # a store sends vectors through the host
    assert not _device.resident(engine)


def test_a_coalescing_engine_keeps_small_calls_for_the_coalescer(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_cuda(engine, monkeypatch)
    monkeypatch.setattr(engine, "coalesce", True)
    texts = ["a red car", "the cat sat"]
    assert isinstance(_device.embed(engine, texts), np.ndarray)  # may join others' batch
    monkeypatch.setattr(engine, "max_batch_size", 2)
    assert isinstance(_device.embed(engine, texts), torch.Tensor)  # too big to coalesce


# ---- on a real GPU -----------------------------------------------------------------------


@pytest.mark.gpu
def test_every_job_on_a_cuda_engine_stays_there_and_agrees_with_the_host() -> None:
    """A real resident engine: each job takes the device path and gives the host's result
    for the same vectors (pairs exactly: pairs_above re-scores in one fixed order; top-k
    and centroid scores to float32 rounding)."""
    gpu = Engine(device="cuda", backend="torch", precision="fp32")
    assert _device.resident(gpu)
    before = dict(_device.device_runs)
    texts = record_texts(PRODUCTS, template="{brand} {name}")
    vectors = gpu.embed(texts)  # the same rows, copied to the host
    confirm = importlib.util.find_spec("rapidfuzz") is not None  # absent on the lent GPU image
    got = gpu.dedup(PRODUCTS, 0.8, template="{brand} {name}", confirm=confirm)
    want = dedup_vectors(vectors, 0.8, texts=texts, confirm=confirm)
    np.testing.assert_array_equal(got.labels, want.labels)
    same_pairs(got.pairs, want.pairs)
    left, right = texts[:4], texts[4:]
    pairs = gpu.match(left, right, 0.3)
    host_pairs = match_vectors(vectors[:4], vectors[4:], 0.3, left_texts=left, right_texts=right)
    np.testing.assert_array_equal(pairs.i, host_pairs.i)
    np.testing.assert_array_equal(pairs.j, host_pairs.j)
    np.testing.assert_allclose(pairs.score, host_pairs.score, atol=1e-5)
    history, stream = bundled_events()
    det = gpu.anomaly_detector().fit(history)
    np.testing.assert_allclose(det.score(stream), det.score_vectors(det.embed(stream)), atol=1e-5)
    examples, queries = _tickets()
    clf = Classifier(gpu, examples, mode="neighbours", threshold="auto")
    x = gpu.embed(queries)
    assert clf.predict(queries) == clf.predict_vectors(x)
    np.testing.assert_allclose(clf.predict_proba(queries), clf.predict_proba_vectors(x), atol=1e-4)
    rec = gpu.recommender(dict(enumerate(queries)), profiles=2)
    host_rec = Recommender.from_vectors(rec.vectors, rec.ids, profiles=2)  # no engine: host
    histories = [[0, 1], list(range(2, 12))]
    for got, want in zip(
        (rec.similar(rec.ids[:8], k=5), rec.for_user(histories, k=5)),
        (host_rec.similar(rec.ids[:8], k=5), host_rec.for_user(histories, k=5)),
        strict=True,
    ):
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_allclose(got[0], want[0], atol=1e-5)
    for job in ("dedup", "match", "anomaly", "classify", "recommend"):
        assert _device.device_runs[job] > before.get(job, 0), job


# ---- recommender -------------------------------------------------------------------------


class _Resident8(_Dim8):
    """A stand-in resident engine for vector-only recommenders: its "device" is the CPU."""

    store = None
    coalesce = False
    encoder = type("Encoder", (), {"torch_device": torch.device("cpu")})()

    def _device_resident(self) -> bool:
        return True


def _same_top(got: tuple[Any, Any], want: tuple[Any, Any]) -> None:
    """Ids equal, scores to float32 rounding (a top-k kernel against the host's products)."""
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_allclose(got[0], want[0], atol=1e-6)


def _recommend_all(rec: Any, histories: list[Any]) -> list[tuple[Any, Any]]:
    return [
        rec.similar(rec.ids, k=3),
        rec.similar(rec.ids[:2], k=len(rec) + 2),  # padded past the catalogue
        rec.for_user(histories, k=4, exclude=[["toy"], []]),
        rec.for_user(histories, k=3, candidates=["alien", "notting", "toy", "godfather"]),
    ]


def test_recommender_runs_on_the_device_with_the_host_result(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_recommend import ITEMS

    seen = [("ann", "alien"), ("ann", "interstellar"), ("bob", "notting"), ("bob", "pride")]
    options = [
        {"interactions": seen, "alpha": 0.5, "profiles": 2},
        {"diversity": 0.3, "center": False},
    ]
    histories = [["alien", "starwars"], {"notting": 2.0, "harry": 1, "pride": 1, "alien": 1,
                                         "toy": 1}]  # fmt: skip
    host_recs = [Recommender(engine, ITEMS, **o) for o in options]
    want = [_recommend_all(rec, histories) for rec in host_recs]
    fake = on_cuda(engine, monkeypatch)
    runs = _device.device_runs["recommend"]
    recs = [Recommender(engine, ITEMS, **o) for o in options]  # embedded on the device
    assert fake.device_batches >= 2
    for rec, host_rec, expected in zip(recs, host_recs, want, strict=True):
        np.testing.assert_array_equal(rec.vectors, host_rec.vectors)
        for got, w in zip(_recommend_all(rec, histories), expected, strict=True):
            _same_top(got, w)
        assert set(rec._state.device) == {("content", "cpu")}
        for got, w in zip(_recommend_all(host_rec, histories), expected, strict=True):
            _same_top(got, w)  # one made on the host: the same, now on the device
    assert _device.device_runs["recommend"] == runs + 16
    assert want[0][2][1][0][0] == "interstellar"  # ann's neighbour, blended in


def test_recommender_device_copy_is_made_once_per_state(rng: np.random.Generator) -> None:
    x = unit_rows(rng, 60, 8)
    host_rec = Recommender.from_vectors(x, list(range(60)), profiles=2)
    rec = Recommender.from_vectors(x, list(range(60)), engine=_Resident8(), profiles=2)
    st = rec._state
    _same_top(rec.similar([3, 7], k=5), host_rec.similar([3, 7], k=5))
    copy = st.device[("content", "cpu")]
    history = [list(range(10))]
    _same_top(rec.for_user(history, k=5), host_rec.for_user(history, k=5))
    assert st.device[("content", "cpu")] is copy  # reused, not remade
    rec.add_interactions([("u", 1), ("u", 2)])  # the same catalogue: its copy carries over
    assert rec._state is not st
    assert rec._state.device[("content", "cpu")] is copy
    more = unit_rows(rng, 5, 8)
    rec.add_vectors(list(range(60, 65)), torch.from_numpy(more))  # device rows: to the host
    assert rec._state.device == {}  # new rows: a new state starts without copies
    host_rec.add_vectors(list(range(60, 65)), more)
    np.testing.assert_array_equal(rec.vectors, host_rec.vectors)
    _same_top(rec.similar([60], k=5), host_rec.similar([60], k=5))
    more[2, 4] = np.inf
    with pytest.raises(InvalidInputError, match=r"vectors has NaN or inf values.*row 2"):
        rec.add_vectors(list(range(70, 75)), torch.from_numpy(more))
    assert len(rec) == 65  # nothing half-added


def test_recommender_on_cuda_arrays_runs_the_kernels_there(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch, sim_gpu: Any
) -> None:
    x = unit_rows(rng, 80, 16)
    seen = [(u, int(i)) for u in range(6) for i in rng.choice(80, 5, replace=False)]
    rec = Recommender.from_vectors(x, list(range(80)), interactions=seen, profiles=2)
    histories = [list(range(12)), {40: 1.0, 41: 3.0}]
    want = rec.similar(list(range(0, 80, 7)), k=6), rec.for_user(histories, k=6)
    monkeypatch.setattr(_device, "anchor", lambda engine: dev(np.zeros((0, 16), np.float32)))
    got = rec.similar(list(range(0, 80, 7)), k=6), rec.for_user(histories, k=6)
    assert any(call.startswith("topk_select") for call in sim_gpu.calls)
    assert "nearest_centroid" in sim_gpu.calls
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g[1], w[1])
        np.testing.assert_allclose(g[0], w[0], atol=1e-5)
    rec.add_vectors([80, 81], dev(x[:2]))  # device rows join the host catalogue
    np.testing.assert_allclose(rec.vectors[80:], x[:2], atol=1e-7)
    with pytest.raises(InvalidInputError, match="has dim 4, expected 16"):
        rec.add_vectors([90], dev(x[:1, :4]))


def test_recommender_readers_on_the_device_racing_a_writer_see_whole_states(
    rng: np.random.Generator,
) -> None:
    """Readers on the device path racing item and interaction writes never mix two states."""
    rec = Recommender.from_vectors(unit_rows(rng, 100, 8), list(range(100)), engine=_Resident8())
    probe = [0, 5, 50]

    def read() -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {"similar": rec.similar(probe, k=5), "for_user": rec.for_user([probe], k=5)}

    states = [read()]
    seen: list[tuple[str, tuple[np.ndarray, np.ndarray]]] = []
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(20):
                seen.extend(read().items())
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for n in range(12):  # new items move the catalogue mean: every centred score changes
        if n % 2:
            rec.add_interactions([(f"u{n}", 0), (f"u{n}", 100 + 10 * (n - 1))])
        else:
            rec.add_vectors(list(range(100 + 10 * n, 110 + 10 * n)), unit_rows(rng, 10, 8) + 0.5)
        states.append(read())
    for t in threads:
        t.join()
    assert errors == []
    assert len(seen) == 120
    for call, (scores, ids) in seen:
        assert any(
            np.array_equal(scores, state[call][0]) and np.array_equal(ids, state[call][1])
            for state in states
        )
