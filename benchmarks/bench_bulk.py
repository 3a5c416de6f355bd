"""`embengine embed` on many short lines: throughput, RSS over time, kill-and-resume, and Ray.

Runs the real command in a subprocess and samples its RSS (with children) every 0.5 s, so
the memory figure is what a user would see. Then kills a second run halfway, resumes it,
and checks every row came out exactly once with the same vectors. Last, the Ray path
(2 actors, local instance) against the single-process command on the same smaller file, in
the same run.

    PYTHONPATH=. python benchmarks/bench_bulk.py --lines 200000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
WORDS = [
    "cat",
    "dog",
    "fox",
    "rain",
    "sun",
    "bread",
    "code",
    "train",
    "river",
    "music",
    "light",
    "paper",
]


def write_lines(path: Path, n: int) -> None:
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            f.write(f"{WORDS[i % 12]} {WORDS[i * 7 % 12]} note {i}: {WORDS[i * 5 % 12]} today\n")


def command(inp: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "embengine.cli", "embed", str(inp), "-o", str(out), "-q", *extra]


def run_sampled(cmd: list[str], out: Path, kill_at: float | None = None) -> dict[str, object]:
    """Run `cmd`, sampling RSS (process tree) and rows done; SIGKILL at a fraction if asked."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ps = psutil.Process(proc.pid)
    samples: list[tuple[float, float, int]] = []  # seconds, RSS MiB, records done
    total = None
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(True))
        except psutil.NoSuchProcess:
            break
        done = 0
        manifest = out / "_embengine_job.json"
        try:
            job = json.loads(manifest.read_text())
            done = sum(p["records"] for p in job["parts"])
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        samples.append((time.perf_counter() - started, rss / 2**20, done))
        if kill_at is not None and total and done >= kill_at * total:
            proc.send_signal(signal.SIGKILL)
            break
        total = total or _line_count(cmd)
        time.sleep(0.5)
    _, err = proc.communicate()
    return {
        "seconds": time.perf_counter() - started,
        "returncode": proc.returncode,
        "stderr": err.decode()[-2000:],
        "samples": samples,
    }


def _line_count(cmd: list[str]) -> int:
    with open(cmd[4], "rb") as f:
        return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))


def rss_profile(samples: list[tuple[float, float, int]], total: int) -> list[str]:
    """Peak RSS within each quarter of the job's progress: flat means bounded memory."""
    rows = []
    for quarter in range(4):
        lo, hi = quarter * total / 4, (quarter + 1) * total / 4
        window = [rss for _, rss, done in samples if lo <= done < hi or (hi == total == done)]
        rows.append(f"{quarter * 25:3d}-{quarter * 25 + 25:3d}%: {max(window, default=0):7.0f} MiB")
    return rows


def vectors(out: Path) -> tuple[list[object], np.ndarray]:
    import pyarrow.parquet as pq

    table = pq.read_table(out).sort_by("id")
    return table.column("id").to_pylist(), np.stack(
        table.column("vector").to_numpy(zero_copy_only=False)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--ray-lines", type=int, default=4_000)
    parser.add_argument("--chunk-rows", type=int, default=10_000)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, CPU")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inp = tmp / "lines.txt"
        write_lines(inp, args.lines)
        chunk = ["--chunk-rows", str(args.chunk_rows), "--device", "cpu"]

        whole = run_sampled(command(inp, tmp / "whole", *chunk), tmp / "whole")
        assert whole["returncode"] == 0, whole["stderr"]
        peak = max(rss for _, rss, _ in whole["samples"])
        print(f"\n== embed {args.lines:,} short lines (chunk {args.chunk_rows:,} rows)")
        print(
            f"{whole['seconds']:.0f} s wall ({args.lines / whole['seconds']:.0f} lines/s, model "
            f"load included); peak RSS {peak:.0f} MiB (target < 2048 MiB)"
        )
        print("RSS by progress: " + "; ".join(rss_profile(whole["samples"], args.lines)))
        print("RSS over time (s, MiB, lines done):")
        step = max(1, len(whole["samples"]) // 12)
        for t, rss, done in whole["samples"][::step]:
            print(f"  {t:6.0f} {rss:7.0f} {done:9,}")

        killed = run_sampled(command(inp, tmp / "resumed", *chunk), tmp / "resumed", kill_at=0.5)
        job = json.loads((tmp / "resumed" / "_embengine_job.json").read_text())
        kept = sum(p["records"] for p in job["parts"])
        resumed = run_sampled(command(inp, tmp / "resumed", *chunk), tmp / "resumed")
        assert resumed["returncode"] == 0, resumed["stderr"]
        ids, got = vectors(tmp / "resumed")
        ref_ids, ref = vectors(tmp / "whole")
        print(
            f"\n== kill -9 at {kept:,} of {args.lines:,} lines ({killed['seconds']:.0f} s), "
            f"rerun: {resumed['seconds']:.0f} s to finish"
        )
        print(
            f"rows: {len(ids):,}, unique ids: {len(set(ids)):,}, ids == 0..n-1: "
            f"{ids == list(range(args.lines))}; vectors identical to the uninterrupted run: "
            f"{ids == ref_ids and np.array_equal(got, ref)}"
        )

        small = tmp / "small.txt"
        write_lines(small, args.ray_lines)
        single = run_sampled(command(small, tmp / "s1", "--device", "cpu"), tmp / "s1")
        on_ray = run_sampled(
            command(small, tmp / "r2", "--device", "cpu", "--ray", "--ray-actors", "2"),
            tmp / "r2",
        )
        assert on_ray["returncode"] == 0, on_ray["stderr"]
        _, a = vectors(tmp / "s1")
        import pyarrow.parquet as pq

        table = pq.read_table(tmp / "r2").sort_by("text")
        order = np.argsort(small.read_text().splitlines(), kind="stable")
        b = np.stack(table.column("vector").to_numpy(zero_copy_only=False))
        print(
            f"\n== Ray (local, 2 actors) vs single process, {args.ray_lines:,} lines, "
            "wall time with start-up"
        )
        print(
            f"single process: {single['seconds']:.0f} s "
            f"({args.ray_lines / single['seconds']:.0f} lines/s)"
        )
        print(
            f"Ray 2 actors:   {on_ray['seconds']:.0f} s "
            f"({args.ray_lines / on_ray['seconds']:.0f} lines/s), ratio "
            f"{single['seconds'] / on_ray['seconds']:.2f}x; max |diff| vs single: "
            f"{np.abs(a[order] - b).max():.2e}"
        )


if __name__ == "__main__":
    main()
