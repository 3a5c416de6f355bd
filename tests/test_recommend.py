"""Recommendation: similar items, user profiles, exclusions, cold items, interaction blend,
batched (n, k) results, own vectors, save / load, bad input and concurrent use."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from embengine import Engine
from embengine.errors import (
    CorruptFileError,
    InvalidInputError,
    InvalidTypeError,
    ModelMismatchError,
    NotFoundError,
)
from embengine.tasks.recommend import MAX_PADDED_K, Recommender

ITEMS = {
    "alien": "Alien: a salvage crew in deep space is hunted by a creature aboard their starship",
    "starwars": "Star Wars: space opera, rebels fight the galactic empire with starships",
    "interstellar": "Interstellar: astronauts travel through a wormhole to find a new planet",
    "notting": "Notting Hill: romantic comedy, a bookshop owner falls in love with a film star",
    "harry": "When Harry Met Sally: romantic comedy about friends falling in love",
    "pride": "Pride and Prejudice: a period romance about love and marriage",
    "godfather": "The Godfather: crime drama about a mafia family",
    "toy": "Toy Story: animated children's film where toys come to life",
}


class FakeEngine:
    """Stands in for Engine in fast tests: each text's vector is fixed by the test."""

    def __init__(self, table: dict[str, np.ndarray], fingerprint: str = "fake") -> None:
        self.table = table
        self.dim = len(next(iter(table.values())))
        self.spec = SimpleNamespace(fingerprint=fingerprint, name=fingerprint)

    def embed(self, texts: list[str]) -> np.ndarray:
        rows = np.array([self.table[t] for t in texts], dtype=np.float32).reshape(-1, self.dim)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def random_catalogue(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


@pytest.fixture(scope="module")
def movies(engine: Engine) -> Recommender:
    return engine.recommender(ITEMS)


def test_similar_ranks_by_content_and_excludes_the_item(movies: Recommender) -> None:
    scores, ids = movies.similar(["harry", "toy"], k=3)
    assert scores.shape == ids.shape == (2, 3)
    assert "harry" not in ids[0]
    assert set(ids[0, :2]) == {"notting", "pride"}
    assert np.all(np.diff(scores, axis=1) <= 0)
    scores, ids = movies.similar(["toy"], k=50)
    assert ids.shape == (1, 50)
    assert sum(i is not None for i in ids[0]) == len(ITEMS) - 1
    assert np.isneginf(scores[0, len(ITEMS) - 1 :]).all()
    assert all(i is None for i in ids[0, len(ITEMS) - 1 :])


def test_for_user_follows_taste_and_honours_exclusions(movies: Recommender) -> None:
    _, ids = movies.for_user([["alien", "starwars"]], k=2)
    assert "alien" not in ids[0]
    assert "starwars" not in ids[0]
    assert ids[0, 0] == "interstellar"
    _, ids = movies.for_user([["alien", "starwars"]], k=3, exclude=[["interstellar"]])
    assert "interstellar" not in ids[0]
    _, ids = movies.for_user([["alien"]], k=1, exclude_seen=False)
    assert ids.tolist() == [["alien"]]
    _, ids = movies.for_user([{"notting": 1.0, "toy": 0.1}], k=3, candidates=["godfather", "harry"])
    assert ids.tolist() == [["harry", "godfather", None]]


def test_added_item_is_recommended_at_once(engine: Engine) -> None:
    rec = engine.recommender(ITEMS)
    new = "Solaris: a psychologist aboard a space station orbiting an alien planet, sci-fi"
    rec.add_items({"solaris": new})
    _, ids = rec.for_user([["alien", "starwars", "interstellar"]], k=2)
    assert "solaris" in ids[0]
    assert rec.similar(["solaris"], k=1)[1][0, 0] in {"alien", "interstellar", "starwars"}
    with pytest.raises(InvalidInputError, match="already present"):
        rec.add_items({"solaris": new})


def test_interactions_blend_with_content() -> None:
    table = {f"t{n}": np.eye(4)[n % 4] + 0.01 * n for n in range(6)}
    items = {f"i{n}": f"t{n}" for n in range(6)}
    # users who like i0 also like i3, though i3 shares no content with i0; i4 matches i0 in content
    interactions = [(u, "i0") for u in range(5)] + [(u, "i3") for u in range(5)] + [(9, "i5")]
    content = Recommender(FakeEngine(table), items, interactions=interactions, alpha=0.0)
    cooc = Recommender(FakeEngine(table), items, interactions=interactions, alpha=1.0)
    assert content.for_user([["i0"]], k=1)[1][0, 0] == "i4"
    assert cooc.for_user([["i0"]], k=1)[1][0, 0] == "i3"
    blended = Recommender(FakeEngine(table), items, interactions=interactions, alpha=0.5)
    scores, ids = blended.for_user([["i0"]], k=5)
    assert set(ids[0, :2]) == {"i3", "i4"}
    assert scores.max() <= 1.0
    # a cold item (no interactions) can still be recommended through content
    blended.add_items({"cold": "t4"})
    assert "cold" in blended.for_user([["i0"]], k=3)[1][0]


def test_diversity_spreads_the_list() -> None:
    table = {"a": [1, 0, 0], "a2": [1, 0.02, 0], "a3": [1, 0.03, 0.01], "b": [0.7, 0.7, 0]}
    items = {key: key for key in table}
    plain = Recommender(FakeEngine(table), items, center=False)
    diverse = Recommender(FakeEngine(table), items, diversity=0.7, center=False)
    assert plain.for_user([["a"]], k=2)[1].tolist() == [["a2", "a3"]]
    assert diverse.for_user([["a"]], k=2)[1].tolist() == [["a2", "b"]]


def test_several_profiles_cover_two_tastes() -> None:
    rng = np.random.default_rng(0)
    sci, rom = np.eye(8)[0], np.eye(8)[1]
    table = {f"s{n}": sci + 0.1 * rng.standard_normal(8) for n in range(6)}
    table |= {f"r{n}": rom + 0.1 * rng.standard_normal(8) for n in range(6)}
    table["mix"] = sci + rom  # halfway: the single centroid's favourite
    items = {key: key for key in table}
    history = ["s0", "s1", "s2", "r0", "r1", "r2"]
    one = Recommender(FakeEngine(table), items, center=False)
    two = Recommender(FakeEngine(table), items, profiles=2, center=False)
    assert one.for_user([history], k=1)[1][0, 0] == "mix"
    top = two.for_user([history], k=4)[1][0].tolist()
    assert any(i.startswith("s") for i in top)
    assert any(i.startswith("r") for i in top)


def test_centering_removes_the_shared_direction() -> None:
    # most items share a large first component; "a2" has a's own direction but little of the
    # shared one, "generic" has almost only the shared one
    table = {
        "a": np.array([3.0, 1, 0, 0]),
        "a2": np.array([0.5, 1, 0.1, 0]),
        "b": np.array([3.0, 0, 1, 0]),
        "c": np.array([3.0, 0, 0, 1]),
        "generic": np.array([3.0, 0.1, 0.1, 0.1]),
        "d": np.array([3.0, -1, 0, 0]),
        "e": np.array([3.0, 0, -1, 0]),
    }
    items = {key: key for key in table}
    raw = Recommender(FakeEngine(table), items, center=False)
    centred = Recommender(FakeEngine(table), items)
    assert raw.for_user([["a"]], k=1)[1][0, 0] == "generic"
    assert centred.for_user([["a"]], k=1)[1][0, 0] == "a2"
    np.testing.assert_allclose(np.linalg.norm(centred.content_vectors, axis=1), 1.0, rtol=1e-5)


# ---------------------------------------------------------------- batches and own vectors


def test_a_row_does_not_depend_on_the_rest_of_the_batch() -> None:
    x = random_catalogue(300)
    interactions = [(u, int(i)) for u in range(40) for i in np.random.default_rng(u).choice(300, 5)]
    rec = Recommender.from_vectors(x, list(range(300)), interactions=interactions)
    histories = [list(range(n, n + 4)) for n in range(0, 60, 3)]
    scores, ids = rec.for_user(histories, k=7)
    items = list(range(0, 300, 13))
    sim_scores, sim_ids = rec.similar(items, k=7)
    for n, history in enumerate(histories):
        one_scores, one_ids = rec.for_user([history], k=7)
        np.testing.assert_array_equal(one_ids[0], ids[n])
        np.testing.assert_array_equal(one_scores[0], scores[n])
    for n, item in enumerate(items):
        one_scores, one_ids = rec.similar([item], k=7)
        np.testing.assert_array_equal(one_ids[0], sim_ids[n])
        np.testing.assert_array_equal(one_scores[0], sim_scores[n])


def test_int_ids_pad_with_minus_one_and_empty_batches_keep_their_shape() -> None:
    rec = Recommender.from_vectors(random_catalogue(5), [10, 11, 12, 13, 14])
    scores, ids = rec.similar([12], k=6)
    assert ids.dtype == np.int64
    assert ids.shape == scores.shape == (1, 6)
    assert sorted(ids[0, :4].tolist()) == [10, 11, 13, 14]
    assert ids[0, 4:].tolist() == [-1, -1]
    assert np.isneginf(scores[0, 4:]).all()
    scores, ids = rec.for_user([], k=3)
    assert scores.shape == ids.shape == (0, 3)
    assert scores.dtype == np.float32
    scores, ids = rec.for_user([[10], {11: 2.0}], k=3, candidates=[12])
    assert ids.tolist() == [[12, -1, -1], [12, -1, -1]]


def test_from_vectors_needs_no_model_and_matches_the_text_path() -> None:
    table = {key: np.random.default_rng(n).standard_normal(8) for n, key in enumerate("abcdef")}
    engine = FakeEngine(table)
    by_text = Recommender(engine, {key: key for key in table})
    by_vector = Recommender.from_vectors(engine.embed(list(table)), list(table))
    assert by_vector.engine is None
    for got, want in zip(
        by_vector.for_user([["a", "b"]], k=3), by_text.for_user([["a", "b"]], k=3), strict=True
    ):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(InvalidInputError, match="need an engine"):
        by_vector.add_items({"g": "a"})
    by_vector.add_vectors(["g"], 5 * table["a"][None, :])  # rows are normalised
    np.testing.assert_allclose(np.linalg.norm(by_vector.vectors[-1]), 1.0, rtol=1e-6)
    assert by_vector.similar(["a"], k=1)[1][0, 0] == "g"


# ---------------------------------------------------------------- save and load


def test_save_load_round_trips_ids_interactions_and_settings(tmp_path: Path) -> None:
    ids = ["plain", "nul\x00", "c", "c\x00", "lone \ud800 surrogate", "é"]
    x = random_catalogue(len(ids))
    interactions = [("u1", "plain", 2.0), (7, "c"), (7, "nul\x00", 0.5), ("u1", "é")]
    rec = Recommender.from_vectors(
        x, ids, interactions=interactions, alpha=0.3, profiles=2, diversity=0.2, center=False
    )
    path = tmp_path / "rec.emb"
    rec.save(path)
    back = Recommender.load(path)
    assert back.ids == ids
    assert (back.alpha, back.profiles, back.diversity, back.center) == (0.3, 2, 0.2, False)
    np.testing.assert_array_equal(back.vectors, rec.vectors)
    for query in (lambda r: r.similar(ids, k=8), lambda r: r.for_user([["c"], ["é"]], k=4)):
        for got, want in zip(query(back), query(rec), strict=True):
            np.testing.assert_array_equal(got, want)
    # users come back too: a later interaction of user 7 joins its earlier ones
    rec.add_interactions([(7, "é")])
    back.add_interactions([(7, "é")])
    np.testing.assert_array_equal(back.for_user([["c"]], k=5)[0], rec.for_user([["c"]], k=5)[0])


def test_load_checks_the_model_and_the_file(tmp_path: Path) -> None:
    table = {"a": [1.0, 0.0], "b": [0.0, 1.0]}
    rec = Recommender(FakeEngine(table, "model-a"), {1: "a", 2: "b"}, interactions=[(1, 2)])
    path = tmp_path / "rec.emb"
    rec.save(path)
    back = Recommender.load(path, engine=FakeEngine(table, "model-a"))
    assert back.ids == [1, 2]
    assert isinstance(back.ids[0], int)
    back.add_items({3: "a"})  # an engine of the same model embeds new items
    with pytest.raises(ModelMismatchError):
        Recommender.load(path, engine=FakeEngine(table, "model-b"))
    damaged = bytearray(path.read_bytes())
    damaged[-20] ^= 0xFF
    bad = tmp_path / "bad.emb"
    bad.write_bytes(bytes(damaged))
    with pytest.raises(CorruptFileError):
        Recommender.load(bad)


# ---------------------------------------------------------------- bad input


def test_bad_input_is_refused() -> None:
    table = {"x": [1.0, 0.0], "y": [0.0, 1.0]}
    rec = Recommender(FakeEngine(table), {"x": "x", "y": "y"})
    with pytest.raises(NotFoundError, match="unknown item ids: \\['nope'\\]"):
        rec.for_user([["nope"]])
    with pytest.raises(InvalidInputError, match="histories\\[1\\] is empty"):
        rec.for_user([["x"], []])
    with pytest.raises(InvalidInputError, match="weights must be finite and > 0"):
        rec.for_user([{"x": -1.0}])
    with pytest.raises(InvalidInputError, match="weights must be finite and > 0"):
        rec.for_user([{"x": float("inf")}])
    with pytest.raises(InvalidTypeError, match="wrap one history in a list"):
        rec.for_user(["x"])  # type: ignore[list-item]
    with pytest.raises(InvalidTypeError, match="wrap one id in a list"):
        rec.similar("x")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="one collection of ids per history"):
        rec.for_user([["x"]], exclude=[["y"], ["y"]])
    for k in (0, -1):
        with pytest.raises(InvalidInputError, match="k must be >= 1"):
            rec.similar(["x"], k=k)
    for k in (True, 2.0, None):
        with pytest.raises(InvalidTypeError, match="k must be an int"):
            rec.for_user([["x"]], k=k)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="padding"):
        rec.similar(["x"], k=MAX_PADDED_K + 1)
    with pytest.raises(NotFoundError, match="unknown item 'z'"):
        rec.add_interactions([("u", "z")])
    with pytest.raises(InvalidTypeError, match="mapping"):
        rec.add_items(["x"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("setting", "error"),
    [
        ({"alpha": 2.0}, InvalidInputError),
        ({"alpha": -0.1}, InvalidInputError),
        ({"alpha": float("nan")}, InvalidInputError),
        ({"alpha": float("inf")}, InvalidInputError),
        ({"alpha": "0.5"}, InvalidTypeError),
        ({"diversity": 1.0}, InvalidInputError),
        ({"diversity": float("nan")}, InvalidInputError),
        ({"profiles": 0}, InvalidInputError),
        ({"profiles": 2.0}, InvalidTypeError),
        ({"center": "yes"}, InvalidTypeError),
    ],
)
def test_bad_settings_are_refused(setting: dict, error: type) -> None:
    with pytest.raises(error):
        Recommender(None, **setting)


@pytest.mark.parametrize(
    ("row", "error", "message"),
    [
        (("u", "x", float("inf")), InvalidInputError, "finite and > 0"),
        (("u", "x", float("nan")), InvalidInputError, "finite and > 0"),
        (("u", "x", 0.0), InvalidInputError, "finite and > 0"),
        (("u", "x", "3"), InvalidTypeError, "expected a number"),
        (("u",), InvalidInputError, "must be \\(user, item"),
        ("ux", InvalidTypeError, "must be \\(user, item"),
        (((1, 2), "x"), InvalidTypeError, "users are int or str"),
    ],
)
def test_a_bad_interaction_is_refused_and_nothing_is_recorded(
    row: object, error: type, message: str
) -> None:
    table = {"x": [1.0, 0.0, 0.0], "y": [0.0, 1.0, 0.0], "z": [0.0, 0.0, 1.0]}
    items = {key: key for key in table}
    rec = Recommender(FakeEngine(table), items, interactions=[("u", "y")], alpha=1.0)
    before = rec.for_user([["x"]], k=2)
    with pytest.raises(error, match=message):
        rec.add_interactions([("v", "z"), ("v", "x", 2.0), row])  # the bad row comes last
    for got, want in zip(rec.for_user([["x"]], k=2), before, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    ("ids", "error"),
    [
        ([True, 1], InvalidTypeError),
        ([-1, 1], InvalidInputError),
        ([2**63, 1], InvalidInputError),
        ([1, "a"], InvalidTypeError),
        ([1.0, 2.0], InvalidTypeError),
        ([1, 1], InvalidInputError),
    ],
)
def test_bad_item_ids_are_refused(ids: list, error: type) -> None:
    with pytest.raises(error):
        Recommender.from_vectors(random_catalogue(2), ids)


def test_bad_vectors_are_refused_and_nothing_is_added() -> None:
    rec = Recommender.from_vectors(random_catalogue(3), [0, 1, 2])
    bad = random_catalogue(2)
    bad[1, 3] = np.nan
    for vectors, ids in ((bad, [3, 4]), (np.zeros((1, 16)), [3]), (random_catalogue(1, 8), [3])):
        with pytest.raises(InvalidInputError):
            rec.add_vectors(ids, vectors)
    with pytest.raises(InvalidInputError, match="2 ids for 1 vectors"):
        rec.add_vectors([3, 4], random_catalogue(1))
    assert rec.ids == [0, 1, 2]
    assert rec.vectors.shape == (3, 16)


# ---------------------------------------------------------------- threads


def test_concurrent_queries_see_the_state_before_or_after_each_write() -> None:
    """Readers run while a writer adds items and interactions: every result equals the
    result of one of the states the writes pass through, and nothing raises."""
    rng = np.random.default_rng(7)
    start = random_catalogue(200, seed=1)
    writes: list[tuple[str, object]] = []
    for step in range(12):
        if step % 2 == 0:
            writes.append(("items", random_catalogue(3, seed=100 + step)))
        else:
            writes.append(("interactions", [(u, int(i)) for u, i in rng.integers(0, 200, (30, 2))]))

    def apply(rec: Recommender, write: tuple[str, object]) -> None:
        kind, payload = write
        if kind == "items":
            rec.add_vectors(list(range(len(rec), len(rec) + 3)), payload)  # type: ignore[arg-type]
        else:
            rec.add_interactions(payload)  # type: ignore[arg-type]

    def query(rec: Recommender) -> list[tuple[np.ndarray, np.ndarray]]:
        """One result per call: each call reads one state (two calls may read two)."""
        return [rec.similar([0, 5], k=6), rec.for_user([[1, 2, 3], {4: 2.0}], k=6)]

    reference = Recommender.from_vectors(start, list(range(200)), alpha=0.5)
    expected = [query(reference)]
    for write in writes:
        apply(reference, write)
        expected.append(query(reference))

    shared = Recommender.from_vectors(start, list(range(200)), alpha=0.5)
    errors: list[BaseException] = []
    seen: list[list[tuple[np.ndarray, np.ndarray]]] = []
    done = threading.Event()

    def reader() -> None:
        try:
            while not done.is_set():
                seen.append(query(shared))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for write in writes:
        apply(shared, write)
    done.set()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[:3]
    assert seen

    def same(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray]) -> bool:
        return all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))

    for call in (0, 1):
        unmatched = [
            n for n, got in enumerate(seen) if not any(same(got[call], w[call]) for w in expected)
        ]
        assert not unmatched, f"call {call}: {len(unmatched)} of {len(seen)} match no state"
    assert all(same(g, w) for g, w in zip(query(shared), expected[-1], strict=True))
