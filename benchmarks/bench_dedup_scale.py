"""Dedup at scale: 1,000,000 synthetic unit vectors with planted near-duplicates.

    python benchmarks/bench_dedup_scale.py [--n 1000000] [--exact-sizes 10000 20000]

Data (seeded): rows are drawn around `n / 500` random topic directions (topic mates have
cosine ~0.3, as unrelated texts of one domain do), then `--dups` rows are overwritten with
near-copies of other rows at a cosine drawn uniformly from [0.92, 0.99]. The threshold is
0.9, so the planted pairs are the pairs to find.

Reports, for the partitioned path (k-means partitions, dedup_vectors(method="partitioned"))
on all n rows: wall time, the process's peak RSS and planted-pair recall. The exact path
(all pairs, blocked) runs on subsets of `--exact-sizes` rows (a quarter of them planted
pairs), where it is also the ground truth for the partitioned path ("vs exact": the share
of exact pairs found); its time is extrapolated to n as t * (n / m)^2.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

import numpy as np

from embengine.tasks.dedup import dedup_vectors, exact_pairs, partitioned_pairs


def synthetic(n: int, dim: int, dups: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vectors, source, copy): unit rows, and the planted pairs (copy[k] near-copies source[k])."""
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((max(1, n // 500), dim)).astype(np.float32)
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    x = np.empty((n, dim), dtype=np.float32)
    block = 65_536
    for a in range(0, n, block):
        m = min(block, n - a)
        noise = rng.standard_normal((m, dim), dtype=np.float32)
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        rows = np.sqrt(0.3) * topics[rng.integers(0, len(topics), m)] + np.sqrt(0.7) * noise
        x[a : a + m] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    chosen = rng.choice(n, 2 * dups, replace=False)
    source, copy = chosen[:dups], chosen[dups:]
    cos = rng.uniform(0.92, 0.99, dups).astype(np.float32)[:, None]
    u = rng.standard_normal((dups, dim), dtype=np.float32)
    u -= (u * x[source]).sum(1, keepdims=True) * x[source]  # orthogonal to the source
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    x[copy] = cos * x[source] + np.sqrt(1 - cos**2) * u
    x[copy] /= np.linalg.norm(x[copy], axis=1, keepdims=True)
    return x, source, copy


def planted_recall(i: np.ndarray, j: np.ndarray, source: np.ndarray, copy: np.ndarray) -> float:
    found = set(zip(i.tolist(), j.tolist(), strict=True))
    planted = [(min(a, b), max(a, b)) for a, b in zip(source.tolist(), copy.tolist(), strict=True)]
    return sum(p in found for p in planted) / max(len(planted), 1)


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--dups", type=int, default=10_000)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--exact-sizes", type=int, nargs="*", default=[10_000, 20_000])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU "
        f"used; n={args.n:,} dim={args.dim} planted={args.dups:,} threshold={args.threshold}"
    )
    started = time.perf_counter()
    x, source, copy = synthetic(args.n, args.dim, args.dups, args.seed)
    print(f"data: {time.perf_counter() - started:.1f} s, {x.nbytes / 2**30:.2f} GiB of vectors")

    print(f"\n{'path':<12} {'rows':>9} {'seconds':>9} {'pairs':>8} {'recall':>7} {'vs exact':>9}")
    exact_rate = None
    rng = np.random.default_rng(args.seed + 1)
    for m in args.exact_sizes:
        # a subset holding m // 4 planted pairs, padded with random rows, renumbered 0..m-1
        planted = min(m // 4, len(source))
        others = np.setdiff1d(np.arange(args.n), np.concatenate([source, copy]))
        rows = np.concatenate(
            [source[:planted], copy[:planted], rng.choice(others, m - 2 * planted, replace=False)]
        )
        sub = x[rows]
        sub_source, sub_copy = np.arange(planted), np.arange(planted, 2 * planted)
        started = time.perf_counter()
        exact = exact_pairs(sub, args.threshold)
        t_exact = time.perf_counter() - started
        started = time.perf_counter()
        part = partitioned_pairs(sub, args.threshold, seed=args.seed)
        t_part = time.perf_counter() - started
        truth = set(zip(exact.i.tolist(), exact.j.tolist(), strict=True))
        got = set(zip(part.i.tolist(), part.j.tolist(), strict=True))
        rec_e = planted_recall(exact.i, exact.j, sub_source, sub_copy)
        rec_p = planted_recall(part.i, part.j, sub_source, sub_copy)
        agree = len(truth & got) / max(len(truth), 1)
        print(f"{'exact':<12} {m:>9,} {t_exact:>9.1f} {len(exact.i):>8,} {rec_e:>7.4f} {'':>9}")
        row = f"{t_part:>9.1f} {len(part.i):>8,} {rec_p:>7.4f} {agree:>9.4f}"
        print(f"{'partitioned':<12} {m:>9,} {row}")
        exact_rate = t_exact / m**2

    rss_before = peak_rss_gib()
    started = time.perf_counter()
    clusters = dedup_vectors(x, args.threshold, method="partitioned", seed=args.seed)
    seconds = time.perf_counter() - started
    # Clusters.pairs holds only the pairs that connect each cluster, so the planted pairs
    # are checked against the cluster labels: a pair is found when both rows share one.
    recall = float(np.mean(clusters.labels[source] == clusters.labels[copy])) if len(source) else 0
    print(
        f"{'partitioned':<12} {args.n:>9,} {seconds:>9.1f} {len(clusters.pairs.i):>8,} "
        f"{recall:>7.4f} {'':>9}"
    )
    print(
        f"\npartitioned, {args.n:,} rows: {seconds:.1f} s, recall of planted pairs {recall:.4f}, "
        f"{len(clusters.groups()):,} duplicate clusters; peak RSS {peak_rss_gib():.2f} GiB "
        f"(process; {rss_before:.2f} GiB before dedup: data and the exact runs)"
    )
    if exact_rate is not None:
        hours = exact_rate * args.n**2 / 3600
        print(
            f"exact all-pairs on {args.n:,} rows: not run; extrapolated from "
            f"{args.exact_sizes[-1]:,} rows as t * (n/m)^2 = {hours:.1f} h on this machine"
        )


if __name__ == "__main__":
    main()
