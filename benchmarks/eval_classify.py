"""Few-shot classification on Banking77: the classifier's modes next to logistic regression.

For 1, 5, 10 and 20 examples per intent (seeded draws from train.csv; mean and standard
deviation over 5 seeds) and for the full training set, every mode of
`embengine.tasks.classify.Classifier` and scikit-learn's LogisticRegression (the trained-
head stand-in, as MTEB uses it) are scored on the same embeddings of test.csv, in one run.
Predict time per 1,000 texts is measured with the full training set as examples on 500
test vectors (median of 3 repeats; embedding time, shared by all, is shown apart).

    python benchmarks/eval_classify.py [--data DIR] [--seeds 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import warnings
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embed_cache import cached_embed
from timing import median_seconds

from embengine import Engine
from embengine.tasks.classify import MODES, Classifier

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SHOTS = (1, 5, 10, 20)


def load_split(data: Path, split: str) -> tuple[list[str], np.ndarray]:
    with (data / "banking77" / f"{split}.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], np.array([r["category"] for r in rows])


def draw(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Row indices: `per_class` rows of every label, drawn without replacement."""
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [
            rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
            for c in np.unique(labels)
        ]
    )


def build(engine: Engine, x: np.ndarray, y: np.ndarray, mode: str) -> Classifier:
    clf = Classifier(engine, mode=mode)
    for label in np.unique(y):
        clf.add_vectors(str(label), x[y == label])
    return clf


def logistic(x: np.ndarray, y: np.ndarray) -> LogisticRegression:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "classes > 50% of samples" at 1 per class
        return LogisticRegression(max_iter=1000).fit(x, y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    args = parser.parse_args()

    engine = Engine()
    train_texts, y_train = load_split(args.data, "train")
    test_texts, y_test = load_split(args.data, "test")
    x_train = cached_embed(engine, train_texts, "banking77-train")
    x_test = cached_embed(engine, test_texts, "banking77-test")
    print(f"Banking77: {len(y_train)} train, {len(y_test)} test, {len(set(y_test))} intents")

    methods = [*MODES, "logistic regression"]
    accuracy: dict[str, dict[str, list[float]]] = {m: {} for m in methods}
    for shots in (*SHOTS, "full"):
        seeds = range(args.seeds) if shots != "full" else [0]
        for seed in seeds:
            rows = draw(y_train, shots, seed) if shots != "full" else np.arange(len(y_train))
            x, y = x_train[rows], y_train[rows]
            for mode in MODES:
                predicted = np.array(build(engine, x, y, mode).predict_vectors(x_test))
                accuracy[mode].setdefault(str(shots), []).append(
                    float((predicted == y_test).mean())
                )
            lr_accuracy = float((logistic(x, y).predict(x_test) == y_test).mean())
            accuracy["logistic regression"].setdefault(str(shots), []).append(lr_accuracy)
        print(f"  done: {shots} per class", flush=True)

    columns = [*map(str, SHOTS), "full"]
    print("\naccuracy % on test (mean ± std over seeds; full training set: one run)")
    print(
        f"{'method':22s}"
        + "".join(f"{c + ('/class' if c != 'full' else ''):>16s}" for c in columns)
    )
    for method in methods:
        cells = []
        for c in columns:
            values = 100 * np.array(accuracy[method][c])
            cells.append(
                f"{values.mean():.2f}" + (f" ± {values.std():.2f}" if len(values) > 1 else "")
            )
        print(f"{method:22s}" + "".join(f"{cell:>16s}" for cell in cells))

    print_timings(engine, x_train, y_train, x_test[:500], test_texts[:256])
    if args.json:
        args.json.write_text(json.dumps({"accuracy": accuracy}, indent=2))


def print_timings(
    engine: Engine, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, texts: list[str]
) -> None:
    print("\npredict time per 1,000 texts, full training set as examples (vectors given)")
    timings = {}
    for mode in MODES:
        clf = build(engine, x_train, y_train, mode)
        clf.predict_vectors(x_test[:10])  # builds the centred examples and centroids once
        timings[mode] = median_seconds(lambda clf=clf: clf.predict_vectors(x_test))
    lr = logistic(x_train, y_train)
    timings["logistic regression"] = median_seconds(lambda: lr.predict(x_test))
    embed_seconds = median_seconds(lambda: engine.embed([t + " " for t in texts]), repeats=1)
    for method, seconds in timings.items():
        print(f"  {method:22s} {1000 * seconds / len(x_test) * 1000:8.1f} ms")
    print(
        f"  {'embedding (all)':22s} {1000 * embed_seconds / len(texts) * 1000:8.1f} ms "
        f"({engine.describe()['device']})"
    )


if __name__ == "__main__":
    main()
