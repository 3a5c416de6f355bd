"""Anomaly detector: threshold, window roll-over, streaming, masking, files, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from embengine.clustering import spherical_kmeans
from embengine.demo import bundled_events
from embengine.io import CorruptFileError
from embengine.tasks.anomaly import AnomalyDetector
from embengine.tasks.logmask import LogMask


class _Dim8:
    """A stand-in engine for vector-only tests."""

    dim = 8
    spec = type("Spec", (), {"fingerprint": "test-8"})()

    def embed(self, texts):
        raise AssertionError("vector tests must not embed")


def _unit(x):
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _normal(rng, n, dim=8):
    """Noisy copies of one direction: a unimodal normal traffic."""
    return _unit(np.eye(dim)[0] + 0.1 * rng.standard_normal((n, dim)))


def test_threshold_is_the_quantile_of_window_scores_and_flags_far_points(rng):
    det = AnomalyDetector(_Dim8(), quantile=0.9, novelty_weight=None, mask=None)
    normal = _normal(rng, 200)
    det.fit_vectors(normal)
    expected = np.quantile(1 - normal @ det.centroids[0], 0.9)
    assert det.threshold == pytest.approx(expected, rel=1e-5)
    far = _unit(np.eye(8)[3:4])
    assert det.score_vectors(far)[0] > 0.9 > det.threshold
    fresh = _normal(rng, 2000)
    flagged = (det.score_vectors(fresh) > det.threshold).mean()
    assert 0.05 < flagged < 0.15  # about 1 - quantile on the same distribution


def test_novelty_rule_scores_a_repeat_of_a_window_line_zero(rng):
    det = AnomalyDetector(_Dim8(), mask=None)
    normal = _normal(rng, 50)
    det.fit_vectors(normal)
    scores = det.score_vectors(normal[:5])
    assert (scores == 0).all()
    assert det.score_vectors(_unit(np.eye(8)[4:5]))[0] > 0.5


def test_window_rolls_over_and_centroid_follows(rng):
    det = AnomalyDetector(_Dim8(), window=100, quantile=0.5, novelty_weight=None, mask=None)
    old = _normal(rng, 100)
    det.fit_vectors(old)
    assert len(det) == 100
    assert det.centroids[0].argmax() == 0
    assert det.score_vectors(old[:1])[0] < 0.1
    for _ in range(3):  # traffic drifts to another direction
        det.update_vectors(_unit(np.eye(8)[1] + 0.1 * rng.standard_normal((60, 8))))
        assert len(det) == 100  # the oldest left
    assert det.centroids[0].argmax() == 1  # the window is all drifted lines now
    assert det.threshold < 0.1  # the latest drifted lines scored low against drifted ones
    assert det.score_vectors(old[:1])[0] > 0.5  # the old behaviour is now unusual


def test_process_flags_an_anomaly_and_keeps_it_out_of_the_window(engine):
    history, stream = bundled_events()
    det = engine.anomaly_detector()
    det.fit(history)
    results = list(det.process(stream, batch_size=3))
    assert [r.text for r in results] == stream
    flagged = [r.text for r in results if r.anomalous]
    assert len(flagged) == 1
    assert "No space left on device" in flagged[0]
    assert len(det) == len(history) + len(stream) - 1
    assert det.is_anomalous([flagged[0]]).tolist() == [True]  # still flagged: never learnt


def test_kmeans_finds_separated_modes(rng):
    modes = np.eye(8)[[0, 2, 5]]
    x = _unit(np.repeat(modes, 40, axis=0) + 0.05 * rng.standard_normal((120, 8)))
    centroids = spherical_kmeans(x, 3, seed=1)
    assert sorted(centroids.argmax(axis=1).tolist()) == [0, 2, 5]
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-5)
    det = AnomalyDetector(_Dim8(), centroids=3, novelty_weight=None, mask=None).fit_vectors(x)
    one = AnomalyDetector(_Dim8(), centroids=1, novelty_weight=None, mask=None).fit_vectors(x)
    assert det.score_vectors(x).mean() < 0.5 * one.score_vectors(x).mean()


def test_log_mask_replaces_each_kind_and_can_be_switched_off():
    line = (
        "2005-06-03-15.42.50.675872 node 10.2.1.37:8080 read /p/gb1/run.rts at 0x1b85f080 code 42"
    )
    assert LogMask()(line) == "<time> node <ip> read <path> at <hex> code <num>"
    assert LogMask(numbers=False, paths=False)(line) == (
        "<time> node <ip> read /p/gb1/run.rts at <hex> code 42"
    )
    assert LogMask(placeholder="*")("iar 00106298 dear 02f7a18c") == "iar * dear *"


def test_save_load_round_trip(engine, tmp_path):
    history, stream = bundled_events()
    det = engine.anomaly_detector(window=30, quantile=0.95, centroids=2)
    det.fit(history)
    det.update(stream[:3])
    det.save(tmp_path / "det.emb")
    loaded = AnomalyDetector.load(engine, tmp_path / "det.emb")
    assert (loaded.window, loaded.quantile, loaded.n_centroids) == (30, 0.95, 2)
    assert loaded.mask == det.mask
    assert len(loaded) == 30
    assert loaded.threshold == pytest.approx(det.threshold)
    np.testing.assert_allclose(loaded.score(stream), det.score(stream), atol=1e-6)
    data = bytearray((tmp_path / "det.emb").read_bytes())
    data[-5] ^= 0xFF
    (tmp_path / "bad.emb").write_bytes(bytes(data))
    with pytest.raises(CorruptFileError):
        AnomalyDetector.load(engine, tmp_path / "bad.emb")


def test_bad_input_is_refused_with_a_clear_error(engine, rng):
    det = engine.anomaly_detector()
    with pytest.raises(RuntimeError, match="call fit"):
        det.score(["x"])
    with pytest.raises(ValueError, match="at least 2"):
        det.fit(["only one"])
    det.fit(["a b c", "d e f", "g h i"])
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        det.score(["ok", 3])
    with pytest.raises(TypeError, match="stream item 1 is NoneType"):
        list(det.process(["ok", None]))
    with pytest.raises(ValueError, match="dim 8, expected 384"):
        det.score_vectors(np.zeros((1, 8), np.float32))
    with pytest.raises(ValueError, match="quantile must be in"):
        engine.anomaly_detector(quantile=1.0)
    with pytest.raises(ValueError, match="window must be"):
        engine.anomaly_detector(window=1)
    assert det.score([]).shape == (0,)
