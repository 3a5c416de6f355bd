"""VectorIndex on the GPU without FAISS's: the exact kernel scans a device copy of the rows.

Without a GPU the "device" is CPU torch: `_mirror.usable` / `default_device` are patched so
that device="cuda" puts the mirror there, and FakeCudaEncoder makes the session engine pose
as a CUDA one whose vectors stay on its torch device (cpu). The mirror's bookkeeping (lazy
uploads, rebuilds after compaction, concurrent readers), the query routing and the
fallbacks all run; the CUDA kernels themselves are tested in test_gpu_*.py. The one test
marked `gpu` runs the same comparison on a real GPU.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
from gpu_fakes import FakeCudaEncoder, dev, unit_rows

from embengine.errors import InvalidInputError
from embengine.index import VectorIndex, _faiss, _mirror

torch = pytest.importorskip("torch")

DIM = 32


@pytest.fixture
def on_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """device="cuda" (and "auto") usable, with the mirror on CPU torch."""
    monkeypatch.setattr(_mirror, "usable", lambda: True)
    monkeypatch.setattr(_mirror, "default_device", lambda: torch.device("cpu"))


@pytest.fixture
def cuda_engine(engine: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The session engine posing as a CUDA one: embed(output="torch") stays on its device."""
    monkeypatch.setattr(engine, "encoder", FakeCudaEncoder(engine.encoder))
    monkeypatch.setattr(engine, "store", None)
    return engine


def pair(**options: Any) -> tuple[VectorIndex, VectorIndex]:
    """(index searched on the device, the same index on the host)."""
    return VectorIndex(DIM, device="cuda", **options), VectorIndex(DIM, device="cpu", **options)


def same_results(a: VectorIndex, b: VectorIndex, queries: Any, k: int, **options: Any) -> None:
    got_scores, got_ids = a.search(queries, k, **options)
    want_scores, want_ids = b.search(
        queries.numpy() if isinstance(queries, torch.Tensor) else queries, k, **options
    )
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_allclose(got_scores, want_scores, rtol=0, atol=1e-6)


def test_device_cuda_puts_a_flat_kernel_index_on_the_device(on_device: None) -> None:
    index = VectorIndex(DIM, device="cuda")
    assert index.describe()["device"] == "cuda"
    assert index.describe()["dense_search"] == "kernel on cpu"
    assert VectorIndex(DIM).describe()["dense_search"] == "kernel on cpu"  # auto
    assert VectorIndex(DIM, device="cpu").describe()["dense_search"] == "kernel"
    assert VectorIndex(DIM, compact="int8").describe()["dense_search"] == "int8"
    if not _faiss.faiss_gpu_count():  # IVF / exact="faiss" still need FAISS's GPU
        with pytest.raises(InvalidInputError, match="needs faiss with GPU support"):
            VectorIndex(DIM, device="cuda", exact="faiss")


def test_without_a_usable_gpu_device_cuda_is_a_clear_error() -> None:
    if _faiss.faiss_gpu_count() or _mirror.usable():
        pytest.skip("a GPU is usable here")
    with pytest.raises(InvalidInputError, match="CUDA kernels with CUDA torch"):
        VectorIndex(DIM, device="cuda")
    assert VectorIndex(DIM).describe()["device"] == "cpu"  # auto: the host, as before


def test_results_match_the_host_through_add_remove_and_re_add(
    on_device: None, rng: np.random.Generator
) -> None:
    data = unit_rows(rng, 400, DIM)
    queries = unit_rows(rng, 70, DIM)  # over 32 queries: the tiled top-k too
    gpu, cpu = pair()
    for index in (gpu, cpu):
        index.add(data[:250])
    same_results(gpu, cpu, queries, 10)
    assert gpu.describe()["device_searches"] == 1
    assert gpu.describe()["device_rows"] == 250
    for index in (gpu, cpu):
        index.remove(list(range(0, 250, 7)))  # tombstones: the mirror keeps the rows
        index.add(data[250:])  # appended past the mirror's rows
        index.upsert(-data[:3], [1, 2, 3])  # 0 was removed: 1, 2, 3 replaced
    same_results(gpu, cpu, queries, 10)
    same_results(gpu, cpu, queries[:1], 1)
    same_results(gpu, cpu, data[:40], 25)  # queries that are rows: exact self-matches
    assert gpu.describe()["device_rows"] == 403  # 400 + 3 upserted, dead rows included
    assert cpu.describe()["device_searches"] == 0


def test_k_above_the_ids_pads_as_on_the_host(on_device: None, rng: np.random.Generator) -> None:
    gpu, cpu = pair()
    data = unit_rows(rng, 30, DIM)
    for index in (gpu, cpu):
        index.add(data, [f"d{i}" for i in range(30)])
        index.remove(["d3", "d4"])
    queries = unit_rows(rng, 5, DIM)
    same_results(gpu, cpu, queries, 50)
    _, ids = gpu.search(queries, 50)
    assert (ids[:, 28:] == None).all()  # noqa: E711 -- object array of str ids
    assert gpu.describe()["device_searches"] == 2


def test_many_small_adds_between_searches_follow_the_host(
    on_device: None, rng: np.random.Generator
) -> None:
    data = unit_rows(rng, 300, DIM)
    queries = unit_rows(rng, 9, DIM)
    gpu, cpu = pair()
    for start in range(0, 300, 23):  # grows the device buffer in place and past it
        for index in (gpu, cpu):
            index.add(data[start : start + 23])
        same_results(gpu, cpu, queries, 5)
        assert gpu.describe()["device_rows"] == min(300, start + 23)


def test_compaction_rebuilds_the_mirror(on_device: None, rng: np.random.Generator) -> None:
    data = unit_rows(rng, 400, DIM)
    gpu, cpu = pair()
    for index in (gpu, cpu):
        index.add(data[:200])
    same_results(gpu, cpu, data[:20], 5)
    for index in (gpu, cpu):
        index.remove(list(range(0, 200, 2)))  # half dead: compacted, slots renumbered
        index.add(data[200:])  # past the 200 rows mirrored before: not an append to them
    assert gpu.dead == 0
    same_results(gpu, cpu, data[:20], 5)
    same_results(gpu, cpu, data[300:320], 5)
    assert gpu.describe()["device_rows"] == 300


def test_device_queries_are_used_as_they_are_and_numpy_is_uploaded_once(
    on_device: None, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    gpu, cpu = pair()
    data = unit_rows(rng, 100, DIM)
    for index in (gpu, cpu):
        index.add(data)
    uploads: list[int] = []
    upload = _mirror.DeviceMirror.upload
    monkeypatch.setattr(
        _mirror.DeviceMirror, "upload", lambda self, q: uploads.append(len(q)) or upload(self, q)
    )
    raw = rng.standard_normal((40, DIM)).astype(np.float64) * 3  # not unit, not float32
    same_results(gpu, cpu, torch.from_numpy(raw), 8)
    assert uploads == []
    same_results(gpu, cpu, raw, 8)
    assert uploads == [40]
    with pytest.raises(InvalidInputError, match="dim 5, expected 32"):
        gpu.search(torch.zeros((2, 5)), 3)
    bad = torch.from_numpy(raw.copy())
    bad[1, 4] = float("nan")
    with pytest.raises(InvalidInputError, match="row 1"):
        gpu.search(bad, 3)


def test_filtered_searches_run_on_the_host(on_device: None, rng: np.random.Generator) -> None:
    gpu, cpu = pair()
    data = unit_rows(rng, 120, DIM)
    for index in (gpu, cpu):
        index.add(data)
    queries = unit_rows(rng, 6, DIM)
    allow = list(range(10, 120, 3))
    same_results(gpu, cpu, queries, 7, allow=allow)
    same_results(gpu, cpu, torch.from_numpy(queries), 7, allow=allow)
    assert gpu.describe()["device_searches"] == 0


def test_gpu_arrays_go_into_any_index(rng: np.random.Generator) -> None:
    """CUDA arrays (here: host memory posing as CuPy) are copied to a host index."""
    data, queries = unit_rows(rng, 50, DIM), unit_rows(rng, 4, DIM)
    index = VectorIndex(DIM, device="cpu")
    index.add(dev(data))
    np.testing.assert_allclose(index.get(list(range(50))), data, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(index.search(dev(queries), 5)[1], index.search(queries, 5)[1])


def test_saved_and_loaded_like_a_host_index(
    on_device: None, rng: np.random.Generator, tmp_path: Any
) -> None:
    data, queries = unit_rows(rng, 80, DIM), unit_rows(rng, 5, DIM)
    gpu = VectorIndex(DIM, device="cuda")
    gpu.add(data)
    gpu.remove([3, 5])
    gpu.search(queries, 4)
    gpu.save(tmp_path / "i.emb")
    cpu = VectorIndex.load(tmp_path / "i.emb", device="cpu")
    again = VectorIndex.load(tmp_path / "i.emb", device="cuda")
    assert again.describe()["dense_search"] == "kernel on cpu"
    same_results(again, cpu, queries, 4)
    same_results(gpu, cpu, queries, 4)


def test_concurrent_searches_never_see_a_torn_mirror(
    on_device: None, rng: np.random.Generator
) -> None:
    """Readers search for the latest rows added while a writer keeps adding (and removing,
    which compacts): a row missing from, or stale in, the mirror would lose its self-match.
    Readers look up odd rows only; the writer removes even ones."""
    data = unit_rows(rng, 1200, DIM)
    index = VectorIndex(DIM, device="cuda")
    index.add(data[:100])
    added = [100]
    done = threading.Event()
    failures: list[str] = []

    def read() -> None:
        while not done.is_set():
            n = added[-1]
            rows = np.arange(n - 16, n)
            rows = rows[rows % 2 == 1]
            scores, ids = index.search(data[rows], 2)
            if not (ids[:, 0] == rows).all() or not np.allclose(scores[:, 0], 1, atol=1e-5):
                failures.append(f"rows {rows.tolist()} found {ids[:, 0].tolist()}")

    readers = [threading.Thread(target=read) for _ in range(3)]
    for thread in readers:
        thread.start()
    try:
        for start in range(100, 1200, 25):
            index.add(data[start : start + 25])
            added.append(start + 25)
            if start % 200 == 0:  # a quarter of the rows or more dead: compacted
                index.remove([i for i in index.ids if i % 2 == 0][:70])
    finally:
        done.set()
        for thread in readers:
            thread.join()
    assert failures == []
    assert index.describe()["device_searches"] > 0
    assert index.describe()["device_rows"] == len(index) + index.dead


# ---- through the engine: a GPU engine's queries stay on its device ----


TEXTS = [
    "Vitamin D helps the body absorb calcium.",
    "Reset your password from the login page.",
    "Our office is closed on public holidays.",
    "The train to Lyon leaves at nine.",
    "Calcium and vitamin D keep bones strong.",
    "Forgot your password? Use the reset link.",
]
QUERIES = ["bones and calcium", "how do I reset my password", "when does the train leave"]


def test_engine_search_hands_device_queries_to_a_device_index(cuda_engine: Any) -> None:
    index = cuda_engine.index(TEXTS, lexical=True)
    assert index.describe()["device"] == "cuda"
    assert index.describe()["dense_search"] == "kernel on cpu"
    host = VectorIndex(cuda_engine.dim, device="cpu", lexical=True, engine=cuda_engine)
    host.add(index.get(list(range(len(TEXTS)))), texts=TEXTS)
    assert host.describe()["device"] == "cpu"  # an explicit "cpu" never follows the engine
    batches = cuda_engine.encoder.device_batches
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_mirror.DeviceMirror, "upload", None)  # host queries would fail
        got_scores, got_ids = cuda_engine.search(QUERIES, index, 3)
    assert cuda_engine.encoder.device_batches > batches
    assert index.describe()["device_searches"] == 1
    want_scores, want_ids = cuda_engine.search(QUERIES, host, 3)
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_allclose(got_scores, want_scores, rtol=0, atol=1e-6)
    assert got_ids[:, 0].tolist() == [4, 5, 3]
    # text queries through the index, hybrid and lexical: the same as the host index
    for mode in ("dense", "hybrid", "lexical"):
        got = index.search(QUERIES, 4, mode=mode)
        want = host.search(QUERIES, 4, mode=mode)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_allclose(got[0], want[0], rtol=0, atol=1e-6)
    assert index.describe()["device_searches"] == 3  # dense and hybrid's dense side


def test_a_host_index_follows_a_gpu_engine_and_compact_ones_stay(
    cuda_engine: Any, rng: np.random.Generator
) -> None:
    vectors = unit_rows(rng, 20, cuda_engine.dim)
    auto = VectorIndex(cuda_engine.dim)
    auto.add(vectors)
    compact = VectorIndex(cuda_engine.dim, compact="int8", quantizer=None, calibrate_rows=5)
    compact.add(vectors)
    for index in (auto, compact):
        cuda_engine.search(["calcium"], index, 3)
    assert auto.describe()["device"] == "cuda"
    assert auto.describe()["device_searches"] == 1
    assert compact.describe()["dense_search"] == "int8"


def test_a_cpu_engine_changes_nothing(engine: Any) -> None:
    index = engine.index(TEXTS)
    engine.search(QUERIES, index, 2)
    assert index.describe()["dense_search"] == "kernel"
    assert index.describe()["device_searches"] == 0


@pytest.mark.gpu
def test_the_mirror_on_a_real_gpu_matches_the_host(rng: np.random.Generator) -> None:
    if _faiss.faiss_gpu_count():
        pytest.skip("FAISS has a GPU here: device='cuda' uses it")
    data, queries = unit_rows(rng, 5000, DIM), unit_rows(rng, 100, DIM)
    gpu, cpu = pair()
    for index in (gpu, cpu):
        index.add(data[:3000])
        index.remove(list(range(0, 3000, 9)))
        index.add(data[3000:])
    assert gpu.describe()["dense_search"].startswith("kernel on cuda")
    same_results(gpu, cpu, queries, 10)
    same_results(gpu, cpu, torch.from_numpy(queries).cuda(), 10)
    same_results(gpu, cpu, queries[:3], 2000)
    assert gpu.describe()["device_searches"] == 3


@pytest.mark.gpu
def test_a_gpu_engine_searches_its_index_on_the_device() -> None:
    from embengine import Engine

    gpu_engine = Engine(device="cuda")
    if not gpu_engine.describe()["device_resident_outputs"]:
        pytest.skip("this engine's backend returns vectors on the host")
    if _faiss.faiss_gpu_count():
        pytest.skip("FAISS has a GPU here: the index uses it")
    index = gpu_engine.index(TEXTS)
    host = VectorIndex(gpu_engine.dim, device="cpu", engine=gpu_engine)
    host.add(index.get(list(range(len(TEXTS)))))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_mirror.DeviceMirror, "upload", None)  # host queries would fail
        got_scores, got_ids = gpu_engine.search(QUERIES, index, 3)
    assert index.describe()["dense_search"].startswith("kernel on cuda")
    assert index.describe()["device_searches"] == 1
    want_scores, want_ids = gpu_engine.search(QUERIES, host, 3)
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_allclose(got_scores, want_scores, rtol=0, atol=1e-5)
