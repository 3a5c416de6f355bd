"""Log anomaly detection on six logs, the detector's defaults beside two baselines.

Protocols (the detector always at its own calibrated threshold, never an oracle one):

* Line-labelled BGL 2k, "after the fit span": fit on the first half of the normal lines in
  log order, then `process` only the lines that come after the last fitted line, in order
  (the detector learns as it goes). AUROC of the streamed scores; P / R / F1 of its flags.
* Unlabelled Zookeeper / OpenStack / Spark 2k (false alarms on drifting normal traffic):
  fit on the first half of the lines in log order, `process` the rest; flagged share of the
  INFO lines (the proxy for normal) and of all lines.
* Unit-labelled Hadoop (applications) and LO2 (runs): each unit is scored by
  `score_groups` against a detector fitted on every *other* normal unit (leave-one-out, so
  no unit is scored by a fit that saw it). Reported: failed units that rank above the
  median normal unit, and the unit-level AUROC.

* Nominal rate (stationary traffic): the normal lines of the four line-level logs shuffled,
  fit on half, stream the rest; alert groups raised per pattern new to the fit, against the
  nominal 1 - quantile.

Also printed: alert groups raised (`Detection.first`) next to the distinct masked patterns
that are new after the fit, and two baselines in the same run: the plain centroid rule
(distance to the fit lines' mean, threshold at the 99th percentile of the fit lines) and
the same rule on TF-IDF vectors of the masked lines. Only distinct masked lines are
embedded (cached in EMBENGINE_BENCH_CACHE).

    python benchmarks/eval_anomaly.py [--data DIR] [--json PATH] [--sweep]

Figures (benchmarks/plots.py): a summary chart and BGL's score timeline, written beside
--json (benchmarks/results/ without it).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import warnings
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embed_cache import PrecomputedEngine

from embengine import Engine
from embengine.tasks.anomaly import DEFAULT_MASK, AnomalyDetector

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LINE_SETS = {"bgl_2k": "BGL_2k", "zookeeper_2k": "Zookeeper_2k"}
LINE_SETS |= {"openstack_2k": "OpenStack_2k", "spark_2k": "Spark_2k"}


# -- data ----------------------------------------------------------------------------------


def load_structured(data: Path, name: str) -> list[dict[str, str]]:
    """Loghub's structured CSV of a 2k sample, in log order."""
    with (data / name / f"{LINE_SETS[name]}.log_structured.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def read_lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_hadoop(data: Path) -> tuple[list[str], list[str], dict[str, bool]]:
    """Every container line of the 17 applications, its application, and failed or not."""
    root = data / "hadoop_17apps"
    failed, heading = {}, None
    for line in (root / "abnormal_label.txt").read_text().splitlines():
        if line.rstrip().endswith(":") and not line.startswith("+"):
            heading = line.rstrip()[:-1]
        elif match := re.match(r"\+ (application_\S+)", line):
            failed[match.group(1)] = heading != "Normal"
    texts, groups = [], []
    for app in sorted(p for p in root.iterdir() if p.is_dir()):
        for log in sorted(app.glob("*.log")):
            lines = read_lines(log)
            texts += lines
            groups += [app.name] * len(lines)
    return texts, groups, {g: failed[g] for g in dict.fromkeys(groups)}


def load_lo2(data: Path) -> tuple[list[str], list[str], dict[str, bool]]:
    """Every line of the 7 runs (two services each), its run, and error run or not."""
    texts, groups = [], []
    for run in sorted((data / "lo2_sample" / "Labeled").iterdir()):
        for log in sorted(run.glob("*.log")):
            lines = read_lines(log)
            texts += lines
            groups += [run.name] * len(lines)
    return texts, groups, {g: not g.startswith("correct") for g in dict.fromkeys(groups)}


# -- baselines -----------------------------------------------------------------------------


def centroid_rule(fit: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, float]:
    """Plain rule: distance to the fit lines' mean; threshold = 99th percentile of the fit."""
    mean = fit.mean(axis=0)
    mean /= np.linalg.norm(mean)
    return 1.0 - test @ mean, float(np.quantile(1.0 - fit @ mean, 0.99))


def tfidf_vectors(fit_texts: list[str], texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    vectorizer = TfidfVectorizer(token_pattern=r"[^\s]+").fit(fit_texts)
    return (
        vectorizer.transform(fit_texts).toarray().astype(np.float32),
        vectorizer.transform(texts).toarray().astype(np.float32),
    )


def prf(flags: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    tp = int((flags & truth).sum())
    precision = tp / max(int(flags.sum()), 1)
    recall = tp / max(int(truth.sum()), 1)
    return precision, recall, 2 * precision * recall / max(precision + recall, 1e-12)


# -- protocols -----------------------------------------------------------------------------


def line_set(name: str, rows: list[dict[str, str]], engine, options: dict) -> dict:
    """Fit, stream the rest, and judge; baselines on the same split."""
    texts = [r["Content"] for r in rows]
    masked = DEFAULT_MASK.apply(texts)
    if name == "bgl_2k":
        truth = np.array([r["Label"] != "-" for r in rows])
        normal = np.flatnonzero(~truth)
        fit = normal[: len(normal) // 2]
        rest = np.arange(fit.max() + 1, len(texts))
        normal_rest = ~truth[rest]
    else:
        fit, rest = np.arange(len(texts) // 2), np.arange(len(texts) // 2, len(texts))
        truth = None
        normal_rest = np.array([rows[i]["Level"] == "INFO" for i in rest])
    detector = AnomalyDetector(engine, **options).fit([texts[i] for i in fit])
    judged = list(detector.process([texts[i] for i in rest]))
    scores = np.array([d.score for d in judged])
    flags = np.array([d.anomalous for d in judged])
    known = {masked[i] for i in fit}
    result = {
        "lines": len(rest),
        "flagged": float(flags.mean()),
        "flagged_normal": float(flags[normal_rest].mean()),
        "alert_groups": sum(d.first for d in judged),
        "new_patterns": len({masked[i] for i in rest} - known),
        "threshold": float(judged[0].threshold),
    }
    fit_vectors = engine.embed([masked[i] for i in fit])
    test_vectors = engine.embed([masked[i] for i in rest])
    tf_fit, tf_test = tfidf_vectors([masked[i] for i in fit], [masked[i] for i in rest])
    for label, (fv, tv) in {
        "centroid": (fit_vectors, test_vectors),
        "tfidf": (tf_fit, tf_test),
    }.items():
        base_scores, threshold = centroid_rule(fv, tv)
        base_flags = base_scores > threshold
        result[f"{label}_flagged_normal"] = float(base_flags[normal_rest].mean())
        if truth is not None:
            result[f"{label}_auroc"] = float(roc_auc_score(truth[rest], base_scores))
            result[f"{label}_f1"] = prf(base_flags, truth[rest])[2]
    if truth is not None:
        result["auroc"] = float(roc_auc_score(truth[rest], scores))
        result["precision"], result["recall"], result["f1"] = prf(flags, truth[rest])
        # the streamed run itself, for the timeline figure (plots.plot_anomaly_timeline)
        result["timeline"] = {
            "scores": [round(float(d.score), 5) for d in judged],
            "threshold": [round(float(d.threshold), 5) for d in judged],
            "anomalous": flags.tolist(),
            "first": [bool(d.first) for d in judged],
            "labels": truth[rest].tolist(),
        }
    return result


def stationary(name: str, rows: list[dict[str, str]], engine, options: dict) -> tuple[int, int]:
    """Nominal-rate check: the normal lines shuffled (no drift), fit on half, stream the rest.

    Returns (patterns new to the fit that raised an alert group, patterns new to the fit).
    """
    if name == "bgl_2k":
        texts = [r["Content"] for r in rows if r["Label"] == "-"]
    else:
        texts = [r["Content"] for r in rows if r["Level"] == "INFO"]
    texts = [texts[i] for i in np.random.default_rng(0).permutation(len(texts))]
    half = len(texts) // 2
    masked = DEFAULT_MASK.apply(texts)
    detector = AnomalyDetector(engine, **options).fit(texts[:half])
    judged = list(detector.process(texts[half:]))
    new = set(masked[half:]) - set(masked[:half])
    return sum(d.first for d in judged), len(new)


def unit_set(texts: list[str], groups: list[str], failed: dict[str, bool], engine, options):
    """Leave-one-out over the normal units; `score_groups` gives each unit one score."""
    masked = DEFAULT_MASK.apply(texts)
    keys = np.array(groups)
    units = list(failed)
    normal = [u for u in units if not failed[u]]
    vectors = engine.embed(masked)
    scores: dict[str, dict[str, float]] = {"profile": {}, "mean": {}, "max": {}}
    baseline: dict[str, dict[str, float]] = {"centroid": {}, "tfidf": {}}
    for unit in units:
        reference = np.isin(keys, [u for u in normal if u != unit])
        inside = keys == unit
        detector = AnomalyDetector(engine, **options)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # references larger than the window are fine here
            detector.fit_vectors(vectors[reference], groups=list(keys[reference]))
        for how in scores:
            result = detector.score_groups_vectors(vectors[inside], [unit] * inside.sum(), how=how)
            scores[how][unit] = float(result.scores[0])
        base, _ = centroid_rule(vectors[reference], vectors[inside])
        baseline["centroid"][unit] = float(base.mean())
        fit_masked = [m for m, r in zip(masked, reference, strict=True) if r]
        tf_fit, tf_test = tfidf_vectors(
            fit_masked, [m for m, r in zip(masked, inside, strict=True) if r]
        )
        baseline["tfidf"][unit] = float(centroid_rule(tf_fit, tf_test)[0].mean())
    out = {}
    for label, per_unit in {**scores, **baseline}.items():
        truth = np.array([failed[u] for u in units])
        values = np.array([per_unit[u] for u in units])
        median = np.median(values[~truth])
        out[label] = {
            "above_median": int((values[truth] > median).sum()),
            "failed": int(truth.sum()),
            "auroc": float(roc_auc_score(truth, values)),
            "scores": per_unit,
        }
    return out


# -- report --------------------------------------------------------------------------------


def evaluate(data: Path, engine, options: dict, *, units: bool = True) -> dict:
    results = {}
    for name in LINE_SETS:
        results[name] = line_set(name, load_structured(data, name), engine, options)
    alerts = new = 0
    for name in LINE_SETS:
        a, n = stationary(name, load_structured(data, name), engine, options)
        alerts, new = alerts + a, new + n
    results["stationary"] = {"alert_groups": alerts, "new_patterns": new}
    if units:
        results["hadoop_17apps"] = unit_set(*load_hadoop(data), engine, options)
        results["lo2_sample"] = unit_set(*load_lo2(data), engine, options)
    return results


def print_table(results: dict) -> None:
    print("\nLine level, after the fit span (detector at its own threshold; baselines at the")
    print("99th percentile of the fit lines' centroid distance):")
    print(
        f"{'set':14s} {'lines':>5s} {'AUROC':>6s} {'F1':>5s} {'P':>5s} {'R':>5s} "
        f"{'normal flagged':>14s} {'groups':>6s} {'new pat':>7s} | "
        f"{'centroid AUROC/F1/fa':>20s} | {'TF-IDF AUROC/F1/fa':>18s}"
    )
    for name in LINE_SETS:
        r = results[name]
        auroc = f"{r['auroc']:6.3f}" if "auroc" in r else f"{'':6s}"
        f1 = f"{r['f1']:5.3f} {r['precision']:5.2f} {r['recall']:5.2f}" if "f1" in r else " " * 17
        bases = []
        for label in ("centroid", "tfidf"):
            fa = f"{100 * r[f'{label}_flagged_normal']:.1f}%"
            if f"{label}_auroc" in r:
                bases.append(f"{r[f'{label}_auroc']:.3f}/{r[f'{label}_f1']:.3f}/{fa}")
            else:
                bases.append(fa)
        print(
            f"{name:14s} {r['lines']:5d} {auroc} {f1} {100 * r['flagged_normal']:13.1f}% "
            f"{r['alert_groups']:6d} {r['new_patterns']:7d} | {bases[0]:>20s} | {bases[1]:>18s}"
        )
    print("('normal flagged' = BGL's normal lines, the INFO lines elsewhere; 'groups' = alert")
    print("groups raised; 'new pat' = distinct masked lines not in the fit)")
    st = results["stationary"]
    print(
        f"Stationary check (normal lines shuffled, all four logs pooled): "
        f"{st['alert_groups']} alert groups for {st['new_patterns']} new patterns "
        f"({100 * st['alert_groups'] / max(st['new_patterns'], 1):.1f}%)"
    )
    print("\nUnit level, leave-one-out over normal units (failed units above the median normal")
    print("unit / failed units, unit AUROC):")
    labels = ["profile", "mean", "max", "centroid", "tfidf"]
    print(f"{'set':14s} " + " ".join(f"{label:>14s}" for label in labels))
    for name in ("hadoop_17apps", "lo2_sample"):
        cells = [
            f"{r['above_median']}/{r['failed']} {r['auroc']:.2f}"
            for r in (results[name][label] for label in labels)
        ]
        print(f"{name:14s} " + " ".join(f"{c:>14s}" for c in cells))
    print("(profile = default aggregation of score_groups; centroid / tfidf = mean line")
    print("distance to the reference mean, embeddings / TF-IDF)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument(
        "--sweep", action="store_true", help="also print the settings the defaults were chosen from"
    )
    args = parser.parse_args()

    corpora = {name: [r["Content"] for r in load_structured(args.data, name)] for name in LINE_SETS}
    corpora["hadoop"] = load_hadoop(args.data)[0]
    corpora["lo2"] = load_lo2(args.data)[0]
    datasets = {
        f"anomaly-{name}-distinct": sorted(set(DEFAULT_MASK.apply(texts)))
        for name, texts in corpora.items()
    }
    for name, texts in corpora.items():
        distinct = len(datasets[f"anomaly-{name}-distinct"])
        print(f"{name}: {len(texts)} lines, {distinct} distinct after masking")
    engine = PrecomputedEngine(Engine(), datasets)

    results = evaluate(args.data, engine, {})
    print_table(results)
    if args.sweep:
        print("\nSweep, line-level sets (defaults changed one at a time; each cell: flagged")
        print("share of the INFO lines / alert groups raised):")
        for options in (
            {"quantile": 0.9},
            {"quantile": 0.98},
            {"novelty_weight": 3.0},
            {"admit_after": 5},
            {"admit_after": 20},
            {"admit_after": None},
            {"novelty_weight": None},
            {"centroids": 4},
        ):
            r = evaluate(args.data, engine, options, units=False)
            line = ", ".join(
                f"{n.split('_')[0]} {100 * r[n]['flagged_normal']:.1f}%/{r[n]['alert_groups']}g"
                for n in LINE_SETS
                if n != "bgl_2k"
            )
            print(
                f"{json.dumps(options):28s} BGL AUROC {r['bgl_2k']['auroc']:.3f} "
                f"F1 {r['bgl_2k']['f1']:.3f} {r['bgl_2k']['alert_groups']}g | {line}"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float))
    try:
        from plots import plot_anomaly
    except ImportError as exc:  # matplotlib is in the `bench` extra
        print(f"no figures: {exc}")
    else:
        out = args.json.parent if args.json else Path(__file__).resolve().parent / "results"
        for path in plot_anomaly(results, out):
            print(f"figure: {path}")


if __name__ == "__main__":
    main()
