"""Classification on banking77, banking77_oos and hwu64: every mode next to trained baselines.

    python benchmarks/eval_classify.py [--data DIR] [--seeds 3] [--json PATH]

For 1, 5, 10 and 20 examples per intent (seeded draws from train; mean and standard
deviation over seeds) and for the full training set, every mode of
`embengine.tasks.classify.Classifier` and scikit-learn's LogisticRegression (the trained-
head stand-in, as MTEB uses it) are scored on the same embeddings of test, in one run.
"centroid" and "knn" are the plain rules, on the same vectors.

Out of scope (banking77_oos, full training set as examples): AUROC of `oos_score` next to
1 - max cosine to an example, 1 - max `predict_proba`, 1 - max centroid cosine and 1 - max
logistic-regression probability; then in-scope accuracy, out-of-scope recall and precision
at threshold="auto". Two label sets: the files as published (about 6-7 % of their labels
disagree with Banking77's, many across the in-scope / out-of-scope line; see the data
README) and clean labels rebuilt from banking77/ as that README says (its 27 held-out
intents -> out of scope; train.csv fits, test.csv scores).

How the defaults were chosen (printed by this script, leave-one-set-out):
* accuracy: head_c (1, 4, 16) x head_weight (1/3, 1/2) of "auto", on full training data;
  for each set, the setting with the best worst-case margin over logistic regression on the
  OTHER two sets is printed; the default is the majority choice.
* out of scope: oos_head_c (0.5, 1, 2, 4) x oos_weight (0.3, 0.4, 0.5), chosen on the
  validation splits of the two protocols (published: banking77_oos valid + id-oos/valid;
  clean: a fixed fifth of banking77 train), by the worst margin over the best simple rule;
  reported on the test splits. lda_temperature=10 comes from the previous pass.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from datasets_cm import DEFAULT_DATA, intent_split
from embed_cache import cached_embed

from embengine import Engine
from embengine.tasks.classify import MODES, Classifier

HEAD_GRID = [(c, w) for c in (1.0, 4.0, 16.0) for w in (1 / 3, 1 / 2)]
OOS_GRID = [(c, w) for c in (0.5, 1.0, 2.0, 4.0) for w in (0.3, 0.4, 0.5)]

SETS = ("banking77", "banking77_oos", "hwu64")
RESULTS = Path(__file__).resolve().parent / "results"
SHOTS = (1, 5, 10, 20)


def vectors(engine: Engine, data: Path, name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    texts, labels = intent_split(data, name, split)
    key = f"{name}-{split.replace('/', '-')}"
    return cached_embed(engine, texts, key, progress=False), np.array(labels)


def draw(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Row indices: `per_class` rows of every label (all of a smaller one), no replacement."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in np.unique(labels):
        pool = np.flatnonzero(labels == c)
        rows.append(rng.choice(pool, min(per_class, len(pool)), replace=False))
    return np.concatenate(rows)


def build(x: np.ndarray, y: np.ndarray, mode: str, threshold: str | None = None) -> Classifier:
    return Classifier.from_vectors(x, [str(v) for v in y], mode=mode, threshold=threshold)


def logistic(x: np.ndarray, y: np.ndarray) -> LogisticRegression:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "classes > 50% of samples" at 1 per class
        return LogisticRegression(max_iter=1000).fit(x, y)


def accuracy_table(name: str, x_train, y_train, x_test, y_test, seeds: int) -> dict:
    methods = [*MODES, "logistic regression"]
    accuracy: dict[str, dict[str, list[float]]] = {m: {} for m in methods}
    for shots in (*SHOTS, "full"):
        for seed in range(seeds) if shots != "full" else [0]:
            rows = draw(y_train, shots, seed) if shots != "full" else np.arange(len(y_train))
            x, y = x_train[rows], y_train[rows]
            clf = build(x, y, "auto")  # one snapshot: derived values shared by the modes
            for mode in MODES:
                clf.mode = mode
                predicted = np.array(clf.predict_vectors(x_test))
                accuracy[mode].setdefault(str(shots), []).append(
                    float((predicted == y_test).mean())
                )
            lr = float((logistic(x, y).predict(x_test) == y_test).mean())
            accuracy["logistic regression"].setdefault(str(shots), []).append(lr)
    columns = [*map(str, SHOTS), "full"]
    print(f"\n== {name}: accuracy % on test (mean ± std over seeds; full train: one run)")
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
    full = {m: accuracy[m]["full"][0] for m in methods}
    verdict = "met" if full["auto"] >= full["logistic regression"] else "MISSED"
    print(
        f"full data: auto {100 * full['auto']:.2f} vs logistic regression "
        f"{100 * full['logistic regression']:.2f}: {verdict}"
    )
    return accuracy


def head_grid(x_train, y_train, x_test, y_test) -> dict[tuple[float, float], float]:
    """Full-data accuracy of "auto" for every (head_c, head_weight) in HEAD_GRID."""
    clf = build(x_train, y_train, "auto")
    scores = {}
    for c, w in HEAD_GRID:
        clf.head_c, clf.head_weight = c, w  # the head is cached per c on the snapshot
        scores[(c, w)] = float((np.array(clf.predict_vectors(x_test)) == y_test).mean())
    return scores


def leave_one_set_out(margins: dict[str, dict], what: str) -> None:
    """For each set, the grid point with the best worst margin on the other sets."""
    print(f"\n== {what}: leave-one-set-out choice (margin = ours - best baseline, points)")
    names = list(margins)
    points = list(margins[names[0]])
    print(f"{'setting':>18s}" + "".join(f"{n:>22s}" for n in names))
    for point in points:
        cells = "".join(f"{100 * margins[n][point]:>+22.2f}" for n in names)
        print(f"{tuple(round(v, 3) for v in point)!s:>18s}{cells}")
    for held in names:
        others = [n for n in names if n != held]
        best = max(points, key=lambda p: min(margins[n][p] for n in others))
        print(
            f"   chosen on {' + '.join(others)}: {tuple(round(v, 3) for v in best)}; "
            f"on {held}: {100 * margins[held][best]:+.2f}"
        )


def simple_rules(clf: Classifier, x_train, y_train, x_eval) -> dict[str, np.ndarray]:
    """The simple out-of-scope rules the acceptance compares against (higher = OOS)."""
    lr = logistic(x_train, y_train)
    return {
        "1 - max cosine (1-NN)": 1 - (x_eval @ x_train.T).max(axis=1),
        "1 - max predict_proba": 1 - clf.predict_proba_vectors(x_eval).max(axis=1),
        "1 - max centroid cosine": 1 - centroid_cosine(x_train, y_train, x_eval),
        "1 - max LR probability": 1 - lr.predict_proba(x_eval).max(axis=1),
    }


def oos_grid(x_train, y_train, x_in, x_out) -> dict[tuple[float, float], float]:
    """AUROC margin over the best simple rule for every (oos_head_c, oos_weight)."""
    x_eval = np.concatenate([x_in, x_out])
    is_oos = np.r_[np.zeros(len(x_in)), np.ones(len(x_out))]
    clf = build(x_train, y_train, "auto")
    rules = simple_rules(clf, x_train, y_train, x_eval)
    best_simple = max(roc_auc_score(is_oos, score) for score in rules.values())
    margins = {}
    for c, w in OOS_GRID:
        clf.oos_head_c, clf.oos_weight = c, w  # references cached per oos_head_c
        margins[(c, w)] = roc_auc_score(is_oos, clf.oos_score_vectors(x_eval)) - best_simple
    return margins


def out_of_scope(title: str, x_train, y_train, x_in, y_in, x_out) -> dict:
    """AUROC of the default score, its two parts and every simple rule; then the default
    classifier at threshold='auto'."""
    x_eval = np.concatenate([x_in, x_out])
    is_oos = np.r_[np.zeros(len(x_in)), np.ones(len(x_out))]
    clf = build(x_train, y_train, "auto", threshold="auto")
    parts = Classifier.from_vectors(x_train, [str(v) for v in y_train])
    both = {"oos_score (default)": clf.oos_score_vectors(x_eval)}
    for name, weight in (("its neighbour part alone", 1.0), ("its head part alone", 0.0)):
        parts.oos_weight = weight
        both[name] = parts.oos_score_vectors(x_eval)
    rules = simple_rules(clf, x_train, y_train, x_eval)
    auroc = {rule: float(roc_auc_score(is_oos, score)) for rule, score in {**both, **rules}.items()}
    print(
        f"\n== out of scope, {title}: {len(x_train)} examples, {len(x_in)} in scope + "
        f"{len(x_out)} out of scope"
    )
    for rule, value in auroc.items():
        print(f"   AUROC {rule:26s} {value:.3f}")
    best_simple = max(auroc[rule] for rule in rules)
    verdict = "met" if auroc["oos_score (default)"] >= best_simple else "MISSED"
    print(f"   oos_score >= best simple rule ({best_simple:.3f}): {verdict}")
    predicted = np.array(clf.predict_vectors(x_eval), dtype=object)
    refused = predicted == clf.unknown
    in_accuracy = float((predicted[: len(x_in)] == y_in).mean())
    recall = float(refused[len(x_in) :].mean())
    precision = float(refused[len(x_in) :].sum() / max(refused.sum(), 1))
    print(
        f"   threshold='auto' ({clf.threshold:.4f}): in-scope accuracy {100 * in_accuracy:.2f} %, "
        f"out-of-scope recall {recall:.3f}, precision {precision:.3f}, "
        f"in-scope refused {refused[: len(x_in)].mean():.3f}"
    )
    return {
        "auroc": auroc,
        "in_scope_accuracy": in_accuracy,
        "oos_recall": recall,
        "oos_precision": precision,
    }


def centroid_cosine(x_train: np.ndarray, y_train: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The plain centroid rule's best cosine (vectors centred on the examples' mean)."""
    mean = x_train.mean(axis=0)

    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    z = unit(x_train - mean)
    centroids = unit(np.stack([z[y_train == c].mean(axis=0) for c in np.unique(y_train)]))
    return (unit(x - mean) @ centroids.T).max(axis=1)


def held_out_intents(data: Path) -> set[str]:
    readme = (data / "banking77_oos" / "README.md").read_text(encoding="utf-8")
    listed = readme.split("namely the distinct values of `id-oos/*/label_original`:")[1]
    return set(re.findall(r"[a-z_]+", listed.split(".\n")[0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    args = parser.parse_args()
    engine = Engine()
    results: dict[str, dict] = {}
    head_margins: dict[str, dict] = {}
    for name in SETS:
        x_train, y_train = vectors(engine, args.data, name, "train")
        x_test, y_test = vectors(engine, args.data, name, "test")
        results[name] = accuracy_table(name, x_train, y_train, x_test, y_test, args.seeds)
        lr_full = results[name]["logistic regression"]["full"][0]
        grid = head_grid(x_train, y_train, x_test, y_test)
        head_margins[name] = {point: value - lr_full for point, value in grid.items()}
    leave_one_set_out(head_margins, "auto's (head_c, head_weight), full data, vs LR")

    held = list(held_out_intents(args.data))
    oos_margins = {}
    x_train, y_train = vectors(engine, args.data, "banking77_oos", "train")
    x_in, _ = vectors(engine, args.data, "banking77_oos", "valid")
    x_out, _ = vectors(engine, args.data, "banking77_oos", "id-oos/valid")
    oos_margins["published valid"] = oos_grid(x_train, y_train, x_in, x_out)
    x_train, y_train = vectors(engine, args.data, "banking77", "train")
    valid = np.zeros(len(y_train), bool)
    valid[::5] = True  # a fixed fifth of train stands in for a validation split
    known = ~np.isin(y_train, held)
    oos_margins["clean valid"] = oos_grid(
        x_train[known & ~valid],
        y_train[known & ~valid],
        x_train[known & valid],
        x_train[~known & valid],
    )
    leave_one_set_out(oos_margins, "(oos_head_c, oos_weight), AUROC vs the best simple rule")
    both = max(OOS_GRID, key=lambda p: min(m[p] for m in oos_margins.values()))
    print(f"   chosen on both validation protocols: {both} (reported on test below)")

    x_train, y_train = vectors(engine, args.data, "banking77_oos", "train")
    x_in, y_in = vectors(engine, args.data, "banking77_oos", "test")
    x_out, _ = vectors(engine, args.data, "banking77_oos", "id-oos/test")
    results["oos_published"] = out_of_scope(
        "banking77_oos files as published", x_train, y_train, x_in, y_in, x_out
    )
    x_train, y_train = vectors(engine, args.data, "banking77", "train")
    x_test, y_test = vectors(engine, args.data, "banking77", "test")
    keep, out = ~np.isin(y_train, held), np.isin(y_test, held)
    results["oos_clean"] = out_of_scope(
        "clean labels rebuilt from banking77 (data README)",
        x_train[keep],
        y_train[keep],
        x_test[~out],
        y_test[~out],
        x_test[out],
    )
    print("\n== acceptance (defaults)")
    for name in SETS:
        full = {m: 100 * results[name][m]["full"][0] for m in ("auto", "logistic regression")}
        verdict = "met" if full["auto"] >= full["logistic regression"] else "MISSED"
        print(
            f"   {name}: full-data accuracy auto {full['auto']:.2f} vs LR "
            f"{full['logistic regression']:.2f}: {verdict}"
        )
    for key in ("oos_published", "oos_clean"):
        auroc = results[key]["auroc"]
        best = max(v for k, v in auroc.items() if k.startswith("1 - "))
        verdict = "met" if auroc["oos_score (default)"] >= best else "MISSED"
        print(
            f"   {key}: oos_score AUROC {auroc['oos_score (default)']:.3f} vs best simple "
            f"rule {best:.3f}: {verdict}"
        )
    if args.json:
        results["grids"] = {
            what: {name: {str(p): v for p, v in grid.items()} for name, grid in margins.items()}
            for what, margins in (("head", head_margins), ("oos", oos_margins))
        }
        args.json.write_text(json.dumps(results, indent=2))
    curves = {
        name: {
            method: {  # the few-shot curve; "full" (all training data) is in the printed table
                shots: 100 * float(np.mean(values))
                for shots, values in per_shots.items()
                if shots != "full"
            }
            for method, per_shots in results[name].items()
        }
        for name in SETS
    }
    try:
        from plots import plot_classify
    except ImportError as exc:  # matplotlib is in the `bench` extra
        print(f"no figure: {exc}")
    else:
        print(f"figure: {plot_classify(curves, RESULTS / 'eval_classify.png')}")


if __name__ == "__main__":
    main()
