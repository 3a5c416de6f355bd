"""Compact vectors: int8 quantization (corpus ranges, clipping) and the int8 / Hamming top-k.

The kernels are checked against a numpy oracle id for id (ties to the lower id); GPU twins
are marked gpu and skip, saying why, without a CUDA GPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from embengine import ops
from embengine.errors import CorruptFileError, InvalidInputError
from embengine.ops import reference
from embengine.quantize import Int8Quantizer, binarize, search_binary, search_int8


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def oracle(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best k per row of an exact integer score matrix: score desc, then id asc; sentinels."""
    q, n = scores.shape
    out_s = np.full((q, k), -np.inf, np.float32)
    out_i = np.full((q, k), -1, np.int64)
    for r in range(q):
        order = np.lexsort((np.arange(n), -scores[r]))[:k]
        out_s[r, : len(order)] = scores[r, order]
        out_i[r, : len(order)] = order
    return out_s, out_i


def int8_oracle(q: np.ndarray, c: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    return oracle(q.astype(np.int64) @ c.astype(np.int64).T, k)


def hamming_oracle(q: np.ndarray, b: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    qb, bb = np.unpackbits(q, axis=1), np.unpackbits(b, axis=1)
    diff = (qb[:, None, :] != bb[None, :, :]).sum(axis=2)
    return oracle(8 * q.shape[1] - diff, k)


def with_ties(rng: np.random.Generator, base: np.ndarray) -> np.ndarray:
    """The base with some rows repeated at later ids, so equal scores must order by id."""
    dup = rng.integers(0, len(base), size=len(base) // 3)
    return np.concatenate([base, base[dup]])


# ---------------------------------------------------------------- quantization


def test_one_query_quantizes_exactly_as_in_a_batch(rng: np.random.Generator) -> None:
    corpus = unit_rows(rng, 500, 64)
    quantizer = Int8Quantizer.fit(corpus)
    queries = unit_rows(rng, 40, 64)
    batch = quantizer.quantize(queries)
    for i in range(len(queries)):
        assert np.array_equal(quantizer.quantize(queries[i : i + 1]), batch[i : i + 1])
    # the ranges are the corpus's: one query does not collapse to zeros or a single level
    assert len(np.unique(batch[0])) > 10


def test_values_beyond_the_range_clip_and_never_wrap() -> None:
    quantizer = Int8Quantizer(low=[-1.0, 0.0, 5.0], high=[1.0, 2.0, 5.0])
    x = np.array(
        [
            [-1.0, 0.0, 5.0],  # the range's ends
            [1.0, 2.0, 5.0],
            [1.5, 3e30, 1e9],  # far above
            [-1.5, -3e30, -1e9],  # far below
            [0.0, 1.0, 5.0],  # middles
        ],
        np.float32,
    )
    codes = quantizer.quantize(x)
    assert codes.dtype == np.int8
    assert codes[0].tolist() == [-127, -127, -127]
    assert codes[1].tolist() == [127, 127, -127]  # a constant dimension stays at -127
    assert codes[2].tolist() == [127, 127, 127]
    assert codes[3].tolist() == [-127, -127, -127]
    assert codes[4].tolist() == [0, 0, -127]
    back = quantizer.dequantize(codes)
    assert np.allclose(back[1], [1.0, 2.0, 5.0])
    assert np.allclose(back[4], [0.0, 1.0, 5.0])


def test_quantization_error_is_within_half_a_step(rng: np.random.Generator) -> None:
    x = unit_rows(rng, 300, 32)
    quantizer = Int8Quantizer.fit(x)
    error = np.abs(quantizer.dequantize(quantizer.quantize(x)) - x)
    assert (error <= quantizer.step / 2 + 1e-6).all()


def test_percentile_ranges_are_narrower_and_clip_the_tails(rng: np.random.Generator) -> None:
    x = unit_rows(rng, 2000, 16)
    full, trimmed = Int8Quantizer.fit(x), Int8Quantizer.fit(x, percentile=99.0)
    assert (trimmed.high < full.high).all()
    assert (trimmed.low > full.low).all()
    codes = trimmed.quantize(x)
    assert (codes == 127).any()
    assert codes.min() >= -127


def test_quantizer_state_round_trips(rng: np.random.Generator, tmp_path: Any) -> None:
    x = unit_rows(rng, 100, 24)
    quantizer = Int8Quantizer.fit(x, percentile=99.5)
    path = tmp_path / "q.emb"
    quantizer.save(path)
    loaded = Int8Quantizer.load(path)
    assert np.array_equal(loaded.quantize(x), quantizer.quantize(x))
    again = Int8Quantizer.from_state(*quantizer.to_state())
    assert np.array_equal(again.low, quantizer.low)
    assert np.array_equal(again.high, quantizer.high)
    arrays, meta = quantizer.to_state()
    with pytest.raises(CorruptFileError):
        Int8Quantizer.from_state(arrays, {"kind": "something-else"})
    with pytest.raises(CorruptFileError):
        Int8Quantizer.from_state(
            {"int8_low": arrays["int8_high"], "int8_high": arrays["int8_low"] - 1}, meta
        )


def test_bad_input_raises_invalid_input(rng: np.random.Generator) -> None:
    x = unit_rows(rng, 20, 8)
    quantizer = Int8Quantizer.fit(x)
    nan = x.copy()
    nan[3, 2] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        Int8Quantizer.fit(nan)
    with pytest.raises(InvalidInputError, match="NaN"):
        quantizer.quantize(nan)
    with pytest.raises(InvalidInputError, match="dim"):
        quantizer.quantize(unit_rows(rng, 2, 9))
    with pytest.raises(InvalidInputError, match="empty"):
        Int8Quantizer.fit(np.zeros((0, 8), np.float32))
    with pytest.raises(InvalidInputError, match="percentile"):
        Int8Quantizer.fit(x, percentile=30)
    codes = quantizer.quantize(x)
    with pytest.raises(InvalidInputError, match="int8"):
        quantizer.dequantize(codes.astype(np.int16))
    with pytest.raises(InvalidInputError, match="NaN"):
        search_int8(nan[2:4], codes, quantizer, 3)
    with pytest.raises(InvalidInputError, match="dim"):
        search_int8(unit_rows(rng, 2, 9), codes, quantizer, 3)
    with pytest.raises(InvalidInputError, match="k must be"):
        search_int8(x[:2], codes, quantizer, 0)
    with pytest.raises(InvalidInputError, match="oversample"):
        search_int8(x[:2], codes, quantizer, 3, oversample=0)
    bits = binarize(x)
    with pytest.raises(InvalidInputError, match="uint8"):
        search_binary(x[:2], bits.astype(np.int8), 3)
    with pytest.raises(InvalidInputError, match="dim"):
        search_binary(unit_rows(rng, 2, 24), bits, 3)
    with pytest.raises(InvalidInputError, match="quantizer"):
        search_binary(x[:2], bits, 3, rescore_with=codes)
    with pytest.raises(InvalidInputError, match="float queries"):
        search_binary(bits[:2], bits, 3, rescore_with=x)
    with pytest.raises(InvalidInputError, match="shape"):
        search_binary(x[:2], bits, 3, rescore_with=x[:5])


def test_binary_packs_sign_bits() -> None:
    x = np.where(np.arange(384) % 3 == 0, 0.5, -0.5).astype(np.float32)[None, :]
    bits = binarize(x)
    assert bits.shape == (1, 48)
    assert bits.dtype == np.uint8
    assert np.array_equal(np.unpackbits(bits, axis=1)[0], (x[0] > 0).astype(np.uint8))


# ---------------------------------------------------------------- kernels


@pytest.mark.parametrize("d", [1, 31, 32, 100, 384])
@pytest.mark.parametrize("k", [1, 5, 2000])
def test_int8_topk_equals_the_oracle_ids_and_ties(rng: np.random.Generator, d: int, k: int) -> None:
    codes = with_ties(rng, rng.integers(-128, 128, (600, d), dtype=np.int8))
    queries = rng.integers(-127, 128, (7, d), dtype=np.int8)
    scores, ids = ops.topk_int8(queries, codes, k)
    want_s, want_i = int8_oracle(queries, codes, k)
    assert np.array_equal(ids, want_i)
    assert np.array_equal(scores, want_s)
    if k > len(codes):
        assert (ids[:, len(codes) :] == -1).all()
        assert np.isneginf(scores[:, len(codes) :]).all()


def test_int8_extremes_do_not_saturate() -> None:
    d = 64
    codes = np.array([[-128] * d, [127] * d, [-127] * d], np.int8)
    queries = np.array([[-127] * d, [127] * d], np.int8)
    scores, ids = ops.topk_int8(queries, codes, 3)
    assert scores[0].tolist() == [128 * 127 * d, 127 * 127 * d, -127 * 127 * d]
    assert ids[0].tolist() == [0, 2, 1]
    assert ids[1].tolist() == [1, 2, 0]


@pytest.mark.parametrize("nbytes", [1, 5, 8, 32, 48, 64, 96, 100, 128])
@pytest.mark.parametrize("k", [1, 10, 2000])
def test_hamming_topk_equals_the_oracle_ids_and_ties(
    rng: np.random.Generator, nbytes: int, k: int
) -> None:
    bits = with_ties(rng, rng.integers(0, 256, (503, nbytes), dtype=np.uint8))  # 4-row tails
    queries = rng.integers(0, 256, (5, nbytes), dtype=np.uint8)
    scores, ids = ops.topk_hamming(queries, bits, k)
    want_s, want_i = hamming_oracle(queries, bits, k)
    assert np.array_equal(ids, want_i)
    assert np.array_equal(scores, want_s)


def test_many_blocks_and_threads_merge_to_the_oracle(rng: np.random.Generator) -> None:
    # enough rows for the parallel path and many blocks, with every score duplicated
    codes = rng.integers(-3, 4, (5000, 48), dtype=np.int8)
    queries = rng.integers(-3, 4, (3, 48), dtype=np.int8)
    assert np.array_equal(ops.topk_int8(queries, codes, 50)[1], int8_oracle(queries, codes, 50)[1])
    bits = rng.integers(0, 256, (40000, 48), dtype=np.uint8)
    qb = rng.integers(0, 256, (2, 48), dtype=np.uint8)
    assert np.array_equal(ops.topk_hamming(qb, bits, 50)[1], hamming_oracle(qb, bits, 50)[1])


def test_empty_inputs_give_sentinels() -> None:
    codes = np.zeros((0, 8), np.int8)
    scores, ids = ops.topk_int8(np.ones((2, 8), np.int8), codes, 3)
    assert scores.shape == (2, 3)
    assert (ids == -1).all()
    assert np.isneginf(scores).all()
    scores, ids = ops.topk_hamming(np.zeros((0, 4), np.uint8), np.ones((5, 4), np.uint8), 3)
    assert scores.shape == (0, 3)
    assert ids.shape == (0, 3)


def test_kernel_bad_input_raises_invalid_input() -> None:
    codes = np.zeros((4, 8), np.int8)
    with pytest.raises(InvalidInputError, match="-128"):
        ops.topk_int8(np.full((1, 8), -128, np.int8), codes, 2)
    with pytest.raises(InvalidInputError, match="int8"):
        ops.topk_int8(np.zeros((1, 8), np.float32), codes, 2)
    with pytest.raises(InvalidInputError, match="width"):
        ops.topk_int8(np.zeros((1, 9), np.int8), codes, 2)
    with pytest.raises(InvalidInputError, match="uint8"):
        ops.topk_hamming(np.zeros((1, 8), np.int8), codes.view(np.uint8), 2)
    with pytest.raises(InvalidInputError, match="shape"):
        ops.topk_hamming(np.zeros(8, np.uint8), codes.view(np.uint8), 2)
    with pytest.raises(InvalidInputError, match="k must be"):
        ops.topk_hamming(np.zeros((1, 8), np.uint8), codes.view(np.uint8), -1)


def test_torch_in_torch_out(rng: np.random.Generator) -> None:
    torch = pytest.importorskip("torch")
    codes = rng.integers(-128, 128, (50, 16), dtype=np.int8)
    queries = rng.integers(-127, 128, (2, 16), dtype=np.int8)
    _scores, ids = ops.topk_int8(torch.from_numpy(queries), torch.from_numpy(codes), 4)
    assert isinstance(ids, torch.Tensor)
    assert np.array_equal(ids.numpy(), int8_oracle(queries, codes, 4)[1])


# ---------------------------------------------------------------- search with rescoring


def test_search_int8_ranks_by_the_dequantized_vectors(rng: np.random.Generator) -> None:
    x = unit_rows(rng, 400, 48)
    quantizer = Int8Quantizer.fit(x)
    codes = quantizer.quantize(x)
    queries = unit_rows(rng, 6, 48)
    # oversample covering the corpus: the rescoring sees every row, so the result is exact
    scores, ids = search_int8(queries, codes, quantizer, 10, oversample=40)
    want_s, want_i = reference.topk_cosine(queries, quantizer.dequantize(codes), 10)
    assert np.array_equal(ids, want_i)
    assert np.allclose(scores, want_s, atol=1e-6)
    # int8-coded queries are dequantized first, and a single query equals its batch row
    s1, i1 = search_int8(queries[2:3], codes, quantizer, 10)
    sb, ib = search_int8(queries, codes, quantizer, 10)
    assert np.array_equal(i1[0], ib[2])
    assert np.array_equal(s1[0], sb[2])
    _si, ii = search_int8(quantizer.quantize(queries), codes, quantizer, 5)
    assert ii.shape == (6, 5)
    assert (ii >= 0).all()


def test_search_int8_default_oversample_finds_the_exact_neighbours(
    rng: np.random.Generator,
) -> None:
    # each query is a corpus row plus noise: its neighbour must come first
    x = unit_rows(rng, 3000, 64)
    quantizer = Int8Quantizer.fit(x)
    queries = x[:20] + 0.01 * rng.standard_normal((20, 64)).astype(np.float32)
    _, ids = search_int8(queries, quantizer.quantize(x), quantizer, 3)
    assert (ids[:, 0] == np.arange(20)).all()


def test_search_binary_rescores_exactly(rng: np.random.Generator) -> None:
    x = unit_rows(rng, 300, 64)
    bits = binarize(x)
    queries = unit_rows(rng, 5, 64)
    scores, ids = search_binary(queries, bits, 8, rescore_with=x, oversample=300)
    want_s, want_i = reference.topk_cosine(queries, x, 8)
    assert np.array_equal(ids, want_i)
    assert np.allclose(scores, want_s, atol=1e-6)
    quantizer = Int8Quantizer.fit(x)
    codes = quantizer.quantize(x)
    _, ids8 = search_binary(
        queries, bits, 8, rescore_with=codes, quantizer=quantizer, oversample=300
    )
    assert np.array_equal(ids8, reference.topk_cosine(queries, quantizer.dequantize(codes), 8)[1])
    # without rescoring: matching bits, as the kernel gives them
    _s0, i0 = search_binary(queries, bits, 8)
    assert np.array_equal(i0, hamming_oracle(binarize(queries), bits, 8)[1])
    assert np.array_equal(search_binary(binarize(queries), bits, 8)[1], i0)
    # k past n: sentinels
    s, i = search_binary(queries, bits[:4], 6, rescore_with=x[:4])
    assert (i[:, 4:] == -1).all()
    assert np.isneginf(s[:, 4:]).all()


# ---------------------------------------------------------------- GPU twins


@pytest.mark.gpu
@pytest.mark.parametrize("framework", ["torch", "cupy"])
def test_gpu_compact_topk_equals_the_oracle(rng: np.random.Generator, framework: str) -> None:
    lib = pytest.importorskip(framework)

    def to_gpu(a: np.ndarray) -> Any:
        return lib.from_numpy(a).cuda() if framework == "torch" else lib.asarray(a)

    def host(a: Any) -> np.ndarray:
        return a.cpu().numpy() if framework == "torch" else a.get()

    codes = with_ties(rng, rng.integers(-128, 128, (30000, 100), dtype=np.int8))
    queries = rng.integers(-127, 128, (5, 100), dtype=np.int8)
    for k in (1, 10, 50000):
        s, i = ops.topk_int8(to_gpu(queries), to_gpu(codes), k)
        want_s, want_i = int8_oracle(queries, codes, k)
        assert np.array_equal(host(i), want_i)
        assert np.array_equal(host(s), want_s)
    bits = with_ties(rng, rng.integers(0, 256, (30000, 48), dtype=np.uint8))
    qb = rng.integers(0, 256, (3, 48), dtype=np.uint8)
    s, i = ops.topk_hamming(to_gpu(qb), to_gpu(bits), 20)
    assert np.array_equal(host(i), hamming_oracle(qb, bits, 20)[1])
