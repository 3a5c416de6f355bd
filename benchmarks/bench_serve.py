"""Serving over HTTP: embengine serve (coalescing on / off) vs infinity-emb, and offline embed.

Each server runs in its own process on 127.0.0.1; a light asyncio load generator (raw
HTTP/1.1 keep-alive connections, one per client, closed loop) sends 1-text and 32-text
requests from 1, 8 and 64 concurrent clients, the same real texts (STS-B sentences) to
every contender. Runs are round-robin (scenario by scenario: contender A, B, C, then again),
so load from other processes hits every contender alike; tables show medians. Offline
`Engine.embed` on the same texts runs in the same rounds. Then an open-loop test at half
of each server's own saturation rate (its 64 single-text clients throughput) reports p50
and p99 over --half-requests requests per repeat (Poisson arrivals), medians of the repeats.

    python benchmarks/bench_serve.py --data ../shared/data
    python benchmarks/bench_serve.py --infinity /work/venv-infinity/bin/infinity_emb

The load generator shares the CPU with the servers (2 cores here): its cost, the same for
every contender, is part of every number; "cpu-s" figures count the server's CPU seconds
and "all-cpu-s" the server's plus the load generator's.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_encode import DEFAULT_DATA, RESULTS, corpus, machine

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = [(1, 1), (8, 1), (64, 1), (1, 32), (8, 32), (64, 32)]  # (clients, texts/request)


# -- servers ------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_embengine(port: int, extra: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "embengine.cli", "serve", "--port", str(port), "-q"]
    return subprocess.Popen(
        [*command, "--device", "cpu", *extra],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def start_infinity(
    binary: str, model_dir: str, engine: str, port: int, log: Path
) -> subprocess.Popen:
    """infinity-emb v2 on the CPU with its defaults, offline, serving `model_dir` as "minilm"."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "INFINITY_ANONYMOUS_USAGE_STATS": "0",
        "DO_NOT_TRACK": "1",
    }
    command = [
        binary, "v2", "--model-id", model_dir, "--port", str(port), "--host", "127.0.0.1",
        "--device", "cpu", "--engine", engine, "--url-prefix", "/v1",
        "--served-model-name", "minilm",
    ]  # fmt: skip
    return subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def wait_ready(url: str, process: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited ({process.returncode}): {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"server not ready after {timeout} s: {log.read_text()[-2000:]}")


def fetch_vectors(port: int, model: str, texts: list[str]) -> np.ndarray:
    body = json.dumps({"model": model, "input": texts, "encoding_format": "base64"}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/embeddings", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as r:
        data = json.load(r)["data"]
    rows = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in data]
    return np.vstack(rows)


# -- load generator -----------------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection; POSTs a body, returns the status."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> int:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        for _ in range(2):  # an idle keep-alive connection the server closed: reopen once
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            assert self.reader is not None
            self.writer.write(head + body)
            await self.writer.drain()
            status_line = await self.reader.readline()
            if status_line:
                break
            self.close()
        status = int(status_line.split()[1])
        length, chunked = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if chunked:
            while (size := int((await self.reader.readline()).strip(), 16)) > 0:
                await self.reader.readexactly(size + 2)
            await self.reader.readline()
        else:
            await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def bodies(texts: list[str], size: int, n: int, model: str, offset: int) -> list[bytes]:
    """n request bodies of `size` consecutive texts each, cycling through `texts`."""
    out = []
    for r in range(n):
        start = (offset + r * size) % len(texts)
        chunk = [texts[(start + i) % len(texts)] for i in range(size)]
        payload = {"model": model, "input": chunk, "encoding_format": "base64"}
        out.append(json.dumps(payload).encode())
    return out


async def closed_loop(port: int, payloads: list[bytes], clients: int) -> tuple[float, list[float]]:
    """`clients` connections send the payloads back to back; (wall seconds, latencies)."""
    queue = list(reversed(payloads))
    latencies: list[float] = []

    async def client() -> None:
        connection = Connection(port)
        try:
            while queue:
                body = queue.pop()
                started = time.perf_counter()
                status = await connection.post("/v1/embeddings", body)
                if status != 200:
                    raise RuntimeError(f"HTTP {status}")
                latencies.append(time.perf_counter() - started)
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - started, latencies


async def open_loop(port: int, payloads: list[bytes], rate: float, pool: int) -> list[float]:
    """Requests arrive every 1/rate s (Poisson); latency counts from the arrival."""
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(pool):
        idle.put_nowait(Connection(port))
    rnd = random.Random(0)
    latencies: list[float] = []

    async def one(body: bytes, arrival: float) -> None:
        connection = await idle.get()
        try:
            if await connection.post("/v1/embeddings", body) != 200:
                raise RuntimeError("non-200 answer")
            latencies.append(time.perf_counter() - arrival)
        finally:
            idle.put_nowait(connection)

    tasks = []
    next_at = time.perf_counter()
    for body in payloads:
        next_at += rnd.expovariate(rate)
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        tasks.append(asyncio.create_task(one(body, next_at)))
    await asyncio.gather(*tasks)
    while not idle.empty():
        idle.get_nowait().close()
    return latencies


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its children so far."""
    import psutil

    process = psutil.Process(pid)
    total = 0.0
    for p in [process, *process.children(recursive=True)]:
        times = p.cpu_times()
        total += times.user + times.system
    return total


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


# -- main ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--texts", type=int, default=256, help="texts per 1-text run (default 256)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--half-requests",
        type=int,
        default=2000,
        help="requests per repeat of the half-saturation test (default 2000: p99 is the 20th "
        "slowest; 0: skip it)",
    )
    parser.add_argument("--infinity", help="the infinity_emb executable (skipped when absent)")
    parser.add_argument("--infinity-engine", default="torch", help="torch (default) or optimum")
    parser.add_argument(
        "--infinity-model", help="model dir for infinity (optimum needs one with an ONNX file)"
    )
    parser.add_argument("--workers", type=int, help="embengine serve --workers (default: its own)")
    parser.add_argument(
        "--scenarios",
        default=",".join(f"{c}x{t}" for c, t in SCENARIOS),
        help="clients x texts per request, comma separated (default: all six)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_serve.json")
    args = parser.parse_args()

    from embengine import Engine

    texts = corpus(args.data, 4096)
    engine = Engine(device="cpu")
    model_dir = str(engine.spec.path)
    logs = Path(os.environ.get("TMPDIR", "/tmp"))
    servers: dict[str, tuple[subprocess.Popen, int, str]] = {}
    workers = [] if args.workers is None else ["--workers", str(args.workers)]
    for name, extra in (
        ("embengine", workers),
        ("embengine-nocoalesce", [*workers, "--no-coalesce"]),
    ):
        port = free_port()
        log = logs / f"bench_serve_{name}.log"
        servers[name] = (start_embengine(port, extra, log), port, "/health")
    skipped: dict[str, str] = {}
    if args.infinity:
        port = free_port()
        log = logs / "bench_serve_infinity.log"
        directory = args.infinity_model or model_dir
        process = start_infinity(args.infinity, directory, args.infinity_engine, port, log)
        servers["infinity-emb"] = (process, port, "/health")
    else:
        skipped["infinity-emb"] = "no --infinity executable given"
    try:
        for name in list(servers):
            process, port, health = servers[name]
            log = logs / f"bench_serve_{'infinity' if name == 'infinity-emb' else name}.log"
            try:
                wait_ready(f"http://127.0.0.1:{port}{health}", process, 300, log)
            except RuntimeError as exc:
                if name != "infinity-emb":
                    raise
                skipped[name] = str(exc)
                process.kill()
                del servers[name]
        report = run(args, engine, texts, servers, skipped)
    finally:
        for process, _, _ in servers.values():
            process.terminate()
        for process, _, _ in servers.values():
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print_tables(report)


def run(
    args: argparse.Namespace, engine: Any, texts: list[str], servers: dict, skipped: dict
) -> dict:
    model = engine.spec.name
    probe = texts[:8]
    agreement = {}
    expected = engine.embed(probe)
    for name, (_, port, _) in servers.items():
        got = fetch_vectors(port, model if name != "infinity-emb" else "minilm", probe)
        agreement[name] = float((got * expected).sum(axis=1).min())
        print(f"{name}: min cosine to Engine.embed on {len(probe)} texts {agreement[name]:.6f}")
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    offline: dict[str, list[float]] = {}
    offline_cpu: dict[str, list[float]] = {}
    for key in args.scenarios.split(","):
        clients, size = (int(x) for x in key.split("x"))
        n_requests = max(clients, math.ceil(args.texts / size))
        offset = random.Random(key).randrange(len(texts))
        for repeat in range(args.repeats):
            for name, (process, port, _) in servers.items():
                name_model = model if name != "infinity-emb" else "minilm"
                payloads = bodies(texts, size, n_requests, name_model, offset)
                cpu, mine = cpu_seconds(process.pid), time.process_time()
                wall, latencies = asyncio.run(closed_loop(port, payloads, clients))
                cpu, mine = cpu_seconds(process.pid) - cpu, time.process_time() - mine
                row = {
                    "texts_per_s": n_requests * size / wall,
                    "texts_per_cpu_s": n_requests * size / cpu,
                    "texts_per_all_cpu_s": n_requests * size / (cpu + mine),
                    "p50_ms": 1000 * percentile(latencies, 50),
                    "p99_ms": 1000 * percentile(latencies, 99),
                }
                results.setdefault(key, {}).setdefault(name, []).append(row)
                speed = f"{row['texts_per_s']:.0f} texts/s"
                times = f"p50 {row['p50_ms']:.0f} ms, p99 {row['p99_ms']:.0f} ms"
                print(f"  {key} repeat {repeat + 1} {name}: {speed}, {times}", flush=True)
            chunk = [texts[(offset + i) % len(texts)] for i in range(n_requests * size)]
            started, cpu = time.perf_counter(), time.process_time()
            engine.embed(chunk)
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
            offline.setdefault(key, []).append(len(chunk) / seconds)
            offline_cpu.setdefault(key, []).append(len(chunk) / cpu)
            print(f"  {key} repeat {repeat + 1} offline embed: {offline[key][-1]:.0f} texts/s")
    table = {
        key: {
            name: {m: statistics.median(r[m] for r in rows) for m in rows[0]}
            for name, rows in by_name.items()
        }
        | {
            "offline": {
                "texts_per_s": statistics.median(offline[key]),
                "texts_per_cpu_s": statistics.median(offline_cpu[key]),
            }
        }
        for key, by_name in results.items()
    }
    half: dict[str, dict[str, Any]] = {}
    for repeat in range(args.repeats if "64x1" in table and args.half_requests > 0 else 0):
        for name, (_, port, _) in servers.items():
            rate = table["64x1"][name]["texts_per_s"] / 2
            name_model = model if name != "infinity-emb" else "minilm"
            payloads = bodies(texts, 1, args.half_requests, name_model, 17 + repeat)
            latencies = asyncio.run(open_loop(port, payloads, rate, 64))
            p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
            runs = half.setdefault(name, {"rate": rate, "requests": len(payloads), "runs": []})
            run = {"p50_ms": 1000 * p50, "p99_ms": 1000 * p99, "p99_over_p50": p99 / p50}
            runs["runs"].append(run)
            print(
                f"half saturation repeat {repeat + 1} {name}: {rate:.0f} req/s, p50 "
                f"{run['p50_ms']:.1f} ms, p99 {run['p99_ms']:.1f} ms ({p99 / p50:.2f}x)",
                flush=True,
            )
    for h in half.values():
        for m in ("p50_ms", "p99_ms", "p99_over_p50"):
            h[m] = statistics.median(r[m] for r in h["runs"])
    return {
        "machine": machine(),
        "load_average": os.getloadavg(),
        "repeats": args.repeats,
        "texts_per_run": args.texts,
        "half_requests": args.half_requests,
        "workers": args.workers,
        "infinity_engine": args.infinity_engine if "infinity-emb" in servers else None,
        "agreement_min_cosine": agreement,
        "skipped": skipped,
        "medians": table,
        "half_saturation": half,
        "raw": results,
        "offline_raw": offline,
    }


def print_tables(report: dict) -> None:
    print(
        f"\n{report['machine']} (shared machine; medians of {report['repeats']} "
        "round-robin repeats)"
    )
    names = list(next(iter(report["medians"].values())))
    print("| clients x texts/request | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for key, row in report["medians"].items():
        cells = []
        for name in names:
            r = row[name]
            cell = f"{r['texts_per_s']:.0f}/s ({r['texts_per_cpu_s']:.0f}/cpu-s"
            if "texts_per_all_cpu_s" in r:
                cell += f", {r['texts_per_all_cpu_s']:.0f}/all-cpu-s"
            cell += ")"
            if "p50_ms" in r:
                cell += f", p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms"
            cells.append(cell)
        print(f"| {key} | " + " | ".join(cells) + " |")
    for name, h in report["half_saturation"].items():
        print(f"half saturation, {name}: {h['rate']:.0f} req/s x {h['requests']} requests, "
              f"medians of {len(h['runs'])}: p50 {h['p50_ms']:.1f} ms, p99 {h['p99_ms']:.1f} ms, "
              f"p99/p50 {h['p99_over_p50']:.2f}")  # fmt: skip
    for name, why in report["skipped"].items():
        print(f"skipped {name}: {why}")


if __name__ == "__main__":
    main()
