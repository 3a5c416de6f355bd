"""Top-k, nearest centroid and threshold pairs against the numpy oracle (ops/reference.py)."""

from __future__ import annotations

import numpy as np
import pytest

from embengine import _native, ops
from embengine.ops import reference, similarity

ATOL = 2e-5  # fp32 sums of <= 384 terms of unit-scale values, against the float64 oracle


@pytest.fixture(params=["scan", "tiles"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test through the native scan and through small BLAS tiles (many tiles)."""
    if request.param == "tiles":
        monkeypatch.setattr(similarity, "SCAN_MAX_QUERIES", 0)
        monkeypatch.setattr(similarity, "FUSED_MAX_CENTROIDS", 0)
        monkeypatch.setattr(similarity, "TILE_ROWS", 16)
        monkeypatch.setattr(similarity, "TILE_COLS", 64)
    else:
        monkeypatch.setattr(similarity, "SCAN_MAX_QUERIES", 1 << 30)
        monkeypatch.setattr(similarity, "FUSED_MAX_CENTROIDS", 1 << 30)
    return str(request.param)


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def small_integers(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """Vectors whose dot products are exact in float32 whatever the order: exact ties."""
    return rng.integers(-2, 3, size=(n, d)).astype(np.float32)


def assert_topk_matches(
    got: tuple[np.ndarray, np.ndarray],
    want: tuple[np.ndarray, np.ndarray],
    queries: np.ndarray,
    base: np.ndarray,
) -> None:
    """Scores within ATOL, ids identical except a swap inside a near-tie (within ATOL)."""
    (gs, gi), (ws, wi) = got, want
    assert gs.dtype == np.float32
    assert gi.dtype == np.int64
    assert gs.shape == ws.shape
    assert gi.shape == wi.shape
    np.testing.assert_allclose(gs, ws, atol=ATOL)
    np.testing.assert_array_equal(gi == -1, wi == -1)
    for r, c in np.argwhere(gi != wi):
        true_score = float(np.float64(queries[r]) @ np.float64(base[gi[r, c]]))
        assert abs(true_score - ws[r, c]) <= ATOL, f"row {r} slot {c}: {gi[r, c]} vs {wi[r, c]}"
    for row in gi:
        real = row[row >= 0]
        assert len(np.unique(real)) == len(real)


@pytest.mark.parametrize("d", [3, 97, 384])
@pytest.mark.parametrize(("q", "n", "k"), [(1, 1, 1), (5, 300, 10), (40, 300, 300), (7, 20, 25)])
def test_topk_matches_reference(
    rng: np.random.Generator, path: str, d: int, q: int, n: int, k: int
) -> None:
    queries, base = unit_rows(rng, q, d), unit_rows(rng, n, d)
    got = ops.topk_cosine(queries, base, k)
    assert_topk_matches(got, reference.topk_cosine(queries, base, k), queries, base)


@pytest.mark.parametrize("q", [3, 50])
def test_topk_exact_ties_go_to_the_lower_id(rng: np.random.Generator, path: str, q: int) -> None:
    base = small_integers(rng, 200, 5)
    base = np.concatenate([base, base[:50], np.zeros((10, 5), np.float32)])  # duplicates, zeros
    queries = small_integers(rng, q, 5)
    queries[0] = 0.0  # every score 0: the first k ids in order
    for k in (1, 7, len(base)):
        scores, ids = ops.topk_cosine(queries, base, k)
        want_scores, want_ids = reference.topk_cosine(queries, base, k)
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_array_equal(scores, want_scores)
    np.testing.assert_array_equal(ids[0], np.arange(len(base)))


def test_topk_k_beyond_n_pads_with_sentinels(rng: np.random.Generator, path: str) -> None:
    queries, base = unit_rows(rng, 3, 97), unit_rows(rng, 4, 97)
    scores, ids = ops.topk_cosine(queries, base, 9)
    assert (ids[:, 4:] == -1).all()
    assert np.isneginf(scores[:, 4:]).all()
    assert sorted(ids[0, :4]) == [0, 1, 2, 3]


def test_topk_exclude_self(rng: np.random.Generator, path: str) -> None:
    base = unit_rows(rng, 60, 97)
    base[10] = base[11]  # a duplicate: the twin must still be found
    got = ops.topk_cosine(base, base, 5, exclude_self=True)
    assert_topk_matches(got, reference.topk_cosine(base, base, 5, exclude_self=True), base, base)
    assert not (got[1] == np.arange(60)[:, None]).any()
    assert got[1][10, 0] == 11
    assert got[1][11, 0] == 10
    one = ops.topk_cosine(base[:1], base[:1], 2, exclude_self=True)
    assert (one[1] == -1).all()


@pytest.mark.parametrize("q", [2, 40])
def test_topk_float16_base(rng: np.random.Generator, path: str, q: int) -> None:
    base16 = unit_rows(rng, 500, 384).astype(np.float16)
    queries = unit_rows(rng, q, 384)
    got = ops.topk_cosine(queries, base16, 10)
    base32 = base16.astype(np.float32)  # exact: the oracle of the half base
    assert_topk_matches(got, reference.topk_cosine(queries, base32, 10), queries, base32)
    np.testing.assert_array_equal(got[1], ops.topk_cosine(queries, base32, 10)[1])


def test_topk_empty_inputs(rng: np.random.Generator) -> None:
    scores, ids = ops.topk_cosine(np.zeros((0, 8), np.float32), unit_rows(rng, 5, 8), 3)
    assert scores.shape == ids.shape == (0, 3)
    scores, ids = ops.topk_cosine(unit_rows(rng, 2, 8), np.zeros((0, 8), np.float32), 3)
    assert (ids == -1).all()
    assert np.isneginf(scores).all()
    assert ids.shape == (2, 3)


def test_topk_torch_in_torch_out(rng: np.random.Generator) -> None:
    torch = pytest.importorskip("torch")
    queries, base = unit_rows(rng, 3, 16), unit_rows(rng, 50, 16)
    scores, ids = ops.topk_cosine(torch.from_numpy(queries), torch.from_numpy(base), 4)
    assert isinstance(scores, torch.Tensor)
    assert isinstance(ids, torch.Tensor)
    np.testing.assert_array_equal(ids.numpy(), ops.topk_cosine(queries, base, 4)[1])


@pytest.mark.parametrize(
    ("queries", "base", "k", "message"),
    [
        (np.zeros((2, 3), np.float32), np.zeros((4, 5), np.float32), 1, r"dim 5, expected 3"),
        (np.zeros(3, np.float32), np.zeros((4, 3), np.float32), 1, r"queries must have shape"),
        (np.zeros((2, 3), np.float32), np.zeros((4, 3), np.float32), 0, "k must be"),
        (np.full((2, 3), np.nan, np.float32), np.zeros((4, 3), np.float32), 1, "NaN or inf"),
    ],
)
def test_topk_bad_input_says_what_is_wrong(
    queries: np.ndarray, base: np.ndarray, k: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ops.topk_cosine(queries, base, k)


@pytest.mark.parametrize("d", [3, 97, 384])
@pytest.mark.parametrize("c", [1, 5, 40])
def test_centroid_distance_matches_reference(
    rng: np.random.Generator, path: str, d: int, c: int
) -> None:
    x, centroids = unit_rows(rng, 333, d), unit_rows(rng, c, d)
    dist, nearest = ops.centroid_distance(x, centroids)
    want_dist, _want_nearest = reference.centroid_distance(x, centroids)
    assert dist.dtype == np.float32
    assert nearest.dtype == np.int64
    np.testing.assert_allclose(dist, want_dist, atol=ATOL)
    full = reference.centroid_distances(x, centroids)
    np.testing.assert_allclose(full[np.arange(len(x)), nearest], want_dist, atol=ATOL)
    np.testing.assert_allclose(ops.centroid_distances(x, centroids), full, atol=ATOL)


def test_centroid_ties_go_to_the_lower_index(rng: np.random.Generator, path: str) -> None:
    centroids = small_integers(rng, 20, 7)
    centroids = np.concatenate([centroids, centroids[::-1], np.zeros((1, 7), np.float32)])
    x = np.concatenate([small_integers(rng, 100, 7), np.zeros((2, 7), np.float32)])
    dist, nearest = ops.centroid_distance(x, centroids)
    want_dist, want_nearest = reference.centroid_distance(x, centroids)
    np.testing.assert_array_equal(nearest, want_nearest)
    np.testing.assert_array_equal(dist, want_dist)
    assert (nearest[-2:] == 0).all()


def test_centroid_distance_float16_and_empty(rng: np.random.Generator, path: str) -> None:
    x16 = unit_rows(rng, 200, 97).astype(np.float16)
    centroids = unit_rows(rng, 30, 97)
    dist, nearest = ops.centroid_distance(x16, centroids)
    want = reference.centroid_distance(x16.astype(np.float32), centroids)
    np.testing.assert_allclose(dist, want[0], atol=ATOL)
    np.testing.assert_array_equal(nearest, want[1])
    dist, nearest = ops.centroid_distance(np.zeros((0, 97), np.float32), centroids)
    assert dist.shape == nearest.shape == (0,)
    with pytest.raises(ValueError, match="centroids is empty"):
        ops.centroid_distance(x16, np.zeros((0, 97), np.float32))


def near_duplicates(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """Unit rows in small clusters, so a 0.9 threshold finds pairs within clusters only."""
    centres = unit_rows(rng, n // 4, d)
    x = centres[rng.integers(0, len(centres), n)] + 0.02 * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def assert_pairs_match(
    got: tuple[np.ndarray, np.ndarray, np.ndarray],
    want: tuple[np.ndarray, np.ndarray, np.ndarray],
    threshold: float,
) -> None:
    """Sorted by (i, j); the same pairs as the oracle except any within ATOL of the threshold."""
    gi, gj, gs = got
    assert gi.dtype == gj.dtype == np.int64
    assert gs.dtype == np.float32
    np.testing.assert_array_equal(np.lexsort((gj, gi)), np.arange(len(gi)))
    got_scores = dict(zip(zip(gi.tolist(), gj.tolist(), strict=True), gs.tolist(), strict=True))
    want_scores = dict(
        zip(zip(want[0].tolist(), want[1].tolist(), strict=True), want[2].tolist(), strict=True)
    )
    for pair in got_scores.keys() ^ want_scores.keys():
        score = got_scores.get(pair, want_scores.get(pair))
        assert abs(score - threshold) <= ATOL, f"pair {pair} score {score}"
    for pair in got_scores.keys() & want_scores.keys():
        assert abs(got_scores[pair] - want_scores[pair]) <= ATOL


@pytest.mark.parametrize("d", [3, 97, 384])
def test_pairs_above_matches_reference(rng: np.random.Generator, path: str, d: int) -> None:
    x = near_duplicates(rng, 300, d)
    for threshold in (0.9, 0.5):
        got = ops.pairs_above(x, threshold)
        assert (got[0] < got[1]).all()
        assert_pairs_match(got, reference.pairs_above(x, threshold), threshold)
    y = near_duplicates(rng, 70, d)
    assert_pairs_match(ops.pairs_above(x, 0.3, y=y), reference.pairs_above(x, 0.3, y=y), 0.3)


def test_pairs_above_exact_threshold_is_included(rng: np.random.Generator, path: str) -> None:
    x = small_integers(rng, 150, 4)
    x = np.concatenate([x, x[:20], np.zeros((3, 4), np.float32)])
    for threshold in (0.0, 3.0, 100.0):
        got = ops.pairs_above(x, threshold)
        want = reference.pairs_above(x, threshold)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)


def test_pairs_above_many_pairs_and_empty(rng: np.random.Generator, path: str) -> None:
    x = np.ones((150, 3), np.float32)  # every pair: 150 * 149 / 2, more than any one tile holds
    i, j, s = ops.pairs_above(x, 1.0)
    assert len(i) == 150 * 149 // 2
    assert (s == 3.0).all()
    i, j, s = ops.pairs_above(np.zeros((0, 3), np.float32), 0.5)
    assert i.shape == j.shape == s.shape == (0,)
    x16 = near_duplicates(rng, 100, 97).astype(np.float16)
    assert_pairs_match(
        ops.pairs_above(x16, 0.9), reference.pairs_above(x16.astype(np.float32), 0.9), 0.9
    )
    with pytest.raises(ValueError, match="threshold must be finite"):
        ops.pairs_above(x16, float("nan"))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_data_is_reported_with_its_row(
    rng: np.random.Generator, path: str, bad: float
) -> None:
    """The data side is checked by the kernels themselves (non-finite scores), every path."""
    x = unit_rows(rng, 50, 97)
    x[37, 5] = bad
    good = unit_rows(rng, 40, 97)
    message = r"has NaN or inf values \(first in row 37"
    with pytest.raises(ValueError, match="base " + message):
        ops.topk_cosine(good, x, 3)
    with pytest.raises(ValueError, match="base " + message):
        ops.topk_cosine(good[:1], x, 3, exclude_self=True)  # row 37 is nobody's self here
    with pytest.raises(ValueError, match="x " + message):
        ops.centroid_distance(x, good[:20])
    with pytest.raises(ValueError, match="x " + message):
        ops.centroid_distances(x, good[:20])
    with pytest.raises(ValueError, match="x " + message):
        ops.pairs_above(x, 0.9)
    with pytest.raises(ValueError, match="y " + message):
        ops.pairs_above(good, 0.9, y=x)
    with pytest.raises(ValueError, match="centroids has NaN"):
        ops.centroid_distance(good, x)
    with pytest.raises(ValueError, match="overflowed"):
        ops.topk_cosine(np.full((1, 4), 1e30, np.float32), np.full((2, 4), 1e30, np.float32), 1)


# ---- the CUDA kernels' selection logic, run on the CPU through the same helpers ----


def best_first(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The oracle order: score descending, then id ascending with the empty id -1 last."""
    order = np.lexsort((ids.astype(np.uint64), -scores))
    return scores[order], ids[order]


@pytest.mark.parametrize("n", [1, 3, 64, 100, 1024])
def test_bitonic_sort_orders_best_first(rng: np.random.Generator, n: int) -> None:
    scores = rng.integers(0, 5, n).astype(np.float32)  # many ties
    ids = rng.permutation(n).astype(np.int64)
    scores[: n // 4] = -np.inf
    ids[: n // 8] = -1  # empty slots mixed in
    got = _native.bitonic_sort(scores, ids)
    want = best_first(scores, ids)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize(("na", "nb", "k"), [(5, 8, 5), (10, 1024, 10), (1, 1, 2), (64, 3, 40)])
def test_merge_path_keeps_the_best_k(rng: np.random.Generator, na: int, nb: int, k: int) -> None:
    ids = rng.permutation(na + nb).astype(np.int64)
    scores = rng.integers(0, 6, na + nb).astype(np.float32)
    a = best_first(scores[:na], ids[:na])
    b = best_first(scores[na:], ids[na:])
    a[0][-1:], a[1][-1:] = -np.inf, -1  # an empty slot at the end of the running list
    got = _native.merge_sorted_lists(a[0], a[1], b[0], b[1], k)
    want = best_first(np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]]))
    np.testing.assert_array_equal(got[0], want[0][:k])
    np.testing.assert_array_equal(got[1], want[1][:k])


def test_native_dot_tile_matches_numpy(rng: np.random.Generator) -> None:
    a = rng.standard_normal((7, 97)).astype(np.float32)
    b = rng.standard_normal((13, 97)).astype(np.float16)
    np.testing.assert_allclose(
        _native.dot_tile(a, b), a.astype(np.float64) @ b.astype(np.float64).T, atol=1e-4
    )


# ---- CUDA against the CPU (skipped without a GPU) ----


def gpu_frameworks() -> list[str]:
    return ["torch", "cupy"]


def to_gpu(x: np.ndarray, framework: str) -> object:
    if framework == "torch":
        torch = pytest.importorskip("torch")
        return torch.from_numpy(x).cuda()
    cupy = pytest.importorskip("cupy")
    return cupy.asarray(x)


def to_host(x: object) -> np.ndarray:
    if hasattr(x, "get"):
        return x.get()
    return x.cpu().numpy()  # type: ignore[attr-defined]


@pytest.mark.gpu
@pytest.mark.parametrize("framework", gpu_frameworks())
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize(
    ("q", "n", "k", "d"),
    [(1, 5000, 10, 384), (40, 3000, 2500, 97), (7, 20, 25, 3), (300, 1500, 1, 384)],
)
def test_cuda_topk_matches_cpu(
    rng: np.random.Generator,
    monkeypatch: pytest.MonkeyPatch,
    framework: str,
    dtype: type,
    q: int,
    n: int,
    k: int,
    d: int,
) -> None:
    monkeypatch.setattr(similarity, "GPU_TILE_ELEMENTS", 8192)  # many tiles, many chunks
    queries, base = unit_rows(rng, q, d), unit_rows(rng, n, d).astype(dtype)
    scores, ids = ops.topk_cosine(to_gpu(queries, framework), to_gpu(base, framework), k)
    base32 = base.astype(np.float32)
    assert_topk_matches(
        (to_host(scores), to_host(ids)), reference.topk_cosine(queries, base32, k), queries, base32
    )


@pytest.mark.gpu
@pytest.mark.parametrize("framework", gpu_frameworks())
def test_cuda_topk_ties_and_exclude_self(rng: np.random.Generator, framework: str) -> None:
    base = np.concatenate([small_integers(rng, 1500, 5)] * 2)
    scores, ids = ops.topk_cosine(
        to_gpu(base[:50], framework), to_gpu(base, framework), 30, exclude_self=True
    )
    want = reference.topk_cosine(base[:50], base, 30, exclude_self=True)
    np.testing.assert_array_equal(to_host(ids), want[1])
    np.testing.assert_array_equal(to_host(scores), want[0])


@pytest.mark.gpu
@pytest.mark.parametrize("framework", gpu_frameworks())
@pytest.mark.parametrize("c", [1, 64])
def test_cuda_centroid_distance_matches_cpu(
    rng: np.random.Generator, framework: str, c: int
) -> None:
    x, centroids = unit_rows(rng, 5000, 384), unit_rows(rng, c, 384)
    for xs in (x, x.astype(np.float16)):
        dist, nearest = ops.centroid_distance(to_gpu(xs, framework), to_gpu(centroids, framework))
        want = reference.centroid_distance(xs.astype(np.float32), centroids)
        np.testing.assert_allclose(to_host(dist), want[0], atol=ATOL)
        assert (to_host(nearest) == want[1]).mean() > 0.999  # near ties may differ in rounding
    full = ops.centroid_distances(to_gpu(x, framework), to_gpu(centroids, framework))
    np.testing.assert_allclose(to_host(full), reference.centroid_distances(x, centroids), atol=ATOL)


@pytest.mark.gpu
@pytest.mark.parametrize("framework", gpu_frameworks())
def test_cuda_pairs_match_cpu_and_grow(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch, framework: str
) -> None:
    monkeypatch.setattr(similarity, "GPU_PAIRS_CAPACITY", 8)  # forces the buffers to grow
    x = near_duplicates(rng, 3000, 97)
    got = ops.pairs_above(to_gpu(x, framework), 0.9)
    assert_pairs_match(tuple(to_host(a) for a in got), reference.pairs_above(x, 0.9), 0.9)
    y = near_duplicates(rng, 500, 97)
    got = ops.pairs_above(to_gpu(x, framework), 0.5, y=to_gpu(y, framework))
    assert_pairs_match(tuple(to_host(a) for a in got), reference.pairs_above(x, 0.5, y=y), 0.5)


# ---- issue 16: huge k, any layout, non-finite skipping ----


def test_huge_k_is_clamped_to_n_or_refused(rng: np.random.Generator, path: str) -> None:
    """k = 10**9 over 30 rows used to allocate (q, 10**9) heaps and die (issue 16, item 7)."""
    queries, base = unit_rows(rng, 2, 16), unit_rows(rng, 30, 16)
    scores, ids = ops.topk_cosine(queries, base, 100_000)  # 2e5 slots: padded, work on 30
    assert scores.shape == ids.shape == (2, 100_000)
    want = reference.topk_cosine(queries, base, 30)
    np.testing.assert_array_equal(ids[:, :30], want[1])
    assert (ids[:, 30:] == -1).all()
    assert np.isneginf(scores[:, 30:]).all()
    with pytest.raises(ValueError, match=r"k=1000000000 for 2 queries .* the base has 30 rows"):
        ops.topk_cosine(queries, base, 10**9)


def test_any_layout_is_accepted(rng: np.random.Generator) -> None:
    """Fortran-order and strided float32 inputs are copied, never refused (issue 16, item 10)."""
    queries, base = unit_rows(rng, 3, 24), unit_rows(rng, 50, 24)
    want = ops.topk_cosine(queries, base, 5)
    got = ops.topk_cosine(np.asfortranarray(queries), np.asfortranarray(base), 5)
    np.testing.assert_array_equal(got[1], want[1])
    got = ops.centroid_distance(np.asfortranarray(base), np.asfortranarray(queries))
    np.testing.assert_array_equal(got[1], ops.centroid_distance(base, queries)[1])
    got = ops.pairs_above(np.asfortranarray(base), 0.2)
    np.testing.assert_array_equal(got[0], ops.pairs_above(base, 0.2)[0])


def test_check_finite_false_skips_non_finite_scores(rng: np.random.Generator, path: str) -> None:
    base = unit_rows(rng, 40, 16)
    base[7] = np.nan
    scores, ids = ops.topk_cosine(base[:3], base, 40, check_finite=False)
    assert not (ids == 7).any()  # NaN never reaches a result
    assert np.isneginf(scores[:, -1]).all()
    assert (ids[:, -1] == -1).all()
    i, j, _ = ops.pairs_above(base, -2.0, check_finite=False)
    assert not np.isin(7, i)
    assert not np.isin(7, j)
    assert len(i) == 39 * 38 // 2


# ---- helpers shared with the CUDA kernels ----


@pytest.mark.parametrize("d", [1, 3, 8, 97, 384])
def test_fixed_order_dot_is_the_cpu_dot_bit_for_bit(rng: np.random.Generator, d: int) -> None:
    """pairs_above keeps dot_lanes8 scores on the GPU; the CPU keeps its own dot: equal bits."""
    a = rng.standard_normal((200, d)).astype(np.float32)
    b = rng.standard_normal((200, d)).astype(np.float32)
    got = _native.dot_lanes8(a, b)
    cpu = np.array([_native.dot_tile(a[i : i + 1], b[i : i + 1])[0, 0] for i in range(len(a))])
    np.testing.assert_array_equal(got.view(np.uint32), cpu.astype(np.float32).view(np.uint32))
    i, j, s = ops.pairs_above(a, -1e9, y=b)  # every pair, re-scored
    diagonal = i == j
    np.testing.assert_array_equal(s[diagonal], got[i[diagonal]])


def test_score_finiteness_test_of_the_kernels() -> None:
    for value, finite in [(0.0, True), (-3.4e38, True), (np.inf, False), (-np.inf, False)]:
        assert _native.score_is_finite(value) is finite
    assert _native.score_is_finite(np.nan) is False


@pytest.mark.parametrize(
    ("q", "m", "k", "want"),
    [
        (1, 1_000_000, 10, 245),  # 1 query over 1M rows: 245 blocks of 4096 columns
        (16, 1_000_000, 10, 17),  # 16 rows already use 16 blocks
        (1, 5000, 10, 2),  # narrow: every split keeps >= 4096 columns
        (1, 1_000_000, 100_000, 3),  # wide k: every split keeps >= 4 k columns
        (1000, 1_000_000, 10, 1),
        (3, 10, 5, 1),
    ],
)
def test_gpu_topk_column_splits(q: int, m: int, k: int, want: int) -> None:
    """Few-query top-k spreads one row's columns over many blocks (defect 4)."""
    assert _native.topk_splits(q, m, k, 264, 4096) == want
