"""Verified, atomic array files: what is saved loads back, and damage is always detected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embengine.io import CorruptFileError, atomic_write, load_arrays, save_arrays


def test_round_trip(tmp_path: Path, rng: np.random.Generator) -> None:
    x = rng.standard_normal((5, 3)).astype(np.float32)
    save_arrays(tmp_path / "a.emb", {"x": x, "ids": np.array(["a", "b"])}, {"model": "m", "n": 5})
    arrays, meta = load_arrays(tmp_path / "a.emb")
    np.testing.assert_array_equal(arrays["x"], x)
    assert arrays["ids"].tolist() == ["a", "b"]
    assert meta == {"model": "m", "n": 5}


@pytest.mark.parametrize("cut", [1, 100, 400])
def test_truncated_file_is_detected(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "a.emb"
    save_arrays(path, {"x": np.arange(100.0)}, {})
    path.write_bytes(path.read_bytes()[:-cut])
    with pytest.raises(CorruptFileError, match=r"truncated or corrupt|corrupt header"):
        load_arrays(path)


def test_flipped_byte_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "a.emb"
    save_arrays(path, {"x": np.arange(100.0)}, {})
    data = bytearray(path.read_bytes())
    data[-50] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="checksum"):
        load_arrays(path)


def test_foreign_file_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"hello")
    with pytest.raises(CorruptFileError, match="not an embengine file"):
        load_arrays(tmp_path / "x")


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "a.emb"
    save_arrays(path, {"x": np.arange(3.0)}, {"v": 1})

    def explode(f: object) -> None:
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(path, explode)
    assert load_arrays(path)[1] == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.emb"], "temp file left behind"


def test_new_files_get_ordinary_permissions(tmp_path: Path) -> None:
    path = tmp_path / "a.emb"
    save_arrays(path, {"x": np.arange(3.0)}, {})
    assert path.stat().st_mode & 0o044, "readable by the owner only: mkstemp's 0600 leaked"
