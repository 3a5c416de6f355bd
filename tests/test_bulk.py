"""Bulk embedding: every input format round-trips, bad records are named, a killed job
resumes with every row exactly once, and memory does not grow with the input."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

import embengine
from embengine import cli
from embengine.bulk import (
    BadRecordError,
    Fields,
    InputError,
    JobMismatchError,
    embed_files,
    read_output,
    read_records,
)
from embengine.engine import Engine

TEXTS = [f"record {i}: the {w} sat on the mat" for i, w in enumerate(["cat", "dog", "fox"] * 4)]


def vectors(table: pa.Table) -> np.ndarray:
    return np.stack(table.column("vector").to_numpy(zero_copy_only=False)).astype(np.float32)


def write_input(path: Path, texts: list[str], ids: list[str] | None = None) -> Path:
    """`texts` (and ids) in the format named by the suffix of `path`."""
    ids = ids or [f"doc-{i}" for i in range(len(texts))]
    name = path.name
    if name.endswith((".jsonl", ".jsonl.gz")):
        lines = "".join(
            json.dumps({"id": i, "body": t}) + "\n" for i, t in zip(ids, texts, strict=True)
        )
        data = lines.encode()
        path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    elif name.endswith(".csv"):
        pa_csv.write_csv(pa.table({"id": ids, "body": texts}), path)
    elif name.endswith(".parquet"):
        pq.write_table(pa.table({"id": ids, "body": texts}), path, row_group_size=5)
    else:
        path.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    return path


@pytest.mark.parametrize("name", ["in.jsonl", "in.jsonl.gz", "in.csv", "in.parquet", "in.txt"])
def test_every_format_round_trips(tmp_path: Path, engine: Engine, name: str) -> None:
    path = write_input(tmp_path / name, TEXTS)
    fields = Fields("text") if name.endswith(".txt") else Fields("body", "id")
    result = embed_files(engine, [path], tmp_path / "out", fields=fields, chunk_rows=5)
    assert (result.records, result.rows, result.parts, result.bad) == (12, 12, 3, 0)
    table = read_output(tmp_path / "out")
    expected_ids = list(range(12)) if name.endswith(".txt") else [f"doc-{i}" for i in range(12)]
    assert table.column("id").to_pylist() == expected_ids
    assert table.column("text_sha256").to_pylist() == [
        hashlib.sha256(t.encode()).hexdigest() for t in TEXTS
    ]
    np.testing.assert_allclose(vectors(table), engine.embed(TEXTS), atol=1e-5)


def test_output_is_one_parquet_dataset_with_a_text_column_on_request(
    tmp_path: Path, engine: Engine
) -> None:
    path = write_input(tmp_path / "in.txt", TEXTS)
    embed_files(engine, [path, path], tmp_path / "out", chunk_rows=7, keep_text=True)
    table = pq.read_table(tmp_path / "out")  # the manifest is skipped by Parquet readers
    assert table.num_rows == 24
    assert table.column("text").to_pylist() == TEXTS + TEXTS
    assert table.column("id").to_pylist() == list(range(24))  # positions across both files
    assert table.schema.field("vector").type == pa.list_(pa.float32(), engine.dim)


BAD_JSONL = [
    ('{"body": "fine"}', None),
    ('{"body": "fine", ', "invalid JSON"),
    ('["a list"]', "not an object"),
    ('{"text": "wrong field"}', "no field 'body'"),
    ('{"body": 7}', "field 'body' is int, expected str"),
    ('{"body": null}', "field 'body' is null"),
    ('{"body": "   "}', "field 'body' is empty"),
    ("", "invalid JSON"),
    ('{"body": "also fine"}', None),
]


def test_bad_records_are_named_by_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(
        "\n".join(line for line, _ in BAD_JSONL).encode() + b'\n{"body": "\xff\xfe"}\n'
    )
    records = list(read_records([path], None, Fields("body")))
    assert [r.line for r in records] == list(range(1, len(BAD_JSONL) + 2))
    for record, (_, error) in zip(records[:-1], BAD_JSONL, strict=True):
        if error is None:
            assert record.error is None
            assert record.text is not None
        else:
            assert error in record.error, record
            assert record.where == f"{path}:{record.line}"
    assert "not valid UTF-8" in records[-1].error


def test_csv_rows_with_wrong_field_counts_and_quoted_newlines(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text('id,body\n1,"two\nlines"\n2,ok,extra\n3\n4,fine\n', encoding="utf-8")
    records = list(read_records([path], None, Fields("body", "id")))
    assert [(r.line, r.text, r.error is None) for r in records] == [
        (3, "two\nlines", True),
        (4, None, False),
        (5, None, False),
        (6, "fine", True),
    ]
    assert "more fields" in records[1].error
    assert "fewer fields" in records[2].error
    with pytest.raises(InputError, match=r"no column 'title'"):
        list(read_records([path], None, Fields("title")))


def test_parquet_nulls_are_bad_records_and_missing_columns_fail(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"body": ["a", None, "c"]}), path)
    records = list(read_records([path], None, Fields("body")))
    assert [r.error for r in records] == [None, "field 'body' is null", None]
    assert records[1].where.endswith("in.parquet:2")
    with pytest.raises(InputError, match=r"no column 'id'"):
        list(read_records([path], None, Fields("body", "id")))


@pytest.fixture
def cli_engine(monkeypatch: pytest.MonkeyPatch, engine: Engine) -> Engine:
    """The CLI in-process with the session engine (no model load per call)."""
    monkeypatch.setattr(cli, "_engine", lambda args: engine)
    return engine


def test_cli_stops_on_a_bad_record_then_skips_it_on_request(
    tmp_path: Path, cli_engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "in.jsonl"
    good = [json.dumps({"body": t}) for t in TEXTS]
    path.write_text("\n".join([*good[:6], '{"body": 3}', *good[6:]]) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    argv = ["embed", str(path), "-o", str(out), "--text-field", "body", "--chunk-rows", "4", "-q"]

    assert cli.main(argv) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert f"{path}:7: field 'body' is int, expected str" in err
    assert read_output(out, complete=False).num_rows == 4  # the chunk before the bad one is kept

    assert cli.main([*argv, "--on-error", "skip"]) == cli.EXIT_SKIPPED
    err = capsys.readouterr().err
    assert "skipped 1 bad records" in err
    assert f"{path}:7" in err
    table = read_output(out)
    assert table.column("id").to_pylist() == [*range(6), *range(7, 13)]  # position 6 is missing
    np.testing.assert_allclose(vectors(table), cli_engine.embed(TEXTS), atol=1e-5)

    assert cli.main([*argv, "--on-error", "skip"]) == cli.EXIT_SKIPPED  # complete: nothing new
    assert read_output(out).num_rows == 12


def test_cli_usage_and_file_errors_have_their_own_exit_codes(
    tmp_path: Path, cli_engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as usage:
        cli.main(["embed", "in.txt"])  # no --out
    assert usage.value.code == cli.EXIT_USAGE
    assert cli.main(["embed", str(tmp_path / "missing.txt"), "-o", str(tmp_path / "o")]) == 1
    assert "missing.txt: no such file" in capsys.readouterr().err
    path = write_input(tmp_path / "in.txt", TEXTS)
    assert cli.main(["embed", str(path), "-o", str(tmp_path / "o"), "-q"]) == cli.EXIT_OK


def test_resume_keeps_verified_parts_and_redoes_damaged_ones(
    tmp_path: Path, engine: Engine
) -> None:
    path = write_input(tmp_path / "in.txt", TEXTS)
    out = tmp_path / "out"
    first = embed_files(engine, [path], out, chunk_rows=3)
    reference = read_output(out)
    kept = (out / "part-000000.parquet").stat().st_mtime_ns

    data = (out / "part-000002.parquet").read_bytes()
    (out / "part-000002.parquet").write_bytes(data[: len(data) // 2])
    (out / ".part-000009.parquet.x.tmp").write_bytes(b"left by a kill")
    again = embed_files(engine, [path], out, chunk_rows=3)
    assert (again.resumed_parts, again.parts, again.rows) == (2, first.parts, 12)
    assert (out / "part-000000.parquet").stat().st_mtime_ns == kept
    assert not list(out.glob(".*.tmp"))
    assert read_output(out).equals(reference)

    with pytest.raises(JobMismatchError, match="chunk_rows"):
        embed_files(engine, [path], out, chunk_rows=4)
    assert embed_files(engine, [path], out, chunk_rows=4, overwrite=True).parts == 3
    path.write_text("changed\n", encoding="utf-8")
    with pytest.raises(JobMismatchError, match="inputs"):
        embed_files(engine, [path], out, chunk_rows=4)


def test_output_directory_that_is_not_a_job_is_refused(tmp_path: Path, engine: Engine) -> None:
    path = write_input(tmp_path / "in.txt", TEXTS)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.md").write_text("mine")
    with pytest.raises(InputError, match="holds no embed job"):
        embed_files(engine, [path], tmp_path / "busy")
    with pytest.raises(BadRecordError, match=r"gap\.txt:2: empty line"):
        embed_files(engine, [write_input(tmp_path / "gap.txt", ["a", ""])], tmp_path / "o")


def _subprocess_env() -> dict[str, str]:
    """Subprocesses import the same embengine as this test (source tree or installed)."""
    return {**os.environ, "PYTHONPATH": str(Path(embengine.__file__).resolve().parents[1])}


def test_killed_embed_resumes_with_every_row_exactly_once(tmp_path: Path, engine: Engine) -> None:
    texts = [f"line {i} of a job that is killed halfway, word {i * 7 % 13}" for i in range(240)]
    path = write_input(tmp_path / "in.txt", texts)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "embengine.cli", "embed", str(path), "-o", str(out)]
    command += ["--chunk-rows", "20", "--device", "cpu", "-q"]
    env = _subprocess_env()

    job = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE)
    manifest = out / "_embengine_job.json"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and job.poll() is None:
        if manifest.is_file() and len(json.loads(manifest.read_text())["parts"]) >= 2:
            break
        time.sleep(0.02)
    job.send_signal(signal.SIGKILL)
    job.communicate()
    killed = json.loads(manifest.read_text())
    assert not killed["complete"], "the job finished before it could be killed"
    before = {p["file"]: (out / p["file"]).stat().st_mtime_ns for p in killed["parts"]}

    resumed = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    for name, mtime in before.items():
        assert (out / name).stat().st_mtime_ns == mtime, f"{name} was rewritten, not kept"
    table = read_output(out)
    assert table.column("id").to_pylist() == list(range(len(texts)))
    embed_files(engine, [path], tmp_path / "whole", chunk_rows=20)
    np.testing.assert_array_equal(vectors(table), vectors(read_output(tmp_path / "whole")))


MEMORY_PROBE = """
import hashlib, resource, sys
from types import SimpleNamespace
import numpy as np
from embengine.bulk import embed_files

class HashEngine:
    '''Stands in for the model: the pipeline's memory, not the model's, is under test.'''
    dim = 384
    spec = SimpleNamespace(name="hash", fingerprint="hash-v1")
    def embed(self, texts):
        seeds = [int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little") for t in texts]
        rows = np.stack([np.random.default_rng(s).random(self.dim, np.float32) for s in seeds])
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

n, path, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
with open(path, "w") as f:
    for i in range(n):
        f.write(f"short line number {i}\\n")
result = embed_files(HashEngine(), [path], out, chunk_rows=1000)
assert result.rows == n, result
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
"""


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux only")
def test_peak_memory_does_not_grow_with_the_input(tmp_path: Path) -> None:
    def peak_mib(n: int) -> float:
        run = subprocess.run(
            [sys.executable, "-c", MEMORY_PROBE, str(n), f"in{n}.txt", f"out{n}"],
            cwd=tmp_path,
            env=_subprocess_env(),
            capture_output=True,
            text=True,
            check=True,
        )
        return int(run.stdout.split()[-1]) / 1024

    small, large = peak_mib(20_000), peak_mib(80_000)
    extra_vectors_mib = 60_000 * 384 * 4 / 2**20  # what holding the whole output would add
    assert large - small < extra_vectors_mib / 4, (small, large)
