"""`python -m embengine.demo`: every job on a small bundled sample, with the default model.

Each section is a few lines of the public API: that is the point of the library.
"""

from __future__ import annotations

import csv
import io
import os
import time
from importlib.resources import files
from pathlib import Path

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


def bundled_tickets() -> list[tuple[str, str, str]]:
    """(split, label, text) rows of the bundled support tickets (embengine/data/tickets.tsv)."""
    rows = [line.split("\t") for line in sample_texts("tickets.tsv") if not line.startswith("#")]
    return [(split, label, text) for split, label, text in rows]


def bundled_events() -> tuple[list[str], list[str]]:
    """The bundled event log split as (normal history, stream to judge)."""
    lines = [line for line in sample_texts("events.log") if not line.startswith("#")]
    return lines[:40], lines[40:]


def demo_classify(engine: Engine) -> None:
    section("classify: support tickets from a few examples, a class added at run time")
    rows = bundled_tickets()
    examples: dict[str, list[str]] = {}
    for split, label, text in rows:
        if split == "train":
            examples.setdefault(label, []).append(text)
    clf = engine.classifier(examples)
    print(f"{len(clf.labels)} labels from {sum(clf.counts().values())} examples, no training")
    query = "Please cancel my account, I am leaving"
    print(f"  {query!r} -> {clf.predict([query])[0]} (no 'cancel' class yet)")
    clf.add_examples("cancel", [text for split, label, text in rows if split == "new"])
    print(
        f"  added 'cancel' from {clf.counts()['cancel']} examples: {query!r} -> "
        f"{clf.predict([query])[0]}"
    )
    test = [(label, text) for split, label, text in rows if split == "test"]
    predicted = clf.predict([text for _, text in test])
    correct = sum(p == label for p, (label, _) in zip(predicted, test, strict=True))
    print(f"  held-out tickets: {correct}/{len(test)} correct")


def demo_anomaly(engine: Engine) -> None:
    section("anomaly: an event stream judged against its recent normal traffic")
    history, stream = bundled_events()
    detector = engine.anomaly_detector()
    detector.fit(history)
    print(
        f"fitted on {len(history)} normal lines ({detector.patterns} distinct after masking);"
        f" threshold {detector.threshold:.3f}"
    )
    for event in detector.process(stream):
        if not event.anomalous:
            mark = "       "
        elif event.first:
            mark = f"ALERT {event.group}"
        else:
            mark = f"  (+{event.group})"
        print(f"  {mark} {event.score:.3f}  {event.text}")
    print(
        f"  one alert per new pattern: {len(detector.alert_groups)} groups, "
        f"lines per group {detector.alert_groups}"
    )


def demo_search(engine: Engine) -> None:
    """Hybrid search over the sample through a saved index, with a persistent store."""
    from embengine.index import VectorIndex

    section("search: an index over the sample, persisted, with an embedding store")
    folder = Path(os.environ.get("EMBENGINE_DEMO_DIR", "~/.cache/embengine/demo")).expanduser()
    texts = sample_texts()
    engine.attach_store(folder / "store.emb")
    try:
        index = engine.index(texts, lexical=True)
        stats = engine.last_stats
        print(
            f"indexed {len(texts)} texts: {stats.cache_hits} from the store in {folder}, "
            f"{stats.cache_misses} embedded now (set EMBENGINE_DEMO_DIR to move it)"
        )
        index.save(folder / "sample.index")
        index = VectorIndex.load(folder / "sample.index", engine=engine)
        queries = ["is it going to be cold?", "my computer is slow", "central bank policy"]
        for query in queries:
            scores, ids = index.search([query], 2, mode="hybrid")
            print(f"\n{query}  (hybrid: dense + BM25, reciprocal-rank fusion)")
            for score, text in zip(scores[0], index.texts(ids[0].tolist()), strict=True):
                print(f"  {score:.4f}  {text}")
    finally:
        engine.attach_store(None)


def sample_records(name: str) -> list[dict[str, str]]:
    """Rows of a CSV file bundled in embengine/data, as dicts."""
    text = files("embengine.data").joinpath(name).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def demo_dedup(engine: Engine) -> None:
    section("dedup: duplicate product listings, with the confirmation step")
    records = sample_records("products.csv")
    template = "{brand} {name}"
    loose = engine.dedup(records, 0.8, template=template)
    confirmed = engine.dedup(records, 0.8, template=template, confirm=True)
    print(
        f"{len(records)} listings; {len(loose.groups())} groups at cosine >= 0.8, then confirmed:"
    )
    for group in loose.groups():
        for i in group:
            label = confirmed.labels[i]
            verdict = "keep" if label == i else f"duplicate of #{label}"
            print(f"  #{i:<2} {verdict:<16} {records[i]['name']}")
        if len({confirmed.labels[i] for i in group}) > 1:
            print("      (split by the confirmation step: the model numbers differ)")
    print(f"kept {len(confirmed.representatives)} of {len(records)} listings")


def demo_recommend(engine: Engine) -> None:
    section("recommend: next movies for a user, including one added a moment ago")
    movies = {row["id"]: row for row in sample_records("movies.csv")}
    rec = engine.recommender(movies, template="{title}: {description}")
    title = {key: row["title"] for key, row in movies.items()}
    history = ["m01", "m02", "m03"]
    print("history: " + "; ".join(title[i] for i in history))
    print("recommended: " + "; ".join(title[i] for i in rec.for_user([history], k=3)[1][0]))
    new = {
        "title": "The Martian (2015)",
        "description": "Adventure, Drama, Sci-Fi; an astronaut stranded on Mars must survive",
    }
    rec.add_items({"new": new})
    title["new"] = f"{new['title']} [just added]"
    scores, after = rec.for_user([history], k=3)  # a batch of one history: row 0
    ranked = "; ".join(f"{title[i]} {s:.2f}" for i, s in zip(after[0], scores[0], strict=True))
    print(f"after add_items: {ranked}")
    similar = rec.similar(["m11"], k=2)[1][0]
    print(f"similar to {title['m11']}: " + "; ".join(title[i] for i in similar))


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
    demo_search(engine)
    demo_classify(engine)
    demo_anomaly(engine)
    demo_dedup(engine)
    demo_recommend(engine)


if __name__ == "__main__":
    main()
