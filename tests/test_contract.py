"""One contract for every job (README, "One contract for every job"), checked across jobs.

- every saveable object round-trips: `obj.save(path)`, then `type(obj).load(path, engine=eng)`
  gives the same results;
- every ranked result is `(scores, ids)` of shape (n, k), with score -inf and id -1 (int
  ids) or None (str ids) in the slots past the available results;
- errors on bad input come from one family (embengine.errors.EmbengineError);
- Engine factories take typed keyword arguments, not **options;
- layers import downward: tasks, the index and the store do not import engine.py, and no
  task imports another task's private names.

Cases marked `xfail(strict=True, reason="contract: <branch> ...")` fail only because the
named branch, which moves that object to the contract, has not landed here yet: drop the
mark when it does (strict, so a case that starts passing is noticed).
"""

from __future__ import annotations

import ast
import inspect
import pkgutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import embengine
import embengine.tasks
from embengine import Engine
from embengine.errors import EmbengineError
from embengine.index import VectorIndex
from embengine.store import EmbeddingStore
from embengine.tasks.anomaly import AnomalyDetector
from embengine.tasks.classify import Classifier
from embengine.tasks.dedup import Clusters, Pairs, dedup, dedup_vectors, match
from embengine.tasks.recommend import Recommender

PACKAGE = Path(embengine.__file__).resolve().parent
DOCS = [
    "The cat sat on the mat and purred.",
    "A kitten curled up asleep on the rug.",
    "The football match ended in a late goal.",
    "Stocks fell sharply after the earnings report.",
]
QUERIES = ["a sleepy cat", "a goal in the last minute", "shares dropped"]


def pending(branch: str, what: str) -> pytest.MarkDecorator:
    """A case waiting for another branch: strict, so its landing shows up as XPASS."""
    return pytest.mark.xfail(strict=True, reason=f"contract: {branch} {what}")


def same(got: Any, want: Any) -> None:
    """Equal results: arrays element-wise (object arrays by value), sequences item by item."""
    if isinstance(want, (tuple, list)) and not isinstance(want, str):
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            same(g, w)
    elif isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray)
        assert got.shape == want.shape
        assert got.dtype == want.dtype
        if want.dtype == object:
            assert got.tolist() == want.tolist()
        else:
            np.testing.assert_array_equal(got, want)
    else:
        assert got == want


# ---------------------------------------------------------------- save / load round trips


@dataclass(frozen=True)
class Saveable:
    """How to build one saveable object and what results must survive save / load."""

    build: Callable[[Engine], Any]
    results: Callable[[Any], Any]


def _index_int(engine: Engine) -> VectorIndex:
    return engine.index(DOCS, ids=[10, 20, 30, 40])


def _index_str(engine: Engine) -> VectorIndex:
    return engine.index(DOCS, ids=["cat", "kitten", "goal", "stocks"], lexical=True)


def _classifier(engine: Engine) -> Classifier:
    return engine.classifier({"animals": DOCS[:2], "sport": DOCS[2:3], "money": DOCS[3:]})


def _detector(engine: Engine) -> AnomalyDetector:
    return engine.anomaly_detector(window=50).fit(
        [f"user {n} logged in from host {n % 3}" for n in range(20)]
    )


def _recommender_str(engine: Engine) -> Recommender:
    items = dict(zip(["cat", "kitten", "goal", "stocks"], DOCS, strict=True))
    return engine.recommender(items, interactions=[("u", "cat"), ("u", "goal"), ("v", "cat")])


def _recommender_int(engine: Engine) -> Recommender:
    return Recommender.from_vectors(engine.embed(DOCS), [7, 3, 5, 1], engine=engine)


def _store(engine: Engine) -> EmbeddingStore:
    store = EmbeddingStore.for_engine(None, engine)
    store.put(DOCS, engine.embed(DOCS), ids=["a", "b", "c", "d"], metadata=[{"n": 1}] * 4)
    return store


SAVEABLE = {
    "index-int-ids": pytest.param(
        Saveable(_index_int, lambda idx: idx.search(QUERIES, 3)), id="index-int-ids"
    ),
    "index-str-ids-hybrid": pytest.param(
        Saveable(
            _index_str,
            lambda idx: [idx.search(QUERIES, 3), idx.search(QUERIES, 3, mode="hybrid")],
        ),
        id="index-str-ids-hybrid",
    ),
    "classifier": pytest.param(
        Saveable(_classifier, lambda clf: [clf.predict(QUERIES), clf.predict_proba(QUERIES)]),
        id="classifier",
    ),
    "anomaly-detector": pytest.param(
        Saveable(_detector, lambda det: [det.score(QUERIES), det.threshold]),
        id="anomaly-detector",
    ),
    "recommender-str-ids": pytest.param(
        Saveable(
            _recommender_str,
            lambda rec: [rec.similar(["cat", "goal"], 5), rec.for_user([["cat"], ["goal"]], 5)],
        ),
        id="recommender-str-ids",
    ),
    "recommender-int-ids": pytest.param(
        Saveable(_recommender_int, lambda rec: [rec.similar([7, 1], 5), rec.for_user([[3]], 5)]),
        id="recommender-int-ids",
    ),
    "store": pytest.param(
        Saveable(_store, lambda store: [store.lookup([*DOCS, "absent"]), store.info(DOCS)]),
        id="store",
    ),
}


@pytest.mark.parametrize("case", SAVEABLE.values())
def test_saved_objects_load_with_the_same_results(
    case: Saveable, engine: Engine, tmp_path: Path
) -> None:
    obj = case.build(engine)
    path = tmp_path / "saved.emb"
    obj.save(path)
    loaded = type(obj).load(path, engine=engine)
    assert type(loaded) is type(obj)
    same(case.results(loaded), case.results(obj))


# ---------------------------------------------------------------- ranked results


@dataclass(frozen=True)
class Ranked:
    """A ranked call with n rows and k slots, of which `found[row]` hold results."""

    call: Callable[[Engine], tuple[np.ndarray, np.ndarray]]
    n: int
    k: int
    found: list[int]
    id_kind: str  # "int" or "str"


RANKED = [
    pytest.param(
        Ranked(lambda e: _index_int(e).search(QUERIES[:2], 6), 2, 6, [4, 4], "int"),
        id="index-search-int",
    ),
    pytest.param(
        Ranked(lambda e: _index_str(e).search(QUERIES[:2], 6), 2, 6, [4, 4], "str"),
        id="index-search-str",
    ),
    pytest.param(
        Ranked(lambda e: _index_int(e).search(QUERIES[:1], 3, allow=[30]), 1, 3, [1], "int"),
        id="index-search-allow",
    ),
    pytest.param(
        Ranked(lambda e: _index_str(e).search(["purred"], 3, mode="lexical"), 1, 3, [1], "str"),
        id="index-search-lexical",
    ),
    pytest.param(
        Ranked(lambda e: _index_str(e).search(QUERIES[:2], 6, mode="hybrid"), 2, 6, [4, 4], "str"),
        id="index-search-hybrid",
    ),
    pytest.param(
        Ranked(lambda e: _index_int(e).search([], 3), 0, 3, [], "int"),
        id="index-search-empty",
    ),
    pytest.param(
        Ranked(lambda e: _recommender_str(e).similar(["cat", "goal"], 6), 2, 6, [3, 3], "str"),
        id="recommender-similar-str",
    ),
    pytest.param(
        Ranked(lambda e: _recommender_int(e).similar([7], 9), 1, 9, [3], "int"),
        id="recommender-similar-int",
    ),
    pytest.param(
        Ranked(
            lambda e: _recommender_str(e).for_user([["cat"], {"goal": 2.0, "cat": 1.0}], 5),
            2,
            5,
            [3, 2],
            "str",
        ),
        id="recommender-for-user-str",
    ),
    pytest.param(
        Ranked(
            lambda e: _recommender_int(e).for_user([[7, 3]], 4, candidates=[5, 7]),
            1,
            4,
            [1],
            "int",
        ),
        id="recommender-for-user-int",
    ),
    pytest.param(
        Ranked(lambda e: _recommender_int(e).for_user([], 4), 0, 4, [], "int"),
        id="recommender-for-user-empty",
    ),
]


@pytest.mark.parametrize("case", RANKED)
def test_ranked_results_are_n_by_k_with_documented_sentinels(case: Ranked, engine: Engine) -> None:
    scores, ids = case.call(engine)
    assert scores.shape == ids.shape == (case.n, case.k)
    assert scores.dtype == np.float32
    assert ids.dtype == (np.int64 if case.id_kind == "int" else object)
    missing = -1 if case.id_kind == "int" else None
    for row, found in enumerate(case.found):
        assert np.isfinite(scores[row, :found]).all()
        assert np.all(np.diff(scores[row, :found]) <= 0), "best first"
        assert missing not in ids[row, :found].tolist()
        assert np.isneginf(scores[row, found:]).all()
        assert all(i is missing or i == missing for i in ids[row, found:].tolist())


def test_dedup_and_match_results_have_fixed_types(engine: Engine) -> None:
    """dedup: Clusters with (n,) int64 labels; match: Pairs of equal-length int64, int64,
    float32 arrays; empty input gives the same types, empty; text and vector paths agree."""
    records = [DOCS[0], DOCS[0] + " ", DOCS[2], DOCS[3]]
    for clusters in (engine.dedup(records, 0.95), engine.dedup([], 0.95)):
        assert isinstance(clusters, Clusters)
        assert clusters.labels.dtype == np.int64
        assert clusters.labels.shape == (len(clusters.labels),)
        _check_pairs(clusters.pairs)
    clusters = engine.dedup(records, 0.95)
    assert clusters.labels.tolist() == [0, 0, 2, 3]
    same(dedup_vectors(engine.embed(records), 0.95).labels, clusters.labels)
    same(dedup(engine, records, 0.95).labels, clusters.labels)
    for pairs in (engine.match(DOCS[:2], DOCS[1:3]), match(engine, [], DOCS, 0.5)):
        _check_pairs(pairs)
    assert len(engine.match([], DOCS).i) == 0


def _check_pairs(pairs: Pairs) -> None:
    assert isinstance(pairs, Pairs)
    assert (pairs.i.dtype, pairs.j.dtype, pairs.score.dtype) == (np.int64, np.int64, np.float32)
    assert pairs.i.shape == pairs.j.shape == pairs.score.shape == (len(pairs.i),)


# ---------------------------------------------------------------- one error family


def _fitted_index(engine: Engine) -> VectorIndex:
    return _index_int(engine)


ERRORS = [
    pytest.param(lambda e: e.embed([None]), id="embed-none"),
    pytest.param(lambda e: e.embed("one string"), id="embed-bare-str"),
    pytest.param(lambda e: _recommender_str(e).similar(["nope"], 3), id="recommender-unknown"),
    pytest.param(lambda e: _recommender_str(e).for_user([["cat"]], 0), id="recommender-k-0"),
    pytest.param(
        lambda e: _recommender_str(e).add_interactions([("u", "cat", float("inf"))]),
        id="recommender-inf-weight",
    ),
    pytest.param(lambda e: e.recommender({}, alpha=float("nan")), id="recommender-nan-alpha"),
    pytest.param(
        lambda e: Recommender.from_vectors(np.full((1, 4), np.nan), [0]),
        id="recommender-nan-vectors",
    ),
    pytest.param(
        lambda e: _index_int(e).search(QUERIES, 0),
        id="index-k-0",
    ),
    pytest.param(
        lambda e: _index_int(e).remove([99]),
        id="index-remove-unknown",
    ),
    pytest.param(
        lambda e: _index_int(e).add(DOCS[:1], ids=[10]),
        id="index-duplicate-id",
    ),
    pytest.param(
        lambda e: e.classifier({"a": DOCS[:1]}, mode="nope"),
        id="classifier-bad-mode",
    ),
    pytest.param(
        lambda e: _classifier(e).predict_vectors(np.zeros((1, 3), np.float32)),
        id="classifier-wrong-dim",
    ),
    pytest.param(
        lambda e: e.anomaly_detector(window=1),
        id="anomaly-bad-window",
    ),
    pytest.param(
        lambda e: e.anomaly_detector().score(QUERIES),
        id="anomaly-not-fitted",
    ),
    pytest.param(
        lambda e: EmbeddingStore.for_engine(None, e).put(DOCS, np.zeros((1, e.dim))),
        id="store-count-mismatch",
    ),
    pytest.param(
        lambda e: e.dedup(DOCS, threshold=2.0),
        id="dedup-bad-threshold",
    ),
    pytest.param(
        lambda e: e.match(DOCS, DOCS, threshold=float("nan")),
        id="match-nan-threshold",
    ),
]


@pytest.mark.parametrize("call", ERRORS)
def test_bad_input_raises_the_engine_error_family(
    call: Callable[[Engine], Any], engine: Engine
) -> None:
    with pytest.raises(EmbengineError):
        call(engine)


# ---------------------------------------------------------------- typed factories


FACTORIES = [
    pytest.param("recommender", id="recommender"),
    pytest.param("dedup", id="dedup"),
    pytest.param("classifier", id="classifier"),
    pytest.param("match", id="match"),
    pytest.param("anomaly_detector", id="anomaly_detector"),
    pytest.param("index", id="index"),
    pytest.param("search", id="search"),
]


@pytest.mark.parametrize("name", FACTORIES)
def test_engine_factories_take_typed_keywords(name: str) -> None:
    parameters = inspect.signature(getattr(Engine, name)).parameters.values()
    assert not [p.name for p in parameters if p.kind is inspect.Parameter.VAR_KEYWORD]


@pytest.mark.parametrize(
    ("factory", "target"),
    [("recommender", Recommender.__init__), ("dedup", dedup)],
    ids=["recommender", "dedup"],
)
def test_typed_factories_pass_the_task_defaults(factory: str, target: Callable) -> None:
    """A factory repeats its task's keyword arguments: same names, same defaults."""
    outer = inspect.signature(getattr(Engine, factory)).parameters
    inner = inspect.signature(target).parameters
    skip = {"self", "engine"}
    assert [n for n in outer if n not in skip] == [n for n in inner if n not in skip]
    for name in outer:
        if name not in skip:
            assert outer[name].default == inner[name].default, name


# ---------------------------------------------------------------- import layering


def _lower_modules() -> list[str]:
    tasks = [f"embengine.tasks.{m.name}" for m in pkgutil.iter_modules(embengine.tasks.__path__)]
    return [*tasks, "embengine.index", "embengine.store"]


# The package's __init__ imports Engine for users (`from embengine import Engine`), so the
# check loads the package without it: what is measured is each module's own imports.
_BARE_IMPORT = """
import sys, types
package = types.ModuleType("embengine")
package.__path__ = [{path!r}]
sys.modules["embengine"] = package
import {module}
engine_loaded = "embengine.engine" in sys.modules
print("ENGINE" if engine_loaded else "CLEAN")
"""


@pytest.mark.parametrize("module", _lower_modules())
def test_lower_layers_do_not_import_the_engine(module: str) -> None:
    code = _BARE_IMPORT.format(path=str(PACKAGE), module=module)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "CLEAN", f"{module} imports embengine.engine"


def _task_files() -> list[Path]:
    return sorted((PACKAGE / "tasks").glob("*.py"))


@pytest.mark.parametrize("path", _task_files(), ids=lambda p: p.stem)
def test_no_task_imports_another_tasks_private_names(path: Path) -> None:
    """`from embengine.tasks.other import _private` and `other._private` are both refused."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    own = f"embengine.tasks.{path.stem}"
    task_aliases: set[str] = set()
    offences = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = _absolute(node, path)
            if module.startswith("embengine.tasks.") and module != own:
                offences += [f"{module}.{a.name}" for a in node.names if a.name.startswith("_")]
            if module == "embengine.tasks":
                task_aliases |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("embengine.tasks.") and alias.name != own:
                    task_aliases.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        private = isinstance(node, ast.Attribute) and node.attr.startswith("_")
        if private and ast.unparse(node.value) in task_aliases:
            offences.append(ast.unparse(node))
    assert not offences, f"{path.name} uses other tasks' private names: {offences}"


def _absolute(node: ast.ImportFrom, path: Path) -> str:
    """The absolute module name of `from ... import`, relative imports resolved."""
    if node.level == 0:
        return node.module or ""
    parts = ["embengine", "tasks"][: 2 - (node.level - 1)]
    return ".".join([*parts, *([node.module] if node.module else [])])
