"""`python -m embengine.demo`: every job on a small bundled sample, with the default model.

Each section is a few lines of the public API: that is the point of the library.
"""

from __future__ import annotations

import time
from importlib.resources import files

import numpy as np

from embengine import Engine


def sample_texts(name: str = "sample.txt") -> list[str]:
    """Lines of a text file bundled in embengine/data."""
    text = files("embengine.data").joinpath(name).read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 70 - len(title)))


def demo_embed(engine: Engine) -> None:
    section("embed: nearest neighbours in the bundled sample")
    texts = sample_texts()
    started = time.perf_counter()
    vectors = engine.embed(texts)
    seconds = time.perf_counter() - started
    print(f"embedded {len(texts)} texts in {seconds:.2f} s: {len(texts) / seconds:.0f} texts/s")
    queries = ["Will it rain this weekend?", "How do I bake bread?", "Why is my internet so slow?"]
    scores = engine.embed(queries) @ vectors.T
    for query, row in zip(queries, scores, strict=True):
        best = np.argsort(-row)[:2]
        print(f"\n{query}")
        for i in best:
            print(f"  {row[i]:.3f}  {texts[i]}")

    bulk = texts * 40
    engine.embed(bulk[:64])  # warm-up
    started = time.perf_counter()
    engine.embed([f"{t} ({i})" for i, t in enumerate(bulk)])
    seconds = time.perf_counter() - started
    print(f"\nthroughput: {len(bulk) / seconds:.0f} texts/s on {len(bulk)} distinct texts")


def main() -> None:
    started = time.perf_counter()
    engine = Engine()
    info = engine.describe()
    print(
        f"embengine demo: {info['model']} ({info['dim']}-d) on {info['device']}, "
        f"{info['backend']} backend, {info['precision']}; loaded in "
        f"{time.perf_counter() - started:.1f} s"
    )
    demo_embed(engine)


if __name__ == "__main__":
    main()
