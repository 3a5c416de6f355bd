"""Write tests/data/golden_minilm.npz: sentence-transformers' embeddings of real sentences.

The tests compare embengine against this file, so sentence-transformers stays out of the
runtime and test dependencies. Run it again only when the default model changes:

    python benchmarks/make_golden.py --data ../shared/data
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

N_SENTENCES = 240
EDGE_CASES = [
    "",
    "   ",
    "Ünïcödé, emoji 🚀 and CJK 文字 in one line.",
    "word " * 400,  # longer than the model's 256 tokens: truncated
    "ACME Corporation",
    "Acme Corp",
]


def real_sentences(data: Path, n: int) -> list[str]:
    """The first n distinct sentences of STS-B dev (tab-separated, sentence in column 6)."""
    seen: dict[str, None] = {}
    for line in (data / "stsb" / "sts-dev.csv").read_text(encoding="utf-8").splitlines():
        cols = line.split("\t")
        for sentence in cols[5:7]:
            seen.setdefault(sentence.strip(), None)
        if len(seen) >= n:
            break
    return list(seen)[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "tests" / "data" / "golden_minilm.npz",
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    from embengine.models import default_model_dir

    texts = real_sentences(args.data, N_SENTENCES) + EDGE_CASES
    model = SentenceTransformer(str(default_model_dir()), device="cpu")
    vectors = model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, texts=np.array(texts), embeddings=vectors.astype(np.float32))
    print(f"wrote {len(texts)} embeddings {vectors.shape} to {args.out}")


if __name__ == "__main__":
    main()
