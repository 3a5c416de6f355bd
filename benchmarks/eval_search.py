"""Semantic search quality and cost on BEIR SciFact: exact, compact, ANN, BM25 and hybrid.

    python benchmarks/eval_search.py [--data DIR] [--out benchmarks/results] [--only compact]

Prints nDCG@10 (from a k = 10 search, as a user asking for ten gets) and recall@100 on the
300 test queries, with build time, search time per query (k = 100, 300 queries in one
call), bytes kept per vector and index size, for: exact search (FAISS flat and embengine's
top-k kernel), compact vectors through the public VectorIndex (compact="int8", "binary"
rescored on int8 codes or on float32 vectors), IVF, HNSW, BM25 (bm25s) and hybrid search
by reciprocal-rank and by normalised-score fusion. The fusion weights are tuned on the
train queries (qrels/train.tsv), never on test. Documents are embedded as title + " " +
text, as BEIR and MTEB do; embeddings come from the benchmark cache (embed_cache.py,
EMBENGINE_BENCH_CACHE), so only the first run pays for embedding the 5,183 abstracts.
`--only compact` runs the float32 and compact rows alone.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from embed_cache import cached_embed
from timing import median_seconds

from embengine import Engine
from embengine.index import VectorIndex
from embengine.index import _faiss as faiss_side

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"


@dataclass
class Beir:
    doc_ids: list[str]
    doc_texts: list[str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, dict[str, int]]]  # split -> query id -> doc id -> grade


def load_beir(folder: Path) -> Beir:
    docs = [json.loads(line) for line in (folder / "corpus.jsonl").open(encoding="utf-8")]
    queries = {}
    for line in (folder / "queries.jsonl").open(encoding="utf-8"):
        q = json.loads(line)
        queries[q["_id"]] = q["text"]
    qrels: dict[str, dict[str, dict[str, int]]] = {}
    for split in ("train", "test"):
        rows = (folder / "qrels" / f"{split}.tsv").read_text(encoding="utf-8").splitlines()[1:]
        split_qrels: dict[str, dict[str, int]] = {}
        for row in rows:
            qid, did, grade = row.split("\t")
            split_qrels.setdefault(qid, {})[did] = int(grade)
        qrels[split] = split_qrels
    return Beir(
        doc_ids=[d["_id"] for d in docs],
        doc_texts=[(d["title"] + " " + d["text"]).strip() for d in docs],
        queries=queries,
        qrels=qrels,
    )


def ndcg_at(ranked: np.ndarray, qids: list[str], qrels: dict[str, dict[str, int]], k: int) -> float:
    """Mean nDCG@k (BEIR / trec_eval: gain = grade, discount log2(rank + 1)), in percent."""
    total = 0.0
    for row, qid in enumerate(qids):
        rel = qrels[qid]
        gains = [rel.get(d, 0) for d in ranked[row, :k].tolist()]
        dcg = sum(g / np.log2(r + 2) for r, g in enumerate(gains))
        ideal = sorted(rel.values(), reverse=True)[:k]
        total += dcg / sum(g / np.log2(r + 2) for r, g in enumerate(ideal))
    return 100 * total / len(qids)


def recall_at(
    ranked: np.ndarray, qids: list[str], qrels: dict[str, dict[str, int]], k: int
) -> float:
    total = 0.0
    for row, qid in enumerate(qids):
        relevant = {d for d, g in qrels[qid].items() if g > 0}
        total += len(relevant & set(ranked[row, :k].tolist())) / len(relevant)
    return 100 * total / len(qids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--k", type=int, default=100, help="results per query (recall@k)")
    parser.add_argument("--only", choices=("compact",), help="run only these rows")
    args = parser.parse_args()
    beir = load_beir(args.data / "scifact")
    faiss_side.faiss_module()  # imported before anything is timed

    engine = Engine(device="cpu")
    started = time.perf_counter()
    doc_vectors = cached_embed(engine, beir.doc_texts, "scifact-corpus")
    print(f"corpus: {len(beir.doc_texts)} docs, {time.perf_counter() - started:.1f} s")
    splits = {s: sorted(q for q in beir.qrels[s] if q in beir.queries) for s in ("train", "test")}
    query_texts = {s: [beir.queries[q] for q in qids] for s, qids in splits.items()}
    query_vectors = {
        s: cached_embed(engine, texts, f"scifact-{s}-queries") for s, texts in query_texts.items()
    }

    def evaluate(name: str, index: VectorIndex, build_s: float, **options) -> dict:
        split = "test"
        queries = query_texts[split] if options.get("mode") in ("lexical", "hybrid") else None
        queries = queries if queries is not None else query_vectors[split]
        index.search(queries[:8], args.k, **options)  # warm-up (and BM25 build)
        search_s = median_seconds(lambda: index.search(queries, args.k, **options))
        _, ids = index.search(queries, args.k, **options)
        _, top10 = index.search(queries, 10, **options)
        row = {
            "method": name,
            "ndcg@10": round(ndcg_at(top10, splits[split], beir.qrels[split], 10), 2),
            "recall@100": round(recall_at(ids, splits[split], beir.qrels[split], 100), 2),
            "build_s": round(build_s, 3),
            "search_ms_per_query": round(1000 * search_s / len(queries), 3),
            "bytes_per_vector": index.bytes_per_vector,
            "index_mb": round(index.memory_bytes() / 2**20, 1),
        }
        print(json.dumps(row))
        return row

    def build(**options) -> tuple[VectorIndex, float]:
        index = VectorIndex(engine.dim, engine=engine, **options)
        started = time.perf_counter()
        texts = beir.doc_texts if options.get("lexical") else None
        index.add(doc_vectors, beir.doc_ids, texts=texts)
        return index, time.perf_counter() - started

    rows = []
    compact = (
        ("exact float32 (embengine top-k kernel)", {"kind": "flat", "exact": "kernel"}),
        ("int8 (compact='int8', oversample 4)", {"compact": "int8"}),
        ("binary + rescore int8 (compact='binary', oversample 10)", {"compact": "binary"}),
        (
            "binary + rescore float32 (rescore='float32')",
            {"compact": "binary", "rescore": "float32"},
        ),
    )
    for label, options in compact:
        index, build_s = build(device="cpu", **options)
        rows.append(evaluate(label, index, build_s))
    base = rows[0]["ndcg@10"]
    for row in rows[1:]:
        print(f"{row['method']}: {100 * row['ndcg@10'] / base:.1f}% of float32 nDCG@10")
    if args.only == "compact":
        write(rows, args.out, engine, "eval_search_compact")
        return
    for label, options in (
        ("exact (FAISS flat)", {"kind": "flat", "exact": "faiss"}),
        ("IVF (nlist sqrt(n) = 71, nprobe 48: defaults)", {"kind": "ivf"}),
        ("IVF (nlist 71, nprobe 16)", {"kind": "ivf", "nprobe": 16}),
        ("IVF (nlist 4 sqrt(n) = 287, nprobe 64)", {"kind": "ivf", "nlist": 287, "nprobe": 64}),
        ("HNSW (M 32, efSearch 128)", {"kind": "hnsw"}),
    ):
        index, build_s = build(device="cpu", **options)
        rows.append(evaluate(label, index, build_s))

    hybrid, build_s = build(device="cpu", kind="flat", lexical=True)
    started = time.perf_counter()
    hybrid.search(query_texts["test"][:1], 1, mode="lexical")  # builds BM25
    bm25_build_s = build_s + time.perf_counter() - started
    rows.append(evaluate("BM25 (bm25s, stemmed)", hybrid, bm25_build_s, mode="lexical"))
    for fusion in ("rrf", "score"):
        weight = tune_weight(hybrid, fusion, query_texts["train"], splits["train"], beir, args.k)
        label = f"hybrid {fusion} (dense weight {weight:.2f}, tuned on train)"
        rows.append(
            evaluate(label, hybrid, bm25_build_s, mode="hybrid", fusion=fusion, weight=weight)
        )
    write(rows, args.out, engine)


def tune_weight(
    index: VectorIndex, fusion: str, texts: list[str], qids: list[str], beir: Beir, k: int
) -> float:
    """The dense weight with the best train nDCG@10, on a 0.1 grid."""
    best = (-1.0, 0.5)
    for weight in np.arange(0.1, 0.95, 0.1):
        _, ids = index.search(texts, k, mode="hybrid", fusion=fusion, weight=float(weight))
        best = max(best, (ndcg_at(ids, qids, beir.qrels["train"], 10), float(weight)))
    return best[1]


def write(rows: list[dict], out: Path, engine: Engine, name: str = "eval_search") -> None:
    out.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.processor() or platform.machine()}, {faiss_side.faiss_gpu_count()} GPUs"
    (out / f"{name}.json").write_text(
        json.dumps({"model": engine.spec.name, "machine": machine, "rows": rows}, indent=2)
    )
    header = (
        "| method | nDCG@10 | recall@100 | build s | search ms/query | bytes/vector | index MB |"
    )
    lines = [header, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['ndcg@10']:.2f} | {r['recall@100']:.2f} | {r['build_s']:.2f} "
            f"| {r['search_ms_per_query']:.3f} | {r['bytes_per_vector']} | {r['index_mb']:.1f} |"
        )
    table = "\n".join(lines)
    (out / f"{name}.md").write_text(table + "\n")
    print("\n" + table)
    if name != "eval_search":
        return
    try:
        from plots import plot_search
    except ImportError as exc:  # matplotlib is in the `bench` extra
        print(f"no figure: {exc}")
    else:
        print(f"figure: {plot_search(rows, out / 'eval_search.png')}")


if __name__ == "__main__":
    main()
