"""Hostile and unusual input for VectorIndex (issue 16 items 6 and 10): crafted files with
recomputed checksums, huge ids, repeated removes, NUL-ended ids, Fortran-order vectors."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from embengine.errors import CorruptFileError, InvalidInputError
from embengine.index import VectorIndex
from embengine.index import _faiss as faiss_side
from embengine.io import load_arrays, save_arrays

DIM = 16


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def data(rng: np.random.Generator) -> np.ndarray:
    return unit(rng.standard_normal((300, DIM)))


def _run_limited(code: str, memory_gib: float = 3.0, timeout: float = 120) -> dict:
    """Run `code` in a child process whose address space is capped; its last stdout line
    is JSON. A crash or a blown cap shows as a non-zero return code."""
    prelude = textwrap.dedent(
        f"""
        import resource
        cap = int({memory_gib} * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(__file__).parent,
    )
    assert done.returncode == 0, f"child died ({done.returncode}): {done.stderr[-2000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def _hnsw_file(data: np.ndarray, path: Path) -> None:
    index = VectorIndex(DIM, kind="hnsw", device="cpu", m=8)
    index.add(data)
    index.save(path)


def test_a_crafted_hnsw_size_field_is_refused_before_faiss_allocates(
    data: np.ndarray, tmp_path: Path
) -> None:
    """A vector length of 2**32 ints (16 GiB) inside the FAISS blob, checksum recomputed:
    FAISS would try to allocate it; the walker refuses the file first."""
    path = tmp_path / "h.emb"
    _hnsw_file(data, path)
    arrays, meta = load_arrays(path)
    blob = bytearray(arrays["faiss"].tobytes())
    at = 37  # header; then assign_probas (f64) and cum_nneighbor_per_level (i32) vectors
    at += 8 + 8 * struct.unpack_from("<Q", blob, at)[0]
    at += 8 + 4 * struct.unpack_from("<Q", blob, at)[0]
    assert struct.unpack_from("<Q", blob, at)[0] == len(data)  # the levels vector
    struct.pack_into("<Q", blob, at, 2**32)
    arrays["faiss"] = np.frombuffer(bytes(blob), dtype=np.uint8)
    save_arrays(path, arrays, meta)  # checksum recomputed: only the content is hostile
    result = _run_limited(
        f"""
        import json
        from embengine.index import VectorIndex
        try:
            VectorIndex.load({str(path)!r}, device="cpu")
            print(json.dumps({{"outcome": "loaded"}}))
        except Exception as exc:
            print(json.dumps({{"outcome": type(exc).__name__, "message": str(exc)}}))
        """
    )
    assert result["outcome"] == "CorruptFileError", result
    assert "do not fit" in result["message"]


def test_an_out_of_range_hnsw_neighbour_is_refused(data: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "h.emb"
    _hnsw_file(data, path)
    arrays, meta = load_arrays(path)
    blob = bytearray(arrays["faiss"].tobytes())
    at = 37
    for size in (8, 4, 4, 8):  # probas, cum, levels, offsets
        at += 8 + size * struct.unpack_from("<Q", blob, at)[0]
    n_neighbours = struct.unpack_from("<Q", blob, at)[0]
    assert n_neighbours > 0
    struct.pack_into("<i", blob, at + 8, 10**6)  # the first neighbour points past the rows
    arrays["faiss"] = np.frombuffer(bytes(blob), dtype=np.uint8)
    save_arrays(path, arrays, meta)
    with pytest.raises(CorruptFileError, match="HNSW graph"):
        VectorIndex.load(path, device="cpu")


def test_the_blob_walker_accepts_what_faiss_writes() -> None:
    """Flat, IVF (full and sparse list layouts) and HNSW blobs of several sizes pass."""
    faiss = faiss_side.faiss_module()
    rng = np.random.default_rng(0)
    for n in (0, 1, 57, 800):
        x = unit(rng.standard_normal((max(n, 1), DIM)))[:n]
        flat = faiss.IndexFlatIP(DIM)
        flat.add(x)
        faiss_side.check_blob(faiss_side.serialize(flat), kind="flat", dim=DIM, ntotal=n)
        hnsw = faiss.IndexHNSWFlat(DIM, 8, faiss.METRIC_INNER_PRODUCT)
        hnsw.add(x)
        faiss_side.check_blob(faiss_side.serialize(hnsw), kind="hnsw", dim=DIM, ntotal=n)
        if n >= 57:
            for nlist in (4, 50):  # 50 lists over few rows: FAISS writes the sparse layout
                train = unit(rng.standard_normal((2000, DIM)))
                ivf = faiss_side.make_index("ivf", DIM, faiss_side.AnnParams(nlist=nlist), train)
                ivf.add(x[:7] if nlist == 50 else x)
                count = 7 if nlist == 50 else n
                blob = faiss_side.serialize(ivf)
                faiss_side.check_blob(blob, kind="ivf", dim=DIM, ntotal=count)
                with pytest.raises(CorruptFileError):
                    faiss_side.check_blob(blob[:-3], kind="ivf", dim=DIM, ntotal=count)
    with pytest.raises(CorruptFileError, match="holds 800"):
        faiss_side.check_blob(faiss_side.serialize(flat), kind="flat", dim=DIM, ntotal=799)


def test_fuzzed_index_files_load_cleanly_or_fail_clearly(tmp_path: Path) -> None:
    """Seeded fuzz of every kind's file (bytes, shapes, dtypes, metadata), checksums
    recomputed: each load is a CorruptFileError or a working index; never a crash or an
    allocation past the child's 3 GiB cap. (Longer run: FUZZ_ROUNDS=5000.)"""
    result = _run_limited(
        f"""
        import json, os
        import numpy as np
        from embengine.errors import CorruptFileError
        from embengine.index import VectorIndex
        from embengine.io import load_arrays, save_arrays
        rng = np.random.default_rng(16)
        tmp = {str(tmp_path)!r}
        x = rng.standard_normal((120, 8)).astype(np.float32)
        sources = []
        for i, options in enumerate([
            dict(kind="flat"), dict(kind="flat", exact="faiss"),
            dict(kind="ivf", nlist=4, nprobe=4), dict(kind="hnsw", m=4),
            dict(kind="flat", lexical=True),
        ]):
            index = VectorIndex(8, device="cpu", **options)
            ids = [f"id{{j}}" for j in range(120)] if i % 2 else None
            texts = [f"word{{j % 7}} thing{{j}}" for j in range(120)]
            index.add(x, ids, texts=texts)
            index.remove(index.ids[:3])
            path = f"{{tmp}}/src{{i}}.emb"
            index.save(path)
            sources.append(load_arrays(path))
        outcomes = {{"corrupt": 0, "loaded": 0}}
        rounds = int(os.environ.get("FUZZ_ROUNDS", "250"))
        for r in range(rounds):
            arrays, meta = sources[r % len(sources)]
            arrays = {{k: v.copy() for k, v in arrays.items()}}
            meta = json.loads(json.dumps(meta))
            name = sorted(arrays)[rng.integers(len(arrays))]
            a = arrays[name]
            how = rng.integers(5)
            if how == 0 and a.nbytes:
                raw = a.view(np.uint8).reshape(-1)
                for at in rng.integers(0, len(raw), rng.integers(1, 4)):
                    raw[at] ^= np.uint8(1 << rng.integers(8))
            elif how == 1:
                arrays[name] = a.reshape(-1)[: max(0, a.size - rng.integers(1, 9))]
            elif how == 2:
                arrays[name] = np.concatenate([a.reshape(-1), a.reshape(-1)[:5]])
            elif how == 3:
                arrays[name] = a.astype(np.float64) if a.dtype != np.float64 else a.astype(np.int64)
            else:
                key = sorted(meta)[rng.integers(len(meta))]
                meta[key] = [None, -1, 10**12, "x", {{}}, True][rng.integers(6)]
            path = f"{{tmp}}/fuzz.emb"
            save_arrays(path, arrays, meta)
            try:
                loaded = VectorIndex.load(path, device="cpu")
            except CorruptFileError:
                outcomes["corrupt"] += 1
                continue
            scores, found = loaded.search(x[:3], 4)
            assert scores.shape == found.shape == (3, 4)
            if loaded.lexical:
                loaded.search(["word1"], 2, mode="lexical")
            outcomes["loaded"] += 1
        print(json.dumps(outcomes))
        """,
        timeout=300,
    )
    assert result["corrupt"] > 0
    assert result["corrupt"] + result["loaded"] == 250


# ------------------------------------------------------------------- ids and vectors


def test_int_ids_past_int64_are_refused_and_the_largest_round_trips(
    data: np.ndarray, tmp_path: Path
) -> None:
    index = VectorIndex(DIM, device="cpu")
    with pytest.raises(InvalidInputError, match=r"ids\[1\] is 9223372036854775808"):
        index.add(data[:2], [1, 2**63])
    with pytest.raises(InvalidInputError, match="2\\*\\*63"):
        index.add(data[:1], [np.uint64(2**64 - 1)])
    assert len(index) == 0
    index.add(data[:2], [2**63 - 1, 0])
    _, ids = index.search(data[:1], 2)
    assert ids[0, 0] == 2**63 - 1
    index.save(tmp_path / "i.emb")
    assert VectorIndex.load(tmp_path / "i.emb", device="cpu").ids == [2**63 - 1, 0]
    with pytest.raises(InvalidInputError, match="automatic ids"):
        index.add(data[2:3])  # the next automatic id would be 2**63


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_remove_with_a_repeated_id_removes_nothing(kind: str, data: np.ndarray) -> None:
    index = VectorIndex(DIM, kind=kind, device="cpu")
    index.add(data[:10])
    with pytest.raises(InvalidInputError, match=r"repeat within one remove: \[3\]"):
        index.remove([3, 3])
    assert 3 in index
    assert len(index) == 10
    with pytest.raises(InvalidInputError):
        index.remove([5, 4, 5])
    assert index.ids == list(range(10))


def test_str_ids_and_texts_with_trailing_nul_survive_save_and_load(
    data: np.ndarray, tmp_path: Path
) -> None:
    index = VectorIndex(DIM, device="cpu")
    ids = ["c", "c\x00", "c\x00\x00", "", "\udc80 lone surrogate", "naïve 🙂"]
    texts = ["t", "t\x00", "t\x00\x00", "", "x", "y"]
    index.add(data[: len(ids)], ids, texts=texts)
    index.save(tmp_path / "i.emb")
    loaded = VectorIndex.load(tmp_path / "i.emb", device="cpu")
    assert loaded.ids == ids
    assert loaded.texts(ids) == texts
    assert loaded.search(data[[1]], 1)[1][0, 0] == "c\x00"


def test_fortran_order_and_strided_vectors_are_accepted(data: np.ndarray) -> None:
    fortran = np.asfortranarray(data[:50])
    assert not fortran.flags.c_contiguous
    index = VectorIndex(DIM, device="cpu")
    index.add(fortran)
    strided = np.repeat(data[:50], 2, axis=1)[:, ::2]  # non-contiguous view
    index.upsert(strided[:5], [0, 1, 2, 3, 4])
    c_order = VectorIndex(DIM, device="cpu")
    c_order.add(np.ascontiguousarray(data[:50]))
    for queries in (np.asfortranarray(data[:7]), data[:7].T.copy().T):
        np.testing.assert_array_equal(index.search(queries, 3)[1], c_order.search(queries, 3)[1])
    assert fortran.flags.f_contiguous, "the caller's array is untouched"
    np.testing.assert_array_equal(fortran, data[:50])
