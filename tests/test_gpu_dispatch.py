"""The GPU path's logic on the CPU: dispatch, empty inputs, tiling, splits, counters.

No GPU runs here. `FakeDeviceArray` is host memory that exposes __cuda_array_interface__
(so the ops dispatch it to the CUDA path), and the kernels come in two kinds (the
`fake_gpu` fixture runs every test with each): `FakeKernels` does what each CUDA kernel
does, in numpy, on the raw addresses the driver hands it (pairs re-score with the very
helper the CUDA kernel calls, _native.dot_lanes8); `SimKernels` runs the real kernel code
of csrc/cuda, compiled for the CPU by the block/warp emulator (embengine._cuda_sim, see
csrc/include/embengine/cuda_sim.h). What this checks is the Python driver
(embengine/ops/similarity.py): which kernel runs, with which pointers and sizes, how tiles
and column splits are cut and merged, that float16 data is never converted whole, that empty
inputs never reach a kernel, and that the non-finite counter is read once per call; with
SimKernels, also the kernels' own results. On a GPU the gpu-marked tests do the same.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from gpu_fakes import (
    FakeCudaEncoder,
    FakeKernels,
    NumpyGpu,
    SimKernels,
    cuda_sim,
    dev,
    host,
    install_host_gpu,
    unit_rows,
)

from embengine import ops
from embengine.device import describe_cuda_status
from embengine.errors import InvalidInputError
from embengine.ops import reference, similarity
from embengine.ops._arrays import cuda_array, is_cuda_array


@pytest.fixture(params=["numpy", "sim"])
def fake_gpu(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> FakeKernels:
    """A GPU on the host, with the numpy twins or the emulated kernels."""
    kernels = FakeKernels() if request.param == "numpy" else SimKernels()
    return install_host_gpu(kernels, monkeypatch)


# ---- dispatch ----


def test_device_arrays_take_the_cuda_path_and_mixed_ones_are_refused(
    rng: np.random.Generator,
) -> None:
    x = unit_rows(rng, 5, 8)
    assert is_cuda_array(dev(x))
    assert not is_cuda_array(x)
    with pytest.raises(ValueError, match="must both be on the GPU or both on the CPU"):
        ops.topk_cosine(dev(x), x, 2)
    with pytest.raises(ValueError, match="one GPU: queries on cuda:0, base on cuda:1"):
        ops.topk_cosine(dev(x), dev(x, gpu=1), 2)


def test_a_grad_tensor_on_the_cpu_is_detached_not_refused(rng: np.random.Generator) -> None:
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(unit_rows(rng, 6, 8)).requires_grad_()
    _scores, ids = ops.topk_cosine(x, x, 2)
    assert isinstance(ids, torch.Tensor)
    assert (ids[:, 0] == torch.arange(6)).all()


def test_a_tensor_on_another_device_is_named(rng: np.random.Generator) -> None:
    torch = pytest.importorskip("torch")
    meta = torch.empty((3, 8), device="meta")
    with pytest.raises(ValueError, match="queries is a torch tensor on meta"):
        ops.topk_cosine(meta, meta, 1)


def test_cuda_array_reads_the_interface_without_touching_memory() -> None:
    a = cuda_array(dev(np.zeros((0, 8), np.float32)))
    assert (a.ptr, a.shape, a.dtype, a.contiguous) == (0, (0, 8), "float32", True)
    strided = cuda_array(dev(np.zeros((4, 8), np.float32))[:, ::2])
    assert not strided.contiguous


# ---- empty inputs never reach a kernel (defect 3) ----


def test_empty_inputs_give_empty_results_on_the_gpu_path(
    fake_gpu: FakeKernels, rng: np.random.Generator
) -> None:
    empty, some = dev(np.zeros((0, 8), np.float32)), dev(unit_rows(rng, 5, 8))
    scores, ids = ops.topk_cosine(empty, some, 3)
    assert host(scores).shape == host(ids).shape == (0, 3)
    scores, ids = ops.topk_cosine(some, empty, 3)
    assert (host(ids) == -1).all()
    assert np.isneginf(host(scores)).all()
    dist, nearest = ops.centroid_distance(empty, some)
    assert host(dist).shape == host(nearest).shape == (0,)
    assert host(ops.centroid_distances(empty, some)).shape == (0, 5)
    i, j, s = ops.pairs_above(empty, 0.5)
    assert host(i).shape == host(j).shape == host(s).shape == (0,)
    assert all(len(host(a)) == 0 for a in ops.pairs_above(some, 0.5, y=empty))
    assert fake_gpu.calls == []  # no kernel saw an empty array's (null) pointer


# ---- top-k: splits, paths, float16 read as is, counters (defects 1, 2, 4) ----


@pytest.mark.parametrize(
    ("q", "n", "k", "dtype"),
    [
        (1, 20_000, 10, np.float32),  # few queries: scan + column splits
        (3, 20_000, 7, np.float16),  # float16 base read as is
        (40, 3000, 25, np.float32),  # many queries: cuBLAS tiles
        (40, 3000, 25, np.float16),  # float16 base converted one bounded block at a time
        (2, 30, 100, np.float32),  # k > n: work clamped to n, sentinels after
    ],
)
def test_gpu_topk_driver_matches_reference(
    fake_gpu: FakeKernels,
    rng: np.random.Generator,
    monkeypatch: pytest.MonkeyPatch,
    q: int,
    n: int,
    k: int,
    dtype: type,
) -> None:
    monkeypatch.setattr(similarity, "GPU_CONVERT_ELEMENTS", 64 * 97)  # many small blocks
    queries, base = unit_rows(rng, q, 97), unit_rows(rng, n, 97).astype(dtype)
    scores, ids = ops.topk_cosine(dev(queries), dev(base), k)
    want = reference.topk_cosine(queries, base.astype(np.float32), k)
    np.testing.assert_allclose(host(scores), want[0], atol=2e-5)
    np.testing.assert_array_equal(host(ids) == -1, want[1] == -1)
    assert (host(ids)[:, : min(k, n)] == want[1][:, : min(k, n)]).mean() > 0.99
    assert NumpyGpu.reads == 1  # the non-finite counter: one read for the whole call
    if q <= similarity.GPU_SCAN_MAX_QUERIES:
        assert "dot_scores" in fake_gpu.calls
        assert NumpyGpu.converted == []  # the scan reads float16 as is
    else:
        assert "dot_scores" not in fake_gpu.calls
        assert max(NumpyGpu.converted, default=0) <= 64 * 97  # never the whole base
    if n >= 20_000:
        assert any("splits=" in c and "splits=1," not in c for c in fake_gpu.calls)


def test_gpu_topk_exclude_self_and_ties(fake_gpu: FakeKernels, rng: np.random.Generator) -> None:
    base = rng.integers(-2, 3, size=(300, 5)).astype(np.float32)
    base = np.concatenate([base, base])  # exact ties: the lower id first
    for q in (4, 40):
        scores, ids = ops.topk_cosine(dev(base[:q]), dev(base), 9, exclude_self=True)
        want = reference.topk_cosine(base[:q], base, 9, exclude_self=True)
        np.testing.assert_array_equal(host(ids), want[1])
        np.testing.assert_array_equal(host(scores), want[0])


def test_gpu_non_finite_rows_raise_or_are_skipped(
    fake_gpu: FakeKernels, rng: np.random.Generator
) -> None:
    base = unit_rows(rng, 5000, 16)
    base[1234, 3] = np.nan
    with pytest.raises(ValueError, match=r"base has NaN or inf values \(first in row 1234"):
        ops.topk_cosine(dev(base[:2]), dev(base), 5)
    scores, ids = ops.topk_cosine(dev(base[:2]), dev(base), 5000, check_finite=False)
    assert 1234 not in host(ids)  # NaN never reaches a result
    assert np.isfinite(host(scores)[:, :4999]).all()
    queries = unit_rows(rng, 2, 16)
    queries[1, 0] = np.inf
    with pytest.raises(ValueError, match=r"queries has NaN or inf values \(first in row 1"):
        ops.topk_cosine(dev(queries), dev(unit_rows(rng, 50, 16)), 5)


# ---- centroid distance (defect 5) ----


@pytest.mark.parametrize(("c", "kernel"), [(5, "nearest_centroid"), (100, "tile_argmax")])
def test_gpu_centroid_path_switches_to_a_matrix_product(
    fake_gpu: FakeKernels, rng: np.random.Generator, c: int, kernel: str
) -> None:
    x, centroids = unit_rows(rng, 700, 33).astype(np.float16), unit_rows(rng, c, 33)
    dist, nearest = ops.centroid_distance(dev(x), dev(centroids))
    want = reference.centroid_distance(x.astype(np.float32), centroids)
    np.testing.assert_allclose(host(dist), want[0], atol=2e-5)
    assert (host(nearest) == want[1]).mean() > 0.99
    assert set(fake_gpu.calls) == {kernel}
    full = ops.centroid_distances(dev(x), dev(centroids))
    np.testing.assert_allclose(
        host(full), reference.centroid_distances(x.astype(np.float32), centroids), atol=2e-5
    )


# ---- pairs (defect 6) ----


def test_gpu_pairs_equal_the_cpu_pairs_bit_for_bit(
    fake_gpu: FakeKernels, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(similarity, "GPU_PAIRS_CAPACITY", 8)  # the buffers must grow
    centres = unit_rows(rng, 50, 64)
    x = centres[rng.integers(0, 50, 600)] + 0.05 * rng.standard_normal((600, 64))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    for threshold in (0.9, 0.5):
        got = ops.pairs_above(dev(x), threshold)
        want = ops.pairs_above(x, threshold)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(host(g), w)
    y = x[:77] * 1.5
    got = ops.pairs_above(dev(x), 1.2, y=dev(y))
    for g, w in zip(got, ops.pairs_above(x, 1.2, y=y), strict=True):
        np.testing.assert_array_equal(host(g), w)


def pairs_at(rng: np.random.Generator, n: int, d: int, threshold: float) -> np.ndarray:
    """2n unit rows: n pairs whose exact cosines lie within 2e-4 above `threshold`."""
    a = unit_rows(rng, n, d).astype(np.float64)
    b = rng.standard_normal((n, d))
    b -= (b * a).sum(axis=1, keepdims=True) * a  # orthogonal to a
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    cos = threshold + rng.uniform(1e-6, 2e-4, (n, 1))
    return np.concatenate([a, cos * a + np.sqrt(1 - cos**2) * b]).astype(np.float32)


def test_gpu_pairs_nominated_in_float16_equal_the_cpu_pairs(
    fake_gpu: FakeKernels, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tensor-core (float16) tiles only nominate: the widened margin keeps every pair at the
    threshold, and the float32 re-score gives the CPU's pairs and bits."""
    monkeypatch.setattr(NumpyGpu, "half_tiles", True)
    x = pairs_at(rng, 300, 64, 0.9)
    want = ops.pairs_above(x, 0.9)
    assert len(want[0]) >= 300
    for g, w in zip(ops.pairs_above(dev(x), 0.9), want, strict=True):
        np.testing.assert_array_equal(host(g), w)
    for g, w in zip(
        ops.pairs_above(dev(x[:300]), 0.9, y=dev(x[300:])),
        ops.pairs_above(x[:300], 0.9, y=x[300:]),
        strict=True,
    ):
        np.testing.assert_array_equal(host(g), w)
    # the margin is what keeps them: the float32 one loses pairs whose float16 tile fell short
    float32_margin = similarity.rounding_margin
    monkeypatch.setattr(
        similarity, "rounding_margin", lambda d, nx, ny, **_: float32_margin(d, nx, ny)
    )
    assert len(host(ops.pairs_above(dev(x), 0.9)[0])) < len(want[0])


def test_gpu_pairs_margin_is_wider_with_tf32() -> None:
    plain = similarity.rounding_margin(384, 1.0, 1.0)
    assert 0 < plain < 1e-4
    assert similarity.rounding_margin(384, 1.0, 1.0, tf32=True) > 1e-3  # 10-bit inputs
    # float16 also has subnormals below 2^-14: a little more again
    half = similarity.rounding_margin(384, 1.0, 1.0, half=True)
    assert half > similarity.rounding_margin(384, 1.0, 1.0, tf32=True)


# ---- the device status words (defect 7) ----


@pytest.mark.parametrize(
    ("status", "words"),
    [
        ({"error": "cudaErrorNoDevice"}, "no CUDA device is visible"),
        (
            {"error": "cudaErrorInsufficientDriver", "driver": 0, "runtime": 13000},
            "no NVIDIA driver is loaded",
        ),
        (
            {"error": "cudaErrorInsufficientDriver", "driver": 12040, "runtime": 13000},
            "driver supports CUDA 12.4, older than the CUDA 13.0 runtime",
        ),
        (
            {"error": "cudaErrorDevicesUnavailable", "message": "busy"},
            "cudaErrorDevicesUnavailable",
        ),
    ],
)
def test_why_no_cuda_device_is_said_precisely(status: dict[str, Any], words: str) -> None:
    assert words in describe_cuda_status(status)


# ---- Engine.embed(output=...): the device-resident path is chosen on CUDA ----


def test_embed_keeps_vectors_on_the_device_when_the_engine_is_on_cuda(
    engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch = pytest.importorskip("torch")
    texts = ["a red car", "the cat sat", "a red car", "rain tomorrow"]
    want = engine.embed(texts)
    assert engine.last_stats.device_outputs == 0
    assert engine.describe()["device_resident_outputs"] is False
    fake = FakeCudaEncoder(engine.encoder)
    monkeypatch.setattr(engine, "encoder", fake)
    monkeypatch.setattr(engine, "store", None)
    got = engine.embed(texts, output="torch")
    assert isinstance(got, torch.Tensor)
    assert fake.device_batches >= 1
    assert engine.last_stats.device_outputs == 1
    assert engine.describe()["device_resident_outputs"] is True
    np.testing.assert_allclose(got.numpy(), want, atol=1e-6)
    as_numpy = engine.embed(texts)  # numpy on CUDA: the same device path, one copy at the end
    assert isinstance(as_numpy, np.ndarray)
    assert engine.last_stats.device_outputs == 1
    np.testing.assert_allclose(as_numpy, want, atol=1e-6)
    assert engine.embed([], output="torch").shape == (0, engine.dim)


def test_embed_output_is_checked_and_torch_on_the_cpu_is_a_view(engine: Any) -> None:
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="output must be one of"):
        engine.embed(["x"], output="jax")
    got = engine.embed(["hello"], output="torch")
    assert isinstance(got, torch.Tensor)
    assert engine.last_stats.device_outputs == 0
    np.testing.assert_allclose(got.numpy(), engine.embed(["hello"]), atol=0)


# ---- tensor-core products with a half base: float32 queries split into half terms ----


@pytest.mark.parametrize(("dtype", "terms"), [("float16", 2), ("bfloat16", 3)])
def test_split_queries_carry_float32_accuracy(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch, dtype: str, terms: int
) -> None:
    """Many-query top-k over a float16 / bfloat16 base multiplies on tensor cores: the
    float32 queries become a sum of half terms whose products with the (exactly half) base
    add up to float32-accurate scores; rounding the queries once misses the 2e-5 tolerance."""
    torch = pytest.importorskip("torch")
    assert similarity.SPLIT_TERMS[dtype] == terms
    q = torch.from_numpy(unit_rows(rng, 50, 384))
    base = torch.from_numpy(unit_rows(rng, 300, 384)).to(getattr(torch, dtype))
    parts = similarity.split_terms(q, getattr(torch, dtype), terms)
    assert all(p.dtype == getattr(torch, dtype) for p in parts)
    exact = q.double() @ base.double().T
    split = sum(p.double() @ base.double().T for p in parts)  # each product exact, as on TCs
    once = parts[0].double() @ base.double().T
    assert float((split - exact).abs().max()) < 2e-6
    assert float((once - exact).abs().max()) > 2e-5  # a plain half matmul misses the tolerance
    # half_matmul: one product of the terms side by side with the base repeated as often
    # (torch.mm's float32 output exists on CUDA only: a float64 stand-in does the product)
    monkeypatch.setattr(torch, "mm", lambda a, b, out_dtype: (a.double() @ b.double()).float())
    g = similarity._Gpu.__new__(similarity._Gpu)
    wide = torch.cat(parts, dim=1)
    assert float((g.half_matmul(wide, base).double() - exact).abs().max()) < 2e-6
    flipped = g.half_matmul(wide, base, parts_left=False).double()
    assert float((flipped - exact.T).abs().max()) < 2e-6


# ---- the kernels themselves, emulated: what the driver tests above do not reach ----
#
# The emulator must notice broken kernels, or a passing kernel test proves little; then the
# kernels no driver test reaches: pooling, row normalisation, compact codes, top-k corners.


# ---- the emulator notices broken kernels ----


def test_a_missing_barrier_gives_a_wrong_result() -> None:
    sim = cuda_sim()
    assert sim.selftest_block_sum(1.0, True) == 256.0
    assert sim.selftest_block_sum(2.0, True) == 512.0
    # without the barrier, thread 0 reads slots before (some) other threads wrote them
    assert sim.selftest_block_sum(3.0, False) != 768.0


def test_a_divergent_warp_raises_instead_of_hanging() -> None:
    with pytest.raises(RuntimeError, match="deadlocks: some lanes of warp 0 wait"):
        cuda_sim().selftest_divergent_warp()


def test_a_shuffle_naming_an_exited_lane_raises() -> None:
    with pytest.raises(RuntimeError, match="names lane 5 in its mask, but that lane exited"):
        cuda_sim().selftest_exited_lane_shuffle()


def test_exited_threads_do_not_hold_a_barrier_up() -> None:
    assert cuda_sim().selftest_early_exit_barrier() == 128 * 1.0 + 128 * 2.0


def test_the_simulated_device_says_what_it_is() -> None:
    sim = cuda_sim()
    assert sim.device_count() == 1
    assert "simulator" in sim.device_properties(0)["name"]
    assert sim.build_info()["cuda_archs"] == "simulator"


# ---- pooling and normalisation kernels ----


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_mean_pool_normalize_kernel_matches_the_cpu(
    sim_gpu: SimKernels, rng: np.random.Generator, dtype: type
) -> None:
    states = rng.standard_normal((7, 13, 40)).astype(dtype)
    mask = (rng.random((7, 13)) < 0.6).astype(np.int32)
    mask[:, 0] = 1
    mask[3] = 0  # a row of padding only: zeros
    got = host(ops.mean_pool_normalize(dev(states), dev(mask)))
    np.testing.assert_allclose(got, ops.mean_pool_normalize(states, mask), atol=1e-6)
    assert (got[3] == 0).all()
    assert sim_gpu.calls == ["mean_pool_normalize"]
    states[5, np.argmax(mask[5])] = np.nan
    with pytest.raises(InvalidInputError, match="NaN or inf values in a real token of row 5"):
        ops.mean_pool_normalize(dev(states), dev(mask))


def test_normalize_rows_kernel_matches_the_cpu(
    sim_gpu: SimKernels, rng: np.random.Generator
) -> None:
    x = rng.standard_normal((9, 300)).astype(np.float32)
    x[2] = 0.0  # stays zero
    x[4] *= 1e20  # its sum of squares overflows float32: scaled first
    want = ops.normalize_rows_(x.copy())
    got = dev(x)
    ops.normalize_rows_(got)
    np.testing.assert_allclose(host(got), want, atol=1e-6)
    assert (host(got)[2] == 0).all()
    x[7, 3] = np.inf
    with pytest.raises(InvalidInputError, match=r"x has NaN or inf values \(first in row 7"):
        ops.normalize_rows_(dev(x))


# ---- compact codes ----


@pytest.mark.parametrize("d", [384, 30])  # whole 4-byte words (dp4a) or byte by byte
def test_int8_kernel_matches_the_cpu(sim_gpu: SimKernels, rng: np.random.Generator, d: int) -> None:
    codes = rng.integers(-128, 128, (3000, d), dtype=np.int8)
    queries = rng.integers(-127, 128, (3, d), dtype=np.int8)
    got = [host(a) for a in ops.topk_int8(dev(queries), dev(codes), 12)]
    for g, w in zip(got, ops.topk_int8(queries, codes, 12), strict=True):
        np.testing.assert_array_equal(g, w)
    assert "int8_dot_scores" in sim_gpu.calls


@pytest.mark.parametrize("nbytes", [48, 5])
def test_hamming_kernel_matches_the_cpu(
    sim_gpu: SimKernels, rng: np.random.Generator, nbytes: int
) -> None:
    bits = rng.integers(0, 256, (3000, nbytes), dtype=np.uint8)
    queries = rng.integers(0, 256, (2, nbytes), dtype=np.uint8)
    got = [host(a) for a in ops.topk_hamming(dev(queries), dev(bits), 9)]
    for g, w in zip(got, ops.topk_hamming(queries, bits, 9), strict=True):
        np.testing.assert_array_equal(g, w)
    assert "hamming_scores" in sim_gpu.calls


# ---- top-k corners ----


@pytest.mark.parametrize("seed", ["1", "2", "3"])
def test_topk_is_exact_in_any_thread_order(
    sim_gpu: SimKernels, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch, seed: str
) -> None:
    monkeypatch.setenv("EMBENGINE_CUDA_SIM_SEED", seed)
    base = rng.integers(-2, 3, size=(1500, 6)).astype(np.float32)
    base = np.concatenate([base, base])  # ties everywhere: the lower id first
    for q, k in ((1, 10), (2, 1500), (40, 7)):  # 1500 > one 1024-column chunk
        scores, ids = ops.topk_cosine(dev(base[:q]), dev(base), k, exclude_self=True)
        want = reference.topk_cosine(base[:q], base, k, exclude_self=True)
        np.testing.assert_array_equal(host(ids), want[1])
        np.testing.assert_array_equal(host(scores), want[0])


@pytest.mark.parametrize("k", [1, 255, 1024, 1025])
def test_topk_when_every_score_is_a_candidate(sim_gpu: SimKernels, k: int) -> None:
    """Ascending scores beat the running k-th entry every time: the buffer fills and flushes
    at every step, at every sort size, and the merged spans must still give the exact list."""
    n = 9000
    base = np.stack([np.arange(n, dtype=np.float32) / n, np.zeros(n, np.float32)], axis=1)
    for q in (1, 40):
        queries = np.tile(np.array([[1.0, 0.0]], np.float32), (q, 1))
        scores, ids = ops.topk_cosine(dev(queries), dev(base), k)
        want = reference.topk_cosine(queries, base, k)
        np.testing.assert_array_equal(host(ids), want[1])
        np.testing.assert_array_equal(host(scores), want[0])


@pytest.mark.parametrize(
    ("d", "dtype"),
    [
        (384, np.float16),  # 16-byte loads, 16 lanes a row
        (64, np.float16),  # 8 lanes a row, 4 rows a warp
        (96, np.float32),  # float32 vectors, 8 lanes a row
        (40, np.float16),  # 5 vectors a row: too few lanes, the element kernel
        (97, np.float32),  # unaligned rows: the element kernel
    ],
)
def test_scan_scores_match_the_cpu_at_every_width(
    sim_gpu: SimKernels, rng: np.random.Generator, d: int, dtype: type
) -> None:
    base = unit_rows(rng, 1001, d).astype(dtype)  # an odd count: a warp's last rows are empty
    for q in (1, 11):  # 11 queries: a full group of 8 and a partial one
        queries = unit_rows(rng, q, d)
        scores, ids = ops.topk_cosine(dev(queries), dev(base), 20)
        want = reference.topk_cosine(queries, base.astype(np.float32), 20)
        np.testing.assert_allclose(host(scores), want[0], atol=2e-6)
        assert (host(ids) == want[1]).mean() > 0.99
    assert "dot_scores" in sim_gpu.calls


@pytest.mark.parametrize(
    ("d", "dtype"),
    [
        (384, np.float16),  # 16 lanes a row, 3 vectors each in registers
        (64, np.float32),  # 16 lanes, 1 vector each
        (96, np.float16),  # 4 lanes, 3 vectors each
        (1024, np.float32),  # 32 lanes, 8 vectors each: too many registers, the warp kernel
        (33, np.float32),  # unaligned rows: the warp kernel
    ],
)
def test_nearest_centroid_kernels_match_the_cpu(
    sim_gpu: SimKernels, rng: np.random.Generator, d: int, dtype: type
) -> None:
    x = unit_rows(rng, 301, d).astype(dtype)  # an odd count: a warp's last rows are empty
    x[17] = np.nan  # its row is counted, and never matched
    for c in (1, 5, 64):
        centroids = unit_rows(rng, c, d)
        centroids[c // 2] = centroids[0]  # a tie: the lower index wins
        with pytest.raises(ValueError, match=r"x has NaN or inf values \(first in row 17"):
            ops.centroid_distance(dev(x), dev(centroids))
        dist, nearest = ops.centroid_distance(dev(x), dev(centroids), check_finite=False)
        want = reference.centroid_distance(x.astype(np.float32), centroids)
        keep = np.arange(len(x)) != 17
        np.testing.assert_allclose(host(dist)[keep], want[0][keep], atol=2e-6)
        np.testing.assert_array_equal(host(nearest)[keep], want[1][keep])
        assert host(nearest)[17] == -1
    assert set(sim_gpu.calls) == {"nearest_centroid"}
