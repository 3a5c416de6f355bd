"""Entity matching on Abt-Buy: precision / recall / F1 of Engine.match against the gold pairs.

    python benchmarks/eval_dedup.py [--data DIR]

Abt product names (Abt.csv is latin-1) are matched to Buy names + manufacturer. Rows:
  cosine          embedding cosine only (identifier_weight=0)
  hybrid          cosine + the model-number term (the library default, identifier_weight=0.3)
  hybrid+confirm  hybrid, then StringConfirm (rapidfuzz + identifier check) on each candidate
each with mutual best match, and plain thresholds (no mutual rule) for reference, over a
threshold sweep; next to rapidfuzz token_set_ratio alone (mutual best, best threshold
picked WITH the labels: an upper bound for the string baseline).

Label-free thresholds: (a) the library default, 0.5, fixed before looking at the sweep's
labels; (b) Otsu's threshold on the histogram of every left row's best candidate score,
computed from scores only. Neither sees the gold mapping.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embed_cache import cached_embeddings

from embengine import Engine
from embengine.records import record_texts
from embengine.tasks.dedup import (
    Pairs,
    StringConfirm,
    match_candidates,
    select_matches,
)

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SWEEP = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
TEMPLATE = "{name} {manufacturer}"  # Abt has no manufacturer column: it reads as empty


def load(data: Path) -> tuple[list[dict], list[dict], set[tuple[int, int]]]:
    folder = data / "abt_buy"
    with open(folder / "Abt.csv", encoding="latin-1", newline="") as f:
        abt = list(csv.DictReader(f))
    with open(folder / "Buy.csv", encoding="utf-8", newline="") as f:
        buy = list(csv.DictReader(f))
    with open(folder / "abt_buy_perfectMapping.csv", encoding="utf-8", newline="") as f:
        gold_ids = {(r["idAbt"], r["idBuy"]) for r in csv.DictReader(f)}
    abt_row = {r["id"]: n for n, r in enumerate(abt)}
    buy_row = {r["id"]: n for n, r in enumerate(buy)}
    gold = {(abt_row[a], buy_row[b]) for a, b in gold_ids}
    return abt, buy, gold


def scores(pairs: Pairs, gold: set[tuple[int, int]]) -> tuple[float, float, float]:
    found = set(zip(pairs.i.tolist(), pairs.j.tolist(), strict=True))
    tp = len(found & gold)
    precision = tp / len(found) if found else 0.0
    recall = tp / len(gold)
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    return precision, recall, f1


def otsu_threshold(values: np.ndarray, bins: int = 100) -> float:
    """The cut that maximises the between-class variance of a 1-D sample (Otsu, 1979)."""
    hist, edges = np.histogram(values, bins=bins)
    centers = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(hist).astype(float)
    total = weight[-1]
    mean = np.cumsum(hist * centers)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mean[-1] * weight / total - mean) ** 2 / (weight * (total - weight))
    return float(edges[1:][np.nanargmax(between[:-1])])


def string_baseline(left: list[str], right: list[str], gold: set) -> tuple[float, tuple]:
    """rapidfuzz token_set_ratio, mutual best, at its best threshold (chosen with labels)."""
    from rapidfuzz import fuzz, process

    sim = process.cdist(left, right, scorer=fuzz.token_set_ratio, workers=1) / 100.0
    best_right, best_left = sim.argmax(1), sim.argmax(0)
    i = np.flatnonzero(best_left[best_right] == np.arange(len(left)))
    j = best_right[i]
    best = (0.0, (0.0, 0.0, 0.0))
    for t in np.arange(0.3, 1.0, 0.02):
        keep = sim[i, j] >= t
        result = scores(Pairs(i[keep], j[keep], sim[i, j][keep]), gold)
        if result[2] > best[1][2]:
            best = (float(t), result)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--backend", default="torch", help="encoder backend (results: torch)")
    args = parser.parse_args()
    abt, buy, gold = load(args.data)
    left = record_texts(abt, template=TEMPLATE)
    right = record_texts(buy, template=TEMPLATE)
    engine = Engine(backend=args.backend)
    producer = f"{engine.encoder.name}-{engine.encoder.precision}"
    a = cached_embeddings(engine.spec.fingerprint, producer, left, engine.embed)
    b = cached_embeddings(engine.spec.fingerprint, producer, right, engine.embed)
    print(f"Abt-Buy: {len(abt)} x {len(buy)} records, {len(gold)} gold pairs; {engine.spec.name}")

    confirm = StringConfirm()
    variants = {
        "cosine": {"identifier_weight": 0.0},
        "hybrid": {},
        "hybrid+confirm": {"confirm": confirm},
    }
    texts = {"left_texts": left, "right_texts": right}
    candidates = {}
    for name, options in variants.items():  # each variant's scored candidates, computed once
        started = time.perf_counter()
        candidates[name] = match_candidates(a, b, **texts, **options)
        seconds = time.perf_counter() - started
        print(f"{name}: {len(candidates[name].i)} candidate pairs in {seconds:.1f} s")
    print(f"\n{'variant':<16} {'rule':<9} " + " ".join(f"t={t:<11}" for t in SWEEP))
    print(f"{'':<26}" + " ".join(f"{'P/R/F1':<13}" for _ in SWEEP))
    for name, found in candidates.items():
        for mutual in (True, False):
            cells = []
            for t in SWEEP:
                p, r, f = scores(select_matches(found, t, mutual=mutual), gold)
                cells.append(f"{p:.2f}/{r:.2f}/{f:.3f}")
            rule = "mutual" if mutual else "plain"
            print(f"{name:<16} {rule:<9} " + " ".join(f"{c:<13}" for c in cells))

    # label-free thresholds: a fixed default, and Otsu on each left row's best candidate score
    print("\nat label-free thresholds (mutual best match):")
    print(f"{'variant':<16} {'threshold':<18} {'precision':>9} {'recall':>7} {'F1':>6}")
    for name, found in candidates.items():
        best_per_left = np.full(len(a), -np.inf)
        np.maximum.at(best_per_left, found.i, found.score)
        otsu = otsu_threshold(best_per_left[np.isfinite(best_per_left)])
        for label, t in (("default 0.50", 0.5), (f"Otsu {otsu:.3f}", otsu)):
            p, r, f = scores(select_matches(found, t), gold)
            print(f"{name:<16} {label:<18} {p:>9.3f} {r:>7.3f} {f:>6.3f}")

    t, (p, r, f) = string_baseline([row["name"] for row in abt], [row["name"] for row in buy], gold)
    print(f"{'token_set_ratio':<16} {f'best {t:.2f} (oracle)':<18} {p:>9.3f} {r:>7.3f} {f:>6.3f}")


if __name__ == "__main__":
    main()
