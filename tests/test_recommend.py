"""Recommendation: similar items, user profiles, exclusions, cold items, interaction blend."""

from __future__ import annotations

import numpy as np
import pytest

from embengine import Engine
from embengine.tasks.recommend import Recommender

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

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table
        self.dim = len(next(iter(table.values())))

    def embed(self, texts: list[str]) -> np.ndarray:
        rows = np.array([self.table[t] for t in texts], dtype=np.float32).reshape(-1, self.dim)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def movies(engine: Engine) -> Recommender:
    return engine.recommender(ITEMS)


def test_similar_ranks_by_content_and_excludes_the_item(movies: Recommender) -> None:
    scores, ids = movies.similar("harry", k=3)
    assert "harry" not in ids
    assert set(ids[:2]) == {"notting", "pride"}
    assert np.all(np.diff(scores) <= 0)
    assert len(movies.similar("toy", k=50)[1]) == len(ITEMS) - 1


def test_for_user_follows_taste_and_honours_exclusions(movies: Recommender) -> None:
    _, ids = movies.for_user(["alien", "starwars"], k=2)
    assert "alien" not in ids
    assert "starwars" not in ids
    assert ids[0] == "interstellar"
    _, ids = movies.for_user(["alien", "starwars"], k=3, exclude=["interstellar"])
    assert "interstellar" not in ids
    _, ids = movies.for_user(["alien"], k=1, exclude_seen=False)
    assert ids.tolist() == ["alien"]
    _, ids = movies.for_user({"notting": 1.0, "toy": 0.1}, k=8, candidates=["godfather", "harry"])
    assert ids.tolist() == ["harry", "godfather"]


def test_added_item_is_recommended_at_once(engine: Engine) -> None:
    rec = engine.recommender(ITEMS)
    new = "Solaris: a psychologist aboard a space station orbiting an alien planet, sci-fi"
    rec.add_items({"solaris": new})
    _, ids = rec.for_user(["alien", "starwars", "interstellar"], k=2)
    assert "solaris" in ids
    assert rec.similar("solaris", k=1)[1][0] in {"alien", "interstellar", "starwars"}
    with pytest.raises(ValueError, match="already present"):
        rec.add_items({"solaris": new})


def test_interactions_blend_with_content() -> None:
    table = {f"t{n}": np.eye(4)[n % 4] + 0.01 * n for n in range(6)}
    items = {f"i{n}": f"t{n}" for n in range(6)}
    # users who like i0 also like i3, though i3 shares no content with i0; i4 matches i0 in content
    interactions = [(u, "i0") for u in range(5)] + [(u, "i3") for u in range(5)] + [(9, "i5")]
    content = Recommender(FakeEngine(table), items, interactions=interactions, alpha=0.0)
    cooc = Recommender(FakeEngine(table), items, interactions=interactions, alpha=1.0)
    assert content.for_user(["i0"], k=1)[1][0] == "i4"
    assert cooc.for_user(["i0"], k=1)[1][0] == "i3"
    blended = Recommender(FakeEngine(table), items, interactions=interactions, alpha=0.5)
    scores, ids = blended.for_user(["i0"], k=5)
    assert set(ids[:2]) == {"i3", "i4"}
    assert scores.max() <= 1.0
    # a cold item (no interactions) can still be recommended through content
    blended.add_items({"cold": "t4"})
    assert "cold" in blended.for_user(["i0"], k=3)[1]


def test_diversity_spreads_the_list() -> None:
    table = {"a": [1, 0, 0], "a2": [1, 0.02, 0], "a3": [1, 0.03, 0.01], "b": [0.7, 0.7, 0]}
    items = {key: key for key in table}
    plain = Recommender(FakeEngine(table), items, center=False)
    diverse = Recommender(FakeEngine(table), items, diversity=0.7, center=False)
    assert plain.for_user(["a"], k=2)[1].tolist() == ["a2", "a3"]
    assert diverse.for_user(["a"], k=2)[1].tolist() == ["a2", "b"]


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
    assert one.for_user(history, k=1)[1][0] == "mix"
    top = two.for_user(history, k=4)[1].tolist()
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
    assert raw.for_user(["a"], k=1)[1][0] == "generic"
    assert centred.for_user(["a"], k=1)[1][0] == "a2"
    np.testing.assert_allclose(np.linalg.norm(centred.content_vectors, axis=1), 1.0, rtol=1e-5)


def test_bad_input_is_refused() -> None:
    table = {"x": [1.0, 0.0], "y": [0.0, 1.0]}
    rec = Recommender(FakeEngine(table), {"x": "x", "y": "y"})
    with pytest.raises(KeyError, match="unknown item ids: \\['nope'\\]"):
        rec.for_user(["nope"])
    with pytest.raises(ValueError, match="history is empty"):
        rec.for_user([])
    with pytest.raises(ValueError, match="weights must be finite and > 0"):
        rec.for_user({"x": -1.0})
    with pytest.raises(ValueError, match="k must be >= 1"):
        rec.similar("x", k=0)
    with pytest.raises(KeyError, match="unknown item 'z'"):
        rec.add_interactions([("u", "z")])
    with pytest.raises(ValueError, match="alpha must be in"):
        Recommender(FakeEngine(table), {"x": "x"}, alpha=2.0)
    with pytest.raises(TypeError, match="mapping"):
        rec.add_items(["x"])  # type: ignore[arg-type]
