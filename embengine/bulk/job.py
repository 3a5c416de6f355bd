"""Embed files into a Parquet dataset with bounded memory, and resume after a kill.

The output is a directory: one Parquet file per chunk of `chunk_rows` input records
(`part-000000.parquet`, ...), each written atomically, and a manifest
(`_embengine_job.json`, rewritten atomically after every part) listing the finished parts
with their sha256. Memory holds one chunk at a time, whatever the input size.

A killed run leaves only finished parts in the manifest (a part written but not yet listed
is an orphan, removed on restart). Rerunning the same job verifies the listed parts, keeps
the valid prefix, and re-reads the input from the first record not yet written: no row is
duplicated or lost. Chunks are cut by record position, so a resumed run encodes exactly the
batches an uninterrupted run would have. Readers (pyarrow, pandas, Ray, DuckDB) open the
directory as one dataset; they skip names starting with `_` or `.`.

The manifest is checked before it is trusted: a part is named `part-NNNNNN.parquet` for its
position (never a path elsewhere: `../x` and `/etc/x` are refused), counts are
non-negative integers and parts follow one another. An unreadable or malformed manifest is
a CorruptFileError; `overwrite` replaces it. A directory that holds neither a job nor
nothing is never written into.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embengine._optional import require
from embengine.bulk.readers import Fields, InputError, Record, count_records, read_records
from embengine.errors import InvalidInputError
from embengine.io import CorruptFileError, atomic_write, is_stale_temp

if TYPE_CHECKING:
    import pyarrow as pa

    from embengine.engine import Engine

log = logging.getLogger("embengine")

MANIFEST = "_embengine_job.json"
MANIFEST_VERSION = 1
RAY_MARKER = "_embengine_ray.json"  # marks a directory written by the Ray path (no resume)
_KEEP_BAD_PER_PART = 100  # bad records listed per part in the manifest (all are counted)
_PART = re.compile(r"part-(\d{6})\.parquet")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def part_name(index: int) -> str:
    """The file name of a job's part `index`: the only names a manifest may list."""
    return f"part-{index:06d}.parquet"


class BadRecordError(InvalidInputError):
    """A record cannot be embedded and the job was asked to stop on errors."""


class JobMismatchError(InvalidInputError):
    """The output directory holds another job (other inputs, fields, model or chunking)."""


@dataclass
class JobResult:
    """What an embed job did; `bad_records` lists up to 100 per part, `bad` counts them all."""

    out: Path
    records: int = 0  # input records read, good and bad, this run and earlier ones
    rows: int = 0  # vectors in the output
    bad: int = 0
    bad_records: list[dict[str, str]] = field(default_factory=list)
    parts: int = 0
    resumed_parts: int = 0  # finished parts kept from an earlier run
    resumed_rows: int = 0  # rows in those parts
    seconds: float = 0.0  # this run

    @property
    def rows_per_second(self) -> float:
        """Rows embedded per second by this run (resumed rows not counted)."""
        new_rows = self.rows - self.resumed_rows
        return new_rows / self.seconds if self.seconds > 0 else 0.0


def embed_files(
    engine: Engine,
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    fmt: str | None = None,
    fields: Fields = Fields(),  # noqa: B008 (frozen dataclass)
    chunk_rows: int = 10_000,
    on_error: str = "stop",
    keep_text: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> JobResult:
    """Embed every record of `inputs` into the Parquet dataset directory `out`, resumably.

    Columns: `id` (str from `fields.id`, else the record's 0-based position in the input,
    int64), `text_sha256` (hex of the UTF-8 text), `vector` (fixed-size list of `engine.dim`
    float32, unit norm), and `text` when `keep_text`. `on_error` is "stop" (raise
    BadRecordError naming file and line; finished parts are kept) or "skip" (leave the
    record out and report it). An existing job in `out` is resumed, or replaced when
    `overwrite`.
    """
    if on_error not in ("stop", "skip"):
        raise ValueError(f"on_error must be 'stop' or 'skip', got {on_error!r}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    started = time.perf_counter()
    paths = [Path(p) for p in inputs]
    if not paths:
        raise InputError("no input files given")
    for path in paths:
        if not path.is_file():
            raise InputError(f"{path}: no such file")
    out = Path(out)
    job = _job_identity(engine, paths, fmt, fields, chunk_rows, keep_text)
    parts = _prepare_output(out, job, overwrite)
    result = JobResult(out=out, parts=len(parts), resumed_parts=len(parts))
    for part in parts:
        _count_part(result, part)
    result.resumed_rows = result.rows

    records = read_records(paths, fmt, fields)
    skipped = sum(1 for _ in itertools.islice(records, result.records))
    if skipped != result.records:
        raise InputError(f"the input has {skipped} records, but {result.records} were already done")

    with _progress(progress, count_records(paths, fmt), result.records) as bar:
        while chunk := list(itertools.islice(records, chunk_rows)):
            part = _write_part(engine, out, len(parts), result.records, chunk, job, on_error)
            parts.append(part)
            _write_manifest(out, job, parts, complete=False)
            _count_part(result, part)
            result.parts = len(parts)
            bar.update(len(chunk))
    _write_manifest(out, job, parts, complete=True)
    result.seconds = time.perf_counter() - started
    return result


def iter_output(out: str | Path, *, complete: bool = True) -> Iterator[pa.Table]:
    """The parts of an embed output, each verified against its checksum, in input order.

    Raises CorruptFileError for a damaged part and, when `complete`, ValueError for an
    unfinished job.
    """
    pq = require("pyarrow.parquet", "reading embed output")
    manifest = _read_manifest(Path(out))
    if manifest is None:
        raise FileNotFoundError(f"{out} holds no embed job ({MANIFEST} is missing)")
    if complete and not manifest["complete"]:
        raise ValueError(f"the embed job in {out} is unfinished: rerun it to resume")
    for part in manifest["parts"]:
        data = _verified_bytes(Path(out) / part["file"], part["sha256"])
        yield pq.read_table(require("pyarrow", "reading embed output").BufferReader(data))


def read_output(out: str | Path, *, complete: bool = True) -> pa.Table:
    """The whole embed output as one verified table (for outputs that fit in memory)."""
    pa = require("pyarrow", "reading embed output")
    tables = list(iter_output(out, complete=complete))
    if not tables:
        return _empty_table(_read_manifest(Path(out))["job"])
    return pa.concat_tables(tables)


def _job_identity(
    engine: Engine,
    paths: Sequence[Path],
    fmt: str | None,
    fields: Fields,
    chunk_rows: int,
    keep_text: bool,
) -> dict[str, Any]:
    """Everything that decides which rows and vectors a job writes; resuming needs it equal."""
    inputs = []
    for path in paths:
        stat = path.stat()
        inputs.append(
            {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        )
    return {
        "inputs": inputs,
        "format": fmt,
        "fields": asdict(fields),
        "chunk_rows": chunk_rows,
        "keep_text": keep_text,
        "model": engine.spec.name,
        "model_fingerprint": engine.spec.fingerprint,
        "dim": engine.dim,
    }


def _prepare_output(out: Path, job: dict[str, Any], overwrite: bool) -> list[dict[str, Any]]:
    """The verified finished parts to keep (empty for a new job); stray files removed."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a directory")
    refuse_inputs_inside(out, [Path(i["path"]) for i in job["inputs"]])
    if job_kind(out) == "ray":
        if not overwrite:
            raise JobMismatchError(f"{out} holds a Ray embed job: pass overwrite to replace it")
        remove_job_files(out)
    if not (out / MANIFEST).is_file() and out.is_dir() and any(out.iterdir()):
        raise InputError(
            f"{out} is not empty and holds no embed job: choose a new directory "
            "(overwrite replaces only an embed job's output, never other files)"
        )
    if overwrite:  # not read: a corrupt manifest is replaced too
        manifest = None
    else:
        try:
            manifest = _read_manifest(out)
        except CorruptFileError as exc:
            raise CorruptFileError(f"{exc}; pass overwrite to replace the job") from exc
    if manifest is not None and manifest["job"] != job:
        changed = sorted(k for k in job if job[k] != manifest["job"].get(k))
        raise JobMismatchError(
            f"{out} holds a job with other settings (differs in: {', '.join(changed)}); "
            "pass overwrite to replace it, or choose another output"
        )
    parts: list[dict[str, Any]] = []
    for part in manifest["parts"] if manifest else []:
        try:
            _verified_bytes(out / part["file"], part["sha256"])
        except (CorruptFileError, FileNotFoundError) as exc:
            log.warning("%s; re-embedding from part %d on", exc, len(parts))
            break
        parts.append(part)
    out.mkdir(parents=True, exist_ok=True)
    kept = {part["file"] for part in parts}
    strays = [p for p in out.glob("part-*.parquet") if p.name not in kept]
    # temp parts of killed runs; a live writer's (this host, running pid) is left alone
    strays += [p for p in out.glob(".part-*.tmp") if is_stale_temp(p, unknown_after=0)]
    for stray in strays:
        if stray.is_file() or stray.is_symlink():
            stray.unlink()
    if manifest is None or len(parts) != len(manifest["parts"]) or manifest["complete"]:
        _write_manifest(out, job, parts, complete=False)
    return parts


def _write_part(
    engine: Engine,
    out: Path,
    index: int,
    first: int,
    chunk: list[Record],
    job: dict[str, Any],
    on_error: str,
) -> dict[str, Any]:
    """Embed one chunk and write its part file atomically; the manifest entry for it."""
    bad = [record for record in chunk if record.error is not None]
    if bad and on_error == "stop":
        raise BadRecordError(f"{bad[0].where}: {bad[0].error}")
    for record in bad:
        log.info("%s: %s (skipped)", record.where, record.error)
    good = [(first + offset, r) for offset, r in enumerate(chunk) if r.error is None]
    texts = [record.text for _, record in good]
    vectors = engine.embed(texts) if texts else np.zeros((0, engine.dim), np.float32)
    ids = [str(r.id) for _, r in good] if job["fields"]["id"] else [p for p, _ in good]
    table = _table(job, ids, texts, vectors)
    name = part_name(index)
    data = _parquet_bytes(table)
    atomic_write(out / name, lambda f: f.write(data))
    return {
        "file": name,
        "first": first,
        "records": len(chunk),
        "rows": len(good),
        "bad": len(bad),
        "bad_records": [{"where": r.where, "error": r.error} for r in bad[:_KEEP_BAD_PER_PART]],
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def _table(job: dict[str, Any], ids: list[Any], texts: list[str], vectors: np.ndarray) -> pa.Table:
    pa = require("pyarrow", "writing Parquet")
    if vectors.shape != (len(texts), job["dim"]):
        raise ValueError(
            f"the engine returned {vectors.shape}, expected ({len(texts)}, {job['dim']})"
        )
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    columns = {
        "id": pa.array(ids, type=pa.string() if job["fields"]["id"] else pa.int64()),
        "text_sha256": pa.array(
            [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts], type=pa.string()
        ),
        "vector": pa.FixedSizeListArray.from_arrays(flat, job["dim"]),
    }
    if job["keep_text"]:
        columns["text"] = pa.array(texts, type=pa.string())
    return pa.table(columns)


def _empty_table(job: dict[str, Any]) -> pa.Table:
    return _table(job, [], [], np.zeros((0, job["dim"]), np.float32))


def _parquet_bytes(table: pa.Table) -> bytes:
    pa = require("pyarrow", "writing Parquet")
    pq = require("pyarrow.parquet", "writing Parquet")
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def _verified_bytes(path: Path, sha256: str) -> bytes:
    if path.is_symlink():
        raise CorruptFileError(f"{path} is a symbolic link, not a part this job wrote")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise CorruptFileError(f"{path} is truncated or corrupt (checksum mismatch)")
    return data


def _read_manifest(out: Path) -> dict[str, Any] | None:
    """The job manifest in `out`, checked (None when there is none); CorruptFileError."""
    path = out / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # JSONDecodeError: ValueError
        raise CorruptFileError(f"{path} is corrupt: {exc}") from exc
    if not isinstance(manifest, dict):
        kind = type(manifest).__name__
        raise CorruptFileError(f"{path} is corrupt: a JSON {kind}, not an object")
    if manifest.get("version") != MANIFEST_VERSION:
        raise CorruptFileError(
            f"{path} has version {manifest.get('version')!r}, expected {MANIFEST_VERSION}"
        )
    problem = _manifest_problem(manifest)
    if problem is not None:
        raise CorruptFileError(f"{path} is corrupt: {problem}")
    return manifest


def _manifest_problem(manifest: dict[str, Any]) -> str | None:
    """What is wrong with a parsed manifest's structure, or None."""
    job = manifest.get("job")
    if not (
        isinstance(job, dict)
        and type(job.get("dim")) is int
        and 0 < job["dim"] <= 1 << 16
        and isinstance(job.get("fields"), dict)
        and isinstance(job["fields"].get("id"), (str, type(None)))
        and isinstance(job.get("keep_text"), bool)
    ):
        return "'job' is not a job description"
    if not isinstance(manifest.get("complete"), bool):
        return "'complete' is not true or false"
    parts = manifest.get("parts")
    if not isinstance(parts, list):
        return "'parts' is not a list"
    first = 0
    for index, part in enumerate(parts):
        if not isinstance(part, dict):
            return f"parts[{index}] is not an object"
        if part.get("file") != part_name(index):
            return f"parts[{index}] names {part.get('file')!r}, expected {part_name(index)!r}"
        if not isinstance(part.get("sha256"), str) or not _SHA256.fullmatch(part["sha256"]):
            return f"parts[{index}] has no valid sha256"
        counts = [part.get(key) for key in ("first", "records", "rows", "bad")]
        if not all(type(c) is int and c >= 0 for c in counts):
            return f"parts[{index}] has counts that are not non-negative integers"
        if part["first"] != first or part["rows"] + part["bad"] != part["records"]:
            return f"parts[{index}] does not follow part {index - 1} (records or counts disagree)"
        bad = part.get("bad_records")
        if not isinstance(bad, list) or not all(
            isinstance(b, dict) and isinstance(b.get("where"), str) for b in bad
        ):
            return f"parts[{index}] has malformed bad_records"
        first += part["records"]
    return None


def job_kind(out: Path) -> str | None:
    """ "embed" or "ray" when `out` holds an embed job's output of that path, else None."""
    if (out / MANIFEST).is_file():
        return "embed"
    if (out / RAY_MARKER).is_file():
        return "ray"
    return None


def remove_job_files(out: Path) -> None:
    """Remove the files an embed job wrote in `out`, and nothing else.

    Those are the manifest or Ray marker, the part files (`part-*.parquet`; for a Ray job
    every top-level `*.parquet`, as Ray names its files itself) and temp files of
    interrupted writes. Other files stay, and the directory too.
    """
    kind = job_kind(out)
    if kind is None:
        raise InputError(f"{out} holds no embed job: nothing of it is removed")
    doomed = [*out.glob("part-*.parquet"), *out.glob(".part-*.tmp")]
    doomed += [*out.glob(f".{MANIFEST}.*.tmp"), *out.glob(f".{RAY_MARKER}.*.tmp")]
    if kind == "ray":
        doomed += out.glob("*.parquet")
    for path in {*doomed, out / MANIFEST, out / RAY_MARKER}:
        if path.is_file() or path.is_symlink():
            path.unlink()


def refuse_inputs_inside(out: Path, inputs: Sequence[Path]) -> None:
    """InputError when an input file lies in the output directory (a rerun or overwrite
    would replace or delete it)."""
    root = out.resolve()
    for path in inputs:
        if path.resolve().is_relative_to(root):
            raise InputError(
                f"input {path} is inside the output directory {out}: writing there could "
                "overwrite or delete it; choose an output directory elsewhere"
            )


def _write_manifest(
    out: Path, job: dict[str, Any], parts: list[dict[str, Any]], complete: bool
) -> None:
    text = json.dumps(
        {"version": MANIFEST_VERSION, "job": job, "parts": parts, "complete": complete}, indent=1
    ).encode()
    atomic_write(out / MANIFEST, lambda f: f.write(text))


def _count_part(result: JobResult, part: dict[str, Any]) -> None:
    result.records += part["records"]
    result.rows += part["rows"]
    result.bad += part["bad"]
    result.bad_records.extend(part["bad_records"])


class _progress:
    """A tqdm bar in texts/s when enabled; otherwise a no-op with the same `update`."""

    def __init__(self, enabled: bool, total: int | None, initial: int) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="text", desc="embed", smoothing=0.1)

    def __enter__(self) -> _progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)
