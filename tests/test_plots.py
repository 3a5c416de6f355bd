"""benchmarks/plots.py: every figure function draws a PNG from synthetic numbers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="matplotlib (bench / test extra) is not installed")

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def plots():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "plots.py"
    spec = importlib.util.spec_from_file_location("embengine_bench_plots", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def is_png(path: Path) -> bool:
    return path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG


def test_search(plots, tmp_path):
    rows = [
        {"method": "exact", "ndcg@10": 64.5, "recall@100": 92.5},
        {"method": "hybrid", "ndcg@10": 73.2, "recall@100": 94.8},
    ]
    assert is_png(plots.plot_search({"rows": rows}, tmp_path / "s.png"))
    assert is_png(plots.plot_search(rows, tmp_path / "rows.png"))


def anomaly_results(timeline: bool) -> dict:
    line = {"flagged_normal": 0.04, "centroid_flagged_normal": 0.09, "tfidf_flagged_normal": 0.05}
    bgl = dict(line, auroc=0.94, f1=0.59, centroid_auroc=0.83, centroid_f1=0.33)
    bgl |= {"tfidf_auroc": 0.83, "tfidf_f1": 0.22}
    if timeline:
        rng = np.random.default_rng(0)
        scores = rng.random(200)
        bgl["timeline"] = {
            "scores": scores.tolist(),
            "threshold": 0.9,
            "anomalous": (scores > 0.9).tolist(),
            "first": (scores > 0.97).tolist(),
            "labels": (rng.random(200) > 0.9).tolist(),
        }
    return {"bgl_2k": bgl, "zookeeper_2k": dict(line), "spark_2k": dict(line)}


def test_anomaly_summary_only(plots, tmp_path):
    paths = plots.plot_anomaly(anomaly_results(timeline=False), tmp_path)
    assert [p.name for p in paths] == ["eval_anomaly.png"]
    assert is_png(paths[0])


def test_anomaly_with_timeline(plots, tmp_path):
    paths = plots.plot_anomaly(anomaly_results(timeline=True), tmp_path)
    assert [p.name for p in paths] == ["eval_anomaly.png", "eval_anomaly-timeline.png"]
    assert all(is_png(p) for p in paths)
    # a per-line threshold (as eval_anomaly.py stores it) draws too
    timeline = anomaly_results(timeline=True)["bgl_2k"]["timeline"]
    timeline["threshold"] = [0.9] * 100 + [0.85] * 100
    assert is_png(plots.plot_anomaly_timeline(timeline, tmp_path / "t.png"))


def test_recommend(plots, tmp_path):
    row = {"recall@10": 0.28, "ndcg@10": 0.27}
    results = {"cold start": {"random": row, "content": row}, "warm": {"blend": row}}
    assert is_png(plots.plot_recommend(results, tmp_path / "r.png"))


def test_classify(plots, tmp_path):
    results = {
        "banking77": {"kNN": {1: 0.5, 5: 0.7, 20: 0.85}, "logistic": {"1": 0.55, "5": 0.8}},
        "other": {"kNN": {2: 0.6, 8: 0.75}},
    }
    assert is_png(plots.plot_classify(results, tmp_path / "c.png"))
    with pytest.raises(ValueError, match="no data sets"):
        plots.plot_classify({}, tmp_path / "empty.png")


def test_match(plots, tmp_path):
    prf = {"precision": 0.8, "recall": 0.6, "f1": 0.686}
    results = {"abt_buy": {"embedding": prf, "rapidfuzz": prf}, "amazon_google": {"x": prf}}
    assert is_png(plots.plot_match(results, tmp_path / "m.png"))
    with pytest.raises(ValueError, match="no data sets"):
        plots.plot_match({}, tmp_path / "empty.png")
