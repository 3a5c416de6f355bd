"""Saving and loading verified files: the streaming embengine.io against the code it replaced.

    python benchmarks/bench_io.py [--n 1000000] [--repeats 3] [--what arrays index]
                                  [--dir DIR] [--out bench_io]

For each of "arrays" (n x 384 float32 vectors plus n int64 ids through save_arrays /
load_arrays) and "index" (a flat VectorIndex of the same vectors, `save` / `load`), the old
code path (kept below, as of commit d617edc: the .npz built in memory, the whole file read
back) and the new one save and load the same data, each call in its own fresh child
process: seconds of the call alone, and the peak RSS during it (VmHWM, reset through
/proc/self/clear_refs as the call starts; ru_maxrss would also count the data's making
and, over fork + exec, the parent) with its rise above the RSS before the call (for a
save, what the save itself added to the arrays it was given). Old and new take turns;
medians of the repeats. Prints a table; the rows go to benchmarks/results/OUT.json.
Both save through atomic_write (fsync); the load reads the file its save just wrote, so
from the page cache.

The old functions stay here also as the reference reader of tests/test_io.py (files written
by the new code must load in it): a frozen copy, not code to reuse.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from embengine.io import (
    _DTYPE_KINDS,
    _MAGIC,
    _MAX_HEADER,
    FORMAT_VERSION,
    CorruptFileError,
    _json,
    atomic_write,
)

DIM = 384
RESULTS = Path(__file__).resolve().parent / "results"

# -- the old code path (embengine/io.py at d617edc), unchanged but for the names ------------


def old_save_arrays(
    path: str | Path, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]
) -> None:
    body = io.BytesIO()
    np.savez(body, **{name: np.asarray(a) for name, a in arrays.items()})
    payload = body.getvalue()
    header = json.dumps(
        {
            "version": FORMAT_VERSION,
            "meta": dict(meta),
            "sha256": hashlib.sha256(payload).hexdigest(),
            "size": len(payload),
        }
    ).encode()

    def write(f: IO[bytes]) -> None:
        f.write(_MAGIC)
        f.write(len(header).to_bytes(8, "little"))
        f.write(header)
        f.write(payload)

    atomic_write(path, write)


def old_load_arrays(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    path = Path(path)
    data = path.read_bytes()
    if not data.startswith(_MAGIC):
        raise CorruptFileError(f"{path} is not an embengine file (bad magic)")
    offset = len(_MAGIC)
    if len(data) < offset + 8:
        raise CorruptFileError(f"{path} is truncated (no header length)")
    header_len = int.from_bytes(data[offset : offset + 8], "little")
    offset += 8
    if header_len > min(len(data) - offset, _MAX_HEADER):
        raise CorruptFileError(
            f"{path} is truncated or corrupt (header of {header_len} bytes, "
            f"{len(data) - offset} bytes left in the file)"
        )
    header = _json(data[offset : offset + header_len], f"{path} has a corrupt header")
    if not (
        isinstance(header, dict)
        and {"version", "meta", "sha256", "size"} <= header.keys()
        and isinstance(header["meta"], dict)
        and isinstance(header["sha256"], str)
        and type(header["size"]) is int
    ):
        raise CorruptFileError(f"{path} has a corrupt header")
    if header.get("version") != FORMAT_VERSION:
        raise CorruptFileError(
            f"{path} has format version {header.get('version')}, expected {FORMAT_VERSION}"
        )
    payload = data[offset + header_len :]
    del data
    if len(payload) != header["size"] or hashlib.sha256(payload).hexdigest() != header["sha256"]:
        raise CorruptFileError(
            f"{path} is truncated or corrupt "
            f"({len(payload)} of {header['size']} body bytes, or checksum mismatch)"
        )
    return _old_read_npz(payload, path), header["meta"]


def _old_read_npz(payload: bytes, path: Path) -> dict[str, np.ndarray]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(payload))
        members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise CorruptFileError(f"{path}: the array body is not a valid archive ({exc})") from exc
    if sum(m.file_size for m in members) > len(payload):
        raise CorruptFileError(f"{path}: the archive declares more bytes than the file holds")
    arrays: dict[str, np.ndarray] = {}
    for member in members:
        name = member.filename
        if not name.endswith(".npy") or member.compress_type != zipfile.ZIP_STORED:
            raise CorruptFileError(f"{path}: unexpected archive member {name!r}")
        try:
            raw = archive.read(member)
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError) as exc:
            raise CorruptFileError(f"{path}: archive member {name!r} is corrupt ({exc})") from exc
        arrays[name[: -len(".npy")]] = _old_read_npy(raw, f"{path}: array {name[:-4]!r}")
    return arrays


def _old_read_npy(raw: bytes, what: str) -> np.ndarray:
    stream = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"npy version {version}")
    except Exception as exc:
        raise CorruptFileError(f"{what} has a corrupt header ({exc!r})") from exc
    if dtype.kind not in _DTYPE_KINDS or dtype.hasobject or dtype.fields is not None:
        raise CorruptFileError(f"{what} has dtype {dtype}, not a plain number or string type")
    if any(not isinstance(d, int) or d < 0 for d in shape):
        raise CorruptFileError(f"{what} has an invalid shape {shape}")
    count = 1
    for d in shape:
        count *= d
    body = raw[stream.tell() :]
    if count * dtype.itemsize != len(body) or (count and dtype.itemsize == 0):
        raise CorruptFileError(
            f"{what} declares shape {shape} of {dtype} ({count * dtype.itemsize} bytes) "
            f"but holds {len(body)} bytes"
        )
    flat = np.frombuffer(body, dtype=dtype, count=count).copy()
    if fortran:
        return flat.reshape(shape[::-1]).transpose()
    return flat.reshape(shape)


# -- one measurement per child process -----------------------------------------------------


def unit_rows(n: int, seed: int = 0) -> np.ndarray:
    """n random unit rows, made in place a chunk at a time (no second copy)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 100_000):
        chunk = out[start : start + 100_000]
        rng.standard_normal(dtype=np.float32, out=chunk)
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
    return out


def status_gib(field: str) -> float:
    """A /proc/self/status memory figure (VmHWM: peak RSS since exec; VmRSS: now), GiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(op: str, side: str, what: str, n: int, path: str) -> None:
    """One save (of freshly made data) or one load, timed alone; prints a JSON row."""
    import embengine.index.vector_index as vector_index
    from embengine import io as engine_io
    from embengine.index import VectorIndex

    save, load = (
        (old_save_arrays, old_load_arrays)
        if side == "old"
        else (engine_io.save_arrays, engine_io.load_arrays)
    )
    vector_index.save_arrays, vector_index.load_arrays = save, load  # what the index calls
    row: dict[str, Any] = {"op": op, "side": side, "what": what, "n": n}
    if op == "save":
        vectors = unit_rows(n)
        if what == "index":
            index = VectorIndex(DIM, device="cpu")
            index.add(vectors)
            del vectors
            call = lambda: index.save(path)  # noqa: E731
        else:
            arrays = {"vectors": vectors, "ids": np.arange(n, dtype=np.int64)}
            call = lambda: save(path, arrays, {"n": n})  # noqa: E731
    else:
        call = (
            (lambda: VectorIndex.load(path, device="cpu"))
            if what == "index"
            else (lambda: load(path))
        )
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM from now on: this call's peak
    row["rss_before_gib"] = status_gib("VmRSS")
    started = time.perf_counter()
    result = call()
    row["seconds"] = time.perf_counter() - started
    row["peak_rss_gib"] = status_gib("VmHWM")
    row["rise_gib"] = row["peak_rss_gib"] - row["rss_before_gib"]
    if op == "load":  # what came back: a sum over a few rows, compared across sides
        rows = range(0, n, 9973)
        table = result.get(list(rows)) if what == "index" else result[0]["vectors"][rows]
        row["check"] = float(np.asarray(table, dtype=np.float64).sum())
    row["file_gib"] = Path(path).stat().st_size / 2**30
    print(json.dumps(row))


def measure(op: str, side: str, what: str, n: int, path: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", op, side, what, str(n), str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--what", nargs="+", default=["arrays", "index"])
    parser.add_argument("--dir", default=None, help="where the files go (default: a temp dir)")
    parser.add_argument("--out", default="bench_io")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for repeat in range(args.repeats):
            for what in args.what:
                sides = ("old", "new") if repeat % 2 == 0 else ("new", "old")
                for side in sides:
                    path = Path(tmp) / f"{side}-{what}.emb"
                    for op in ("save", "load"):
                        rows.append(measure(op, side, what, args.n, path))
                        print(json.dumps(rows[-1]), flush=True)
                    path.unlink()
    (RESULTS / f"{args.out}.json").write_text(json.dumps(rows, indent=1))
    print(table(rows, args.n))


def table(rows: list[dict[str, Any]], n: int) -> str:
    """Medians per (what, side, op), old and new side by side."""

    def median(what: str, side: str, op: str, key: str) -> float:
        return statistics.median(
            r[key] for r in rows if (r["what"], r["side"], r["op"]) == (what, side, op)
        )

    lines = [
        f"\n{n:,} x {DIM} float32, medians (old and new loaded the same values)\n",
        "| what | op | old s | new s | old / new | old peak RSS GiB (rise) "
        "| new peak RSS GiB (rise) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for what in dict.fromkeys(r["what"] for r in rows):
        checks = {r["check"] for r in rows if r["what"] == what and "check" in r}
        assert len(checks) == 1, f"old and new loaded different {what}: {checks}"
        for op in ("save", "load"):
            old, new = (median(what, s, op, "seconds") for s in ("old", "new"))
            peaks = [
                f"{median(what, s, op, 'peak_rss_gib'):.2f} "
                f"(+{median(what, s, op, 'rise_gib'):.2f})"
                for s in ("old", "new")
            ]
            lines.append(
                f"| {what} | {op} | {old:.2f} | {new:.2f} | {old / new:.1f}x "
                f"| {peaks[0]} | {peaks[1]} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
