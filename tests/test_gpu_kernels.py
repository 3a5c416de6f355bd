"""The fixed CUDA defects (issue 14, 1-7), each checked against the CPU on a real GPU.

Every test here is marked gpu: it skips, saying why, without a usable CUDA GPU. The logic
that can run on the CPU is in tests/test_gpu_dispatch.py (CPU fakes) and the shared
__host__ __device__ helpers in tests/test_ops_similarity.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from embengine import ops
from embengine.ops import reference, similarity

pytestmark = pytest.mark.gpu
ATOL = 2e-5


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def frameworks() -> list[str]:
    return ["torch", "cupy"]


def to_gpu(x: np.ndarray, framework: str, dtype: str | None = None) -> Any:
    if framework == "torch":
        torch = pytest.importorskip("torch")
        t = torch.from_numpy(np.ascontiguousarray(x)).cuda()
        return t.to(getattr(torch, dtype)) if dtype else t
    cupy = pytest.importorskip("cupy")
    if dtype == "bfloat16":
        pytest.skip("CuPy has no bfloat16")
    a = cupy.asarray(x)
    return a.astype(dtype) if dtype else a


def host(a: Any) -> np.ndarray:
    if hasattr(a, "get"):
        return a.get()
    return a.float().cpu().numpy() if a.dtype.is_floating_point else a.cpu().numpy()


@pytest.mark.parametrize("framework", frameworks())
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("q", [1, 16, 40])
def test_half_bases_match_the_cpu_on_their_exact_values(
    rng: np.random.Generator, framework: str, dtype: str, q: int
) -> None:
    """Defect 1 and 4: read as is, split across blocks, same results as the CPU."""
    queries, base = unit_rows(rng, q, 384), unit_rows(rng, 200_000, 384)
    gbase = to_gpu(base, framework, dtype)
    exact = host(gbase).astype(np.float32)  # the half values, exactly, as float32
    scores, ids = ops.topk_cosine(to_gpu(queries, framework), gbase, 10)
    want = reference.topk_cosine(queries, exact, 10)
    np.testing.assert_allclose(host(scores), want[0], atol=ATOL)
    assert (host(ids) == want[1]).mean() > 0.999  # near ties may swap within ATOL


def test_half_base_top_k_allocates_no_float32_copy(rng: np.random.Generator) -> None:
    """Defect 1: 1 query over 2M x 384 float16 (1.5 GiB) used to allocate 3 GiB of float32."""
    torch = pytest.importorskip("torch")
    base = torch.randn(2_000_000, 384, device="cuda", dtype=torch.float16)
    queries = torch.randn(1, 384, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    ops.topk_cosine(queries, base, 10, check_finite=False)
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - before
    assert extra < 96 * 2**20, f"{extra / 2**20:.0f} MiB of temporaries"


@pytest.mark.parametrize("framework", frameworks())
def test_non_finite_rows_raise_or_never_rank(rng: np.random.Generator, framework: str) -> None:
    """Defect 2: counted inside the kernels, NaN never reaches top-k or pairs."""
    base = unit_rows(rng, 5000, 97)
    base[4321, 7] = np.nan
    gbase = to_gpu(base, framework)
    with pytest.raises(ValueError, match=r"base has NaN or inf values \(first in row 4321"):
        ops.topk_cosine(gbase[:3], gbase, 5)
    _, ids = ops.topk_cosine(gbase[:3], gbase, 5000, check_finite=False)
    assert 4321 not in host(ids)
    i, j, _ = ops.pairs_above(gbase[4300:4400], -2.0, check_finite=False)
    assert 21 not in host(i)
    assert 21 not in host(j)
    with pytest.raises(ValueError, match="x has NaN or inf"):
        ops.pairs_above(gbase, 0.9)
    with pytest.raises(ValueError, match="x has NaN or inf"):
        ops.centroid_distance(gbase, gbase[:3])


@pytest.mark.parametrize("framework", frameworks())
def test_empty_device_arrays_give_empty_results(framework: str) -> None:
    """Defect 3: an empty array's address is 0; no kernel may see it."""
    empty = to_gpu(np.zeros((0, 8), np.float32), framework)
    some = to_gpu(np.eye(4, 8, dtype=np.float32), framework)
    assert host(ops.topk_cosine(empty, some, 3)[0]).shape == (0, 3)
    assert (host(ops.topk_cosine(some, empty, 3)[1]) == -1).all()
    assert host(ops.centroid_distance(empty, some)[0]).shape == (0,)
    assert all(host(a).shape == (0,) for a in ops.pairs_above(empty, 0.5))
    assert all(host(a).shape == (0,) for a in ops.pairs_above(some, 0.5, y=empty))


@pytest.mark.parametrize("framework", frameworks())
@pytest.mark.parametrize("c", [65, 1024])
def test_many_centroids_use_the_matrix_product(
    rng: np.random.Generator, framework: str, c: int
) -> None:
    """Defect 5: above 64 centroids, cuBLAS tiles + a row-wise argmax."""
    x, centroids = unit_rows(rng, 20_000, 384), unit_rows(rng, c, 384)
    for dtype in (None, "float16"):
        gx = to_gpu(x, framework, dtype)
        exact = host(gx).astype(np.float32)
        dist, nearest = ops.centroid_distance(gx, to_gpu(centroids, framework))
        want = reference.centroid_distance(exact, centroids)
        np.testing.assert_allclose(host(dist), want[0], atol=ATOL)
        assert (host(nearest) == want[1]).mean() > 0.999


@pytest.mark.parametrize("framework", frameworks())
def test_gpu_pairs_equal_the_cpu_pairs_bit_for_bit(
    rng: np.random.Generator, framework: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 6: same margin and re-scoring order as the CPU, so the same pairs, same bits."""
    monkeypatch.setattr(similarity, "GPU_PAIRS_CAPACITY", 64)
    centres = unit_rows(rng, 500, 97)
    x = centres[rng.integers(0, 500, 6000)] + 0.03 * rng.standard_normal((6000, 97))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    for threshold in (0.9, 0.95):
        got = [host(a) for a in ops.pairs_above(to_gpu(x, framework), threshold)]
        want = ops.pairs_above(x, threshold)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)


def test_requires_grad_tensors_are_detached(rng: np.random.Generator) -> None:
    """Defect 7: a CUDA tensor with requires_grad used to fall to the CPU path and fail."""
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(unit_rows(rng, 100, 16)).cuda().requires_grad_()
    _, ids = ops.topk_cosine(x, x, 3)
    assert ids.is_cuda
    assert (ids[:, 0] == torch.arange(100, device="cuda")).all()
    pooled = ops.mean_pool_normalize(
        x.reshape(10, 10, 16), torch.ones((10, 10), dtype=torch.int64, device="cuda")
    )
    assert pooled.is_cuda


def test_a_stale_error_from_elsewhere_is_not_blamed_on_us(rng: np.random.Generator) -> None:
    """Defect 7: a failed launch elsewhere left its error for our next check to report."""
    cupy = pytest.importorskip("cupy")
    bad = cupy.RawKernel(r'extern "C" __global__ void k() {}', "k")
    with pytest.raises(cupy.cuda.driver.CUDADriverError):
        bad((1,), (4096,), ())  # too many threads per block: a launch error, not sticky
    x = cupy.asarray(unit_rows(rng, 50, 8))
    _, ids = ops.topk_cosine(x, x, 1)
    assert (ids.get()[:, 0] == np.arange(50)).all()


def test_arrays_on_another_device_are_named() -> None:
    """Defect 7: device_ptr checks the current device (needs two GPUs)."""
    torch = pytest.importorskip("torch")
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    a = torch.randn(10, 8, device="cuda:0")
    b = torch.randn(10, 8, device="cuda:1")
    with pytest.raises(ValueError, match="one GPU"):
        ops.topk_cosine(a, b, 1)


@pytest.mark.parametrize("output", ["torch", "cupy"])
def test_embed_on_cuda_stays_on_the_device(engine: Any, output: str) -> None:
    """The device-resident path: encoder -> pooled rows -> result, no host copy."""
    pytest.importorskip(output)
    from embengine import Engine

    gpu = Engine(device="cuda", backend="torch", precision="fp32")
    texts = ["a red car", "the cat sat on the mat", "a red car", "rain tomorrow"]
    got = gpu.embed(texts, output=output)
    assert gpu.last_stats.device_outputs == 1
    assert gpu.describe()["device_resident_outputs"] is True
    values = host(got)
    assert values.shape == (4, gpu.dim)
    cos = (values * engine.embed(texts)).sum(axis=1)
    assert cos.min() > 0.9999
    _, ids = ops.topk_cosine(got[:1], got, 2)  # and straight into the kernels
    assert host(ids)[0, 0] in (0, 2)
