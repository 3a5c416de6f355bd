"""EmbeddingStore at scale: append cost against store size, load time and memory.

Appends `--rows` random unit vectors (default 1,000,000 x 384) in `--calls` calls of
`put` + `save()` (what `Engine(store=...)` does after each embed call), printing each
append's time against the store's size, then compacts, and opens the store in a fresh
process: load time, RSS right after the open (vectors mapped, not read) and after reading
every vector once (file pages mapped into the process), against the vectors' bytes.

Side by side, in the same run: the previous single-file store's way of saving (the whole
file rewritten per call through embengine.io.save_arrays, with the arrays grown by
concatenation), for the first `--baseline-calls` calls; its cost grows with the store.

    nice -n 5 python benchmarks/bench_store.py            # 1M x 384, ~1.6 GB on disk
    python benchmarks/bench_store.py --rows 100000 --calls 20   # a quick look

Writes benchmarks/results/bench_store.json and benchmarks/results/store_append.png.
Peak memory stays near one call's rows plus the hash map (~150 B/row), under 1 GiB at 1M.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]

LOAD_CHILD = r"""
import json, resource, sys, time
import numpy as np
from embengine.store import EmbeddingStore

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024
path, verify = sys.argv[1], sys.argv[2]
before = rss()
started = time.perf_counter()
store = EmbeddingStore.load(path, verify=verify)
load_s = time.perf_counter() - started
after_open = rss()
total = 0.0
for segment in store._segments:  # read every vector once, in chunks (no copy kept)
    for start in range(0, segment.rows, 65536):
        total += float(segment.vectors[start : start + 65536].sum())
after_read = rss()
started = time.perf_counter()
vectors, found = store.lookup([f"text {i}" for i in range(0, len(store), 997)])
lookup_s = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"load_s": load_s, "rows": len(store), "rss_before": before,
    "rss_after_open": after_open, "rss_after_read": after_read, "peak_rss": peak,
    "lookup_rows": int(found.sum()), "lookup_s": lookup_s, "segments": store.segments}))
"""


def raw_write(path: Path, nbytes: int) -> float:
    """Seconds to write and fsync `nbytes` to a new file: the disk's floor for one append."""
    data = np.random.default_rng(len(str(path))).bytes(nbytes)
    started = time.perf_counter()
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--baseline-calls", type=int, default=20)
    parser.add_argument(
        "--dir", type=Path, default=None, help="scratch directory (default: a temp dir)"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from embengine.io import save_arrays
    from embengine.store import EmbeddingStore, content_hash

    scratch = Path(tempfile.mkdtemp(prefix="bench_store.", dir=args.dir))
    per_call = args.rows // args.calls
    rng = np.random.default_rng(0)

    def call_rows(c: int) -> tuple[list[str], np.ndarray]:
        texts = [f"text {i}" for i in range(c * per_call, (c + 1) * per_call)]
        x = rng.standard_normal((per_call, args.dim), dtype=np.float32)
        return texts, x / np.linalg.norm(x, axis=1, keepdims=True)

    try:
        store = EmbeddingStore(scratch / "store", fingerprint="bench", dim=args.dim)
        old = {
            "hashes": np.zeros((0, 32), np.uint8),
            "vectors": np.zeros((0, args.dim), np.float32),
        }
        old["ids"] = np.zeros(0, dtype=str)
        old["metadata"] = np.zeros(0, dtype=str)
        appends, baseline, raw = [], [], []
        print(
            f"{'call':>5} {'rows before':>12} {'put ms':>7} {'save ms':>8} {'MB written':>10} "
            f"{'raw write ms':>12} {'append/raw':>10} {'single-file rewrite ms':>23}"
        )
        total_s = 0.0
        for c in range(args.calls):
            texts, x = call_rows(c)
            size = len(store)
            started = time.perf_counter()
            store.put(texts, x)
            put_s = time.perf_counter() - started
            store.save()
            append_s = time.perf_counter() - started
            total_s += append_s
            appends.append((size, append_s, put_s))
            written = (
                store._segments[-1].info["bytes"]
                + (scratch / "store" / "MANIFEST.json").stat().st_size
            )
            raw.append((size, raw_write(scratch / f"raw-{c}.bin", written)))
            line = (
                f"{c:>5} {size:>12,} {put_s * 1e3:>7.1f} {(append_s - put_s) * 1e3:>8.1f} "
                f"{written / 1e6:>10.2f} {raw[-1][1] * 1e3:>12.1f} {append_s / raw[-1][1]:>10.2f}"
            )
            if c < args.baseline_calls:  # the old way: grow by concatenation, rewrite it all
                started = time.perf_counter()
                hashes = np.frombuffer(b"".join(content_hash(t) for t in texts), np.uint8)
                old["hashes"] = np.concatenate([old["hashes"], hashes.reshape(-1, 32)])
                old["vectors"] = np.concatenate([old["vectors"], x])
                old["ids"] = np.concatenate([old["ids"], np.full(len(texts), "", dtype=str)])
                old["metadata"] = np.concatenate(
                    [old["metadata"], np.full(len(texts), "", dtype=str)]
                )
                save_arrays(scratch / "old.emb", old, {"format": "embengine.EmbeddingStore/1"})
                baseline.append((size, time.perf_counter() - started))
                line += f" {baseline[-1][1] * 1e3:>23.1f}"
            elif c == args.baseline_calls:
                old.clear()
                (scratch / "old.emb").unlink()
            print(line, flush=True)
        writer_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        disk = sum(p.stat().st_size for p in (scratch / "store").iterdir())
        del store

        loads = {}
        for verify in ("auto", "full"):
            child = subprocess.run(
                [sys.executable, "-c", LOAD_CHILD, str(scratch / "store"), verify],
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT,
                env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
            )
            loads[verify] = json.loads(child.stdout.strip().splitlines()[-1])
        started = time.perf_counter()
        EmbeddingStore(scratch / "store", fingerprint="bench", dim=args.dim).compact()
        compact_s = time.perf_counter() - started
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    vector_bytes = args.rows * args.dim * 4
    tenth = args.calls // 10 or 1
    table = np.array([[t, p, r] for (_, t, p), (_, r) in zip(appends, raw, strict=True)])

    def tenths(column: np.ndarray) -> tuple[float, float]:
        return float(np.median(column[:tenth])), float(np.median(column[-tenth:]))

    first, last = tenths(table[:, 0])
    put_first, put_last = tenths(table[:, 1])
    ratio_first, ratio_last = tenths(table[:, 0] / table[:, 2])
    result = {
        "rows": args.rows,
        "dim": args.dim,
        "calls": args.calls,
        "rows_per_call": per_call,
        "append_s": [[s, t] for s, t, _ in appends],
        "put_s": [[s, p] for s, _, p in appends],
        "raw_write_s": [[s, r] for s, r in raw],
        "single_file_s": [[s, t] for s, t in baseline],
        "total_s": total_s,
        "append_tenths_median_s": [first, last],
        "put_tenths_median_s": [put_first, put_last],
        "append_over_raw_write_tenths": [ratio_first, ratio_last],
        "compact_s": compact_s,
        "disk_bytes": disk,
        "vector_bytes": vector_bytes,
        "writer_peak_rss": writer_peak,
        "load": loads,
        "machine": "2-core AMD EPYC, shared, no GPU",
    }
    gib = 1 << 30
    print(
        f"\n{args.rows:,} x {args.dim} in {args.calls} appends: total {total_s:.1f} s "
        f"({args.rows / total_s:,.0f} rows/s). Medians, first tenth -> last tenth of the calls: "
        f"append {first * 1e3:.0f} -> {last * 1e3:.0f} ms ({last / first:.2f}x); put (CPU) "
        f"{put_first * 1e3:.0f} -> {put_last * 1e3:.0f} ms ({put_last / put_first:.2f}x); "
        f"append / raw write+fsync of the same bytes {ratio_first:.2f} -> {ratio_last:.2f}"
    )
    if baseline:
        b = [t for _, t in baseline]
        print(
            f"single-file rewrite: {b[0] * 1e3:.0f} ms at call 0, {b[-1] * 1e3:.0f} ms at call "
            f"{len(b) - 1} ({b[-1] / b[0]:.1f}x); append at the same calls: "
            f"{appends[0][1] * 1e3:.0f} and {appends[len(b) - 1][1] * 1e3:.0f} ms"
        )
    print(
        f"disk {disk / gib:.2f} GiB for {vector_bytes / gib:.2f} GiB of vectors; writer peak RSS "
        f"{writer_peak / gib:.2f} GiB; compact {compact_s:.1f} s"
    )
    for verify, load in loads.items():
        grown_open = load["rss_after_open"] - load["rss_before"]
        grown_read = load["rss_after_read"] - load["rss_before"]
        print(
            f"load (verify={verify}): {load['load_s']:.2f} s; RSS grew {grown_open / gib:.2f} GiB "
            f"on open (vectors mapped, not read), {grown_read / gib:.2f} GiB after reading every "
            f"vector ({grown_read / vector_bytes:.2f}x the vectors' bytes)"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_store.json").write_text(json.dumps(result, indent=1))
    plot(result, RESULTS / "store_append.png")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, style, label in (
        ("append_s", ".-", "EmbeddingStore append (put + save)"),
        ("put_s", ".-", "of which put (hashing, checks: CPU)"),
        ("raw_write_s", ":", "raw write + fsync of the same bytes"),
    ):
        rows, secs = zip(*result[key], strict=True)
        ax.plot(np.array(rows) / 1e3, np.array(secs) * 1e3, style, label=label)
    if result["single_file_s"]:
        rows, secs = zip(*result["single_file_s"], strict=True)
        ax.plot(
            np.array(rows) / 1e3,
            np.array(secs) * 1e3,
            "x-",
            label="single-file store: rewrite per call",
        )
    ax.set_xlabel("rows already in the store (thousands)")
    ax.set_ylabel(f"ms per call of {result['rows_per_call']:,} rows")
    ax.set_title(f"{result['dim']}-d vectors, {result['machine']}")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
