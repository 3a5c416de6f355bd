"""Verified, atomic array files: what is saved loads back, and damage is always detected."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from embengine.errors import InvalidInputError
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


# -- streaming save and load: same format, bounded memory ----------------------------------


@pytest.fixture(scope="module")
def previous() -> ModuleType:
    """The save_arrays / load_arrays that built and read the whole file in memory (a frozen
    copy kept in benchmarks/bench_io.py, which measures the two side by side)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_io.py"
    spec = importlib.util.spec_from_file_location("embengine_bench_io", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _assorted(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "x": rng.standard_normal((50, 7)).astype(np.float32),
        "f": np.asfortranarray(np.arange(12, dtype=np.int16).reshape(3, 4)),
        "s": np.array(["a", "bcd", ""]),
        "b": np.array([b"\0x", b"y"]),
        "flag": np.array([True, False]),
        "big_endian": np.arange(5, dtype=">f8"),
        "empty": np.zeros((0, 4), np.float32),
        "scalar": np.array(3.5),
    }


def _assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert got.keys() == want.keys()
    for name, a in want.items():
        assert (got[name].dtype, got[name].shape) == (a.dtype, a.shape), name
        np.testing.assert_array_equal(got[name], a)


def test_the_format_is_unchanged_both_ways(
    tmp_path: Path, rng: np.random.Generator, previous: ModuleType
) -> None:
    """New files load in the previous reader, and files it wrote load in the new one."""
    arrays, meta = _assorted(rng), {"kind": "k", "nested": {"n": [1, 2]}}
    save_arrays(tmp_path / "new.emb", arrays, meta)
    _assert_same(previous.old_load_arrays(tmp_path / "new.emb")[0], arrays)
    assert previous.old_load_arrays(tmp_path / "new.emb")[1] == meta
    previous.old_save_arrays(tmp_path / "old.emb", arrays, meta)
    loaded, loaded_meta = load_arrays(tmp_path / "old.emb")
    _assert_same(loaded, arrays)
    assert loaded_meta == meta


def test_the_header_fills_its_reserved_room_with_spaces(tmp_path: Path) -> None:
    path = tmp_path / "a.emb"
    save_arrays(path, {"x": np.arange(10.0)}, {"v": 1})
    data = path.read_bytes()
    room = int.from_bytes(data[10:18], "little")
    text = data[18 : 18 + room]
    assert text.endswith(b" "), "no room to spare: the size field was not reserved"
    assert text.rstrip().endswith(b"}")
    header = json.loads(text)
    body = data[18 + room :]
    assert header["size"] == len(body)
    assert header["sha256"] == hashlib.sha256(body).hexdigest()
    assert (header["version"], header["meta"]) == (1, {"v": 1})


def test_a_body_cut_short_is_detected_before_hashing(tmp_path: Path) -> None:
    path = tmp_path / "a.emb"
    save_arrays(path, {"x": np.arange(200_000.0)}, {})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError, match=r"truncated or corrupt \(\d+ of \d+ body bytes"):
        load_arrays(path)


def test_arrays_that_would_not_load_are_refused_at_save(tmp_path: Path) -> None:
    path = tmp_path / "a.emb"
    for bad in (np.array([{"a": 1}], dtype=object), np.zeros(2, dtype=[("a", "i4")])):
        with pytest.raises(InvalidInputError, match="array 'bad' has dtype"):
            save_arrays(path, {"ok": np.arange(3), "bad": bad}, {})
    assert list(tmp_path.iterdir()) == [], "nothing written"


MEMORY_CHILD = r"""
import resource, sys
import numpy as np
from embengine.io import load_arrays, save_arrays

def vm_size():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024

path, mib = sys.argv[1], 1 << 20
x = np.full((96 * mib // 4,), 0.5, np.float32)  # 96 MiB
resource.setrlimit(resource.RLIMIT_AS, (vm_size() + 32 * mib, resource.RLIM_INFINITY))
save_arrays(path, {"x": x}, {})  # with x held: 32 MiB to spare, a third of the file
del x
loaded = load_arrays(path)[0]["x"]  # x's 96 MiB freed: the array and 32 MiB to spare
print(loaded.shape[0] * 4 // mib, float(loaded[::4096].mean()))
"""


def test_saving_and_loading_cost_the_arrays_and_a_constant(tmp_path: Path) -> None:
    """Under an address-space cap of 32 MiB past a 96 MiB array, it saves and loads back
    (the whole-file code needed two to three times the file on top)."""
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, str(tmp_path / "big.emb")],
        capture_output=True,
        text=True,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
        cwd=tmp_path,  # the installed package (or PYTHONPATH's build), not the bare source tree
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["96", "0.5"]
