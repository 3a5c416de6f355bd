"""One figure per job, from the numbers the evaluation scripts already hold.

Each `plot_*` takes the results as the script writes them to benchmarks/results/*.json and
writes a PNG (Agg backend, dpi 100), returning its path. The evaluation scripts call them at
the end; `python benchmarks/plots.py` redraws every figure whose JSON is present, so the
pictures in benchmarks/README.md can be refreshed without rerunning an evaluation.
matplotlib is in the `bench` extra; importing this module without it raises ImportError.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
MACHINE = "2-core AMD EPYC, shared, no GPU"
DPI = 100


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _paired_bars(ax, labels: Sequence[str], series: Mapping[str, Sequence[float]]) -> None:
    """Horizontal bars, one group per label (first label on top), one bar per series."""
    y = np.arange(len(labels))
    height = 0.8 / len(series)
    for i, (name, values) in enumerate(series.items()):
        bars = ax.barh(y - 0.4 + height * (i + 0.5), values, height, label=name)
        ax.bar_label(bars, fmt="%.3g", fontsize=7, padding=2)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=len(series))


# -- search --------------------------------------------------------------------------------


def plot_search(results: Mapping | Sequence[Mapping], path: Path = RESULTS / "eval_search.png"):
    """nDCG@10 and recall@100 per method.

    `results`: eval_search.json (`{"rows": [...]}`) or its list of rows, each with
    "method", "ndcg@10" and "recall@100" (percent).
    """
    rows = results["rows"] if isinstance(results, Mapping) else results
    labels = [r["method"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.4))
    _paired_bars(
        ax,
        labels,
        {"nDCG@10": [r["ndcg@10"] for r in rows], "recall@100": [r["recall@100"] for r in rows]},
    )
    ax.set_xlim(0, 105)
    ax.set_xlabel("percent (SciFact test queries)")
    ax.set_title("Semantic search on SciFact: exact, ANN, BM25 and hybrid")
    return _save(fig, path)


# -- anomaly -------------------------------------------------------------------------------

LINE_LOGS = ("bgl_2k", "zookeeper_2k", "openstack_2k", "spark_2k")


def plot_anomaly_summary(results: Mapping, path: Path = RESULTS / "eval_anomaly.png"):
    """Detector vs the centroid and TF-IDF baselines, from eval_anomaly.json.

    Left: share of normal lines flagged per log (lower is better; BGL's normal lines, the
    INFO lines elsewhere). Right: BGL's line-level AUROC and F1 (higher is better).
    """
    logs = [name for name in LINE_LOGS if name in results]
    methods = {"detector": "", "centroid": "centroid_", "TF-IDF": "tfidf_"}
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), width_ratios=(3, 2))
    x = np.arange(len(logs))
    width = 0.8 / len(methods)
    for i, (label, prefix) in enumerate(methods.items()):
        values = [100 * results[name][f"{prefix}flagged_normal"] for name in logs]
        bars = left.bar(x - 0.4 + width * (i + 0.5), values, width, label=label)
        left.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    left.set_xticks(x, [name.removesuffix("_2k") for name in logs])
    left.set_ylabel("normal lines flagged (%)")
    left.set_title("False alarms after the fit span (lower is better)")
    left.legend(fontsize=8)
    left.grid(True, axis="y", alpha=0.3)
    bgl = results.get("bgl_2k", {})
    if "auroc" in bgl:
        metrics = ("auroc", "f1")
        x = np.arange(len(metrics))
        for i, (label, prefix) in enumerate(methods.items()):
            values = [bgl[f"{prefix}{m}"] for m in metrics]
            bars = right.bar(x - 0.4 + width * (i + 0.5), values, width, label=label)
            right.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
        right.set_xticks(x, ["AUROC", "F1"])
        right.set_ylim(0, 1.05)
        right.set_title("BGL line labels (higher is better)")
        right.grid(True, axis="y", alpha=0.3)
    else:
        right.set_axis_off()
    fig.suptitle(f"Log anomaly detection, detector at its own threshold ({MACHINE})", fontsize=9)
    return _save(fig, path)


def plot_anomaly_timeline(
    timeline: Mapping, path: Path = RESULTS / "eval_anomaly-timeline.png", *, log: str = "BGL"
):
    """Streamed scores in line order, the detector's threshold, its alerts and the labels.

    `timeline`: {"scores": [float], "threshold": float or [float] per line, "anomalous":
    [bool] (flagged), "first": [bool] (opened an alert group), "labels": [bool] (optional
    ground truth)}, all in stream order.
    """
    scores = np.asarray(timeline["scores"], dtype=float)
    x = np.arange(len(scores))
    threshold = np.broadcast_to(np.asarray(timeline["threshold"], dtype=float), scores.shape)
    flagged = np.asarray(timeline.get("anomalous", scores > threshold), dtype=bool)
    first = np.asarray(timeline.get("first", np.zeros_like(flagged)), dtype=bool)
    fig, ax = plt.subplots(figsize=(10, 3.6))
    ax.plot(x, scores, lw=0.7, color="0.45", label="score")
    ax.plot(x, threshold, color="tab:orange", lw=1.2, label="threshold (at each line)")
    ax.scatter(x[flagged], scores[flagged], s=14, color="tab:red", label="flagged", zorder=3)
    ring = {"s": 70, "facecolors": "none", "edgecolors": "black", "zorder": 4}
    ax.scatter(x[first], scores[first], label="new alert group", **ring)
    if "labels" in timeline:
        labels = np.asarray(timeline["labels"], dtype=bool)
        low = np.full(labels.sum(), ax.get_ylim()[0])
        ax.scatter(x[labels], low, marker="|", s=60, color="tab:blue", label="labelled anomalous")
    ax.set_xlabel("line (stream order, after the fit span)")
    ax.set_ylabel("anomaly score")
    ax.set_title(f"{log}: anomaly scores as the detector streams the log")
    ax.legend(fontsize=8, ncols=5, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def plot_anomaly(results: Mapping, out: Path = RESULTS) -> list[Path]:
    """The summary chart, and the BGL timeline when the results carry one."""
    paths = [plot_anomaly_summary(results, Path(out) / "eval_anomaly.png")]
    timeline = results.get("bgl_2k", {}).get("timeline")
    if timeline:
        paths.append(plot_anomaly_timeline(timeline, Path(out) / "eval_anomaly-timeline.png"))
    return paths


# -- recommendation ------------------------------------------------------------------------


def plot_recommend(results: Mapping, path: Path = RESULTS / "eval_recommend.png"):
    """Recall@10 and nDCG@10 per method, cold start and warm side by side.

    `results`: eval_recommend.json, {"cold start": {method: {"recall@10": .., "ndcg@10": ..}},
    "warm": {...}} (fractions).
    """
    splits = [s for s in ("cold start", "warm") if s in results]
    fig, axes = plt.subplots(1, len(splits), figsize=(6 * len(splits), 3.8), squeeze=False)
    for ax, split in zip(axes[0], splits, strict=True):
        rows = results[split]
        _paired_bars(
            ax,
            list(rows),
            {
                "recall@10": [r["recall@10"] for r in rows.values()],
                "nDCG@10": [r["ndcg@10"] for r in rows.values()],
            },
        )
        ax.set_title(f"MovieLens small, {split}")
        ax.set_xlim(0, 1.25 * max(max(r.values()) for r in rows.values()))
    return _save(fig, path)


# -- classification and matching (called from eval_classify.py / eval_dedup.py) ------------


def plot_classify(
    results: Mapping[str, Mapping[str, Mapping[int | str, float]]],
    path: Path = RESULTS / "eval_classify.png",
):
    """Accuracy against labelled examples per class, one line per method, one panel per set.

    `results`: {dataset: {method: {examples_per_class: accuracy}}}; examples may be int or
    str keys (JSON turns them into strings); accuracy as a fraction or a percent, plotted as
    given. Example: {"banking77": {"kNN": {1: 0.52, 5: 0.78}, "logistic": {1: 0.55, 5: 0.83}}}.
    """
    if not results:
        raise ValueError("plot_classify: no data sets in results")
    fig, axes = plt.subplots(
        1, len(results), figsize=(4.5 * len(results), 3.6), squeeze=False, sharey=True
    )
    for ax, (dataset, methods) in zip(axes[0], results.items(), strict=True):
        for method, curve in methods.items():
            points = sorted((int(shots), float(acc)) for shots, acc in curve.items())
            ax.plot(*zip(*points, strict=True), marker="o", label=method)
        ax.set_xscale("log")
        ax.set_xlabel("labelled examples per class")
        ax.set_title(dataset)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("accuracy")
    fig.suptitle("Classification: accuracy vs examples per class", fontsize=10)
    return _save(fig, path)


def plot_match(
    results: Mapping[str, Mapping[str, Mapping[str, float]]],
    path: Path = RESULTS / "eval_match.png",
):
    """F1 per method, one panel per data set, precision / recall written beside each bar.

    `results`: {dataset: {method: {"precision": p, "recall": r, "f1": f}}} (fractions).
    """
    if not results:
        raise ValueError("plot_match: no data sets in results")
    height = max(len(m) for m in results.values())
    fig, axes = plt.subplots(
        1, len(results), figsize=(5.5 * len(results), 0.5 * height + 1.6), squeeze=False
    )
    for ax, (dataset, methods) in zip(axes[0], results.items(), strict=True):
        labels = list(methods)
        f1 = [methods[m]["f1"] for m in labels]
        bars = ax.barh(np.arange(len(labels)), f1, color="tab:green")
        notes = [
            f"{m['f1']:.2f} (P {m['precision']:.2f}, R {m['recall']:.2f})" for m in methods.values()
        ]
        ax.bar_label(bars, notes, fontsize=7, padding=2)
        ax.set_yticks(np.arange(len(labels)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 1.45 * max(max(f1), 1e-9))
        ax.set_xlabel("F1")
        ax.set_title(dataset)
        ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle("Deduplication / entity matching", fontsize=10)
    return _save(fig, path)


def main() -> None:
    """Redraw the search, recommendation and anomaly figures from benchmarks/results/.

    Classification and matching are drawn by their scripts, whose JSON shapes are their own.
    """
    drawn = []
    for name, draw in (
        ("eval_search", plot_search),
        ("eval_recommend", plot_recommend),
    ):
        source = RESULTS / f"{name}.json"
        if source.exists():
            drawn.append(draw(json.loads(source.read_text()), RESULTS / f"{name}.png"))
    source = RESULTS / "eval_anomaly.json"
    if source.exists():
        drawn += plot_anomaly(json.loads(source.read_text()), RESULTS)
    for path in drawn:
        print(path)


if __name__ == "__main__":
    main()
