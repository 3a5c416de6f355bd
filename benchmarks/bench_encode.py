"""Encoder throughput: embengine (each backend and precision) vs sentence-transformers.

All contenders embed the same real texts (STS-B sentences, mixed lengths) on the same
machine in one run. Repeats are round-robin (contender A, B, C, then A, B, C again), so
load from other processes hits every contender alike; the table shows medians.

    python benchmarks/bench_encode.py --data ../shared/data            # the main table
    python benchmarks/bench_encode.py --tune                           # CPU batch budget grid

Reported: texts/s, real tokens/s, ratio to sentence-transformers, min cosine to its
embeddings, useful GFLOP/s (~22 MFLOP per real token for all-MiniLM-L6-v2) next to an fp32
sgemm measured in the same round-robin, and the repeats case (half the texts repeat).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

FLOP_PER_TOKEN = 22e6  # all-MiniLM-L6-v2: 6 layers x 2 x (4 x 384^2 + 2 x 384 x 1536) + attention
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"
# name -> Engine keyword arguments
EMBENGINE_CONTENDERS = {
    "torch-fp32": {"backend": "torch", "precision": "fp32"},
    "onnx-fp32": {"backend": "onnx", "precision": "fp32"},
    "onnx-int8": {"backend": "onnx", "precision": "int8"},
}
TUNE_GRID = [(1024, 16), (2048, 32), (4096, 64), (8192, 128), (16384, 256)]


def stsb_sentences(data: Path) -> list[str]:
    """Distinct STS-B sentences (train then dev), in file order."""
    seen: dict[str, None] = {}
    for split in ("sts-train.csv", "sts-dev.csv"):
        for line in (data / "stsb" / split).read_text(encoding="utf-8").splitlines():
            for sentence in line.split("\t")[5:7]:
                if sentence.strip():
                    seen.setdefault(sentence.strip(), None)
    return list(seen)


def corpus(data: Path, n: int, seed: int = 0) -> list[str]:
    """n distinct real sentences, shuffled so every batch plan sees mixed lengths."""
    sentences = stsb_sentences(data)
    if n > len(sentences):
        raise ValueError(f"--n {n} exceeds the {len(sentences)} distinct STS-B sentences")
    order = np.random.default_rng(seed).permutation(len(sentences))[:n]
    return [sentences[i] for i in order]


def round_robin(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds per run of each contender, interleaved repeat by repeat."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for repeat in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
            print(f"  repeat {repeat + 1}/{repeats} {name}: {times[name][-1]:.2f} s", flush=True)
    return times


def sgemm(m: int = 4096, k: int = 384, n: int = 1536) -> tuple[Callable[[], object], float]:
    """An fp32 matrix product the size of a BERT FFN layer, and its FLOP count."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    reps = 20
    return (lambda: [a @ b for _ in range(reps)]), 2.0 * m * k * n * reps


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--n", type=int, default=2000, help="texts (default 2000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--contenders", default=",".join(EMBENGINE_CONTENDERS))
    parser.add_argument("--tune", action="store_true", help="grid of CPU batch budgets instead")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_encode.json")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from embengine import Engine

    texts = corpus(args.data, args.n)
    print(f"machine: {machine()}; {len(texts)} STS-B sentences", flush=True)
    if args.tune:
        tune(texts, args.repeats)
        return

    from sentence_transformers import SentenceTransformer

    from embengine.models import default_model_dir

    st = SentenceTransformer(str(default_model_dir()), device="cpu")

    def st_encode(batch: list[str]) -> np.ndarray:
        return st.encode(batch, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)

    engines = {
        name: Engine(device="cpu", **EMBENGINE_CONTENDERS[name])
        for name in args.contenders.split(",")
    }
    reference = st_encode(texts)
    tokens = 0
    cosines = {}
    for name, engine in engines.items():
        got = engine.embed(texts)  # also the warm-up
        tokens = engine.last_stats.tokens
        cosines[name] = float((got * reference).sum(axis=1).min())
    gemm, gemm_flop = sgemm()
    runs: dict[str, Callable[[], object]] = {"sentence-transformers": lambda: st_encode(texts)}
    runs |= {name: (lambda e=engine: e.embed(texts)) for name, engine in engines.items()}
    runs["sgemm"] = gemm
    times = round_robin(runs, args.repeats)
    median = {name: statistics.median(t) for name, t in times.items()}
    sgemm_gflops = gemm_flop / median["sgemm"] / 1e9
    rows = []
    for name in ["sentence-transformers", *engines]:
        seconds = median[name]
        rows.append(
            {
                "contender": name,
                "texts_per_s": len(texts) / seconds,
                "tokens_per_s": tokens / seconds,
                "ratio_to_st": median["sentence-transformers"] / seconds,
                "min_cosine_to_st": cosines.get(name, 1.0),
                "useful_gflops": tokens * FLOP_PER_TOKEN / seconds / 1e9,
                "seconds": times[name],
            }
        )
    repeats = repeats_case(engines.get("onnx-fp32") or next(iter(engines.values())), texts, args)
    report = {
        "machine": machine(),
        "texts": len(texts),
        "tokens": tokens,
        "mean_tokens": tokens / len(texts),
        "sgemm_gflops": sgemm_gflops,
        "rows": rows,
        "repeats_case": repeats,
    }
    print_table(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


def repeats_case(engine: object, texts: list[str], args: argparse.Namespace) -> dict[str, object]:
    """Half the texts repeat: embed (repeats encoded once) vs encoding every text."""
    from embengine.engine import EmbedStats

    rng = np.random.default_rng(1)
    distinct = texts[: len(texts) // 2]
    repeated = [distinct[i] for i in rng.integers(0, len(distinct), len(texts) - len(distinct))]
    mixed = [*distinct, *repeated]
    mixed = [mixed[i] for i in rng.permutation(len(mixed))]

    def every_text_encoded() -> np.ndarray:
        return engine._encode(mixed, EmbedStats(), False)  # type: ignore[attr-defined]

    times = round_robin(
        {"embed (repeats once)": lambda: engine.embed(mixed), "encode all": every_text_encoded},
        args.repeats,
    )
    got = engine.embed(mixed)  # type: ignore[attr-defined]
    index = {text: i for i, text in enumerate(distinct)}
    alone = engine.embed(distinct)  # type: ignore[attr-defined]
    identical = bool(np.array_equal(got, alone[[index[t] for t in mixed]]))
    speedup = statistics.median(times["encode all"]) / statistics.median(
        times["embed (repeats once)"]
    )
    return {
        "texts": len(mixed),
        "distinct": len(distinct),
        "speedup": speedup,
        "identical_vectors": identical,
    }


def tune(texts: list[str], repeats: int) -> None:
    """texts/s of the default CPU backend for each (batch_tokens, max_batch_size)."""
    from embengine import Engine

    engines = {
        f"batch_tokens={bt} max_batch_size={bs}": Engine(
            device="cpu", batch_tokens=bt, max_batch_size=bs
        )
        for bt, bs in TUNE_GRID
    }
    for engine in engines.values():
        engine.embed(texts[:64])
    times = round_robin({k: (lambda e=e: e.embed(texts)) for k, e in engines.items()}, repeats)
    best = min(times, key=lambda k: statistics.median(times[k]))
    print("\n| budget | texts/s (median) |\n|---|---|")
    for name, t in times.items():
        mark = " (best)" if name == best else ""
        print(f"| {name}{mark} | {len(texts) / statistics.median(t):.1f} |")


def print_table(report: dict) -> None:
    print(
        f"\n{report['machine']}: {report['texts']} STS-B sentences, mean "
        f"{report['mean_tokens']:.1f} tokens; sgemm {report['sgemm_gflops']:.1f} GFLOP/s\n"
    )
    print(
        "| contender | texts/s | tokens/s | vs sentence-transformers | min cosine to ST "
        "| useful GFLOP/s |"
    )
    print("|---|---|---|---|---|---|")
    for r in report["rows"]:
        print(
            f"| {r['contender']} | {r['texts_per_s']:.1f} | {r['tokens_per_s']:.0f} "
            f"| {r['ratio_to_st']:.2f}x | {r['min_cosine_to_st']:.6f} | {r['useful_gflops']:.1f} |"
        )
    rep = report["repeats_case"]
    print(
        f"\nrepeats: {rep['texts']} texts, {rep['distinct']} distinct: embed is "
        f"{rep['speedup']:.2f}x encoding every text; identical vectors: {rep['identical_vectors']}"
    )


if __name__ == "__main__":
    main()
