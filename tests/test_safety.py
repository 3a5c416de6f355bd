"""Nothing lost, nothing crashed, nothing phoned home (issue 16, items 2-5, 9, 12-14).

Each test fails on the code before the fix: a directory deleted by `--ray --overwrite`, a
command writing over its own input, a corrupt manifest that `--overwrite` could not fix, a
lone surrogate with no record named, a manifest part outside the job, telemetry files and
DNS lookups from ONNX Runtime, a read-only cache breaking Engine(), a bare
ModuleNotFoundError in the source tree, and a crafted file that allocates what it declares.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import embengine
from embengine import cli
from embengine.bulk import BadRecordError, embed_files, read_output
from embengine.bulk.job import MANIFEST, RAY_MARKER
from embengine.engine import Engine
from embengine.errors import CorruptFileError, InvalidInputError
from embengine.io import _HOST, load_arrays, save_arrays

PACKAGE_ROOT = Path(embengine.__file__).resolve().parents[1]


def subprocess_env(**extra: str) -> dict[str, str]:
    """The same embengine as this test, in a child process."""
    return {**os.environ, "PYTHONPATH": str(PACKAGE_ROOT), **extra}


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def finished_job(tmp_path: Path, engine: Engine) -> tuple[Path, Path]:
    inputs = write_jsonl(tmp_path / "in.jsonl", [{"text": f"doc {i} about cats"} for i in range(6)])
    out = tmp_path / "out"
    embed_files(engine, [inputs], out, chunk_rows=3)
    return inputs, out


# ------------------------------------------------------------ item 2: --ray --overwrite


def test_ray_overwrite_refuses_a_directory_that_holds_no_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from embengine.bulk import InputError
    from embengine.distributed import ray as ray_path

    def no_ray(*args: object, **kwargs: object) -> None:
        raise AssertionError("Ray was reached for a refused output")

    monkeypatch.setattr(ray_path, "read_files", no_ray)
    embed_files_ray = ray_path.embed_files_ray

    inputs = write_jsonl(tmp_path / "in.jsonl", [{"text": "hello"}])
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    with pytest.raises(InputError, match="holds no embed job"):
        embed_files_ray([inputs], out, overwrite=True)
    assert (out / "thesis.tex").read_text() == "years of work"

    inside = write_jsonl(out / "in.jsonl", [{"text": "hello"}])  # the job's own input
    (out / "thesis.tex").unlink()
    with pytest.raises(InputError, match="inside the output directory"):
        embed_files_ray([inside], out, overwrite=True)
    assert inside.is_file()


def test_ray_overwrite_removes_only_the_earlier_jobs_files(tmp_path: Path) -> None:
    from embengine.distributed.ray import prepare_ray_output

    out = tmp_path / "out"
    out.mkdir()
    (out / RAY_MARKER).write_text("{}")
    (out / "4f1c_000000_000000.parquet").write_bytes(b"old rows")
    (out / "README.md").write_text("keep me")
    with pytest.raises(Exception, match="pass overwrite"):
        prepare_ray_output(out, [], overwrite=False)
    prepare_ray_output(out, [], overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", RAY_MARKER]


def test_cli_embed_ray_overwrite_refuses_before_starting_ray(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from embengine.distributed import ray as ray_path

    def no_ray(*args: object, **kwargs: object) -> None:
        raise AssertionError("Ray was started for a refused output")

    monkeypatch.setattr(ray_path, "init_ray", no_ray)
    inputs = write_jsonl(tmp_path / "in.jsonl", [{"text": "hello"}])
    out = tmp_path / "out"
    out.mkdir()
    (out / "unrelated.txt").write_text("precious")
    argv = ["embed", str(inputs), "-o", str(out), "--ray", "--overwrite", "-q"]
    assert cli.main(argv) == cli.EXIT_FAILED
    assert "holds no embed job" in capsys.readouterr().err
    assert (out / "unrelated.txt").read_text() == "precious"


# ----------------------------------------------------- item 3: writing one's own input


@pytest.mark.parametrize(
    "argv",
    [
        ["classify", "{a}", "--examples", "{b}", "-o", "{a}"],
        ["classify", "{a}", "--examples", "{b}", "-o", "{b}"],
        ["dedup", "{a}", "-o", "{c}", "--pairs", "{a}"],
        ["dedup", "{a}", "-o", "{c}", "--pairs", "{c}"],
        ["anomaly", "{a}", "--normal", "{b}", "-o", "{link}"],
        ["recommend", "{a}", "--similar", "0", "-o", "{a}"],
        ["index", "build", "{a}", "-o", "{a}"],
        ["search", "{a}", "query", "-o", "{a}"],
        ["embed", "{a}", "-o", "{dir}"],
    ],
)
def test_cli_refuses_to_write_its_own_input(
    tmp_path: Path, argv: list[str], cli_engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", [{"text": "cats purr", "label": "pets"}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": "dogs bark", "label": "pets"}])
    (tmp_path / "link.jsonl").symlink_to(b)
    before = {p: p.read_bytes() for p in (a, b)}
    names = {"a": a, "b": b, "c": tmp_path / "c.jsonl", "link": tmp_path / "link.jsonl"}
    names["dir"] = tmp_path  # embed's output directory holds its input
    filled = [arg.format(**names) for arg in argv]
    assert cli.main([*filled, "-q"]) == cli.EXIT_USAGE
    assert "choose another output" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in (a, b)} == before


# ------------------------------------------------ item 4: corrupt or malformed manifests


@pytest.mark.parametrize(
    "manifest",
    [
        b"\x00\xffnot json",
        b"[1, 2, 3]",
        b'"a string"',
        b'{"version": 1}',
        b'{"version": 1, "job": {}, "parts": {}, "complete": false}',
        b"[" * 100_000,
    ],
)
def test_corrupt_manifest_is_named_and_overwrite_replaces_it(
    tmp_path: Path, engine: Engine, manifest: bytes
) -> None:
    inputs, out = finished_job(tmp_path, engine)
    (out / MANIFEST).write_bytes(manifest)
    with pytest.raises(CorruptFileError, match=r"corrupt|version"):
        read_output(out)
    with pytest.raises(CorruptFileError, match="pass overwrite"):
        embed_files(engine, [inputs], out, chunk_rows=3)
    result = embed_files(engine, [inputs], out, chunk_rows=3, overwrite=True)
    assert result.rows == 6
    assert len(read_output(out)) == 6


def test_cli_overwrite_fixes_a_corrupt_manifest(
    tmp_path: Path, cli_engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs, out = finished_job(tmp_path, cli_engine)
    (out / MANIFEST).write_text("{ truncated")
    argv = ["embed", str(inputs), "-o", str(out), "--chunk-rows", "3", "-q"]
    assert cli.main(argv) == cli.EXIT_FAILED
    assert "pass overwrite" in capsys.readouterr().err
    assert cli.main([*argv, "--overwrite"]) == cli.EXIT_OK
    assert len(read_output(out)) == 6


KILLED_WRITER = """
import sys, time
from embengine.io import atomic_write
def write(f):
    f.write(b"x" * (1 << 20))
    f.flush()
    print("writing", flush=True)
    time.sleep(600)
atomic_write(sys.argv[1], write)
"""


def test_temp_file_of_a_killed_writer_is_removed_by_the_next_write(tmp_path: Path) -> None:
    target = tmp_path / "state.emb"
    save_arrays(target, {"x": np.arange(3)}, {"v": 1})
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(target)],
        env=subprocess_env(),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "writing"
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate()
    leftovers = list(tmp_path.glob(".state.emb.*.tmp"))
    assert len(leftovers) == 1, "the killed writer should have left its temp file"
    live = tmp_path / f".state.emb.{_HOST}-{os.getpid()}.abcd.tmp"  # a live writer's (ours)
    live.write_bytes(b"in progress")
    old = tmp_path / ".state.emb.0123abcd.tmp"  # an older name, unknown writer, two days old
    old.write_bytes(b"old")
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    save_arrays(target, {"x": np.arange(4)}, {"v": 2})
    assert sorted(tmp_path.glob(".state.emb.*.tmp")) == [live]
    assert load_arrays(target)[1] == {"v": 2}


def test_resume_removes_part_temps_of_dead_writers_only(tmp_path: Path, engine: Engine) -> None:
    inputs, out = finished_job(tmp_path, engine)
    dead_pid = subprocess.Popen(["true"])  # a process that has exited: its pid is free
    dead_pid.wait()
    live = out / f".part-000009.parquet.{_HOST}-{os.getpid()}.abcd.tmp"
    dead = out / f".part-000009.parquet.{_HOST}-{dead_pid.pid}.abcd.tmp"
    for path in (live, dead):
        path.write_bytes(b"partial part")
    embed_files(engine, [inputs], out, chunk_rows=3)  # resume: nothing left to do
    assert live.is_file()
    assert not dead.exists()


# ---------------------------------------------------- item 5: lone surrogates in text


def test_embed_names_the_text_and_character_of_a_lone_surrogate(engine: Engine) -> None:
    with pytest.raises(InvalidInputError, match=r"texts\[1\] has a lone surrogate .* character 3"):
        engine.embed(["fine", "bad\ud800 text"])
    with pytest.raises(ValueError, match=r"texts\[0\]"):  # InvalidInputError is a ValueError
        engine.embed(["\udfff"])
    assert engine.embed(["caf\u00e9 \U0001f600"]).shape == (1, engine.dim)  # real non-ASCII ok


def test_bulk_job_names_file_and_line_of_a_lone_surrogate_and_can_skip_it(
    tmp_path: Path, engine: Engine
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "good one"}\n{"text": "bad \\ud800"}\n{"text": "good two"}\n')
    with pytest.raises(BadRecordError, match=r"in\.jsonl:2: field 'text' has a lone surrogate"):
        embed_files(engine, [path], tmp_path / "stop")
    result = embed_files(engine, [path], tmp_path / "skip", on_error="skip")
    assert (result.rows, result.bad) == (2, 1)
    assert result.bad_records[0]["where"].endswith("in.jsonl:2")
    ids = read_output(tmp_path / "skip").column("id").to_pylist()
    assert ids == [0, 2]


def test_cli_skips_lone_surrogates_in_embed_and_task_commands(
    tmp_path: Path, cli_engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "good one"}\n{"text": "bad \\ud800"}\n{"text": "good one!"}\n')
    embed = ["embed", str(path), "-o", str(tmp_path / "out"), "--on-error", "skip", "-q"]
    assert cli.main(embed) == cli.EXIT_SKIPPED
    dedup = ["dedup", str(path), "-o", str(tmp_path / "d.jsonl"), "--on-error", "skip", "-q"]
    assert cli.main(dedup) == cli.EXIT_SKIPPED
    assert "in.jsonl:2" in capsys.readouterr().err
    rows = (tmp_path / "d.jsonl").read_text().splitlines()
    assert [json.loads(r)["id"] for r in rows] == [0, 2]


# ------------------------------------------------- item 9: manifest part names checked


@pytest.mark.parametrize("name", ["../secret.parquet", "{abs}", "part-000000.parquet/../x"])
def test_manifest_part_outside_the_job_is_refused(
    tmp_path: Path, engine: Engine, name: str
) -> None:
    inputs, out = finished_job(tmp_path, engine)
    secret = tmp_path / "secret.parquet"
    shutil.copy(out / "part-000000.parquet", secret)  # a valid Parquet file outside the job
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["parts"][0]["file"] = name.format(abs=secret)
    manifest["parts"][0]["sha256"] = hashlib.sha256(secret.read_bytes()).hexdigest()
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CorruptFileError, match=r"parts\[0\] names"):
        read_output(out)
    with pytest.raises(CorruptFileError, match=r"parts\[0\] names"):
        embed_files(engine, [inputs], out, chunk_rows=3)  # resume does not accept it
    assert secret.is_file()


def test_symlinked_part_is_not_a_finished_part(tmp_path: Path, engine: Engine) -> None:
    _inputs, out = finished_job(tmp_path, engine)
    real = tmp_path / "elsewhere.parquet"
    (out / "part-000000.parquet").rename(real)
    (out / "part-000000.parquet").symlink_to(real)
    with pytest.raises(CorruptFileError, match="symbolic link"):
        read_output(out)


# --------------------------------------------------------------- item 12: no network

NO_NETWORK = """
import json, os, socket, sys
attempts = []
def refuse(name):
    def blocked(*args, **kwargs):
        attempts.append([name, repr(args)[:200]])
        raise OSError(f"network blocked by the test: {name}")
    return blocked
socket.socket.connect = refuse("connect")
socket.socket.connect_ex = refuse("connect_ex")
socket.socket.sendto = refuse("sendto")
socket.getaddrinfo = refuse("getaddrinfo")
socket.gethostbyname = refuse("gethostbyname")
socket.create_connection = refuse("create_connection")
from embengine import Engine
vectors = Engine(device="cpu", backend="onnx").embed(["no network, please"])
print(json.dumps({"attempts": attempts, "shape": list(vectors.shape)}))
"""


def _no_network_child(tmp_path: Path, prefix: list[str], code: str = NO_NETWORK) -> dict:
    """Run `code` with HOME and TMPDIR in `tmp_path` and telemetry not pre-disabled."""
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    env = subprocess_env(HOME=str(home), TMPDIR=str(tmp), XDG_CACHE_HOME=str(home / ".cache"))
    env.pop("ORT_DISABLE_TELEMETRY", None)  # this process set it: the child must set its own
    run = subprocess.run(
        [*prefix, sys.executable, "-c", code],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_engine_embeds_with_sockets_blocked_and_onnxruntime_telemetry_off(
    tmp_path: Path, engine: Engine
) -> None:
    report = _no_network_child(tmp_path, [])
    assert report["shape"] == [1, engine.dim]
    assert report["attempts"] == []
    # ONNX Runtime's telemetry runs in C++ (invisible to Python sockets); its footprint is
    # a device id under ~/.cache/Microsoft and a session file in $TMPDIR, made at import
    leftovers = [p for p in (tmp_path / "home").rglob("*") if "Microsoft" in str(p)]
    assert leftovers == [], f"ONNX Runtime telemetry is on: {leftovers}"
    assert not (tmp_path / "tmp" / ".ses").exists()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_no_connect_system_call_at_all(tmp_path: Path, engine: Engine) -> None:
    """strace sees native code too: no connect() to any address, DNS included (telemetry
    uploads start a few seconds after the session, hence the wait)."""
    trace = tmp_path / "trace"
    prefix = ["strace", "-f", "-e", "trace=connect", "-o", str(trace)]
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"strace cannot trace here: {probe.stderr.decode()[-200:]}")
    _no_network_child(tmp_path, prefix, NO_NETWORK + "\nimport time; time.sleep(15)\n")
    calls = [line for line in trace.read_text().splitlines() if "AF_INET" in line]
    assert calls == [], calls[:5]


# ----------------------------------------------------- item 13: read-only export cache


def test_unwritable_export_cache_exports_in_memory_with_a_warning(
    tmp_path: Path,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from embengine.models import onnx_export

    model, _ = onnx_export.cached_export(engine.spec, precision="fp32")  # the session's cache
    exports = []

    def export(*args: object, **kwargs: object) -> bytes:
        exports.append(kwargs)
        return model

    monkeypatch.setattr(onnx_export, "export", export)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("EMBENGINE_CACHE_DIR", str(blocker / "cache"))  # cannot be created
    with caplog.at_level("WARNING", logger="embengine"):
        fresh = Engine(device="cpu", backend="onnx")
    assert len(exports) == 1
    assert "cannot write the ONNX export cache" in caplog.text
    text = ["a read-only cache costs an export, not an error"]
    np.testing.assert_allclose(fresh.embed(text), engine.embed(text), atol=1e-5)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_cache_directory(tmp_path: Path, engine: Engine, monkeypatch) -> None:
    from embengine.models import onnx_export

    monkeypatch.setattr(onnx_export, "export", lambda *a, **k: b"model bytes")
    cache = tmp_path / "ro"
    cache.mkdir()
    cache.chmod(0o555)
    try:
        got, _ = onnx_export.cached_export(engine.spec, precision="int8", directory=cache)
    finally:
        cache.chmod(0o755)
    assert got == b"model bytes"


# ------------------------------------------------- item 14: import from the source tree


def test_import_from_an_unbuilt_source_tree_says_what_to_do(tmp_path: Path) -> None:
    source = Path(embengine.__file__).resolve().parent
    shutil.copytree(source, tmp_path / "embengine", ignore=shutil.ignore_patterns("*.so", "*.pyd"))
    (tmp_path / "CMakeLists.txt").write_text("# the repository root\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run(
        [sys.executable, "-c", "import embengine"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode != 0
    assert "ImportError: embengine's native module is not built" in run.stderr
    assert "make dev" in run.stderr
    assert "another directory" in run.stderr


# ------------------------------------------- saved containers: crafted, not just damaged


def container(payload: bytes, meta: dict | None = None) -> bytes:
    """An embengine file around `payload` with a correct checksum (what a forger makes)."""
    header = json.dumps(
        {
            "version": 1,
            "meta": meta or {},
            "sha256": hashlib.sha256(payload).hexdigest(),
            "size": len(payload),
        }
    ).encode()
    return b"EMBENGINE\x00" + len(header).to_bytes(8, "little") + header + payload


def npz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    buffer = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def test_declared_array_size_is_checked_against_the_bytes_before_allocating(
    tmp_path: Path,
) -> None:
    path = tmp_path / "crafted.emb"
    huge = npy_header((1 << 44,)) + b"\0" * 64  # 64 TiB declared, 64 bytes present
    path.write_bytes(container(npz({"x.npy": huge})))
    with pytest.raises(CorruptFileError, match=r"declares shape .* but holds 64 bytes"):
        load_arrays(path)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (npz({"x.npy": npy_header((2,), "|O") + b"\0" * 16}), "not a plain number"),
        (b"PK\x03\x04 not a zip", "not a valid archive"),
        (npz({"x.txt": b"hello"}), "unexpected archive member"),
    ],
)
def test_hostile_array_bodies_are_corrupt_files(
    tmp_path: Path, payload: bytes, message: str
) -> None:
    path = tmp_path / "crafted.emb"
    path.write_bytes(container(payload))
    with pytest.raises(CorruptFileError, match=message):
        load_arrays(path)


def _declare_size(body: bytes, size: int) -> bytes:
    """The body with its (only) member's sizes in the central directory set to `size`."""
    at = body.index(b"PK\x01\x02")
    return body[: at + 20] + struct.pack("<LL", size, size) + body[at + 28 :]


@pytest.mark.parametrize(
    ("claim", "message"),
    [
        (2**32 - 2, "declares more bytes than the file holds"),  # 4 GiB in a tiny file
        (-10, "bytes declared past the body"),  # fits the file, runs past the body's end
    ],
)
def test_a_member_claiming_bytes_that_are_not_there_is_refused_before_allocating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, claim: int, message: str
) -> None:
    body = npz({"x.npy": npy_header((16,), "<f8") + np.arange(16.0).tobytes()})
    path = tmp_path / "crafted.emb"
    path.write_bytes(container(_declare_size(body, claim if claim > 0 else len(body) + claim)))
    allocated = []
    monkeypatch.setattr(np, "empty", lambda *a, **k: allocated.append(a))
    with pytest.raises(CorruptFileError, match=message):
        load_arrays(path)
    assert not allocated


def _move_header_offset(body: bytes, by: int, *, directory: bool) -> bytes:
    """The body with its member's local-header offset moved: in the central directory entry
    itself, or through the end record's directory offset (which zipfile subtracts)."""
    if directory:
        at = body.index(b"PK\x01\x02") + 42
    else:
        at, by = body.index(b"PK\x05\x06") + 16, -by
    (value,) = struct.unpack("<L", body[at : at + 4])
    return body[:at] + struct.pack("<L", (value + by) % 2**32) + body[at + 4 :]


@pytest.mark.parametrize(("by", "directory"), [(10**6, True), (-1000, False), (-7, True)])
def test_a_member_header_outside_the_body_is_a_corrupt_file(
    tmp_path: Path, by: int, directory: bool
) -> None:
    body = npz({"x.npy": npy_header((4,)) + b"\0" * 16})
    path = tmp_path / "crafted.emb"
    path.write_bytes(container(_move_header_offset(body, by, directory=directory)))
    with pytest.raises(CorruptFileError):
        load_arrays(path)


def test_a_flipped_byte_inside_a_large_member_is_detected(tmp_path: Path) -> None:
    """A member larger than a read chunk (8 MiB): damage in its middle fails the sha256; the
    same damage with the sha256 recomputed (a forger) fails the member's CRC-32."""
    path = tmp_path / "a.emb"
    x = np.arange(3_000_000, dtype=np.float32)  # 12 MB
    save_arrays(path, {"x": x, "y": np.arange(3)}, {})
    np.testing.assert_array_equal(load_arrays(path)[0]["x"], x)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="checksum mismatch"):
        load_arrays(path)
    room = int.from_bytes(data[10:18], "little")
    path.write_bytes(container(bytes(data[18 + room :])))
    with pytest.raises(CorruptFileError, match=r"'x.npy' is corrupt \(Bad CRC-32\)"):
        load_arrays(path)


def test_hostile_headers_are_corrupt_files(tmp_path: Path) -> None:
    path = tmp_path / "crafted.emb"
    body = npz({"x.npy": npy_header((1,)) + b"\0" * 4})
    good = container(body)
    deep = b"[" * 100_000
    path.write_bytes(b"EMBENGINE\x00" + len(deep).to_bytes(8, "little") + deep + body)
    with pytest.raises(CorruptFileError, match="corrupt header"):
        load_arrays(path)
    path.write_bytes(good[:10] + (1 << 62).to_bytes(8, "little") + good[18:])
    with pytest.raises(CorruptFileError, match="header of"):
        load_arrays(path)
    path.write_bytes(container(body, meta=None).replace(b'"meta": {}', b'"meta": [1]'))
    with pytest.raises(CorruptFileError, match="corrupt header"):
        load_arrays(path)
    path.write_bytes(good)
    np.testing.assert_array_equal(load_arrays(path)[0]["x"], np.zeros(1, np.float32))


def test_fortran_order_and_strings_round_trip(tmp_path: Path) -> None:
    x = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    save_arrays(tmp_path / "a.emb", {"x": x, "s": np.array(["a", "bcd"]), "e": x[:0]}, {})
    arrays, _ = load_arrays(tmp_path / "a.emb")
    np.testing.assert_array_equal(arrays["x"], x)
    assert arrays["s"].tolist() == ["a", "bcd"]
    assert arrays["e"].shape == (0, 4)


# ------------------------------------------------ item 8: dedup memory vs cluster size


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def peak_bytes(run: object) -> tuple[object, int]:
    """(result, peak bytes traced) of run(): numpy buffers are traced, so is pairs_above's
    output."""
    import tracemalloc

    tracemalloc.start()
    try:
        result = run()  # type: ignore[operator]
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("method", ["exact", "partitioned"])
def test_dedup_of_many_exact_copies_keeps_linear_memory(
    rng: np.random.Generator, method: str
) -> None:
    from embengine.tasks.dedup import dedup_vectors

    others = unit_rows(rng.standard_normal((200, 16)))
    copies = np.repeat(unit_rows(rng.standard_normal((1, 16))), 6000, axis=0)
    x = np.concatenate([copies[:3000], others, copies[3000:]])
    clusters, peak = peak_bytes(lambda: dedup_vectors(x, 0.95, method=method, partitions=4))
    # 6000 copies: 18 M pairs (360 MB) if every pair were kept
    assert peak < 40 << 20, f"{peak / 2**20:.0f} MiB (ops keep a 16 MiB score tile)"
    labels = clusters.labels
    assert (labels[:3000] == 0).all()
    assert (labels[3200:] == 0).all()
    assert len(np.unique(labels)) == 201
    assert len(clusters.pairs.i) == len(x) - 201  # a spanning forest: one pair per merge


def test_dedup_of_a_near_exact_clique_holds_one_tile_of_pairs(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from embengine.tasks import dedup as module

    monkeypatch.setattr(module, "_BLOCK", 256)
    center = rng.standard_normal((1, 16))
    x = unit_rows(center + 1e-4 * rng.standard_normal((3000, 16)))  # no two rows identical
    assert len(np.unique(x, axis=0)) == len(x)
    clusters, peak = peak_bytes(lambda: module.dedup_vectors(x, 0.9, method="exact"))
    assert peak < 40 << 20, f"{peak / 2**20:.0f} MiB (all 4.5 M pairs would be 90 MB)"
    assert (clusters.labels == 0).all()
    assert len(clusters.pairs.i) == len(x) - 1
    assert (clusters.pairs.score >= 0.9).all()


def test_dedup_labels_equal_union_find_over_every_pair(rng: np.random.Generator) -> None:
    from embengine.tasks.dedup import connected_labels, dedup_vectors, exact_pairs

    base = unit_rows(rng.standard_normal((300, 12)))
    near = unit_rows(base[:80] + 0.08 * rng.standard_normal((80, 12)))
    x = np.concatenate([base, near, base[:40], near[:10]])  # near-duplicates and exact copies
    every = exact_pairs(x, 0.9)
    want = connected_labels(len(x), every.i, every.j)
    for method in ("exact", "partitioned"):
        got = dedup_vectors(x, 0.9, method=method, partitions=1)
        np.testing.assert_array_equal(got.labels, want)
        listed = set(zip(got.pairs.i.tolist(), got.pairs.j.tolist(), strict=True))
        assert listed <= set(zip(every.i.tolist(), every.j.tolist(), strict=True))
        assert len(listed) == len(x) - len(np.unique(want))


def test_spanning_forest_keeps_the_strongest_connecting_pairs() -> None:
    from embengine.tasks.dedup import Pairs, spanning_forest

    i = np.array([0, 0, 1, 2, 5])
    j = np.array([1, 2, 2, 3, 6])
    s = np.array([0.9, 0.95, 0.99, 0.91, 0.97], np.float32)
    forest = spanning_forest(Pairs(i, j, s))
    kept = sorted(zip(forest.i.tolist(), forest.j.tolist(), strict=True))
    assert kept == [(0, 2), (1, 2), (2, 3), (5, 6)]  # (0, 1) closes a cycle and is weakest


def test_dedup_confirm_is_not_asked_about_exact_copies(rng: np.random.Generator) -> None:
    from embengine.tasks.dedup import dedup_vectors

    row = unit_rows(rng.standard_normal((1, 8)))
    x = np.repeat(row, 500, axis=0)
    texts = ["same"] * 499 + ["SAME"]
    asked = []

    def confirm(a: str, b: str) -> bool:
        asked.append((a, b))
        return True

    clusters = dedup_vectors(x, 0.9, texts=texts, confirm=confirm)
    assert asked == [("same", "SAME")]  # 124,750 pairs before
    assert (clusters.labels == 0).all()
