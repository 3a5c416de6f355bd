"""Exact top-k for VectorIndex: FAISS IndexFlatIP against embengine.ops.topk_cosine.

    python benchmarks/bench_index.py [--n 50000] [--queries 1 16] [--repeats 5]

Both run in this process on the same unit vectors; prints the median seconds of each and
the ratio kernel / FAISS, per query batch size. VectorIndex(exact=...) defaults to the
faster one on this machine (see README, "Semantic search").
"""

from __future__ import annotations

import argparse
import platform

import numpy as np
from timing import median_seconds

from embengine import ops
from embengine.index import _faiss as faiss_side


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    base = rng.standard_normal((args.n, args.dim)).astype(np.float32)
    ops.normalize_rows_(base)
    faiss = faiss_side.faiss_module()
    flat = faiss.IndexFlatIP(args.dim)
    flat.add(base)
    print(f"{platform.processor() or platform.machine()}, faiss {faiss.__version__}, n={args.n}")
    print("| queries | FAISS flat s | kernel s | kernel / FAISS |")
    print("| ---: | ---: | ---: | ---: |")
    for nq in args.queries:
        q = base[rng.integers(0, args.n, nq)] + 0.01
        ops.normalize_rows_(q)
        t_faiss = median_seconds(lambda q=q: flat.search(q, args.k), args.repeats, warmup=True)
        t_kernel = median_seconds(
            lambda q=q: ops.topk_cosine(q, base, args.k), args.repeats, warmup=True
        )
        _, want = flat.search(q, args.k)
        _, got = ops.topk_cosine(q, base, args.k)
        agree = float(np.mean(want == got))
        print(
            f"| {nq} | {t_faiss:.4f} | {t_kernel:.4f} | {t_kernel / t_faiss:.2f} "
            f"(ids agree {agree:.3f}) |"
        )


if __name__ == "__main__":
    main()
