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


def test_normalize_rows_takes_any_layout_in_place(rng: np.random.Generator) -> None:
    """Fortran order (df.to_numpy(), X.T), strided and float64 arrays are normalised in place
    through a float32 copy, not refused with an internal name (issue 16, item 10)."""
    x = rng.standard_normal((40, 97)).astype(np.float32)
    want = reference.normalize_rows(x)
    fortran = np.asfortranarray(x)
    assert ops.normalize_rows_(fortran) is fortran
    np.testing.assert_allclose(fortran, want, atol=1e-6)
    wide = np.zeros((40, 194), np.float32)
    wide[:, ::2] = x
    ops.normalize_rows_(wide[:, ::2])
    np.testing.assert_allclose(wide[:, ::2], want, atol=1e-6)
    assert not wide[:, 1::2].any()
    x64 = x.astype(np.float64)
    ops.normalize_rows_(x64)
    np.testing.assert_allclose(x64, want, atol=1e-6)


def test_normalize_rows_refuses_what_it_cannot_do_in_place() -> None:
    with pytest.raises(ValueError, match="float array"):
        ops.normalize_rows_(np.ones((2, 3), np.int64))
    frozen = np.ones((2, 3), np.float32)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        ops.normalize_rows_(frozen)


@pytest.mark.parametrize("magnitude", [1e19, 1e25, 3e38])
def test_huge_rows_are_scaled_not_zeroed(rng: np.random.Generator, magnitude: float) -> None:
    """Rows of magnitude >= 1e19 overflow a float32 sum of squares; they used to come out as
    zeros (issue 16, item 11)."""
    direction = reference.normalize_rows(rng.standard_normal((3, 97)).astype(np.float32))
    scale = np.float64(magnitude) / np.abs(direction.astype(np.float64)).max(axis=1)
    big = (direction * scale[:, None]).astype(np.float32)  # largest value = magnitude
    assert np.isfinite(big).all()
    x = big.copy()
    ops.normalize_rows_(x)
    np.testing.assert_allclose(x, direction, atol=1e-6)
    states = np.repeat(big[:, None, :], 2, axis=1)  # one real token, one padding: mean = row
    mask = np.array([[1, 0]] * 3, np.int64)
    np.testing.assert_allclose(ops.mean_pool_normalize(states, mask), direction, atol=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_states_raise_naming_the_row(rng: np.random.Generator, bad: float) -> None:
    states, mask = random_batch(rng, (4, 6, 97), np.float32)
    mask[2, 3] = 1
    states[2, 3, 5] = bad
    with pytest.raises(ValueError, match="NaN or inf values in a real token of row 2"):
        ops.mean_pool_normalize(states, mask)
    mask[2, 3] = 0  # the same value in a padding token is never read
    assert np.isfinite(ops.mean_pool_normalize(states, mask)).all()
    x = rng.standard_normal((5, 8)).astype(np.float32)
    x[3, 1] = bad
    before = x.copy()
    with pytest.raises(ValueError, match="first in row 3"):
        ops.normalize_rows_(x)
    np.testing.assert_array_equal(x, before)  # nothing half-applied


def test_pooled_overflow_is_reported_not_nan() -> None:
    states = np.full((1, 3, 4), 3e38, np.float32)  # finite, but their sum is not
    with pytest.raises(ValueError, match="overflowed float32"):
        ops.mean_pool_normalize(states, np.ones((1, 3), np.int32))


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (np.array([[1.0, 0.5]]), "0/1 integers or bools, got dtype float64"),
        (np.array([[1, 2**32]], np.int64), r"only 0 and 1, got 4294967296 at \(0, 1\)"),
        (np.array([[1, -1]], np.int32), "only 0 and 1"),
    ],
)
def test_masks_other_than_zero_one_are_refused(mask: np.ndarray, message: str) -> None:
    """0.5 and 2**32 used to count as padding once cast to int32 (issue 16, item 11)."""
    with pytest.raises(ValueError, match=message):
        ops.mean_pool_normalize(np.ones((1, 2, 3), np.float32), mask)


def test_bool_masks_are_taken(rng: np.random.Generator) -> None:
    states, mask = random_batch(rng, (3, 5, 8), np.float32)
    np.testing.assert_array_equal(
        ops.mean_pool_normalize(states, mask.astype(bool)), ops.mean_pool_normalize(states, mask)
    )


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


@pytest.mark.gpu
def test_cuda_pooling_and_normalize_report_bad_input(rng: np.random.Generator) -> None:
    torch = pytest.importorskip("torch")
    states, mask = random_batch(rng, (4, 6, 97), np.float32)
    states[1, 0, 3] = np.nan
    with pytest.raises(ValueError, match="real token of row 1"):
        ops.mean_pool_normalize(torch.from_numpy(states).cuda(), torch.from_numpy(mask).cuda())
    bad_mask = torch.from_numpy(mask).cuda()
    bad_mask[0, 0] = 2**32
    with pytest.raises(ValueError, match="only 0 and 1"):
        ops.mean_pool_normalize(torch.zeros((4, 6, 97), device="cuda"), bad_mask)
    big = rng.standard_normal((6, 97)).astype(np.float32) * np.float32(1e25)
    gx = torch.from_numpy(big).cuda()
    ops.normalize_rows_(gx)
    np.testing.assert_allclose(gx.cpu().numpy(), reference.normalize_rows(big), atol=1e-6)
    gx[2, 2] = float("inf")
    before = gx.clone()
    with pytest.raises(ValueError, match="first in row 2"):
        ops.normalize_rows_(gx)
    assert torch.equal(gx.isnan(), before.isnan())
    assert torch.equal(gx.nan_to_num(), before.nan_to_num())
    empty = torch.zeros((0, 97), device="cuda")
    assert ops.normalize_rows_(empty) is empty
    assert ops.mean_pool_normalize(
        torch.zeros((0, 4, 8), device="cuda"), torch.zeros((0, 4), dtype=torch.int64, device="cuda")
    ).shape == (0, 8)
