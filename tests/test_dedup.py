"""Dedup and entity matching: duplicates found, distinct records kept apart, hooks honoured."""

from __future__ import annotations

import numpy as np
import pytest

from embengine import Engine, ops
from embengine.errors import InvalidInputError
from embengine.records import record_texts
from embengine.tasks.dedup import (
    Clusters,
    Pairs,
    StringConfirm,
    assign,
    auto_threshold,
    connected_labels,
    dedup_vectors,
    exact_pairs,
    identifier_agreement,
    identifiers,
    lexical_scores,
    match_candidates,
    match_vectors,
    numbers,
    partitioned_pairs,
    select_matches,
)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered_with_duplicates(
    rng: np.random.Generator, n: int = 3000, dim: int = 32, dups: int = 60
) -> tuple[np.ndarray, set[tuple[int, int]]]:
    """Rows around a few topics (mates at cosine ~0.3) plus planted copies at cosine >= 0.95."""
    topics = unit(rng.standard_normal((20, dim)))
    x = unit(
        np.sqrt(0.3) * topics[rng.integers(0, 20, n)] + 0.85 * unit(rng.standard_normal((n, dim)))
    )
    chosen = rng.choice(n, 2 * dups, replace=False)
    for a, b in zip(chosen[:dups], chosen[dups:], strict=True):
        x[b] = unit((x[a] + 0.05 * rng.standard_normal(dim))[None])[0]
    planted = {(min(a, b), max(a, b)) for a, b in zip(chosen[:dups], chosen[dups:], strict=True)}
    return x, planted


def test_record_texts_joins_fields_and_templates() -> None:
    records = [{"name": "Sony TV", "brand": None, "price": 300}, "plain text"]
    assert record_texts(records) == ["Sony TV  300", "plain text"]
    assert record_texts(records, fields=["name", "price"]) == ["Sony TV 300", "plain text"]
    assert record_texts(records, template="{name} by {brand} for {missing}$") == [
        "Sony TV by  for $",
        "plain text",
    ]


def test_record_texts_rejects_bad_records() -> None:
    with pytest.raises(TypeError, match=r"records\[1\] is int"):
        record_texts(["ok", 3])
    with pytest.raises(TypeError, match="not a single record"):
        record_texts("one string")


def test_identifiers_normalise_model_numbers() -> None:
    assert "pslx350h" in identifiers("Sony PS-LX350H Belt-Drive Turntable")
    assert "pslx350h" in identifiers("Sony Turntable - PSLX350H")
    assert "kxtsc14w" in identifiers("Panasonic KX TSC14W Telephone")
    assert identifiers("Sony 5 Disc CD Player") == set()
    assert identifier_agreement({"kdl40"}, {"kdl46"}) == 0.0
    assert identifier_agreement({"mdrj10"}, {"mdrj10blue"}) == 0.9
    assert identifier_agreement(set(), {"x100"}) is None


def test_connected_labels_is_union_find_with_earliest_representative() -> None:
    i = np.array([4, 1, 0, 6])
    j = np.array([3, 2, 1, 5])
    labels = connected_labels(7, i, j)
    assert labels.tolist() == [0, 0, 0, 3, 3, 5, 5]
    clusters = Clusters(labels, None)  # type: ignore[arg-type]
    assert clusters.representatives.tolist() == [0, 3, 5]
    assert [g.tolist() for g in clusters.groups()] == [[0, 1, 2], [3, 4], [5, 6]]


def test_exact_pairs_blocked_equals_one_shot(rng: np.random.Generator) -> None:
    x = unit(rng.standard_normal((53, 8)))
    i, j, s = exact_pairs(x, 0.4, block=7)
    ri, rj, rs = ops.pairs_above(x, 0.4)
    order = np.lexsort((j, i))
    np.testing.assert_array_equal(i[order], ri)
    np.testing.assert_array_equal(j[order], rj)
    np.testing.assert_allclose(s[order], rs, atol=1e-6)


def test_partitioned_pairs_find_planted_duplicates(rng: np.random.Generator) -> None:
    x, planted = clustered_with_duplicates(rng)
    exact = set(zip(*exact_pairs(x, 0.9)[:2], strict=True))
    i, j, s = partitioned_pairs(x, 0.9, partitions=12)
    found = set(zip(i.tolist(), j.tolist(), strict=True))
    assert planted <= exact
    assert len(found & planted) / len(planted) >= 0.95
    assert found <= exact  # approximate recall, never a pair under the threshold
    assert (s >= 0.9 - 1e-6).all()
    assert (i < j).all()


def test_dedup_vectors_paths_agree_and_keep_distinct_rows_apart(rng: np.random.Generator) -> None:
    x, planted = clustered_with_duplicates(rng, n=800, dups=20)
    exact = dedup_vectors(x, 0.9, method="exact")
    part = dedup_vectors(x, 0.9, method="partitioned", partitions=4)
    for a, b in planted:
        assert exact.labels[a] == exact.labels[b]
    assert len(exact.groups()) == len(planted)  # nothing else merged
    assert len(exact.representatives) == len(x) - len(planted)
    assert (part.labels == exact.labels).mean() > 0.99


def test_confirm_hook_is_called_and_can_veto(rng: np.random.Generator) -> None:
    x = unit(np.repeat(rng.standard_normal((2, 16)), 2, axis=0) + 1e-3)
    texts = ["alpha", "alpha!", "beta", "gamma"]
    calls = []

    def confirm(a: str, b: str) -> bool:
        calls.append((a, b))
        return a.startswith(b[:3])

    clusters = dedup_vectors(x, 0.99, texts=texts, confirm=confirm)
    assert sorted(calls) == [("alpha", "alpha!"), ("beta", "gamma")]
    assert clusters.labels.tolist() == [0, 0, 2, 3]
    with pytest.raises(ValueError, match="confirm needs texts"):
        dedup_vectors(x, 0.99, confirm=confirm)


def test_bad_input_is_refused(rng: np.random.Generator) -> None:
    x = unit(rng.standard_normal((4, 8)))
    with pytest.raises(ValueError, match="threshold"):
        dedup_vectors(x, 1.5)
    with pytest.raises(ValueError, match="method"):
        dedup_vectors(x, 0.9, method="fast")
    x[2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or inf values"):
        dedup_vectors(x, 0.9)
    with pytest.raises(ValueError, match="dim 4, expected 8"):
        match_vectors(unit(rng.standard_normal((3, 8))), unit(rng.standard_normal((3, 4))), 0.5)
    with pytest.raises(TypeError, match="confirm must be"):
        dedup_vectors(unit(rng.standard_normal((3, 8))), 0.9, texts=["a"] * 3, confirm="yes")


def test_match_vectors_mutual_best(rng: np.random.Generator) -> None:
    right = unit(rng.standard_normal((6, 16)))
    left = unit(right[[2, 0, 5]] + 0.05 * rng.standard_normal((3, 16)))
    left = np.concatenate([left, left[:1]])  # a second, slightly different copy of right[2]
    i, j, _s = match_vectors(left, right, 0.5)
    assert dict(zip(i.tolist(), j.tolist(), strict=True)).items() >= {(1, 0), (2, 5)}
    assert list(j).count(2) == 1  # one to one: right[2] goes to one left row only
    _i_all, j_all, _ = match_vectors(left, right, 0.5, assignment="none", candidates=1)
    assert list(j_all).count(2) == 2
    empty = match_vectors(left[:0], right, 0.5)
    assert len(empty.i) == 0
    assert empty.score.dtype == np.float32


def test_engine_dedup_finds_known_duplicates(engine: Engine) -> None:
    records = [
        {"name": "Apple iPhone 12, 64GB, black", "brand": "Apple"},
        {"name": "Bosch cordless drill PSR 1800", "brand": "Bosch"},
        {"name": "iPhone 12 black 64 GB", "brand": "Apple"},
        {"name": "Fresh organic bananas, one bunch", "brand": ""},
        {"name": "Bosch PSR1800 cordless drill driver", "brand": "Bosch"},
    ]
    clusters = engine.dedup(records, 0.8, template="{brand} {name}")
    assert clusters.labels[2] == clusters.labels[0]
    assert clusters.labels[4] == clusters.labels[1]
    assert clusters.labels[3] == 3  # the bananas stay alone
    assert len(clusters.groups()) == 2


def test_engine_match_with_default_confirmation(engine: Engine) -> None:
    left = ["Sony Bravia 40 inch LCD TV - KDL40V4100", "Canon PowerShot camera - SD1100IS"]
    right = ["Canon PowerShot SD1100 IS digital camera", "Sony KDL-46V4100 46in Bravia LCD TV"]
    loose = engine.match(left, right, 0.3, number_weight=0.0)
    assert set(zip(loose.i.tolist(), loose.j.tolist(), strict=True)) == {(0, 1), (1, 0)}
    strict = engine.match(left, right, 0.3, confirm=True)
    assert list(zip(strict.i.tolist(), strict.j.tolist(), strict=True)) == [(1, 0)]
    assert StringConfirm()("KDL40V4100 TV", "KDL46V4100 TV") is False


def test_lexical_scores_are_tfidf_cosines() -> None:
    left = ["Sony Bravia KDL40V4100", "Canon camera", "completely different words"]
    right = ["sony bravia kdl40v4100", "Canon PowerShot camera", "zzz qqq"]
    i = np.array([0, 1, 1, 2, 0])
    j = np.array([0, 1, 0, 2, 1])
    s = lexical_scores(left, right, i, j)
    assert s.dtype == np.float32
    assert s[0] == pytest.approx(1.0, abs=1e-5)  # same text up to case
    assert 0.3 < s[1] < 1.0  # shares "canon" and "camera"
    assert s[2] == pytest.approx(0.0)  # nothing in common
    assert s[3] == pytest.approx(0.0)
    assert s[1] > s[4]
    flipped = lexical_scores(right, left, j, i)
    np.testing.assert_allclose(flipped, s, atol=1e-6)  # symmetric


def planted_tables(
    rng: np.random.Generator, matched: int, unmatched: int, extra_right: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Left rows 0..matched-1 are noisy copies of right rows 0..matched-1; the rest of
    both tables are random (no partner)."""
    right = unit(rng.standard_normal((matched + extra_right, 32)))
    copies = unit(right[:matched] + 0.08 * rng.standard_normal((matched, 32)))
    return np.concatenate([copies, unit(rng.standard_normal((unmatched, 32)))]), right


@pytest.mark.parametrize(("matched", "unmatched"), [(60, 140), (150, 10)])
def test_auto_threshold_keeps_planted_matches_and_drops_unmatched_rows(
    rng: np.random.Generator, matched: int, unmatched: int
) -> None:
    left, right = planted_tables(rng, matched, unmatched, extra_right=200)
    pairs = match_vectors(left, right)  # threshold="auto"
    found = set(zip(pairs.i.tolist(), pairs.j.tolist(), strict=True))
    planted = {(n, n) for n in range(matched)}
    assert len(found & planted) >= 0.95 * matched
    everything = match_vectors(left, right, -1.0)
    unmatched_pairs = len(everything.i) - matched  # a one-to-one assignment pairs these too
    assert unmatched_pairs >= 0.9 * unmatched
    # Random rows are all alike (real tables vary row to row), so the second-best scores
    # that stand in for rows without a partner run low; the cut still refuses most.
    assert len(found - planted) <= 0.6 * unmatched_pairs


def test_auto_threshold_adapts_to_the_share_of_rows_with_a_partner(
    rng: np.random.Generator,
) -> None:
    left, right = planted_tables(rng, 300, 0)
    everyone = match_candidates(left, right)
    low = auto_threshold(everyone)
    assert len(select_matches(everyone, low).i) >= 295  # every row has a partner: all pass
    left, right = planted_tables(rng, 60, 240, extra_right=200)
    few = match_candidates(left, right)
    cut = auto_threshold(few)
    kept = assign(few)
    planted = kept.i == kept.j
    assert cut > np.median(kept.score[~planted])  # most rows have no partner: the cut rises
    assert np.mean(kept.score[planted] >= cut) >= 0.95
    one = match_vectors(left[:1], right[:1])
    assert (one.i.tolist(), one.j.tolist()) == ([0], [0])  # no impostors: keep the pair


def test_assignment_greedy_keeps_next_best_partner() -> None:
    # left 0's best is right 0, but right 0 prefers left 1; left 0's next best is right 1
    pairs = Pairs(np.array([0, 0, 1]), np.array([0, 1, 0]), np.array([0.9, 0.8, 0.95], np.float32))
    greedy = assign(pairs)
    assert list(zip(greedy.i.tolist(), greedy.j.tolist(), strict=True)) == [(0, 1), (1, 0)]
    mutual = assign(pairs, "mutual")
    assert list(zip(mutual.i.tolist(), mutual.j.tolist(), strict=True)) == [(1, 0)]
    assert len(assign(pairs, "none").i) == 3
    with pytest.raises(InvalidInputError, match="assignment"):
        assign(pairs, "best")


def test_numbers_agree_term() -> None:
    assert numbers("PS-LX350H Turntable, 2 pack") == {"pslx350h"}  # "2": too short
    assert numbers("Editorial J. Gray 1999") == {"1999"}
    assert numbers("Panasonic KX TSC14W 500GB") == {"tsc14w", "kxtsc14w", "500gb"}
    left = ["Editorial Jim Gray 1999", "Seagate drive 500GB"]
    right = ["Editorial Jim Gray 2001", "Editorial Jim Gray 1999", "Seagate drive 500GB"]
    x = unit(np.ones((2, 4)))
    y = unit(np.ones((3, 4)))  # every cosine ties: only the text can tell the pairs apart
    pairs = match_vectors(x, y, 0.0, left_texts=left, right_texts=right, lexical_weight=0.0)
    assert list(zip(pairs.i.tolist(), pairs.j.tolist(), strict=True)) == [(0, 1), (1, 2)]


def test_match_bad_options_are_refused(rng: np.random.Generator) -> None:
    x = unit(rng.standard_normal((3, 8)))
    for kwargs, name in (
        ({"assignment": "best"}, "assignment"),
        ({"number_weight": float("nan")}, "number_weight"),
        ({"lexical_weight": -0.1}, "lexical_weight"),
        ({"candidates": 0}, "candidates"),
        ({"threshold": -2.0}, "threshold"),
    ):
        with pytest.raises(InvalidInputError, match=name):
            match_vectors(x, x, **kwargs)
    with pytest.raises(InvalidInputError, match="null_lambda"):
        auto_threshold(match_candidates(x, x), null_lambda=1.0)


def test_engine_match_with_per_table_fields(engine: Engine) -> None:
    left = [
        {"title": "Bosch PSR 1800 cordless drill", "sku": "A1"},
        {"title": "Apple iPhone 12 64GB black", "sku": "A2"},
    ]
    right = [
        {"name": "iPhone 12 (64 GB) - Black", "maker": "Apple", "sku": "zz"},
        {"name": "PSR1800 cordless drill driver", "maker": "Bosch", "sku": "yy"},
        {"name": "Organic bananas", "maker": "", "sku": "xx"},
    ]
    pairs = engine.match(left, right, left_fields=["title"], right_template="{maker} {name}")
    assert set(zip(pairs.i.tolist(), pairs.j.tolist(), strict=True)) == {(0, 1), (1, 0)}
    assert record_texts(right, template="{maker} {name}")[0] == "Apple iPhone 12 (64 GB) - Black"
    with pytest.raises(InvalidInputError, match="left_fields or left_template"):
        engine.match(left, right, left_fields=["title"], left_template="{title}")
    with pytest.raises(InvalidInputError, match="fields or template"):
        engine.match(left, right, fields=["title"], template="{title}")
    for bad in (float("nan"), 5.0, "high"):
        with pytest.raises(InvalidInputError, match="threshold"):
            engine.match(left, right, bad)
    with pytest.raises(InvalidInputError, match="lexical_weight"):
        engine.match(left, right, lexical_weight=1.5)
    with pytest.raises(InvalidInputError, match="assignment"):
        engine.match(left, right, assignment="mutual best")
