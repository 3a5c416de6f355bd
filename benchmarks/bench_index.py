"""VectorIndex against the raw kernel and FAISS, side by side in one run.

    python benchmarks/bench_index.py [--sizes 10000 100000 1000000] [--queries 1 16 1000]
                                     [--ann-n 100000] [--no-ann] [--no-io] [--io-only]
                                     [--hybrid-max N] [--out NAME]

Per index size (clustered unit vectors, 384-d, float32): the median seconds of the public
`VectorIndex.search`, the raw `ops.topk_cosine` on the same table and FAISS IndexFlatIP, run
round-robin (one call of each per repeat) for 1, 16 and 1,000 queries; then the same after
1% of the rows are removed (the kernel still scans the full table); hybrid search (dense +
BM25 over synthetic texts) against its parts (the kernel at depth 100 plus bm25s's own
retrieve), and the cost of the BM25 rebuild after an add. Build / save / load seconds, peak
RSS and file size, for VectorIndex.save / load against faiss.write_index / read_index, each
run in its own child process (ru_maxrss of that child). Then recall@10 against speed for
flat / IVF (nprobe sweep) / HNSW (ef_search sweep) at --ann-n rows.

Writes benchmarks/results/index-cpu.json, index-cpu.md and the plots
index-latency.png (latency vs size) and index-recall.png (recall vs speed). The machine is
shared: read the ratios, measured side by side, not the absolute times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from embengine import ops
from embengine.index import VectorIndex
from embengine.index import _faiss as faiss_side
from embengine.index.lexical import Lexical, tokenize

DIM = 384
K = 10
RESULTS = Path(__file__).resolve().parent / "results"


def clustered(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    """n unit rows around 1,000 centres (structure like real embeddings), built in chunks."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, dim)).astype(np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        out[start:stop] = centres[rng.integers(0, 1000, stop - start)]
        out[start:stop] += 0.8 * rng.standard_normal((stop - start, dim), dtype=np.float32)
    return ops.normalize_rows_(out)


def synthetic_texts(n: int, seed: int = 1) -> list[str]:
    """Zipf-distributed words over a 30k vocabulary, 12 per document."""
    rng = np.random.default_rng(seed)
    words = np.minimum(rng.zipf(1.3, (n, 12)), 30_000)
    return [" ".join(f"w{w}" for w in row) for row in words.tolist()]


class FixedEmbedder:
    """Stands in for an Engine: the query texts' vectors are fixed, so no model runs."""

    dim = DIM

    class spec:  # mirrors Engine.spec
        name = fingerprint = "bench"

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors

    def embed(self, texts: list[str], *, cache: bool = True) -> np.ndarray:
        return np.stack([self.vectors[t] for t in texts])


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def round_robin(
    fns: dict[str, Callable[[], object]], repeats: int, *, warmup: bool = True
) -> dict[str, float]:
    """Median seconds per contender, calling each once per repeat in turn."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values() if warmup else ():
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(t) for name, t in times.items()}


def search_section(n: int, queries: list[int], repeats: int, hybrid_max: int) -> list[dict]:
    faiss = faiss_side.faiss_module()
    base = clustered(n)
    started = time.perf_counter()
    index = VectorIndex(DIM, device="cpu")
    index.add(base)
    build_s = time.perf_counter() - started
    del base
    table = index._vectors[: len(index)]  # the same memory the public search scans
    flat = faiss.IndexFlatIP(DIM)
    flat.add(table)
    qrng = np.random.default_rng(7)
    rows: list[dict] = []
    for removed in (False, True):
        if removed:  # 1% of the rows, at random
            gone = qrng.choice(n, n // 100, replace=False)
            index.remove(gone.tolist())
        for nq in queries:
            q = clustered(nq, seed=100 + nq)
            small = nq * n <= 16 * 1_000_000
            reps = repeats if small else max(3, repeats // 2)
            fns = {
                "public": lambda q=q: index.search(q, K),
                "kernel": lambda q=q: ops.topk_cosine(q, table, K),
            }
            t = round_robin(fns, reps, warmup=small)
            if not removed:  # FAISS timed apart: its OpenMP threads spin on after each call
                # and slowed whichever call came next in a shared round-robin (1.6x here)
                t.update(round_robin({"faiss": lambda q=q: flat.search(q, K)}, reps, warmup=small))
            row = {
                "n": n,
                "queries": nq,
                "removed": 0.01 if removed else 0.0,
                **{f"{name}_s": v for name, v in t.items()},
                "public_vs_kernel": t["public"] / t["kernel"],
            }
            if not removed:
                row["faiss_vs_kernel"] = t["faiss"] / t["kernel"]
                row["ids_equal_kernel"] = float(
                    np.mean(index.search(q, K)[1] == ops.topk_cosine(q, table, K)[1])
                )
            print(json.dumps(row), flush=True)
            rows.append(row)
    flat = None
    vectors = index._vectors[: index._n]  # keeps the table alive without the index
    index = table = None  # only the table's memory stays alive
    if n <= hybrid_max:
        rows.append(hybrid_section(vectors, n, repeats))
    rows.append({"n": n, "build_public_s": build_s, "rss_gib_after_search": rss_gib()})
    return rows


def hybrid_section(table: np.ndarray, n: int, repeats: int) -> dict:
    """Hybrid search against its parts: the kernel at depth 100 and bm25s's own retrieve."""
    texts = synthetic_texts(n)
    started = time.perf_counter()
    hybrid = VectorIndex(DIM, device="cpu", lexical=True)
    hybrid.add(table, list(range(n)), texts=texts)
    add_s = time.perf_counter() - started
    del table
    vectors = hybrid._vectors[:n]
    query_texts = [" ".join(t.split()[:4]) for t in synthetic_texts(16, seed=99)]
    q = clustered(16, seed=116)
    started = time.perf_counter()
    hybrid.search(query_texts, K, mode="lexical")  # first lexical search builds BM25
    first_build_s = time.perf_counter() - started
    raw = Lexical.build(tokenize(texts, stem=True), stem=True)._retriever
    raw_tokens = tokenize(query_texts, stem=True)
    hybrid.attach_engine(FixedEmbedder(dict(zip(query_texts, q, strict=True))))  # type: ignore[arg-type]
    t = round_robin(
        {
            "hybrid": lambda: hybrid.search(query_texts, K, mode="hybrid", depth=100),
            "kernel_depth100": lambda: ops.topk_cosine(q, vectors, 100),
            "bm25s_retrieve100": lambda: raw.retrieve(
                raw_tokens, k=100, show_progress=False, n_threads=0
            ),
        },
        repeats,
    )
    started = time.perf_counter()
    hybrid.add(clustered(1, seed=5), [n], texts=["w1 w2 w3 fresh document"])
    hybrid.search(query_texts[:1], K, mode="lexical")
    rebuild_s = time.perf_counter() - started
    row = {
        "n": n,
        "queries": 16,
        "hybrid": True,
        **{f"{name}_s": v for name, v in t.items()},
        "hybrid_vs_parts": t["hybrid"] / (t["kernel_depth100"] + t["bm25s_retrieve100"]),
        "add_with_tokenize_s": add_s,
        "first_bm25_build_s": first_build_s,
        "add_one_then_search_s": rebuild_s,
    }
    print(json.dumps(row), flush=True)
    return row


def io_child(what: str, n: int, path: str) -> None:
    """One build/save or load in this (child) process; prints seconds and peak RSS."""
    faiss = faiss_side.faiss_module()
    out: dict = {"what": what, "n": n}
    if what in ("public_build", "faiss_build"):
        base = clustered(n)
        out["data_gib"] = base.nbytes / 2**30
        started = time.perf_counter()
        if what == "public_build":
            index = VectorIndex(DIM, device="cpu")
            index.add(base)
            del base
            out["build_s"] = time.perf_counter() - started
            started = time.perf_counter()
            index.save(path)
        else:
            flat = faiss.IndexFlatIP(DIM)
            flat.add(base)
            del base
            out["build_s"] = time.perf_counter() - started
            started = time.perf_counter()
            faiss.write_index(flat, path)
        out["save_s"] = time.perf_counter() - started
        out["file_mib"] = os.path.getsize(path) / 2**20
    else:
        started = time.perf_counter()
        if what == "public_load":
            loaded = VectorIndex.load(path, device="cpu")
            assert len(loaded) == n
        else:
            loaded = faiss.read_index(path)
            assert loaded.ntotal == n
        out["load_s"] = time.perf_counter() - started
    out["peak_rss_gib"] = hwm_gib()
    print(json.dumps(out))


def hwm_gib() -> float:
    """This process's own peak RSS (VmHWM; ru_maxrss would include the parent's, kept
    across fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return rss_gib()


def io_section(n: int) -> dict:
    row: dict = {"n": n, "io": True}
    with tempfile.TemporaryDirectory(dir=RESULTS.parent) as tmp:
        for side in ("public", "faiss"):
            path = str(Path(tmp) / f"{side}.idx")
            for what in (f"{side}_build", f"{side}_load"):
                done = subprocess.run(
                    [sys.executable, __file__, "--io-child", what, str(n), path],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                result = json.loads(done.stdout.strip().splitlines()[-1])
                for key, value in result.items():
                    if key not in ("what", "n"):
                        row[f"{what}_{key}"] = value
    print(json.dumps(row), flush=True)
    return row


def ann_section(n: int, queries: int = 200) -> list[dict]:
    """recall@10 against ms/query for flat, IVF (nprobe sweep) and HNSW (ef_search sweep)."""
    base = clustered(n, seed=3)
    q = clustered(queries, seed=4)
    _, truth = ops.topk_cosine(q, base, K)
    rows = []

    def measure(kind: str, knob: str, value: int, index: VectorIndex) -> None:
        setattr(index.params, knob, value)
        t = round_robin({"s": lambda: index.search(q, K)}, 3)["s"]
        _, ids = index.search(q, K)
        recall = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(ids, truth, strict=True)]))
        row = {"ann": kind, "n": n, knob: value, "ms_per_query": 1e3 * t / queries}
        row["recall@10"] = recall
        print(json.dumps(row), flush=True)
        rows.append(row)

    flat = VectorIndex(DIM, device="cpu")
    flat.add(base)
    measure("flat", "nprobe", 0, flat)
    started = time.perf_counter()
    ivf = VectorIndex(DIM, kind="ivf", device="cpu")
    ivf.add(base)
    print(f"ivf build {time.perf_counter() - started:.1f} s", flush=True)
    for nprobe in (1, 4, 16, 48, 128):
        measure("ivf", "nprobe", nprobe, ivf)
    del ivf
    started = time.perf_counter()
    hnsw = VectorIndex(DIM, kind="hnsw", device="cpu")
    hnsw.add(base)
    print(f"hnsw build {time.perf_counter() - started:.1f} s", flush=True)
    for ef in (16, 32, 64, 128, 256):
        measure("hnsw", "ef_search", ef, hnsw)
    return rows


def plots(rows: list[dict], prefix: str = "index") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    search = [r for r in rows if "public_s" in r and r.get("removed") == 0.0]
    queries = sorted({r["queries"] for r in search})
    if search:
        fig, axes = plt.subplots(1, len(queries), figsize=(4.2 * len(queries), 3.6))
        for ax, nq in zip(np.atleast_1d(axes), queries, strict=True):
            sel = sorted((r for r in search if r["queries"] == nq), key=lambda r: r["n"])
            sizes = [r["n"] for r in sel]
            for key, label in (
                ("public_s", "VectorIndex.search"),
                ("kernel_s", "ops.topk_cosine"),
                ("faiss_s", "FAISS IndexFlatIP"),
            ):
                ax.plot(sizes, [1e3 * r[key] for r in sel], marker="o", label=label)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{nq} quer{'y' if nq == 1 else 'ies'}, top-{K}")
            ax.set_xlabel("rows (384-d)")
            ax.set_ylabel("ms per call (median)")
            ax.grid(True, which="both", alpha=0.3)
        np.atleast_1d(axes)[0].legend(fontsize=8)
        fig.suptitle("Exact search latency vs index size (2-core AMD EPYC, shared)")
        fig.tight_layout()
        fig.savefig(RESULTS / f"{prefix}-latency.png", dpi=110)
    ann = [r for r in rows if "ann" in r]
    if ann:
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for kind, marker in (("flat", "s"), ("ivf", "o"), ("hnsw", "^")):
            sel = [r for r in ann if r["ann"] == kind]
            ax.plot(
                [r["ms_per_query"] for r in sel],
                [r["recall@10"] for r in sel],
                marker=marker,
                label=kind,
            )
            knob = "nprobe" if kind == "ivf" else "ef_search"
            for r in sel if kind != "flat" else []:
                ax.annotate(str(r[knob]), (r["ms_per_query"], r["recall@10"]), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("ms per query (200-query batches)")
        ax.set_ylabel("recall@10 vs exact")
        ax.set_title(f"Recall vs speed, {ann[0]['n']:,} x 384")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(RESULTS / f"{prefix}-recall.png", dpi=110)


def markdown(rows: list[dict]) -> str:
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores "
        "(2-core AMD EPYC, shared with other jobs; medians, round-robin)",
        "",
        "| rows | queries | removed | public ms | kernel ms | FAISS ms | public / kernel |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if "public_s" in r:
            faiss_ms = f"{1e3 * r['faiss_s']:.1f}" if "faiss_s" in r else "-"
            lines.append(
                f"| {r['n']:,} | {r['queries']} | {r['removed']:.0%} | {1e3 * r['public_s']:.1f} "
                f"| {1e3 * r['kernel_s']:.1f} | {faiss_ms} | {r['public_vs_kernel']:.2f} |"
            )
    for r in rows:
        if r.get("hybrid"):
            lines.append(
                f"\nHybrid, {r['n']:,} rows, 16 queries: {1e3 * r['hybrid_s']:.1f} ms against "
                f"kernel(depth 100) {1e3 * r['kernel_depth100_s']:.1f} ms + bm25s retrieve "
                f"{1e3 * r['bm25s_retrieve100_s']:.1f} ms ({r['hybrid_vs_parts']:.2f}x the parts);"
                f" first BM25 build {r['first_bm25_build_s']:.2f} s, add 1 + search "
                f"{r['add_one_then_search_s']:.2f} s (the rebuild)."
            )
    io = [r for r in rows if r.get("io")]
    if io:
        lines += [
            "",
            "| rows | side | build s | save s | load s | file MiB | build+save peak RSS GiB "
            "| load peak RSS GiB |",
            "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in io:
            for side, name in (("public", "VectorIndex"), ("faiss", "FAISS write/read_index")):
                lines.append(
                    f"| {r['n']:,} | {name} | {r[f'{side}_build_build_s']:.2f} "
                    f"| {r[f'{side}_build_save_s']:.2f} | {r[f'{side}_load_load_s']:.2f} "
                    f"| {r[f'{side}_build_file_mib']:.0f} "
                    f"| {r[f'{side}_build_peak_rss_gib']:.2f} "
                    f"| {r[f'{side}_load_peak_rss_gib']:.2f} |"
                )
    ann = [r for r in rows if "ann" in r]
    if ann:
        lines += ["", "| kind | knob | ms/query | recall@10 |", "| --- | ---: | ---: | ---: |"]
        for r in ann:
            knob = r.get("ef_search", r.get("nprobe"))
            lines.append(
                f"| {r['ann']} | {knob} | {r['ms_per_query']:.3f} | {r['recall@10']:.4f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--io-child":
        io_child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, nargs="+", default=[1, 16, 1000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hybrid-max", type=int, default=1_000_000)
    parser.add_argument("--ann-n", type=int, default=100_000)
    parser.add_argument("--no-ann", action="store_true")
    parser.add_argument("--no-io", action="store_true")
    parser.add_argument("--io-only", action="store_true", help="only build/save/load")
    parser.add_argument("--out", default="index-cpu")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    rows: list[dict] = []
    for n in args.sizes:
        if not args.io_only:
            rows += search_section(n, args.queries, args.repeats, args.hybrid_max)
        if not args.no_io:
            rows.append(io_section(n))
    if not args.no_ann and not args.io_only:
        rows += ann_section(args.ann_n)
    rows.append({"peak_rss_gib": rss_gib()})
    (RESULTS / f"{args.out}.json").write_text(json.dumps(rows, indent=1))
    text = markdown(rows)
    (RESULTS / f"{args.out}.md").write_text(text)
    plots(rows, "index" if args.out == "index-cpu" else args.out)  # partial runs: own names
    print(text)


if __name__ == "__main__":
    main()
