"""Fuzzing every saved format with valid checksums: a clear error or a correct load, never
a crash or an allocation past a stated bound.

The sha256 in a saved file detects damage, not forgery, so each mutant here gets a
recomputed checksum (or is re-saved through embengine.io) and must be refused by the
structure checks behind it. Mutations: random bytes in the body, hostile values in the
JSON metadata (huge, negative, NaN, wrong type, missing), arrays of other shapes, dtypes
and values, and .npy headers that declare huge shapes. Formats: the index of each kind
(flat with BM25, IVF, HNSW), the classifier, the anomaly detector, the recommender, the
embedding store (a directory: its manifest and segments)
and the bulk job manifest.

Loads run in a worker process whose address space is capped (RLIMIT_AS) at BOUND_BYTES
beyond its size after import: the stated bound for loading a file of these sizes (all
under 1 MB). A load may succeed, or raise an EmbengineError (CorruptFileError and kin);
a MemoryError or std::bad_alloc is an allocation past the bound, any other exception an
unclear error, and a dead worker a crash: each fails the test, naming the mutant. A state
that loads is then used once (a search, a prediction, a score, a lookup): that call may
raise (counted as "ok, use failed"), but never crash or allocate past the bound.

Seeded and bounded: EMBENGINE_FUZZ_SECONDS (default 4) of mutants after a floor of
MIN_CASES per format, from seed EMBENGINE_FUZZ_SEED (default 16). A longer run:
`EMBENGINE_FUZZ_SECONDS=600 pytest tests/test_fuzz_files.py`; a failing mutant is kept
under the test's tmp_path, named in the failure message.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import embengine
from embengine.bulk import embed_files
from embengine.bulk.job import MANIFEST
from embengine.engine import Engine
from embengine.index import VectorIndex
from embengine.io import load_arrays, save_arrays
from embengine.store.segment import read_manifest, write_manifest

SECONDS = float(os.environ.get("EMBENGINE_FUZZ_SECONDS", "4"))
SEED = int(os.environ.get("EMBENGINE_FUZZ_SEED", "16"))
MIN_CASES = 6  # per format, however slow the machine
BOUND_BYTES = 1 << 30  # what loading one of these (< 1 MB) files may allocate
_MAGIC = b"EMBENGINE\x00"

WORKER = r"""
import json, resource, sys, traceback
from types import SimpleNamespace
import embengine
from embengine.errors import EmbengineError
from embengine.index import VectorIndex
from embengine.bulk import read_output
from embengine.store import EmbeddingStore
from embengine.tasks.anomaly import AnomalyDetector
from embengine.tasks.classify import Classifier
from embengine.tasks.recommend import Recommender
import faiss  # imported before the cap: its size is not the file's doing

fingerprint, dim, bound = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def embed(texts):
    raise AssertionError("a loader must not embed")

engine = SimpleNamespace(
    spec=SimpleNamespace(fingerprint=fingerprint, name="fuzz"), dim=dim, embed=embed
)

def task_load(cls, path):
    # Cls.load(path, engine=...) is the contract; older loaders take (engine, path)
    import inspect
    first = next(iter(inspect.signature(cls.load).parameters))
    return cls.load(path, engine=engine) if first == "path" else cls.load(engine, path)

import numpy as np
probe = np.random.default_rng(0).standard_normal((2, dim)).astype(np.float32)
probe /= np.linalg.norm(probe, axis=1, keepdims=True)
USES = {  # after a load that succeeded: one ordinary call (an error is fine, a crash is not)
    "index": lambda obj: obj.search(probe, 3),
    "classifier": lambda obj: obj.predict_vectors(probe),
    "anomaly": lambda obj: obj.score_vectors(probe),
    "recommender": lambda obj: (obj.similar(obj.ids[:2], 3), obj.for_user([obj.ids[:3]], 3)),
    "store": lambda obj: obj.lookup(["seed document 0 about cats"]),
    "manifest": lambda obj: None,
}

LOADERS = {
    "index": lambda p: VectorIndex.load(p, device="cpu"),
    "classifier": lambda p: task_load(Classifier, p),
    "anomaly": lambda p: task_load(AnomalyDetector, p),
    "recommender": lambda p: Recommender.load(p, engine=engine),
    "store": lambda p: EmbeddingStore.for_engine(p, engine),
    "manifest": lambda p: read_output(p, complete=False),
}

def vm_size():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0

soft, hard = resource.getrlimit(resource.RLIMIT_AS)
cap = vm_size() + bound
resource.setrlimit(resource.RLIMIT_AS, (cap if hard < 0 else min(cap, hard), hard))
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    case = json.loads(line)
    try:
        loaded = LOADERS[case["kind"]](case["path"])
        outcome, detail = "ok", ""
        try:
            USES[case["kind"]](loaded)
        except MemoryError:
            raise
        except Exception as exc:  # behaviour of an accepted hostile state: reported only
            outcome, detail = "ok, use failed", f"{type(exc).__name__}: {exc}"[:300]
    except EmbengineError as exc:
        outcome, detail = "clear", f"{type(exc).__name__}: {exc}"[:300]
        if isinstance(exc.__cause__, MemoryError) or "bad_alloc" in str(exc):
            outcome = "alloc"  # an allocation failure dressed as a corrupt file
    except MemoryError as exc:
        outcome, detail = "alloc", f"MemoryError: {exc}"[:300]
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}"
        outcome = "alloc" if "bad_alloc" in text else "unclear"
        detail = (text + " | " + traceback.format_exc(limit=-3).replace("\n", " "))[:800]
    print(json.dumps({"outcome": outcome, "detail": detail}), flush=True)
"""


# ------------------------------------------------------------------- seed files


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory, engine: Engine) -> dict[str, list[Path]]:
    """One saved file (or job directory) per format and index kind."""
    root = tmp_path_factory.mktemp("fuzz-seeds")
    rng = np.random.default_rng(SEED)
    dim = engine.dim
    out: dict[str, list[Path]] = {"index": [], "manifest": []}
    texts = [f"seed document {i} about {w}" for i, w in enumerate(["cats", "rain", "code"] * 20)]
    for kind, options in [
        ("flat", {"lexical": True}),
        ("ivf", {"nlist": 4}),
        ("hnsw", {"m": 8}),
    ]:
        index = VectorIndex(dim, kind=kind, device="cpu", **options)
        vectors = rng.standard_normal((len(texts), dim)).astype(np.float32)
        ids = [f"doc-{i}" for i in range(len(texts))] if kind != "ivf" else None
        index.add(vectors, ids, texts=texts if options.get("lexical") else None)
        path = root / f"{kind}.idx"
        index.save(path)
        out["index"].append(path)
    classifier = engine.classifier({"pets": texts[:4:3], "weather": texts[1:5:3]})
    classifier.save(root / "classifier.emb")
    out["classifier"] = [root / "classifier.emb"]
    detector = engine.anomaly_detector(window=50).fit(texts[:30])
    detector.save(root / "detector.emb")
    out["anomaly"] = [root / "detector.emb"]
    items = {f"item-{i}": text for i, text in enumerate(texts[:12])}
    interactions = [("u1", "item-0"), ("u1", "item-3", 2.0), ("u2", "item-5")]
    engine.recommender(items, interactions=interactions).save(root / "recommender.emb")
    out["recommender"] = [root / "recommender.emb"]
    from embengine.store import EmbeddingStore

    store = EmbeddingStore.for_engine(root / "store", engine)
    store.put(texts[:8], engine.embed(texts[:8]))
    store.save()  # a directory: MANIFEST.json and one segment
    store.put(texts[8:12], engine.embed(texts[8:12]))
    store.save()  # a second segment
    out["store"] = [root / "store"]
    source = root / "input.txt"
    source.write_text("".join(t + "\n" for t in texts[:9]))
    embed_files(engine, [source], root / "job", chunk_rows=4)
    out["manifest"] = [root / "job"]
    return out


# ---------------------------------------------------------------- mutations

HOSTILE: list[Any] = [
    None,
    True,
    False,
    -1,
    0,
    1,
    2**31,
    2**63,
    10**30,
    -(10**30),
    1e308,
    -1e308,
    math.nan,
    math.inf,
    "",
    "x",
    "../../etc/hostname",
    "/etc/hostname",
    [],
    [1, 2],
    {},
    {"a": 1},
]


def split(data: bytes) -> tuple[dict[str, Any], bytes]:
    header_len = int.from_bytes(data[10:18], "little")
    return json.loads(data[18 : 18 + header_len]), data[18 + header_len :]


def join(header: dict[str, Any], payload: bytes, *, fix_checksum: bool = True) -> bytes:
    """A container around `payload`, its checksum recomputed as a forger would."""
    if fix_checksum:
        header = {**header, "sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload)}
    text = json.dumps(header).encode()
    return _MAGIC + len(text).to_bytes(8, "little") + text + payload


def json_paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key/index path into nested JSON, the root's children first."""
    found: list[tuple] = []
    if isinstance(value, (dict, list)):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, child in items:
            found.append((*prefix, key))
            found.extend(json_paths(child, (*prefix, key)))
    return found


def mutate_json(value: Any, rng: np.random.Generator) -> Any:
    """A deep copy with one value replaced by a hostile one, or deleted."""
    value = copy.deepcopy(value)
    paths = json_paths(value)
    if not paths:
        return HOSTILE[rng.integers(len(HOSTILE))]
    path = paths[rng.integers(len(paths))]
    parent = value
    for key in path[:-1]:
        parent = parent[key]
    if rng.random() < 0.15:
        del parent[path[-1]]
    else:
        parent[path[-1]] = copy.deepcopy(HOSTILE[rng.integers(len(HOSTILE))])
    return value


def flip_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    header, payload = split(data)
    body = bytearray(payload)
    for _ in range(rng.integers(1, 6)):
        body[rng.integers(len(body))] = rng.integers(256)
    return join(header, bytes(body))


def mutate_meta(data: bytes, rng: np.random.Generator) -> bytes:
    header, payload = split(data)
    header["meta"] = mutate_json(header["meta"], rng)
    return join(header, payload)


def mutate_array(path: Path, data: bytes, rng: np.random.Generator) -> bytes:
    arrays, meta = load_arrays(path)
    name = sorted(arrays)[rng.integers(len(arrays))]
    a = arrays[name]
    choice = rng.integers(9)
    if choice == 0:
        del arrays[name]
    elif choice == 1:
        arrays[name] = a[: rng.integers(0, max(len(a), 1))] if a.ndim else a
    elif choice == 2:
        arrays[name] = np.concatenate([a, a]) if a.ndim else a
    elif choice == 3:
        arrays[name] = a.reshape(-1)
    elif choice == 4:
        arrays[name] = a.reshape(1, *a.shape)
    elif choice == 5 and a.dtype.kind == "f" and a.size:
        b = a.copy()
        b.reshape(-1)[rng.integers(b.size)] = [np.nan, np.inf, 1e38, -1e38][rng.integers(4)]
        arrays[name] = b
    elif choice == 6 and a.dtype.kind in "iu" and a.size:
        b = a.copy()
        info = np.iinfo(b.dtype)
        b.reshape(-1)[rng.integers(b.size)] = [info.max, info.min, info.max // 2, 0][
            rng.integers(4)
        ]
        arrays[name] = b
    elif choice == 7:
        kinds = [np.float64, np.int64, np.int8, np.bool_, np.uint8]
        try:
            arrays[name] = a.astype(kinds[rng.integers(len(kinds))])
        except (ValueError, TypeError):
            arrays[name] = np.zeros(a.shape, np.int64)
    else:
        arrays[name] = np.array(["x"] * max(a.shape[0] if a.ndim else 1, 1))
    buffer = io.BytesIO()
    save_arrays_to(buffer, arrays, meta)
    return buffer.getvalue()


def save_arrays_to(buffer: io.BytesIO, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """save_arrays into memory (the real writer, so the container is exactly valid)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        save_arrays(Path(tmp) / "m.emb", arrays, meta)
        buffer.write((Path(tmp) / "m.emb").read_bytes())


def mutate_npy_shape(data: bytes, rng: np.random.Generator) -> bytes:
    """One member's .npy header declares another (often huge) shape; the zip is rebuilt."""
    header, payload = split(data)
    archive = zipfile.ZipFile(io.BytesIO(payload))
    members = {m.filename: archive.read(m) for m in archive.infolist()}
    name = sorted(members)[rng.integers(len(members))]
    raw = members[name]
    shapes = ["(1099511627776,)", "(4294967296, 4294967296)", "(0,)", "(3, 5)", "(-1,)"]
    shape = shapes[rng.integers(len(shapes))]
    text = raw[:128].decode("latin-1")
    text = re.sub(r"'shape': \([^)]*\)", f"'shape': {shape}", text, count=1)
    members[name] = text.encode("latin-1") + raw[128:]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as out:
        for member, content in members.items():
            out.writestr(member, content)
    return join(header, buffer.getvalue())


def mutant_container(path: Path, rng: np.random.Generator) -> bytes:
    data = path.read_bytes()
    mutators: list[Callable[[], bytes]] = [
        lambda: flip_bytes(data, rng),
        lambda: mutate_meta(data, rng),
        lambda: mutate_array(path, data, rng),
        lambda: mutate_npy_shape(data, rng),
    ]
    return mutators[rng.integers(len(mutators))]()


def mutant_job(seed: Path, target: Path, rng: np.random.Generator) -> None:
    """A copy of the job directory (parts hard-linked) with a mutated manifest."""
    target.mkdir()
    for part in seed.glob("part-*.parquet"):
        os.link(part, target / part.name)
    manifest = json.loads((seed / MANIFEST).read_text())
    if rng.random() < 0.8:
        text = json.dumps(mutate_json(manifest, rng))
    else:
        raw = bytearray(json.dumps(manifest).encode())
        raw[rng.integers(len(raw))] = rng.integers(256)
        text = raw.decode("utf-8", "replace")
    (target / MANIFEST).write_text(text)


def mutant_store(seed: Path, target: Path, rng: np.random.Generator) -> None:
    """A copy of a store directory with its manifest or one segment mutated, and every
    checksum recomputed as a forger would (the manifest's own and the segment's two)."""
    shutil.copytree(seed, target)
    manifest = read_manifest(target)
    assert manifest is not None
    if rng.random() < 0.5:
        write_manifest(target, mutate_json(manifest, rng))
        return
    entry = manifest["segments"][rng.integers(len(manifest["segments"]))]
    path = target / entry["name"]
    data = bytearray(path.read_bytes())
    for _ in range(rng.integers(1, 6)):
        data[rng.integers(len(data))] = rng.integers(256)
    path.write_bytes(bytes(data))
    rows_start = -(-entry["rows"] * manifest["dim"] * 4 // 64) * 64  # vectors come first
    entry["sha256"] = hashlib.sha256(data).hexdigest()
    entry["rows_sha256"] = hashlib.sha256(data[rows_start:]).hexdigest()
    write_manifest(target, manifest)


# ------------------------------------------------------------------ the worker


class Worker:
    """A loader process with a capped address space; restarted after a crash."""

    def __init__(self, fingerprint: str, dim: int, cwd: Path) -> None:
        self.args = [sys.executable, "-c", WORKER, fingerprint, str(dim), str(BOUND_BYTES)]
        self.cwd = cwd
        self.env = {
            **os.environ,
            "PYTHONPATH": str(Path(embengine.__file__).resolve().parents[1]),
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
        }
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.args,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line = self.process.stdout.readline()
        assert json.loads(line)["ready"], f"the fuzz worker did not start: {line!r}"

    def load(self, kind: str, path: Path) -> dict[str, str]:
        if self.process is None or self.process.poll() is not None:
            self.start()
        assert self.process is not None
        self.process.stdin.write(json.dumps({"kind": kind, "path": str(path)}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            self.process = None
            return {"outcome": "crash", "detail": f"worker exited with {code}"}
        return json.loads(line)

    def close(self) -> None:
        if self.process is not None:
            self.process.stdin.close()
            self.process.wait(timeout=60)
            self.process.stdout.close()


# -------------------------------------------------------------------- the test


def test_mutated_files_load_or_fail_clearly(
    seeds: dict[str, list[Path]], engine: Engine, tmp_path: Path
) -> None:
    rng = np.random.default_rng(SEED)
    worker = Worker(engine.spec.fingerprint, engine.dim, tmp_path)
    for kind, paths in seeds.items():  # the unmutated seeds load
        for path in paths:
            result = worker.load(kind, path)
            assert result["outcome"] == "ok", (kind, path, result)
    counts: dict[str, dict[str, int]] = {kind: {} for kind in seeds}
    failures: list[str] = []
    deadline = time.monotonic() + SECONDS
    case = 0
    try:
        while min(sum(c.values()) for c in counts.values()) < MIN_CASES or (
            time.monotonic() < deadline
        ):
            for kind, paths in seeds.items():
                seed = paths[case % len(paths)]
                target = tmp_path / f"case-{case:05d}-{kind}-{seed.stem}"
                if kind == "manifest":
                    mutant_job(seed, target, rng)
                elif kind == "store":
                    mutant_store(seed, target, rng)
                else:
                    target.write_bytes(mutant_container(seed, rng))
                result = worker.load(kind, target)
                outcome = result["outcome"]
                counts[kind][outcome] = counts[kind].get(outcome, 0) + 1
                if outcome in ("ok", "ok, use failed", "clear"):
                    if target.is_dir():
                        shutil.rmtree(target)
                    else:
                        target.unlink()
                else:
                    failures.append(f"{target.name}: {outcome}: {result['detail']}")
                case += 1
    finally:
        worker.close()
    print(f"\nfuzz: {case} mutants in {SECONDS:.0f} s budget, seed {SEED}: {counts}")
    assert not failures, f"{len(failures)} of {case} mutants:\n" + "\n".join(failures[:20])
    for kind, seen in counts.items():
        assert seen.get("clear", 0) > 0, f"no {kind} mutant was refused: {seen}"
