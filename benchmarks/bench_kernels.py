"""Side-by-side speed of embengine's similarity kernels against FAISS and numpy, one run.

    PYTHONPATH=. python benchmarks/bench_kernels.py            # the issue's sizes (minutes)
    PYTHONPATH=. python benchmarks/bench_kernels.py --quick    # a tenth of them (seconds)
    PYTHONPATH=. python benchmarks/bench_kernels.py --gpu-only --markdown out.md

Every time is the median of --repeats runs, peers measured in the same process, so ratios
hold on a shared machine where absolute times do not. "x peer" is peer time / our time
(above 1: we are faster). GB/s counts the bytes of the data side read once. Results go to
benchmarks/results/kernels-<machine>.json (and a markdown table with --markdown).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from embengine import ops
from embengine.device import build_info, cuda_available
from embengine.io import atomic_write

RESULTS = Path(__file__).resolve().parent / "results"


def median_seconds(
    fn: Callable[[], Any], repeats: int, sync: Callable[[], None] = lambda: None
) -> float:
    fn()  # warm-up: allocations, thread pools, lazy loading
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def median_each(
    fns: dict[str, Callable[[], Any]], repeats: int, sync: Callable[[], None] = lambda: None
) -> dict[str, float]:
    """Median seconds of each peer, the peers taking turns in every repeat, so that a load
    change on a shared machine hits all of them alike rather than whichever ran then."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():  # warm-up
        fn()
    sync()
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def clustered(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """Unit rows in groups of near-duplicates, so a 0.9 threshold finds real pairs."""
    centres = unit_rows(rng, n // 8, d)
    noise = rng.uniform(0.005, 0.03, (n, 1)).astype(np.float32)  # pairs on both sides of 0.9
    x = centres[rng.integers(0, len(centres), n)] + noise * rng.standard_normal((n, d), np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        match = re.search(r"model name\s*:\s*(.+)", text)
        if match:
            return f"{match.group(1).strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


class Table:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(
        self,
        case: str,
        impl: str,
        seconds: float,
        *,
        nbytes: int = 0,
        peer: float | None = None,
        **extra: Any,
    ) -> None:
        row = {"case": case, "impl": impl, "seconds": seconds}
        if nbytes:
            row["GB/s"] = nbytes / seconds / 1e9
        if peer is not None:
            row["x peer"] = peer / seconds
        row.update(extra)
        self.rows.append(row)
        print(self.format_row(row), flush=True)

    @staticmethod
    def format_row(row: dict[str, Any]) -> str:
        parts = [f"{row['case']:<34}", f"{row['impl']:<26}", f"{row['seconds'] * 1e3:10.2f} ms"]
        parts.append(f"{row['GB/s']:7.1f} GB/s" if "GB/s" in row else " " * 12)
        parts.append(f"{row['x peer']:6.2f}x" if "x peer" in row else " " * 7)
        extras = {
            k: v for k, v in row.items() if k not in ("case", "impl", "seconds", "GB/s", "x peer")
        }
        parts.append(
            " ".join(
                f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in extras.items()
            )
        )
        return " ".join(parts)

    def markdown(self) -> str:
        lines = ["| case | impl | ms | GB/s | x peer | notes |", "|---|---|---:|---:|---:|---|"]
        for row in self.rows:
            notes = ", ".join(
                f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in row.items()
                if k not in ("case", "impl", "seconds", "GB/s", "x peer")
            )
            gbs = f"{row['GB/s']:.1f}" if "GB/s" in row else ""
            ratio = f"{row['x peer']:.2f}" if "x peer" in row else ""
            ms = f"{row['seconds'] * 1e3:.2f}"
            lines.append(f"| {row['case']} | {row['impl']} | {ms} | {gbs} | {ratio} | {notes} |")
        return "\n".join(lines)


def agreement(ids: np.ndarray, peer_ids: np.ndarray) -> float:
    """Fraction of result slots with the same id as the peer (1.0 = identical results)."""
    return float((np.asarray(ids) == np.asarray(peer_ids)).mean())


def bench_topk_cpu(
    t: Table, rng: np.random.Generator, n: int, d: int, k: int, repeats: int
) -> None:
    import faiss

    base = unit_rows(rng, n, d)
    base16 = base.astype(np.float16)
    index = faiss.IndexFlatIP(d)
    index.add(base)
    read = median_seconds(lambda: base.sum(axis=0), repeats)
    t.add(f"read base {n}x{d} fp32", "numpy sum", read, nbytes=base.nbytes)
    for nq in (1, 16, 1000):
        queries = unit_rows(rng, nq, d)
        case = f"top-{k}, {nq} q, {n}x{d}"
        reps = repeats if nq < 1000 else max(1, repeats // 2)
        peers = {
            "faiss": lambda q=queries: index.search(q, k),
            "ours": lambda q=queries: ops.topk_cosine(q, base, k),
            "ours16": lambda q=queries: ops.topk_cosine(q, base16, k),
            "read": lambda: base.sum(axis=0),
        }
        if nq == 1000:
            peers["sgemm"] = lambda q=queries: np.matmul(q, base.T)
        med = median_each(peers, reps)
        faiss_s, ours_s, ours16_s = med["faiss"], med["ours"], med["ours16"]
        read = med["read"]
        scores, ids = ops.topk_cosine(queries, base, k)
        fd, fi = index.search(queries, k)
        ids16 = ops.topk_cosine(queries, base16, k)[1]
        t.add(case, "faiss IndexFlatIP", faiss_s, nbytes=base.nbytes)
        t.add(
            case,
            "embengine fp32",
            ours_s,
            nbytes=base.nbytes,
            peer=faiss_s,
            same_ids_as_faiss=agreement(ids, fi),
            max_score_diff=float(np.abs(scores - fd).max()),
        )
        t.add(
            case,
            "embengine fp16 base",
            ours16_s,
            nbytes=base16.nbytes,
            peer=faiss_s,
            recall_vs_fp32=float(
                np.mean([len(set(a) & set(b)) / k for a, b in zip(ids16, ids, strict=True)])
            ),
        )
        if nq == 1000:
            sgemm_s = med["sgemm"]
            t.add(
                case,
                "numpy sgemm alone (q@b.T)",
                sgemm_s,
                nbytes=base.nbytes,
                gflops=2 * nq * n * d / sgemm_s / 1e9,
            )
            t.rows[-2]["x sgemm"] = sgemm_s / ours_s
            t.rows[-3]["x sgemm"] = sgemm_s / ours_s
        else:
            t.rows[-2]["x numpy read"] = read / ours_s


def faiss_pairs(index: Any, x: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    lims, _, labels = index.range_search(x, threshold)
    i = np.repeat(np.arange(len(x)), np.diff(lims.astype(np.int64)))
    keep = i < labels
    order = np.lexsort((labels[keep], i[keep]))
    return i[keep][order], labels[keep][order]


def bench_pairs_cpu(t: Table, rng: np.random.Generator, n: int, d: int, repeats: int) -> None:
    import faiss

    x = clustered(rng, n, d)
    index = faiss.IndexFlatIP(d)
    index.add(x)
    reps = max(1, repeats // 2)
    case = f"pairs >= 0.9, {n}x{d}"
    med = median_each(
        {"faiss": lambda: index.range_search(x, 0.9), "ours": lambda: ops.pairs_above(x, 0.9)},
        reps,
    )
    faiss_s, ours_s = med["faiss"], med["ours"]
    i, j, _ = ops.pairs_above(x, 0.9)
    fi, fj = faiss_pairs(index, x, 0.9)
    same = len(i) == len(fi) and bool((i == fi).all() and (j == fj).all())
    t.add(case, "faiss range_search", faiss_s, pairs=len(fi))
    t.add(
        case,
        "embengine pairs_above",
        ours_s,
        peer=faiss_s,
        pairs=len(i),
        identical_pairs=same,
        pairs_differing=len(
            set(zip(i.tolist(), j.tolist(), strict=True))
            ^ set(zip(fi.tolist(), fj.tolist(), strict=True))
        ),
    )


def bench_centroids_cpu(t: Table, rng: np.random.Generator, n: int, d: int, repeats: int) -> None:
    x = unit_rows(rng, n, d)
    read = median_seconds(lambda: x.sum(axis=0), repeats)
    t.add(f"read x {n}x{d} fp32", "numpy sum", read, nbytes=x.nbytes)
    for c in (1, 64):
        centroids = unit_rows(rng, c, d)
        case = f"centroid distance, {n}x{d}, c={c}"

        def numpy_nearest(cs: np.ndarray = centroids) -> Any:
            scores = x @ cs.T
            return 1.0 - scores.max(axis=1), scores.argmax(axis=1)

        med = median_each(
            {
                "numpy": numpy_nearest,
                "ours": lambda cs=centroids: ops.centroid_distance(x, cs),
                "read": lambda: x.sum(axis=0),
            },
            repeats,
        )
        np_s, ours_s, read = med["numpy"], med["ours"], med["read"]
        same = agreement(ops.centroid_distance(x, centroids)[1], numpy_nearest()[1])
        t.add(
            case, "numpy x@c.T + argmax", np_s, nbytes=x.nbytes, gflops=2 * n * c * d / np_s / 1e9
        )
        t.add(
            case,
            "embengine",
            ours_s,
            nbytes=x.nbytes,
            peer=np_s,
            same_nearest=same,
            gflops=2 * n * c * d / ours_s / 1e9,
            x_numpy_read=read / ours_s,
        )
    x16 = x.astype(np.float16)
    ours16 = median_seconds(lambda: ops.centroid_distance(x16, x[:1]), repeats)
    t.add(f"centroid distance, {n}x{d} fp16, c=1", "embengine fp16", ours16, nbytes=x16.nbytes)


def bench_gpu(t: Table, rng: np.random.Generator, n: int, d: int, k: int, repeats: int) -> None:
    import torch

    sync = torch.cuda.synchronize
    base32 = torch.from_numpy(unit_rows(rng, n, d)).cuda()
    try:
        import faiss

        gpu_faiss = hasattr(faiss, "StandardGpuResources")
    except ImportError:
        gpu_faiss = False
    for dtype in (torch.float32, torch.float16):
        base = base32.to(dtype)
        name = str(dtype).removeprefix("torch.")
        for nq in (1, 1000):
            queries = base32[:nq].clone()
            case = f"GPU top-{k}, {nq} q, {n}x{d} {name}"
            med = median_each(
                {
                    "torch": lambda q=queries, b=base: torch.topk(q.to(b.dtype) @ b.T, k, dim=1),
                    "ours": lambda q=queries, b=base: ops.topk_cosine(q, b, k),
                },
                repeats,
                sync,
            )
            torch_s, ours_s = med["torch"], med["ours"]
            _, tid = torch.topk(queries @ base.float().T, k, dim=1)
            _, oid = ops.topk_cosine(queries, base, k)
            t.add(
                case,
                "torch matmul + topk",
                torch_s,
                nbytes=base.numel() * base.element_size(),
                qps=nq / torch_s,
            )
            t.add(
                case,
                "embengine",
                ours_s,
                nbytes=base.numel() * base.element_size(),
                peer=torch_s,
                qps=nq / ours_s,
                same_ids_as_torch_fp32=agreement(oid.cpu().numpy(), tid.cpu().numpy()),
            )
            if gpu_faiss and dtype == torch.float32:
                res = faiss.StandardGpuResources()
                index = faiss.GpuIndexFlatIP(res, d)
                index.add(base32.cpu().numpy())
                qn = queries.cpu().numpy()
                faiss_s = median_seconds(lambda i=index, q=qn: i.search(q, k), repeats)
                t.add(case, "faiss GpuIndexFlatIP (host q)", faiss_s, qps=nq / faiss_s)
    x = base32
    for c in (1, 64):
        cs = base32[:c].clone()
        case = f"GPU centroid distance, {n}x{d}, c={c}"
        med = median_each(
            {
                "torch": lambda cs=cs: (x @ cs.T).max(dim=1),
                "ours": lambda cs=cs: ops.centroid_distance(x, cs),
            },
            repeats,
            sync,
        )
        torch_s, ours_s = med["torch"], med["ours"]
        t.add(case, "torch matmul + max", torch_s, nbytes=x.numel() * 4)
        t.add(case, "embengine", ours_s, nbytes=x.numel() * 4, peer=torch_s)
    xp = torch.from_numpy(clustered(rng, min(n, 100_000), d)).cuda()
    case = f"GPU pairs >= 0.9, {len(xp)}x{d}"
    ours_s = median_seconds(lambda: ops.pairs_above(xp, 0.9), max(1, repeats // 2), sync)
    t.add(case, "embengine", ours_s, pairs=len(ops.pairs_above(xp, 0.9)[0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the sizes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gpu-only", action="store_true")
    parser.add_argument("--cpu-only", action="store_true")
    parser.add_argument("--markdown", type=Path, help="also write the table as markdown here")
    parser.add_argument(
        "--json", type=Path, help="results file (default benchmarks/results/kernels-<machine>.json)"
    )
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    rng = np.random.default_rng(0)
    t = Table()
    machine = cpu_name()
    print(f"CPU: {machine}\nbuild: {build_info()['cpu']}", flush=True)
    if not args.gpu_only:
        bench_topk_cpu(t, rng, 100_000 // scale, 384, 10, args.repeats)
        bench_pairs_cpu(t, rng, 20_000 // scale, 384, args.repeats)
        bench_centroids_cpu(t, rng, 1_000_000 // scale, 384, args.repeats)
    gpu = None
    if not args.cpu_only and cuda_available():
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
            print(f"GPU: {gpu}", flush=True)
            bench_gpu(t, rng, 1_000_000 // scale, 384, 10, args.repeats)
    elif not args.cpu_only:
        print("no usable CUDA GPU here: GPU section skipped", flush=True)
    report = {
        "cpu": machine,
        "gpu": gpu,
        "quick": args.quick,
        "repeats": args.repeats,
        "rows": t.rows,
    }
    slug = re.sub(r"[^a-z0-9]+", "-", (gpu or machine).lower()).strip("-")
    path = args.json or RESULTS / f"kernels-{slug}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(json.dumps(report, indent=1).encode()))
    print(f"wrote {path}")
    if args.markdown:
        header = (
            f"CPU: {machine}"
            + (f"; GPU: {gpu}" if gpu else "")
            + f"; medians of {args.repeats}\n\n"
        )
        atomic_write(args.markdown, lambda f: f.write((header + t.markdown() + "\n").encode()))
        print(f"wrote {args.markdown}")


if __name__ == "__main__":
    main()
