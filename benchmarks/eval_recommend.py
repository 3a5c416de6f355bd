"""Content-based recommendation on MovieLens ml-latest-small: recall@10 and nDCG@10.

    python benchmarks/eval_recommend.py [--data DIR] [--seed 0]

Writes benchmarks/results/eval_recommend.json and eval_recommend.png (`--out` moves them).

Item text: "<title>. Genres: <g1>, <g2>. Tags: <up to 20 most frequent user tags>."
Protocol (fixed; seed 0): a rating >= 4.0 is a positive. A user's history is their
training positives, weighted by (rating - 3); relevant items are their test positives.
Users with no training or no test positive are skipped.

Cold-start split: 10% of the rated movies are held out from every training interaction;
each user ranks the held-out movies only (`candidates=`), so nothing but content can help:
popularity from training is zero on all of them (ties broken at random = random).
Tag applications follow popularity (1,572 of 9,742 movies are tagged), so text with tags
carries a popularity signal; the "tag count" row ranks by it alone to show its size.
Warm split: a random 20% of each user's ratings are held out; each user ranks every movie
outside their training ratings. Content, co-occurrence (alpha=1) and blends are compared
with popularity. Tags come from tags.csv for every movie (item metadata, not ratings).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embed_cache import cached_embeddings

from embengine import Engine
from embengine.tasks.recommend import Recommender

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"
POSITIVE = 4.0
K = 10


def load(data: Path) -> tuple[dict[int, str], np.ndarray, dict[int, int]]:
    """({movieId: text}, ratings as an (n, 3) array of userId, movieId, rating,
    {movieId: tag applications})."""
    folder = data / "movielens_small"
    tags: dict[str, Counter] = defaultdict(Counter)
    with open(folder / "tags.csv", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            tags[row["movieId"]][row["tag"].strip().lower()] += 1
    texts = {}
    with open(folder / "movies.csv", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            text = f"{row['title']}. Genres: {row['genres'].replace('|', ', ')}."
            if tags[row["movieId"]]:
                text += " Tags: " + ", ".join(t for t, _ in tags[row["movieId"]].most_common(20))
                text += "."
            texts[int(row["movieId"])] = text
    with open(folder / "ratings.csv", encoding="utf-8", newline="") as f:
        rows = [
            (int(r["userId"]), int(r["movieId"]), float(r["rating"])) for r in csv.DictReader(f)
        ]
    tag_counts = {int(m): sum(c.values()) for m, c in tags.items()}
    return texts, np.array(rows, dtype=np.float64), tag_counts


def histories(ratings: np.ndarray) -> dict[int, dict[int, float]]:
    """userId -> {movieId: weight} over positives, weight = rating - 3."""
    out: dict[int, dict[int, float]] = defaultdict(dict)
    for user, movie, rating in ratings:
        if rating >= POSITIVE:
            out[int(user)][int(movie)] = rating - 3.0
    return out


def metrics(ranked: list, relevant: set) -> tuple[float, float]:
    hits = [1.0 if item in relevant else 0.0 for item in ranked[:K]]
    recall = sum(hits) / len(relevant)
    dcg = sum(h / np.log2(r + 2) for r, h in enumerate(hits))
    ideal = sum(1 / np.log2(r + 2) for r in range(min(len(relevant), K)))
    return recall, dcg / ideal


def evaluate(name: str, rank, users: dict, relevant: dict) -> tuple[float, float]:
    """`rank(user_ids, histories)` -> one ranked id list per user."""
    started = time.perf_counter()
    order = sorted(relevant)
    ranked = rank(order, [users[u] for u in order])
    results = [metrics(list(r), relevant[u]) for u, r in zip(order, ranked, strict=True)]
    recall, ndcg = np.mean(results, axis=0)
    seconds = time.perf_counter() - started
    print(f"  {name:<38} recall@10 {recall:.4f}  nDCG@10 {ndcg:.4f}  ({seconds:.0f} s)")
    return float(recall), float(ndcg)


def row(scores: tuple[float, float]) -> dict[str, float]:
    return {"recall@10": round(scores[0], 4), "ndcg@10": round(scores[1], 4)}


def cold_start(
    texts: dict, vectors: np.ndarray, ratings: np.ndarray, tag_counts: dict, seed: int
) -> dict[str, dict[str, float]]:
    """{method: {"recall@10": .., "ndcg@10": ..}} on the cold-start split."""
    rng = np.random.default_rng(seed)
    rated = np.unique(ratings[:, 1]).astype(int)
    held = set(rng.choice(rated, len(rated) // 10, replace=False).tolist())
    is_held = np.isin(ratings[:, 1].astype(int), list(held))
    train, test = histories(ratings[~is_held]), histories(ratings[is_held])
    relevant = {u: set(m) for u, m in test.items() if u in train}
    held_ids = sorted(held)
    print(
        f"\ncold start: {len(held)} of {len(rated)} rated movies held out; "
        f"{len(relevant)} users with training and held-out positives; rank among held-out movies"
    )
    ids = list(texts)

    def random_rank(users: list, histories: list) -> list:
        return [rng.permutation(held_ids)[:K].tolist() for _ in users]

    out = {"random": row(evaluate("random", random_rank, train, relevant))}
    out["popularity"] = row(
        evaluate("popularity (no signal: random ties)", random_rank, train, relevant)
    )
    tagged = sorted(held_ids, key=lambda m: -tag_counts.get(m, 0))
    out["tag count"] = row(
        evaluate(
            "tag count (a popularity proxy in text)",
            lambda u, h: [tagged[:K]] * len(u),
            train,
            relevant,
        )
    )
    for label, options in (
        ("content, raw embeddings", {"center": False}),
        ("content, centred (default)", {}),
        ("content, centred, 3 centroids", {"profiles": 3}),
    ):
        rec = Recommender.from_vectors(vectors, ids, **options)
        out[label] = row(
            evaluate(
                label, lambda u, h, r=rec: r.for_user(h, K, candidates=held_ids)[1], train, relevant
            )
        )
    return out


def warm(
    texts: dict, vectors: np.ndarray, ratings: np.ndarray, seed: int
) -> dict[str, dict[str, float]]:
    """{method: {"recall@10": .., "ndcg@10": ..}} on the warm split."""
    rng = np.random.default_rng(seed)
    is_test = rng.random(len(ratings)) < 0.2
    train, test = histories(ratings[~is_test]), histories(ratings[is_test])
    seen: dict[int, list] = defaultdict(list)
    for user, movie, _ in ratings[~is_test]:
        seen[int(user)].append(int(movie))
    relevant = {u: set(m) for u, m in test.items() if u in train}
    print(
        f"\nwarm: 20% of each user's ratings held out; {len(relevant)} users; "
        "rank every movie outside the user's training ratings"
    )
    interactions = [(int(u), int(m)) for u, m, r in ratings[~is_test] if r >= POSITIVE]
    popularity = Counter(m for _, m in interactions)
    by_popularity = [m for m, _ in popularity.most_common()]

    def popular(users: list, histories: list) -> list:
        return [[m for m in by_popularity if m not in set(seen[u])][:K] for u in users]

    out = {"popularity": row(evaluate("popularity", popular, train, relevant))}
    for label, alpha in (
        ("content", 0.0),
        ("co-occurrence", 1.0),
        ("blend alpha=0.5", 0.5),
        ("blend alpha=0.8", 0.8),
    ):
        rec = Recommender.from_vectors(
            vectors, list(texts), profiles=1, alpha=alpha, interactions=interactions
        )
        out[label] = row(
            evaluate(
                label,
                lambda u, h, r=rec: r.for_user(h, K, exclude=[seen[user] for user in u])[1],
                train,
                relevant,
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--backend", default="torch", help="encoder backend (results: torch)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for JSON and PNG")
    args = parser.parse_args()
    texts, ratings, tag_counts = load(args.data)
    engine = Engine(backend=args.backend)
    producer = f"{engine.encoder.name}-{engine.encoder.precision}"
    vectors = cached_embeddings(
        engine.spec.fingerprint, producer, list(texts.values()), engine.embed
    )
    print(f"MovieLens small: {len(texts)} movies, {len(ratings)} ratings; {engine.spec.name}")
    results = {
        "model": engine.spec.name,
        "seed": args.seed,
        "cold start": cold_start(texts, vectors, ratings, tag_counts, args.seed),
        "warm": warm(texts, vectors, ratings, args.seed),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "eval_recommend.json").write_text(json.dumps(results, indent=2))
    try:
        from plots import plot_recommend
    except ImportError as exc:  # matplotlib is in the `bench` extra
        print(f"no figure: {exc}")
    else:
        print(f"figure: {plot_recommend(results, args.out / 'eval_recommend.png')}")


if __name__ == "__main__":
    main()
