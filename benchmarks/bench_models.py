"""Speed of the non-BERT paths (transformers' AutoModel on torch, its unfused ONNX export)
against sentence-transformers' encode on the same directory, with BERT beside them.

The models have random weights at all-MiniLM-L6-v2's size (hidden 384, 6 layers, 12 heads,
the MiniLM tokenizer): speed depends on shapes, not on weights, and nothing is downloaded.
Prints texts/s (median of --repeats) and each backend's ratio to sentence-transformers in
the same run, and the min cosine to sentence-transformers' vectors.

    PYTHONPATH=. python benchmarks/bench_models.py --texts 256 --repeats 3
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import median_seconds

from embengine import Engine
from embengine.models import default_model_dir

SIZE = {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12}


def make_dir(root: Path, arch: str) -> Path:
    """A random-weight `arch` model at MiniLM's size, saved by sentence-transformers."""
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    if arch == "bert":
        return default_model_dir()
    torch.manual_seed(0)
    hf = root / f"{arch}-hf"
    tokenizer_files = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
    hf.mkdir()
    for name in (*tokenizer_files, "vocab.txt"):
        shutil.copy(default_model_dir() / name, hf / name)
    common = {**SIZE, "intermediate_size": 1536, "vocab_size": 30522, "pad_token_id": 0}
    config = {
        "mpnet": lambda: transformers.MPNetConfig(max_position_embeddings=514, **common),
        "xlm-roberta": lambda: transformers.XLMRobertaConfig(max_position_embeddings=514, **common),
    }[arch]()
    transformers.AutoModel.from_config(config).save_pretrained(hf)
    modules = [Transformer(str(hf), max_seq_length=256), Pooling(384, "mean"), Normalize()]
    out = root / arch
    SentenceTransformer(modules=modules, device="cpu").save(str(out))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch
    from sentence_transformers import SentenceTransformer

    lines = (Path(__file__).resolve().parents[1] / "embengine/data/sample.txt").read_text()
    base = [t for t in lines.splitlines() if t.strip()]
    texts = [f"{base[i % len(base)]} ({i})" for i in range(args.texts)]
    print(f"torch threads {torch.get_num_threads()}, {len(texts)} texts, median of {args.repeats}")
    print(f"{'model':12} {'path':28} {'texts/s':>8} {'vs ST':>6} {'min cos':>8}")
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for arch in ("bert", "mpnet", "xlm-roberta"):
            path = make_dir(Path(tmp), arch)
            st = SentenceTransformer(str(path), device="cpu", local_files_only=True)
            want = st.encode(texts, batch_size=32)
            st_s = median_seconds(lambda st=st: st.encode(texts, batch_size=32), args.repeats)
            print(f"{arch:12} {'sentence-transformers':28} {len(texts) / st_s:8.1f} {1.0:6.2f}")
            for backend in ("torch", "onnx"):
                engine = Engine(path, device="cpu", backend=backend)
                got = engine.embed(texts)
                cos = float((got * want / np.linalg.norm(want, axis=1, keepdims=True)).sum(1).min())
                seconds = median_seconds(lambda e=engine: e.embed(texts), args.repeats)
                label = f"embengine {backend}" + (
                    " (fused)" if arch == "bert" and backend == "onnx" else ""
                )
                speed = f"{len(texts) / seconds:8.1f} {st_s / seconds:6.2f}"
                print(f"{arch:12} {label:28} {speed} {cos:8.5f}")


if __name__ == "__main__":
    main()
