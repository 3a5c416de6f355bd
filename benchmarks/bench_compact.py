"""Compact vectors: int8 and binary (+ rescoring) against float32 exact search and FAISS.

    nice -n 5 python benchmarks/bench_compact.py [--n 1000000] [--data DIR] [--skip-speed]

Quality (BEIR SciFact, 300 test queries, default model, embeddings from the shared cache):
nDCG@10 and recall@100 for float32 exact, int8, binary without and with rescoring, and bytes
per vector. Speed (random unit vectors, n x 384): median search time for 1 and 16 queries,
k = 10, of the public VectorIndex (compact=None: float32 exact; "int8"; "binary" rescored on
int8 codes or float32) and of the kernels underneath (ops.topk_cosine, quantize.search_int8 /
search_binary), with FAISS IndexScalarQuantizer(QT_8bit) and IndexBinaryFlat timed in the
same run. Ratios are to float32 exact: index rows to the float32 VectorIndex, kernel and
FAISS rows to ops.topk_cosine. The machine may be shared: read the ratios, not the times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import numpy as np
from embed_cache import cached_embed
from eval_search import DEFAULT_DATA, load_beir, ndcg_at, recall_at
from timing import median_seconds

from embengine import Engine, ops
from embengine.index import VectorIndex
from embengine.quantize import Int8Quantizer, binarize, search_binary, search_int8

ROOT = Path(__file__).resolve().parents[1]
K = 10
CHUNK = 100_000


def quality(data: Path) -> list[dict]:
    beir = load_beir(data / "scifact")
    engine = Engine(device="cpu")
    docs = cached_embed(engine, beir.doc_texts, "scifact-corpus")
    qids = sorted(q for q in beir.qrels["test"] if q in beir.queries)
    queries = cached_embed(engine, [beir.queries[q] for q in qids], "scifact-test-queries")
    qrels = beir.qrels["test"]
    doc_ids = np.array(beir.doc_ids, dtype=object)
    quantizer = Int8Quantizer.fit(docs)
    codes, bits = quantizer.quantize(docs), binarize(docs)
    d = docs.shape[1]
    methods = {
        "float32 exact": (lambda k: ops.topk_cosine(queries, docs, k), 4 * d),
        "int8 (oversample 4, rescored on int8)": (
            lambda k: search_int8(queries, codes, quantizer, k),
            d,
        ),
        "binary, no rescoring": (lambda k: search_binary(queries, bits, k), d // 8),
        "binary + rescore float32 (oversample 10)": (  # bits + the float32 rows kept
            lambda k: search_binary(queries, bits, k, rescore_with=docs),
            d // 8 + 4 * d,
        ),
        "binary + rescore int8 (oversample 10)": (  # bits + the int8 codes kept
            lambda k: search_binary(queries, bits, k, rescore_with=codes, quantizer=quantizer),
            d // 8 + d,
        ),
    }
    rows = []
    for name, (run, size) in methods.items():
        # nDCG@10 from a k = 10 search (10 * oversample rescored), recall@100 from k = 100
        top10, top100 = doc_ids[run(10)[1]], doc_ids[run(100)[1]]
        rows.append(
            {
                "method": name,
                "ndcg@10": round(ndcg_at(top10, qids, qrels, 10), 2),
                "recall@100": round(recall_at(top100, qids, qrels, 100), 2),
                "bytes_per_vector": size,
            }
        )
    base = rows[0]["ndcg@10"]
    for row in rows:
        row["ndcg_vs_float32"] = round(100 * row["ndcg@10"] / base, 1)
        print(json.dumps(row))
    return rows


def unit_vectors(n: int, d: int, seed: int) -> np.ndarray:
    """n random unit rows, made in chunks (no float64 copy of the whole set)."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, d), np.float32)
    for s in range(0, n, CHUNK):
        block = rng.standard_normal((min(CHUNK, n - s), d), dtype=np.float32)
        x[s : s + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return x


def speed(n: int, d: int, repeats: int) -> list[dict]:
    try:
        import faiss
    except ImportError:  # e.g. a GPU machine without faiss-cpu: embengine's rows only
        faiss = None

    x = unit_vectors(n, d, 0)
    queries = unit_vectors(16, d, 1)
    quantizer = Int8Quantizer.fit(x)
    codes = np.empty((n, d), np.int8)
    for s in range(0, n, CHUNK):
        codes[s : s + CHUNK] = quantizer.quantize(x[s : s + CHUNK])
    bits = np.packbits(x > 0, axis=1)
    if faiss is not None:
        sq = faiss.IndexScalarQuantizer(
            d, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        sq.train(x[:100_000])
        sq.add(x)
        flat_bits = faiss.IndexBinaryFlat(d)
        flat_bits.add(bits)
    indexes = {
        "VectorIndex float32 (compact=None)": VectorIndex(d, device="cpu"),
        "VectorIndex int8": VectorIndex(d, compact="int8"),
        "VectorIndex binary (rescore int8)": VectorIndex(d, compact="binary"),
        "VectorIndex binary (rescore float32)": VectorIndex(d, compact="binary", rescore="float32"),
    }
    for index in indexes.values():
        for s in range(0, n, CHUNK):  # adds in chunks: int8 ranges fitted on the first
            index.add(x[s : s + CHUNK])
        print(f"{index.compact}/{index.rescore}: {index.bytes_per_vector} bytes per vector")
    methods = {name: lambda q, index=index: index.search(q, K) for name, index in indexes.items()}
    methods.update(
        {
            "float32 exact (ops.topk_cosine)": lambda q: ops.topk_cosine(q, x, K),
            "embengine int8": lambda q: search_int8(q, codes, quantizer, K),
            "FAISS IndexScalarQuantizer QT_8bit": lambda q: sq.search(q, K),
            "embengine binary (Hamming only)": lambda q: search_binary(q, bits, K),
            "FAISS IndexBinaryFlat": lambda q: flat_bits.search(np.packbits(q > 0, axis=1), K),
            "embengine binary + rescore float32 (x10)": lambda q: search_binary(
                q, bits, K, rescore_with=x
            ),
            "embengine binary + rescore int8 (x10)": lambda q: search_binary(
                q, bits, K, rescore_with=codes, quantizer=quantizer
            ),
        }
    )
    if faiss is None:
        methods = {name: f for name, f in methods.items() if "FAISS" not in name}
    rows = []
    for nq in (1, 16):
        q = queries[:nq]
        times = {
            name: median_seconds(lambda f=f, q=q: f(q), repeats, warmup=True)
            for name, f in methods.items()
        }
        for name, seconds in times.items():
            base = times[
                "VectorIndex float32 (compact=None)"
                if name.startswith("VectorIndex")
                else "float32 exact (ops.topk_cosine)"
            ]
            row = {
                "queries": nq,
                "method": name,
                "ms": round(1000 * seconds, 2),
                "speedup_vs_float32": round(base / seconds, 2),
            }
            rows.append(row)
            print(json.dumps(row))
    return rows


def gpu_speed(n: int, d: int, repeats: int) -> list[dict]:
    """The CUDA twins on torch tensors: int8 / Hamming top-k vs float32 topk_cosine, same GPU."""
    import torch

    def timed(fn) -> float:
        def run() -> None:
            fn()
            torch.cuda.synchronize()

        return median_seconds(run, repeats, warmup=True)

    x = torch.from_numpy(unit_vectors(n, d, 0)).cuda()
    quantizer = Int8Quantizer.fit(x[:100_000].cpu().numpy())
    codes = torch.empty((n, d), dtype=torch.int8, device="cuda")
    for s in range(0, n, CHUNK):
        codes[s : s + CHUNK] = torch.from_numpy(quantizer.quantize(x[s : s + CHUNK].cpu().numpy()))
    bits = torch.from_numpy(binarize(x.cpu().numpy())).cuda()
    queries = unit_vectors(16, d, 1)
    rows = []
    for nq in (1, 16):
        qf = torch.from_numpy(queries[:nq]).cuda()
        q8 = torch.from_numpy(quantizer.quantize(queries[:nq])).cuda()
        qb = torch.from_numpy(binarize(queries[:nq])).cuda()
        times = {
            "float32 exact (ops.topk_cosine, CUDA)": timed(lambda qf=qf: ops.topk_cosine(qf, x, K)),
            "int8 top-k (ops.topk_int8, CUDA)": timed(lambda q8=q8: ops.topk_int8(q8, codes, K)),
            "Hamming top-k (ops.topk_hamming, CUDA)": timed(
                lambda qb=qb: ops.topk_hamming(qb, bits, K)
            ),
        }
        base = times["float32 exact (ops.topk_cosine, CUDA)"]
        for name, seconds in times.items():
            row = {
                "queries": nq,
                "method": name,
                "ms": round(1000 * seconds, 3),
                "speedup_vs_float32": round(base / seconds, 2),
            }
            rows.append(row)
            print(json.dumps(row))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--gpu", action="store_true", help="also time the CUDA twins")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    result: dict = {
        "machine": platform.processor() or platform.machine(),
        "n": args.n,
        "cpus": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_before": [round(v, 2) for v in os.getloadavg()],
    }
    print(json.dumps(result))
    if not args.skip_quality:
        result["scifact"] = quality(args.data)
    if not args.skip_speed:
        result["speed"] = speed(args.n, args.dim, args.repeats)
    if args.gpu:
        result["gpu_speed"] = gpu_speed(args.n, args.dim, args.repeats)
    args.out.mkdir(parents=True, exist_ok=True)
    name = (
        "bench_compact.json"
        if not (args.skip_speed or args.skip_quality)
        else "bench_compact-partial.json"
    )
    (args.out / name).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
