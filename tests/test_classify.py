"""Classifier: accuracy on the bundled tickets, classes added and removed, open set, files."""

from __future__ import annotations

import numpy as np
import pytest

from embengine.demo import bundled_tickets
from embengine.io import CorruptFileError
from embengine.tasks.classify import Classifier


def _tickets(split: str) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for s, label, text in bundled_tickets():
        if s == split:
            grouped.setdefault(label, []).append(text)
    return grouped


@pytest.fixture(scope="module")
def examples() -> dict[str, list[str]]:
    return _tickets("train")


@pytest.mark.parametrize("mode", ["auto", "knn", "centroid"])
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


def test_knn_and_centroid_agree_on_separated_clusters(rng):
    x, y = _clusters(rng)
    for mode in ("knn", "centroid", "auto"):
        clf = Classifier(_Dim16(), mode=mode, k=3)
        clf.add_vectors("a", x[y == 0])
        clf.add_vectors("b", x[y == 1])
        assert clf.predict_vectors(x) == ["a"] * 8 + ["b"] * 8


def test_open_set_threshold_refuses_far_queries(rng):
    x, y = _clusters(rng)
    clf = Classifier(_Dim16(), threshold="auto", reject_rate=0.05, unknown="other")
    clf.add_vectors("a", x[y == 0])
    clf.add_vectors("b", x[y == 1])
    threshold = clf.threshold
    assert 0.9 < threshold < 1.0  # tight clusters: nearest neighbours are very similar
    far = np.zeros((1, 16), np.float32)
    far[0, 5] = 1.0  # orthogonal to both clusters
    assert clf.predict_vectors(np.concatenate([x[:1], far])) == ["a", "other"]
    fixed = Classifier(_Dim16(), threshold=-1.0)  # everything is close enough
    fixed.add_vectors("a", x[y == 0])
    assert fixed.predict_vectors(far) == ["a"]
    closed = Classifier(_Dim16())
    closed.add_vectors("a", x[y == 0])
    assert closed.threshold is None
    assert closed.predict_vectors(far) == ["a"]


def test_save_load_round_trip(engine, examples, tmp_path):
    clf = engine.classifier(examples, mode="knn", k=5, threshold="auto", unknown="?")
    clf.add_examples("cancel", _tickets("new")["cancel"])
    clf.save(tmp_path / "clf.emb")
    loaded = Classifier.load(engine, tmp_path / "clf.emb")
    queries = [t for texts in _tickets("test").values() for t in texts]
    assert loaded.labels == clf.labels
    assert loaded.counts() == clf.counts()
    assert (loaded.mode, loaded.k, loaded.unknown) == ("knn", 5, "?")
    assert loaded.threshold == pytest.approx(clf.threshold)
    np.testing.assert_allclose(loaded.predict_proba(queries), clf.predict_proba(queries), atol=1e-6)
    data = (tmp_path / "clf.emb").read_bytes()
    (tmp_path / "cut.emb").write_bytes(data[:-10])
    with pytest.raises(CorruptFileError):
        Classifier.load(engine, tmp_path / "cut.emb")


def test_bad_input_is_refused_with_a_clear_error(engine, examples, rng):
    clf = engine.classifier(examples)
    with pytest.raises(TypeError, match=r"texts\[1\] is NoneType"):
        clf.predict(["fine", None])
    with pytest.raises(TypeError, match="single string"):
        clf.add_examples("billing", "not a list")
    with pytest.raises(ValueError, match="no example texts"):
        clf.add_examples("empty", [])
    with pytest.raises(TypeError, match="labels must be str or int"):
        clf.add_examples(("a", "tuple"), ["text"])
    with pytest.raises(ValueError, match="dim 8, expected 384"):
        clf.predict_vectors(np.zeros((2, 8), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        clf.predict_vectors(np.full((1, 384), np.nan, np.float32))
    with pytest.raises(ValueError, match="mode must be one of"):
        engine.classifier(examples, mode="svm")
    with pytest.raises(RuntimeError, match="no examples"):
        engine.classifier().predict(["anything"])
    assert clf.predict([]) == []
    assert clf.predict_proba([]).shape == (0, 4)
