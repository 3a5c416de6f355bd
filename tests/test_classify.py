"""Classifier: accuracy, classes added and removed, out-of-scope score, open set, files, threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from embengine.demo import bundled_tickets
from embengine.errors import InvalidInputError, NotFoundError
from embengine.io import CorruptFileError
from embengine.tasks.classify import MODES, Classifier, fit_softmax_head, ledoit_wolf_shrinkage


def _tickets(split: str) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for s, label, text in bundled_tickets():
        if s == split:
            grouped.setdefault(label, []).append(text)
    return grouped


@pytest.fixture(scope="module")
def examples() -> dict[str, list[str]]:
    return _tickets("train")


@pytest.mark.parametrize("mode", MODES)
def test_accuracy_on_bundled_tickets(engine, examples, mode):
    clf = engine.classifier(examples, mode=mode)
    test = [
        (label, t) for label, texts in _tickets("test").items() if label != "cancel" for t in texts
    ]
    predicted = clf.predict([t for _, t in test])
    accuracy = np.mean([p == label for p, (label, _) in zip(predicted, test, strict=True)])
    assert accuracy >= 11 / 12, (mode, predicted)


def test_new_class_is_new_examples_and_remove_label_forgets_it(engine, examples):
    clf = engine.classifier(examples)
    queries = _tickets("test")["cancel"]
    assert "cancel" not in clf.predict(queries)
    clf.add_examples("cancel", _tickets("new")["cancel"])
    assert clf.predict(queries) == ["cancel", "cancel"]
    assert clf.counts()["cancel"] == 4
    clf.remove_label("cancel")
    assert "cancel" not in clf.labels
    assert "cancel" not in clf.predict(queries)
    with pytest.raises(KeyError, match="cancel"):
        clf.remove_label("cancel")


def test_predict_proba_rows_are_distributions_in_label_order(engine, examples):
    clf = engine.classifier(examples)
    proba = clf.predict_proba(["I was billed twice", "the app crashes on start"])
    assert proba.shape == (2, len(clf.labels))
    assert proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert [clf.labels[i] for i in proba.argmax(axis=1)] == ["billing", "bug"]


def _clusters(rng, dim=16, per=8):
    """Two tight, well separated clusters of unit vectors (labels 0 and 1)."""
    centres = np.eye(dim, dtype=np.float32)[:2]
    x = np.concatenate([c + 0.05 * rng.standard_normal((per, dim)) for c in centres])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), np.repeat([0, 1], per)


class _Dim16:
    """A stand-in engine for vector-only tests."""

    dim = 16
    spec = type("Spec", (), {"fingerprint": "test-16"})()

    def embed(self, texts):
        raise AssertionError("vector tests must not embed")


def test_modes_agree_on_separated_clusters(rng):
    x, y = _clusters(rng)
    for mode in MODES:
        clf = Classifier(_Dim16(), mode=mode, k=3)
        clf.add_vectors("a", x[y == 0])
        clf.add_vectors("b", x[y == 1])
        assert clf.predict_vectors(x) == ["a"] * 8 + ["b"] * 8, mode


def test_lda_uses_the_shared_covariance(rng):
    """Two labels apart along a low-variance axis, spread widely along another: LDA
    separates them where the nearest centroid by cosine is fooled by the spread."""
    dim, n = 16, 200
    base = np.zeros(dim, np.float32)
    base[0] = 1.0
    spread = rng.standard_normal((2 * n, 1)) * 0.6
    x = np.repeat(base[None], 2 * n, axis=0)
    x[:, 1] = spread[:, 0]
    x[:n, 2], x[n:, 2] = 0.05, -0.05
    x[:, 3:] = 0.005 * rng.standard_normal((2 * n, dim - 3))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = np.repeat(["up", "down"], n)
    train, test = np.arange(0, 2 * n, 2), np.arange(1, 2 * n, 2)
    lda = Classifier.from_vectors(x[train], list(y[train]), mode="lda")
    accuracy = np.mean(np.array(lda.predict_vectors(x[test])) == y[test])
    assert accuracy > 0.97


def test_ledoit_wolf_matches_the_published_formula_limits(rng):
    isotropic = rng.standard_normal((5000, 8))
    assert ledoit_wolf_shrinkage(isotropic - isotropic.mean(0)) > 0.5  # identity-like: shrink
    skewed = rng.standard_normal((5000, 8)) * np.array([10, 1, 1, 1, 1, 1, 1, 0.1])
    assert ledoit_wolf_shrinkage(skewed - skewed.mean(0)) < 0.05  # well estimated: keep


def test_oos_score_ranks_planted_out_of_scope_vectors_first(rng):
    x, y = _clusters(rng)
    clf = Classifier.from_vectors(x, ["a" if v == 0 else "b" for v in y])
    far = np.eye(16, dtype=np.float32)[4:10]  # orthogonal to both clusters
    inside = clf.oos_score_vectors(x)
    outside = clf.oos_score_vectors(far)
    assert inside.dtype == np.float32
    assert inside.shape == (16,)
    assert outside.min() > inside.max()
    assert inside.min() >= 0.0
    assert outside.max() <= 1.0


def _intents(rng, labels=10, per=20, dim=32, noise=0.35):
    """Noisy clusters around random unit centres: in-scope examples and held-out queries
    of the same labels, plus queries around 3 centres no label has (out of scope)."""
    centres = rng.standard_normal((labels + 3, dim))

    def around(c, n):
        x = centres[c] / np.linalg.norm(centres[c]) + noise * rng.standard_normal((n, dim)) / 5
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    x = np.concatenate([around(c, per) for c in range(labels)])
    y = np.repeat(np.arange(labels), per)
    queries = np.concatenate([around(c, 5) for c in range(labels)])
    out = np.concatenate([around(c, 10) for c in range(labels, labels + 3)])
    return x, y, queries, np.repeat(np.arange(labels), 5), out


def test_oos_score_ranks_planted_out_of_scope_queries_above_in_scope_ones(rng):
    x, y, queries, query_labels, out = _intents(rng)
    clf = Classifier.from_vectors(x, [int(v) for v in y], threshold="auto")
    inside, outside = clf.oos_score_vectors(queries), clf.oos_score_vectors(out)
    auroc = np.mean(outside[:, None] > inside[None, :])
    assert auroc >= 0.95, auroc
    predicted = clf.predict_vectors(np.concatenate([queries, out]))
    refused = np.array([p == "unknown" for p in predicted])
    assert refused[len(queries) :].mean() >= 0.8  # most planted out-of-scope refused
    assert refused[: len(queries)].mean() <= 0.2  # ~reject_rate of in-scope ones
    pairs = zip(predicted[: len(queries)], query_labels.tolist(), strict=True)
    assert np.mean([p == label for p, label in pairs if p != "unknown"]) >= 0.9


def test_a_text_scores_the_same_alone_or_in_any_batch(rng):
    x, y, queries, _, out = _intents(rng)
    clf = Classifier.from_vectors(x, [int(v) for v in y], threshold="auto")
    batch = np.concatenate([queries, out])
    together = clf.oos_score_vectors(batch)
    alone = np.concatenate([clf.oos_score_vectors(row[None]) for row in batch])
    np.testing.assert_allclose(together, alone, atol=1e-4)  # float32 rounding only
    np.testing.assert_allclose(clf.oos_score_vectors(batch[::-1]), together[::-1], atol=1e-4)
    assert clf.predict_vectors(batch[:3]) == clf.predict_vectors(batch)[:3]


@pytest.mark.parametrize("mode", ["auto", "logistic"])
def test_the_head_refits_after_add_and_remove(rng, mode):
    x, y, queries, query_labels, _ = _intents(rng, labels=11)
    old, asked = y < 10, queries[query_labels == 10]
    clf = Classifier.from_vectors(x[old], [int(v) for v in y[old]], mode=mode, threshold="auto")
    assert clf.predict_vectors(asked) == ["unknown"] * 5
    clf.add_vectors(10, x[~old])  # a new class is new examples: no explicit refit
    assert clf.predict_vectors(asked) == [10] * 5
    clf.remove_label(10)
    assert clf.predict_vectors(asked) == ["unknown"] * 5


def test_softmax_head_fits_the_regularised_logistic_regression(rng):
    x, y, _, _, _ = _intents(rng, labels=4, per=30, dim=8, noise=2.0)
    weights, bias = fit_softmax_head(x, y, 4, 1.0)
    assert weights.shape == (8, 4)
    assert bias.shape == (4,)
    again = fit_softmax_head(x, y, 4, 1.0)
    np.testing.assert_array_equal(weights, again[0])  # deterministic
    sklearn = pytest.importorskip("sklearn.linear_model")
    reference = sklearn.LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(x, y)
    ours = x @ weights + bias
    theirs = reference.decision_function(x)
    np.testing.assert_allclose(ours - ours.mean(1, keepdims=True), theirs, atol=2e-3)


def test_oos_score_ranks_off_topic_texts_above_tickets(engine, examples):
    clf = engine.classifier(examples)
    tickets = [t for label, texts in _tickets("test").items() if label != "cancel" for t in texts]
    off_topic = [
        "What is the capital of Peru?",
        "Best recipe for banana bread",
        "Who won the football match last night?",
        "How tall is Mount Everest?",
    ]
    inside, outside = clf.oos_score(tickets), clf.oos_score(off_topic)
    auroc = np.mean(outside[:, None] > inside[None, :])
    assert auroc >= 0.9, (inside, outside)


def test_open_set_refuses_with_a_named_label_never_none(rng):
    x, y = _clusters(rng)
    clf = Classifier(_Dim16(), threshold="auto", reject_rate=0.05, unknown="other")
    clf.add_vectors("a", x[y == 0])
    clf.add_vectors("b", x[y == 1])
    assert 0.5 < clf.threshold < 1.0  # a rank among held-out example scores
    far = np.eye(16, dtype=np.float32)[5:6]
    assert clf.predict_vectors(np.concatenate([x[:1], far])) == ["a", "other"]
    default = Classifier.from_vectors(x, list(y), threshold="auto")
    predicted = default.predict_vectors(np.concatenate([x, far]))
    assert None not in predicted
    assert predicted[-1] == "unknown"
    keep_all = Classifier.from_vectors(x[y == 0], [0] * 8, threshold=1.0)
    assert keep_all.predict_vectors(far) == [0]
    closed = Classifier.from_vectors(x[y == 0], [0] * 8)
    assert closed.threshold is None
    assert closed.predict_vectors(far) == [0]


def test_from_vectors_needs_no_model(rng):
    x, y = _clusters(rng)
    clf = Classifier.from_vectors(x, [int(v) for v in y], mode="neighbours")
    assert clf.labels == [0, 1]
    assert clf.predict_vectors(x[:2]) == [0, 0]
    with pytest.raises(InvalidInputError, match="no engine"):
        clf.predict(["text"])
    with pytest.raises(InvalidInputError, match="3 labels for 16 vectors"):
        Classifier.from_vectors(x, [0, 1, 0])


def test_save_load_round_trip(engine, examples, tmp_path):
    clf = engine.classifier(examples, mode="knn", k=5, threshold="auto", unknown="?")
    clf.add_examples("cancel", _tickets("new")["cancel"])
    clf.save(tmp_path / "clf.emb")
    loaded = Classifier.load(tmp_path / "clf.emb", engine=engine)
    queries = [t for texts in _tickets("test").values() for t in texts]
    assert loaded.labels == clf.labels
    assert loaded.counts() == clf.counts()
    assert (loaded.mode, loaded.k, loaded.unknown) == ("knn", 5, "?")
    assert loaded.threshold == pytest.approx(clf.threshold)
    np.testing.assert_allclose(loaded.predict_proba(queries), clf.predict_proba(queries), atol=1e-6)
    data = (tmp_path / "clf.emb").read_bytes()
    (tmp_path / "cut.emb").write_bytes(data[:-10])
    with pytest.raises(CorruptFileError):
        Classifier.load(tmp_path / "cut.emb", engine=engine)


def test_vector_classifier_round_trips_without_an_engine(rng, tmp_path):
    x, y = _clusters(rng)
    clf = Classifier.from_vectors(x, [str(v) for v in y], threshold="auto")
    clf.save(tmp_path / "v.emb")
    loaded = Classifier.load(tmp_path / "v.emb", engine=None)
    assert loaded.predict_vectors(x) == clf.predict_vectors(x)
    assert loaded.threshold == pytest.approx(clf.threshold)


def test_predict_during_writes_sees_whole_states(rng):
    """Readers racing add_vectors / remove_label see the state before or after a write."""
    x, y = _clusters(rng)
    clf = Classifier.from_vectors(x, ["a" if v == 0 else "b" for v in y], threshold="auto")
    extra = np.eye(16, dtype=np.float32)[6:9]
    errors: list[BaseException] = []
    seen: set[str] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                seen.update(clf.predict_vectors(np.concatenate([x[:2], extra[:1]])))
                proba = clf.predict_proba_vectors(x[:2])
                assert proba.shape[1] in (2, 3)
                np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-4)
                clf.oos_score_vectors(extra)
            except BaseException as exc:
                errors.append(exc)
                return

    readers = [threading.Thread(target=read) for _ in range(3)]
    for thread in readers:
        thread.start()
    for _ in range(30):
        clf.add_vectors("c", extra)
        clf.remove_label("c")
    stop.set()
    for thread in readers:
        thread.join()
    assert not errors, errors[0]
    assert seen <= {"a", "b", "c", "unknown"}
    assert clf.labels == ["a", "b"]


def test_bad_input_is_refused_with_a_clear_error(engine, examples, rng):
    clf = engine.classifier(examples)
    with pytest.raises(TypeError, match=r"texts\[1\] is NoneType"):
        clf.predict(["fine", None])
    with pytest.raises(TypeError, match="single string"):
        clf.add_examples("billing", "not a list")
    with pytest.raises(ValueError, match="no example texts"):
        clf.add_examples("empty", [])
    with pytest.raises(TypeError, match="must be str or int"):
        clf.add_examples(("a", "tuple"), ["text"])
    with pytest.raises(ValueError, match="dim 8, expected 384"):
        clf.predict_vectors(np.zeros((2, 8), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        clf.predict_vectors(np.full((1, 384), np.nan, np.float32))
    with pytest.raises(InvalidInputError, match="mode must be one of"):
        engine.classifier(examples, mode="svm")
    with pytest.raises(InvalidInputError, match="no examples"):
        engine.classifier().predict(["anything"])
    for bad in (float("nan"), 1.5, -0.1, "high"):
        with pytest.raises(InvalidInputError, match="threshold"):
            engine.classifier(examples, threshold=bad)
    for name, bad in (("head_c", 0.0), ("oos_head_c", float("inf")), ("head_weight", 1.5)):
        with pytest.raises(InvalidInputError, match=name):
            Classifier(None, **{name: bad})
    with pytest.raises(InvalidInputError, match="oos_weight"):
        Classifier(None, oos_weight=True)
    with pytest.raises(InvalidInputError, match="centroid_temperature"):
        engine.classifier(examples, centroid_temperature=float("nan"))
    with pytest.raises(InvalidInputError, match="reject_rate"):
        engine.classifier(examples, reject_rate=1.0)
    with pytest.raises(TypeError, match="unknown must be str or int"):
        engine.classifier(examples, unknown=None)
    with pytest.raises(InvalidInputError, match="`unknown` label"):
        engine.classifier(examples).add_examples("unknown", ["text"])
    with pytest.raises(NotFoundError, match="nope"):
        clf.remove_label("nope")
    assert clf.labels == list(examples)  # nothing half-applied by the failures above
    assert clf.predict([]) == []
    assert clf.predict_proba([]).shape == (0, 4)
    assert clf.oos_score([]).shape == (0,)


def test_files_from_before_the_head_still_load(rng, tmp_path):
    """Format-1 files (no head settings, oos_score on [0, 2]) load with today's defaults;
    a numeric threshold on the old scale is refused rather than silently reinterpreted."""
    from embengine.io import save_arrays

    x, y = _clusters(rng)
    meta = {
        "kind": "classifier",
        "model": None,
        "labels": ["a", "b"],
        "mode": "auto",
        "k": 5,
        "knn_temperature": 0.05,
        "centroid_temperature": 0.05,
        "lda_temperature": 10.0,
        "center": True,
        "threshold": "auto",
        "reject_rate": 0.05,
        "oos_k": 3,
        "unknown": "unknown",
    }
    save_arrays(tmp_path / "old.emb", {"vectors": x, "label_ids": y.astype(np.int64)}, meta)
    loaded = Classifier.load(tmp_path / "old.emb", engine=None)
    assert loaded.predict_vectors(x[:1]) == ["a"]
    assert (loaded.head_c, loaded.oos_weight) == (Classifier(None).head_c, 0.4)
    save_arrays(tmp_path / "num.emb", {"vectors": x, "label_ids": y}, {**meta, "threshold": 1.5})
    with pytest.raises(InvalidInputError, match="old out-of-scope scale"):
        Classifier.load(tmp_path / "num.emb", engine=None)


def test_tiny_example_sets_predict(rng):
    """One label with two examples made LDA's covariance singular (shrinkage 0)."""
    x, _ = _clusters(rng)
    clf = Classifier.from_vectors(x[:2], ["a", "a"], threshold="auto")
    assert clf.predict_vectors(x[:2]) == ["a", "a"]
    assert clf.predict_vectors(np.eye(16, dtype=np.float32)[5:6]) == ["unknown"]
    with pytest.raises(InvalidInputError, match="at least 2 examples"):
        Classifier.from_vectors(x[:1], ["a"], threshold="auto").predict_vectors(x[:1])
    assert Classifier.from_vectors(x[:1], ["a"]).predict_vectors(x[:3]) == ["a"] * 3
