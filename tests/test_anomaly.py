"""Anomaly detector: threshold, admission and alert groups, group scoring, masking, files,
threads, bad input."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from embengine.clustering import spherical_kmeans
from embengine.demo import bundled_events
from embengine.errors import CorruptFileError, InvalidInputError, InvalidTypeError
from embengine.io import load_arrays, save_arrays
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
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _normal(rng, n, dim=8):
    """Noisy copies of one direction: a unimodal normal traffic."""
    return _unit(np.eye(dim)[0] + 0.1 * rng.standard_normal((n, dim)))


def _detector(**options):
    options.setdefault("mask", None)
    return AnomalyDetector(_Dim8(), **options)


def _judge(det, vectors):
    """`process` on vectors: the stand-in engine maps the text "i" to vectors[i]."""
    engine = det.engine
    engine.embed = lambda texts: np.stack([vectors[int(t)] for t in texts])
    try:
        return list(det.process([str(i) for i in range(len(vectors))], batch_size=4))
    finally:
        del engine.embed


def test_threshold_is_a_quantile_of_distinct_patterns_and_never_collapses(rng):
    det = _detector(quantile=0.9, novelty_weight=None, min_threshold=0.0)
    normal = _normal(rng, 200)
    det.fit_vectors(normal)
    expected = np.quantile(1 - normal @ det.centroids[0], 0.9)
    assert det.threshold == pytest.approx(expected, rel=1e-4)
    assert det.score_vectors(_unit(np.eye(8)[3:4]))[0] > 0.9 > det.threshold
    flagged = (det.score_vectors(_normal(rng, 2000)) > det.threshold).mean()
    assert 0.05 < flagged < 0.15  # about 1 - quantile on the same distribution

    # 990 repeats of one line and 10 others: a line quantile would be exactly 0
    repeats = np.concatenate([np.repeat(normal[:1], 990, axis=0), normal[1:11]])
    det = _detector().fit_vectors(repeats)
    assert det.patterns == 11
    assert det.threshold > 0.05 - 1e-9
    assert det.threshold >= np.quantile(det.score_vectors(normal[1:11]), 0.0)
    # only repeats: the floor holds
    only = _detector(min_threshold=0.05).fit_vectors(np.repeat(normal[:1], 50, axis=0))
    assert only.threshold == pytest.approx(0.05)
    assert only.score_vectors(normal[:1])[0] == 0.0


def test_known_patterns_rank_by_rarity_but_never_flag_and_plain_rule_is_centroid(rng):
    normal = _normal(rng, 50)
    det = _detector().fit_vectors(normal)
    centroid = 1 - normal[:5] @ det.centroids[0]
    expected = np.minimum(centroid / 2, det.threshold)  # each seen once: centroid / (1 + 1)
    np.testing.assert_allclose(det.score_vectors(normal[:5]), expected, atol=1e-5)
    det.update_vectors(np.repeat(normal[:1], 9, axis=0))  # now seen 10 times
    centroid = 1 - normal[0] @ det.centroids[0]  # the mean moved towards it
    assert det.score_vectors(normal[:1])[0] == pytest.approx(centroid / 11, abs=1e-5)
    assert not det.is_anomalous_vectors(normal).any()
    assert det.score_vectors(_unit(np.eye(8)[4:5]))[0] > 0.5
    plain = _detector(novelty_weight=None).fit_vectors(normal)
    mean = _unit(normal.mean(axis=0))
    np.testing.assert_allclose(plain.score_vectors(normal[:5]), 1 - normal[:5] @ mean, atol=1e-5)


def test_a_new_normal_pattern_alerts_once_then_is_admitted(rng):
    det = _detector(admit_after=3).fit_vectors(_normal(rng, 100))
    new = _unit(np.eye(8)[5])
    stream = np.concatenate([_normal(rng, 3), np.repeat(new[None], 6, axis=0)])
    judged = _judge(det, stream)
    assert [d.anomalous for d in judged] == [False] * 3 + [True] * 3 + [False] * 3
    flagged = [d for d in judged if d.anomalous]
    assert [d.first for d in flagged] == [True, False, False]
    assert len({d.group for d in flagged}) == 1
    assert [d.admitted for d in flagged] == [False, False, True]
    assert det.admissions == (flagged[0].group,)
    assert det.alert_groups == {}
    assert not det.is_anomalous_vectors(new[None])[0]  # it is normal now


def test_a_recurring_fault_stays_one_reported_group_until_confirmed(rng):
    det = _detector(admit_after=None).fit_vectors(_normal(rng, 100))
    fault = _unit(np.eye(8)[6])
    near = _unit(fault + 0.02 * np.eye(8)[1])  # a variant of the same message
    other = _unit(np.eye(8)[2])
    stream = np.concatenate([np.repeat(fault[None], 10, axis=0), near[None], other[None]])
    judged = _judge(det, stream)
    assert all(d.anomalous for d in judged)
    assert [d.first for d in judged] == [True] + [False] * 10 + [True]
    assert len({d.group for d in judged[:11]}) == 1
    assert judged[11].group != judged[0].group
    assert det.alert_groups == {judged[0].group: 11, judged[11].group: 1}
    with pytest.raises(InvalidInputError, match="no open alert group"):
        det.confirm_normal([judged[0].group, 99])
    assert len(det.alert_groups) == 2  # nothing half-applied
    det.confirm_normal(judged[0].group)
    assert not det.is_anomalous_vectors(fault[None])[0]
    assert list(det.alert_groups) == [judged[11].group]
    det.update_vectors(other[None])  # update admits the group holding that line
    assert det.alert_groups == {}


def test_score_groups_ranks_a_planted_failed_session_first(rng):
    ok, retry, error = _unit(np.eye(8)[0]), _unit(np.eye(8)[1]), _unit(np.eye(8)[2])
    noise = 0.01

    def session(n_ok, n_retry, n_error=0):
        rows = [ok] * n_ok + [retry] * n_retry + [error] * n_error
        return _unit(np.asarray(rows) + noise * rng.standard_normal((len(rows), 8)))

    normal = [session(90, 10) for _ in range(6)]
    det = _detector()
    det.fit_vectors(np.concatenate(normal), groups=np.repeat(np.arange(6), 100).tolist())
    # same messages as normal, but retries dominate (a fault visible only in the mix)
    sessions = {"a": session(88, 12), "failed": session(40, 60), "b": session(91, 9)}
    x = np.concatenate(list(sessions.values()))
    keys = [k for k, v in sessions.items() for _ in range(len(v))]
    result = det.score_groups_vectors(x, keys)
    assert result.groups == ["a", "failed", "b"]
    assert int(np.argmax(result.scores)) == 1
    assert result.scores[1] > 3 * max(result.scores[0], result.scores[2])
    # a session with a new message ranks first on line scores too
    planted = {"a": session(90, 10), "failed": session(90, 5, 5)}
    x = np.concatenate(list(planted.values()))
    keys = [k for k, v in planted.items() for _ in range(len(v))]
    for how in ("mean", "max"):
        scores = det.score_groups_vectors(x, keys, how=how).scores
        assert scores[1] > scores[0], how


def test_window_rolls_over_and_centroid_follows(rng):
    det = _detector(window=100, quantile=0.5, novelty_weight=None)
    old = _normal(rng, 100)
    det.fit_vectors(old)
    for _ in range(3):  # traffic drifts to another direction
        det.update_vectors(_unit(np.eye(8)[1] + 0.1 * rng.standard_normal((60, 8))))
        assert len(det) == 100
    assert det.centroids[0].argmax() == 1
    assert det.score_vectors(old[:1])[0] > 0.5


def test_fit_says_when_lines_leave_the_window(rng):
    with pytest.warns(UserWarning, match="oldest 20 leave the window"):
        det = _detector(window=100).fit_vectors(_normal(rng, 120))
    assert len(det) == 100


def test_kmeans_finds_separated_modes(rng):
    modes = np.eye(8)[[0, 2, 5]]
    x = _unit(np.repeat(modes, 40, axis=0) + 0.05 * rng.standard_normal((120, 8)))
    centroids = spherical_kmeans(x, 3, seed=1)
    assert sorted(centroids.argmax(axis=1).tolist()) == [0, 2, 5]
    det = _detector(centroids=3, novelty_weight=None).fit_vectors(x)
    one = _detector(centroids=1, novelty_weight=None).fit_vectors(x)
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
    volatile = {
        "16:40:11.854 [XNIO-1 task-2]  2K_8PE-6TZCxOWh1BICZFw ERROR x - ERR11000": (
            "<time> [XNIO-<num> <id>]  <token> ERROR x - ERR11000"
        ),
        "Load:2d58d63b-d554-4a7a-8935-d09ec597f7f2 name 5b415789-b881-4d06-99b1-533efacd": (
            "Load:<uuid> name <uuid>"
        ),
        "for application appattempt_1445062781478_0012_000001": "for application <id>",
        "map attempt_1445062781478_0012_m_000003_1 on MININT-75DGDAM1.fareast.corp.microsoft.com": (
            "map <id> on <host>"
        ),
        "RetryUpToMaximumCountWithFixedSleep(maxRetries=10) freed in 559ms": (
            "RetryUpToMaximumCountWithFixedSleep(maxRetries=<num>) freed in <num>ms"
        ),
        "Lustre mount FAILED : bglio75": "Lustre mount FAILED : bglio<num>",
    }
    for raw, masked in volatile.items():
        assert LogMask()(raw) == masked
    assert LogMask(tokens=False, uuids=False)("id dLhkNousQrudHzJEQdQVv1") == (
        "id dLhkNousQrudHzJEQdQVv1"
    )


def test_process_alerts_once_per_new_pattern_on_the_bundled_stream(engine):
    history, stream = bundled_events()
    det = engine.anomaly_detector(admit_after=None)
    det.fit(history)
    results = list(det.process(stream, batch_size=3))
    assert [r.text for r in results] == stream
    firsts = [r.text for r in results if r.first]
    assert len(firsts) == 2
    assert "No space left on device" in firsts[0]
    assert "Out of memory" in firsts[1]
    disk = [r for r in results if "No space left" in r.text]
    assert len(disk) == 4
    assert all(r.anomalous and r.group == disk[0].group for r in disk)
    assert sum(r.anomalous for r in results) == 5


def test_save_load_round_trip_keeps_groups_and_admissions(rng, tmp_path):
    det = _detector(window=300, quantile=0.9, admit_after=2, group_radius=0.05)
    det.fit_vectors(_normal(rng, 100), groups=[i % 4 for i in range(100)])
    fault, new = _unit(np.eye(8)[6]), _unit(np.eye(8)[5])
    _judge(det, np.stack([fault, new, new, _normal(rng, 1)[0]]))
    det.save(tmp_path / "det.emb")
    loaded = AnomalyDetector.load(tmp_path / "det.emb", engine=_Dim8())
    assert (loaded.window, loaded.quantile, loaded.admit_after) == (300, 0.9, 2)
    assert loaded.group_radius == det.group_radius
    assert loaded.mask is None
    assert loaded.threshold == det.threshold
    assert len(loaded) == len(det)
    assert loaded.alert_groups == det.alert_groups
    assert loaded.admissions == det.admissions
    probe = _normal(rng, 20)
    np.testing.assert_array_equal(loaded.score_vectors(probe), det.score_vectors(probe))
    keys = [i % 2 for i in range(20)]
    np.testing.assert_array_equal(
        loaded.score_groups_vectors(probe, keys).scores,
        det.score_groups_vectors(probe, keys).scores,
    )
    # the next alert continues the group numbering
    assert _judge(loaded, fault[None])[0].group == _judge(det, fault[None])[0].group

    data = bytearray((tmp_path / "det.emb").read_bytes())
    data[-5] ^= 0xFF
    (tmp_path / "bad.emb").write_bytes(bytes(data))
    with pytest.raises(CorruptFileError):
        AnomalyDetector.load(tmp_path / "bad.emb", engine=_Dim8())


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("lines", lambda a: np.array([10**12]), "lines must index the"),
        ("lines", lambda a: a["lines"] - 100, "lines must index the"),
        ("centroids", lambda a: a["centroids"][:, :3], "centroids must be a float"),
        ("alert_counts", lambda a: a["alert_counts"][:0], "alert_groups and alert_counts"),
        ("patterns", lambda a: a["patterns"][:0], "patterns must be a non-empty"),
    ],
)
def test_a_crafted_state_is_refused_on_load(rng, tmp_path, field, value, words):
    """A file whose checksum was recomputed after editing arrays that no longer fit together
    is refused at load, not at the first score (a 10**12 pattern index asked for terabytes)."""
    det = _detector(admit_after=5).fit_vectors(_normal(rng, 60))
    _judge(det, _unit(np.eye(8)[6])[None])  # one open alert group
    det.save(tmp_path / "det.emb")
    arrays, meta = load_arrays(tmp_path / "det.emb")
    arrays[field] = value(arrays)
    save_arrays(tmp_path / "crafted.emb", arrays, meta)
    with pytest.raises(CorruptFileError, match=words):
        AnomalyDetector.load(tmp_path / "crafted.emb", engine=_Dim8())


def test_first_format_files_still_load(rng, tmp_path):
    window = _normal(rng, 40)
    meta = {"kind": "anomaly_detector", "model": "test-8", "window": 50, "quantile": 0.9}
    meta |= {"centroids": 1, "novelty_weight": 5.0, "mask": None, "seed": 0}
    arrays = {"vectors": window, "scores": np.zeros(40, np.float32), "centroids": window[:1]}
    save_arrays(tmp_path / "old.emb", arrays, meta)
    loaded = AnomalyDetector.load(tmp_path / "old.emb", engine=_Dim8())
    assert len(loaded) == 40
    assert loaded.quantile == 0.9
    assert not loaded.is_anomalous_vectors(window).any()
    assert loaded.is_anomalous_vectors(_unit(np.eye(8)[4:5]))[0]


def test_concurrent_scores_with_one_writer_see_whole_states(rng):
    det = _detector(novelty_weight=None).fit_vectors(_normal(rng, 200))
    probe = _normal(rng, 64)
    drift = [_unit(np.eye(8)[1] + 0.1 * rng.standard_normal((50, 8))) for _ in range(20)]
    states = [det.score_vectors(probe)]  # the scores of every state the writer makes
    errors: list[BaseException] = []
    seen: list[np.ndarray] = []

    def reader():
        try:
            for _ in range(50):
                seen.append(det.score_vectors(probe))
        except BaseException as error:  # reported below
            errors.append(error)

    def writer():
        try:
            for batch in drift:
                det.update_vectors(batch)
                states.append(det.score_vectors(probe))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    threads.append(threading.Thread(target=writer))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(det) == 200 + 20 * 50
    assert len(seen) == 200
    for scores in seen:  # never a half-updated state
        assert any(np.allclose(scores, state, atol=1e-6) for state in states)


def test_bad_input_is_refused_with_a_clear_error(engine, rng):
    det = engine.anomaly_detector()
    with pytest.raises(InvalidInputError, match="call fit"):
        det.score(["x"])
    with pytest.raises(InvalidInputError, match="at least 2"):
        det.fit(["only one"])
    det.fit(["a b c", "d e f", "g h i"])
    with pytest.raises(InvalidTypeError, match=r"texts\[1\] is int"):
        det.score(["ok", 3])
    with pytest.raises(InvalidTypeError, match="stream item 1 is NoneType"):
        list(det.process(["ok", None]))
    with pytest.raises(InvalidInputError, match="dim 8, expected 384"):
        det.score_vectors(np.zeros((1, 8), np.float32))
    with pytest.raises(InvalidInputError):
        det.score_vectors(np.full((1, 384), np.nan, np.float32))
    with pytest.raises(InvalidInputError, match="2 group ids for 3 lines"):
        det.score_groups(["a", "b", "c"], [1, 2])
    with pytest.raises(InvalidInputError, match="how must be"):
        det.score_groups(["a"], [1], how="median")
    bad = {
        "quantile": [1.0, float("nan")],
        "window": [1],
        "novelty_weight": [float("nan"), float("inf"), 0.0, -1.0],
        "admit_after": [0],
        "group_radius": [float("nan"), -0.1],
        "min_threshold": [float("inf")],
    }
    for name, values in bad.items():
        for value in values:
            with pytest.raises(InvalidInputError, match=name):
                engine.anomaly_detector(**{name: value})
    with pytest.raises(InvalidTypeError, match="window must be an int"):
        engine.anomaly_detector(window=True)
    with pytest.raises(InvalidTypeError, match="quantile must be a number"):
        engine.anomaly_detector(quantile="0.9")
    assert det.score([]).shape == (0,)
    assert det.score_groups([], []).scores.shape == (0,)
