"""Fused mean-pool + normalise and in-place normalise against the numpy oracle."""

from __future__ import annotations

import numpy as np
import pytest

from embengine import ops
from embengine.ops import reference

SHAPES = [(1, 1, 3), (1, 5, 97), (7, 13, 384), (1000, 9, 3), (3, 64, 97)]
TOLERANCE = {np.float32: 1e-5, np.float16: 1e-5}  # fp16 input is converted exactly, summed in fp32


def random_batch(
    rng: np.random.Generator, shape: tuple[int, int, int], dtype: type
) -> tuple[np.ndarray, np.ndarray]:
    b, t, _ = shape
    states = rng.standard_normal(shape).astype(dtype)
    mask = (rng.random((b, t)) < 0.7).astype(np.int64)
    mask[:, 0] = 1
    return states, mask


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_mean_pool_normalize_matches_reference(
    rng: np.random.Generator, shape: tuple[int, int, int], dtype: type
) -> None:
    states, mask = random_batch(rng, shape, dtype)
    got = ops.mean_pool_normalize(states, mask)
    assert got.dtype == np.float32
    assert got.shape == (shape[0], shape[2])
    np.testing.assert_allclose(
        got, reference.mean_pool_normalize(states, mask), atol=TOLERANCE[dtype]
    )
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_all_padding_and_zero_rows_give_zeros_not_nan(rng: np.random.Generator) -> None:
    states, mask = random_batch(rng, (4, 6, 97), np.float32)
    mask[1] = 0  # no real token
    states[2] = 0.0  # real tokens, all zero
    got = ops.mean_pool_normalize(states, mask)
    assert np.isfinite(got).all()
    assert not got[1].any()
    assert not got[2].any()
    np.testing.assert_allclose(np.linalg.norm(got[[0, 3]], axis=1), 1.0, atol=1e-6)


def test_padding_tokens_do_not_change_the_result(rng: np.random.Generator) -> None:
    states, mask = random_batch(rng, (3, 5, 97), np.float32)
    padded_states = np.concatenate(
        [states, rng.standard_normal((3, 4, 97)).astype(np.float32)], axis=1
    )
    padded_mask = np.concatenate([mask, np.zeros((3, 4), dtype=mask.dtype)], axis=1)
    np.testing.assert_allclose(
        ops.mean_pool_normalize(padded_states, padded_mask),
        ops.mean_pool_normalize(states, mask),
        atol=1e-6,
    )


def test_torch_cpu_tensors_come_back_as_torch(rng: np.random.Generator) -> None:
    torch = pytest.importorskip("torch")
    states, mask = random_batch(rng, (2, 4, 3), np.float32)
    got = ops.mean_pool_normalize(torch.from_numpy(states), torch.from_numpy(mask))
    assert isinstance(got, torch.Tensor)
    np.testing.assert_allclose(got.numpy(), reference.mean_pool_normalize(states, mask), atol=1e-6)


def test_empty_batch_gives_empty_result() -> None:
    got = ops.mean_pool_normalize(np.zeros((0, 4, 8), np.float32), np.zeros((0, 4), np.int32))
    assert got.shape == (0, 8)


@pytest.mark.parametrize(
    ("states", "mask", "message"),
    [
        (np.zeros((2, 3), np.float32), np.ones((2, 3), np.int32), "states must have shape"),
        (np.zeros((2, 3, 4), np.float32), np.ones((2, 4), np.int32), "mask must have shape"),
    ],
)
def test_bad_shapes_name_the_shapes(states: np.ndarray, mask: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ops.mean_pool_normalize(states, mask)


@pytest.mark.parametrize("shape", [(1, 3), (1000, 97), (5, 384)])
def test_normalize_rows_in_place(rng: np.random.Generator, shape: tuple[int, int]) -> None:
    x = rng.standard_normal(shape).astype(np.float32)
    x[0] = 0.0
    expected = reference.normalize_rows(x)
    assert ops.normalize_rows_(x) is x
    np.testing.assert_allclose(x, expected, atol=1e-6)
    assert not x[0].any()


def test_normalize_rows_rejects_what_it_cannot_do_in_place() -> None:
    with pytest.raises(ValueError, match="float32"):
        ops.normalize_rows_(np.ones((2, 3), np.float64))
    with pytest.raises(ValueError, match="C-contiguous"):
        ops.normalize_rows_(np.ones((3, 4), np.float32)[:, ::2])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("shape", SHAPES)
def test_cuda_pooling_matches_cpu(
    rng: np.random.Generator, shape: tuple[int, int, int], dtype: str
) -> None:
    torch = pytest.importorskip("torch")
    states, mask = random_batch(rng, shape, np.float32)
    s = torch.from_numpy(states).to("cuda", getattr(torch, dtype))
    expected = reference.mean_pool_normalize(s.float().cpu().numpy(), mask)
    got = ops.mean_pool_normalize(s, torch.from_numpy(mask).cuda())
    assert got.is_cuda
    np.testing.assert_allclose(got.cpu().numpy(), expected, atol=1e-5)


@pytest.mark.gpu
def test_cuda_normalize_rows_matches_cpu(rng: np.random.Generator) -> None:
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((1000, 97)).astype(np.float32)
    x[3] = 0
    gx = torch.from_numpy(x).cuda()
    ops.normalize_rows_(gx)
    np.testing.assert_allclose(gx.cpu().numpy(), reference.normalize_rows(x), atol=1e-6)
