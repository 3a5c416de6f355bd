"""Anomaly detection on Loghub BGL 2k, in a streaming protocol, next to a TF-IDF baseline.

Protocol: the detector is fitted on the first 50% of the normal lines (in log order); every
other line is then fed to `process` in log order, which scores each batch and learns from
the lines it judged normal. Reported per configuration: AUROC of the streamed scores, and
precision / recall / F1 of the flags at the threshold the detector calibrated itself.
False alarms: normal lines only, shuffled (stationary traffic), fit on half, stream the
rest: the flagged share should stay near 1 - quantile; the in-order normal log is shown too.

    python benchmarks/eval_anomaly.py [--data DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embed_cache import PrecomputedEngine

from embengine import Engine
from embengine.tasks.anomaly import DEFAULT_MASK, AnomalyDetector

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def load_bgl(data: Path) -> tuple[list[str], np.ndarray]:
    """Message texts and per-line labels (True = alert) of BGL_2k, in log order."""
    with (data / "bgl_2k" / "BGL_2k.log_structured.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["Content"] for r in rows], np.array([r["Label"] != "-" for r in rows])


class TfidfEngine:
    """TF-IDF vectors (fitted on the normal lines the detector is fitted on) as an 'engine'."""

    def __init__(self, fit_texts: list[str]) -> None:
        self.vectorizer = TfidfVectorizer(token_pattern=r"[^\s]+").fit(fit_texts)
        self.dim = len(self.vectorizer.vocabulary_)
        self.spec = None

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.vectorizer.transform(texts).toarray().astype(np.float32)


def stream_eval(detector: AnomalyDetector, texts: list[str], labels: np.ndarray) -> dict:
    """Fit on the first half of the normal lines, process the rest in order, score it."""
    normal = np.flatnonzero(~labels)
    fit = normal[: len(normal) // 2]
    rest = np.setdiff1d(np.arange(len(texts)), fit)
    detector.fit([texts[i] for i in fit])
    started = time.perf_counter()
    results = list(detector.process([texts[i] for i in rest]))
    seconds = time.perf_counter() - started
    scores = np.array([r.score for r in results])
    flags = np.array([r.anomalous for r in results])
    truth = labels[rest]
    tp = int((flags & truth).sum())
    precision = tp / max(int(flags.sum()), 1)
    recall = tp / int(truth.sum())
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    return {
        "auroc": float(roc_auc_score(truth, scores)),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "flagged": float(flags.mean()),
        "ms_per_line": 1000 * seconds / len(rest),
    }


def false_alarm_rate(detector: AnomalyDetector, normal_texts: list[str]) -> float:
    half = len(normal_texts) // 2
    detector.fit(normal_texts[:half])
    return float(np.mean([r.anomalous for r in detector.process(normal_texts[half:])]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    args = parser.parse_args()

    texts, labels = load_bgl(args.data)
    print(f"BGL 2k: {len(texts)} lines, {int(labels.sum())} alerts; {platform.processor()}")
    engine = Engine()
    masked = DEFAULT_MASK.apply(texts)
    emb = PrecomputedEngine(engine, {"bgl2k-raw": texts, "bgl2k-maskedp": masked})
    fit_normal = [masked[i] for i in np.flatnonzero(~labels)[: int((~labels).sum()) // 2]]
    tfidf = TfidfEngine(fit_normal)  # masked vocabulary from the fit lines only

    configs = {
        "embedding, masked, detector defaults": (emb, {}),
        "embedding, raw, defaults otherwise": (emb, {"mask": None}),
        "embedding, masked, centroid only": (emb, {"novelty_weight": None}),
        "embedding, raw, centroid only": (emb, {"novelty_weight": None, "mask": None}),
        "embedding, raw, 8 centroids only": (
            emb,
            {"novelty_weight": None, "mask": None, "centroids": 8},
        ),
        "embedding, masked, 8 centroids + novelty": (emb, {"centroids": 8}),
        "TF-IDF, masked, centroid only": (tfidf, {"novelty_weight": None}),
        "TF-IDF, masked, 8 centroids only": (tfidf, {"novelty_weight": None, "centroids": 8}),
        "TF-IDF, masked, default rule": (tfidf, {}),
    }
    results = {}
    print(
        f"\n{'configuration':42s} {'AUROC':>6s} {'P':>5s} {'R':>5s} {'F1':>5s} "
        f"{'flagged':>7s} {'ms/line':>7s}"
    )
    for name, (eng, kwargs) in configs.items():
        r = stream_eval(AnomalyDetector(eng, **kwargs), texts, labels)
        results[name] = r
        print(
            f"{name:42s} {r['auroc']:6.3f} {r['precision']:5.2f} {r['recall']:5.2f} "
            f"{r['f1']:5.3f} {r['flagged']:7.3f} {r['ms_per_line']:7.2f}",
            flush=True,
        )

    normal_texts = [texts[i] for i in np.flatnonzero(~labels)]
    order = np.random.default_rng(0).permutation(len(normal_texts))
    detector = AnomalyDetector(emb)
    nominal = 1 - detector.quantile
    shuffled = false_alarm_rate(detector, [normal_texts[i] for i in order])
    in_order = false_alarm_rate(AnomalyDetector(emb), normal_texts)
    print(
        f"\nfalse alarms, all-normal log, defaults (nominal {nominal:.3f}): "
        f"shuffled {shuffled:.3f} ({shuffled / nominal:.2f}x), in log order {in_order:.3f} "
        f"({in_order / nominal:.2f}x)"
    )
    results["false_alarms"] = {"nominal": nominal, "shuffled": shuffled, "in_order": in_order}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
