"""SIGKILL during save, many times at random points: the file is the old or the new state.

(The index below; the embedding store's appends and compactions further down.)

A subprocess builds two index states A and B (vectors, FAISS, texts and BM25), saves A,
then for each round forks a writer that saves B, A, B, ... to the same path in a loop,
kills it with SIGKILL after a random delay, and loads the file. Every load must give A or
B complete (ids, vectors and search results), never a mix and never an error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import embengine

CHILD = r"""
import json, os, random, signal, sys, time
import numpy as np
from embengine.index import VectorIndex

path, rounds = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(7)

def state(tag):
    index = VectorIndex(64, kind="flat", lexical=True, device="cpu")
    n = 1000 + tag  # A and B differ in size, ids, vectors and texts
    ids = [f"{tag}-{i}" for i in range(n)]
    texts = [f"document {i} of state {tag} word{i % 97}" for i in range(n)]
    index.add(rng.standard_normal((n, 64)), ids, texts=texts)
    return index

states = [state(0), state(1)]
probe = rng.standard_normal((4, 64))
want = [s.search(probe, 5) for s in states]
states[0].save(path)
started = time.perf_counter()
states[1].save(path)
states[0].save(path)
save_s = (time.perf_counter() - started) / 2

seen, mid_write, errors = [0, 0], 0, []
for _ in range(rounds):
    pid = os.fork()
    if pid == 0:
        i = 1
        while True:
            states[i % 2].save(path)
            i += 1
    time.sleep(random.uniform(0, 3 * save_s))
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    leftovers = [p for p in os.listdir(os.path.dirname(path)) if p.endswith(".tmp")]
    mid_write += bool(leftovers)
    for p in leftovers:
        os.unlink(os.path.join(os.path.dirname(path), p))
    try:
        loaded = VectorIndex.load(path)
        tag = int(loaded.ids[0].split("-")[0])
        assert loaded.ids == states[tag].ids, "ids of a mixed state"
        np.testing.assert_array_equal(loaded.get(loaded.ids), states[tag].get(loaded.ids))
        for a, b in zip(loaded.search(probe, 5), want[tag]):
            np.testing.assert_array_equal(a, b)
        got = loaded.search(["word5 document"], 3, mode="lexical")[1]
        assert got.tolist() == states[tag].search(["word5 document"], 3, mode="lexical")[1].tolist()
        seen[tag] += 1
    except Exception as exc:  # recorded, and the test fails naming it
        errors.append(repr(exc))
print(json.dumps({"seen": seen, "mid_write": mid_write, "errors": errors, "save_s": save_s}))
"""


def run_child(code: str, target: Path, rounds: int) -> dict:
    """Run a kill-and-reload child script on `target`; its last stdout line is a JSON report."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env["PYTHONPATH"] = str(Path(embengine.__file__).resolve().parents[1])
    result = subprocess.run(
        [sys.executable, "-c", code, str(target), str(rounds)],
        capture_output=True,
        text=True,
        env=env,
        cwd=target.parent,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")
def test_sigkill_during_save_leaves_old_or_new_state(tmp_path: Path) -> None:
    rounds = 25
    report = run_child(CHILD, tmp_path / "index.emb", rounds)
    assert report["errors"] == []
    assert sum(report["seen"]) == rounds
    assert min(report["seen"]) > 0, f"both states should survive some kills: {report}"
    assert report["mid_write"] > 0, f"no kill landed during a write: {report}"


STORE_CHILD = r"""
import json, os, random, signal, sys, time
import numpy as np
from embengine.store import EmbeddingStore

path, rounds = sys.argv[1], int(sys.argv[2])
DIM, B = 32, 400

def batch(j):
    texts = [f"batch {j} row {i}" for i in range(B)]
    return texts, np.random.default_rng(j).standard_normal((B, DIM)).astype(np.float32)

def open_store():
    return EmbeddingStore(path, fingerprint="m", dim=DIM)

def complete_batches(store):
    # whole batches 0..j-1 with their exact vectors, and nothing else
    j = 0
    while True:
        texts, want = batch(j)
        got, found = store.lookup(texts)
        if not found.any():
            break
        assert found.all(), f"batch {j} half there"
        np.testing.assert_array_equal(got, want)
        j += 1
    assert len(store) == j * B, f"{len(store)} rows for {j} batches"
    return j

def leftovers():
    try:
        manifest = json.load(open(os.path.join(path, "MANIFEST.json")))
        listed = {s["name"] for s in manifest["segments"]}
    except FileNotFoundError:
        listed = set()
    names = os.listdir(path)
    return [n for n in names if n.endswith(".tmp") or (n.endswith(".seg") and n not in listed)]

def write_forever(mode, ready):
    store = open_store()
    j = complete_batches(store)
    os.write(ready, b"1")  # opening is done: the kill below lands among the writes
    while True:
        if mode == "append":
            store.put(*batch(j))
            store.save()
            j += 1
        else:  # rewrite rows with the same vectors (dead rows), then compact
            store.put(*batch(random.randrange(j)))
            store.save()
            store.compact()

store = open_store()
for j in range(3):
    store.put(*batch(j))
    store.save()
started = time.perf_counter()
store.put(*batch(3)); store.save(); store.compact()
cycle_s = time.perf_counter() - started
del store

report = {"append": [0, 0], "compact": [0, 0], "errors": [], "cycle_s": cycle_s}
known = 4
for r in range(rounds):
    mode = ("append", "compact")[r % 2]
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            write_forever(mode, ready_w)
        finally:
            os._exit(1)
    os.read(ready_r, 1)
    os.close(ready_r)
    os.close(ready_w)
    time.sleep(random.uniform(0, 2 * cycle_s))
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    try:
        report[mode][0] += bool(leftovers())
        j = complete_batches(open_store())  # old or new state, verified, leftovers removed
        assert not leftovers(), f"left after open: {leftovers()}"
        if mode == "append":
            assert j >= known, f"lost batches: {j} < {known}"
        else:
            assert j == known, f"compaction changed the content: {j} batches, not {known}"
        report[mode][1] += j != known
        known = j
    except Exception as exc:
        report["errors"].append(f"{mode}: {exc!r}")
print(json.dumps(report))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")
def test_sigkill_during_store_append_and_compaction(tmp_path: Path) -> None:
    """kill -9 at random points of `save()` appends and of `compact()`: every open gives a
    whole, verified state (batches all there or absent, exact vectors, none lost), and the
    next open removes what the killed writer left behind."""
    rounds = 30
    report = run_child(STORE_CHILD, tmp_path / "store.emb", rounds)
    assert report["errors"] == []
    mid_append, grew = report["append"]
    mid_compact, _ = report["compact"]
    assert grew > 0, f"no append ever committed before a kill: {report}"
    assert mid_append > 0, f"no kill landed inside an append: {report}"
    assert mid_compact > 0, f"no kill landed inside a compaction: {report}"
