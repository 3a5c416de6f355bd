"""STS-B dev Spearman for each embengine backend and precision, next to sentence-transformers.

    python benchmarks/eval_sts.py --data ../shared/data

Spearman correlation (x100) between the cosine of each sentence pair and the gold score,
all contenders in one run on the same model. Embeddings are cached in benchmarks/.cache.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from bench_encode import EMBENGINE_CONTENDERS, machine
from embed_cache import cached_embeddings
from scipy.stats import spearmanr

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def stsb_dev(data: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(first sentences, second sentences, gold scores 0..5) of STS-B dev."""
    left, right, gold = [], [], []
    for line in (data / "stsb" / "sts-dev.csv").read_text(encoding="utf-8").splitlines():
        cols = line.split("\t")
        left.append(cols[5])
        right.append(cols[6])
        gold.append(float(cols[4]))
    return left, right, np.array(gold)


def spearman(vectors: np.ndarray, n_pairs: int, gold: np.ndarray) -> float:
    a, b = vectors[:n_pairs], vectors[n_pairs:]
    return 100.0 * float(spearmanr((a * b).sum(axis=1), gold).statistic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--contenders", default=",".join(EMBENGINE_CONTENDERS))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    from embengine import Engine
    from embengine.models import default_model_dir, load_model_spec

    left, right, gold = stsb_dev(args.data)
    texts = left + right
    fingerprint = load_model_spec().fingerprint

    def st_embed(batch: list[str]) -> np.ndarray:
        model = SentenceTransformer(str(default_model_dir()), device="cpu")
        return model.encode(batch, batch_size=32, normalize_embeddings=True)

    reference = cached_embeddings(fingerprint, "sentence-transformers", texts, st_embed)
    scores = {"sentence-transformers": spearman(reference, len(left), gold)}
    cosines = {"sentence-transformers": 1.0}
    for name in args.contenders.split(","):

        def embed(batch: list[str], name: str = name) -> np.ndarray:
            return Engine(device="cpu", **EMBENGINE_CONTENDERS[name]).embed(batch)

        vectors = cached_embeddings(fingerprint, name, texts, embed)
        scores[name] = spearman(vectors, len(left), gold)
        cosines[name] = float((vectors * reference).sum(axis=1).min())
    print(f"\nSTS-B dev ({len(left)} pairs), {machine()}\n")
    print("| contender | Spearman x100 | vs sentence-transformers | min cosine to ST |")
    print("|---|---|---|---|")
    base = scores["sentence-transformers"]
    for name, score in scores.items():
        print(f"| {name} | {score:.2f} | {score - base:+.2f} | {cosines[name]:.6f} |")


if __name__ == "__main__":
    main()
