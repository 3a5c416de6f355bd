"""Deduplication and entity matching over embeddings, with an optional confirmation step.

Candidates come from cosine similarity (embengine.ops); a cheap string check can confirm
them (the "lightweight confirmation"); accepted pairs are joined into clusters by
union-find. Past `exact_limit` records, candidates come from k-means partitions instead of
all pairs, so memory and time stay bounded (as SemDeDup does): each record is compared
with the records of its own partition and of its next-nearest one.

Memory never grows with the square of a cluster's size: exact copies (identical vectors,
and identical texts when a confirmation is asked for) are collapsed to their first
occurrence before any pairing, and candidate pairs are consumed one block x block tile at
a time, each tile reduced to the strongest edges that connect its rows (a spanning
forest: union-find needs no more). 50,000 copies of one row cost 50,000 labels, not 1.25
billion pairs; a near-exact clique costs one tile of pairs at a time.

On a device-resident engine (see embengine.tasks._device) the vectors stay on the GPU:
the copies are found there (only row labels come back), the pair and top-k kernels run
there, and only their pairs / candidates come to the host, where confirmation, clustering
and assignment run as on the CPU, with the same results.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from embengine import ops
from embengine._optional import require
from embengine.clustering import nearest_centroid, spherical_kmeans
from embengine.errors import InvalidInputError
from embengine.records import Record, record_texts
from embengine.tasks import _device

if TYPE_CHECKING:
    from embengine.engine import Engine

Confirm = Callable[[str, str], bool]

EXACT_LIMIT = 50_000  # all-pairs up to here; k-means partitions beyond
PARTITION_SIZE = 1_000  # target records per partition on the partitioned path
_BLOCK = 4_096  # rows per pairs_above call on the exact path: memory ~ _BLOCK**2 scores


class Pairs(NamedTuple):
    """Index pairs with their scores: three 1-D arrays of equal length, unpacks as (i, j, s)."""

    i: np.ndarray  # int64
    j: np.ndarray  # int64
    score: np.ndarray  # float32


def _empty_pairs() -> Pairs:
    return Pairs(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32))


@dataclass
class Clusters:
    """The outcome of dedup.

    `labels` (n,) gives each record's cluster as the index of its representative, which
    is the cluster's earliest record (so keeping representatives keeps first occurrences).
    `pairs` holds the accepted duplicate pairs (i < j) that formed the clusters.
    """

    labels: np.ndarray
    pairs: Pairs

    @property
    def representatives(self) -> np.ndarray:
        """Indices of the records to keep: one per cluster, singletons included."""
        return np.flatnonzero(self.labels == np.arange(len(self.labels)))

    def groups(self, min_size: int = 2) -> list[np.ndarray]:
        """Clusters of at least `min_size` records, each an ascending index array."""
        order = np.argsort(self.labels, kind="stable")
        bounds = np.flatnonzero(np.diff(self.labels[order])) + 1
        return [g for g in np.split(order, bounds) if len(g) >= min_size]


# ---------------------------------------------------------------------- confirmation

_SPLIT = re.compile(r"[\s,;()\[\]/]+")
_NON_ALNUM = re.compile(r"[^0-9a-z]")


def identifiers(text: str) -> set[str]:
    """Model numbers and codes in a text: tokens mixing letters and digits, 4+ chars.

    Case and inner punctuation are dropped ("PS-LX350H" -> "pslx350h"), and a letters-only
    token followed by a code is also joined ("KX TSC14W" -> "kxtsc14w"), as catalogues
    write codes both ways.
    """
    return _codes(_tokens(text), keep=_is_code, joinable=_is_code)


def _tokens(text: str) -> list[str]:
    """Lower-cased tokens with inner punctuation dropped (empty where a token was all
    punctuation)."""
    return [_NON_ALNUM.sub("", t) for t in _SPLIT.split(text.lower())]


def _codes(
    tokens: list[str], keep: Callable[[str], bool], joinable: Callable[[str], bool]
) -> set[str]:
    """The kept tokens, plus each letters-only token joined to a joinable one after it."""
    found = {t for t in tokens if keep(t)}
    found.update(p + c for p, c in itertools.pairwise(tokens) if p.isalpha() and joinable(c))
    return found


def _is_code(token: str) -> bool:
    return len(token) >= 4 and not token.isdigit() and not token.isalpha()


def identifier_agreement(a: set[str], b: set[str]) -> float | None:
    """1.0 when two code sets share a code, 0.9 when one 5+ char code contains another,
    0.0 when both have codes and none agree, None when either has none (no evidence)."""
    if not a or not b:
        return None
    if a & b:
        return 1.0
    for x in a:
        for y in b:
            if min(len(x), len(y)) >= 5 and (x in y or y in x):
                return 0.9
    return 0.0


class StringConfirm:
    """The default confirmation: a pair is a duplicate unless its strings disagree.

    Rejects a pair whose texts both carry model numbers / codes (see `identifiers`) and
    share none; otherwise accepts it when rapidfuzz's token_set_ratio reaches `min_ratio`
    (0-100). Called as `confirm(text_a, text_b) -> bool`.
    """

    def __init__(self, min_ratio: float = 50.0, *, use_identifiers: bool = True) -> None:
        if not 0.0 <= min_ratio <= 100.0:
            raise ValueError(f"min_ratio must be in [0, 100], got {min_ratio}")
        self.min_ratio = min_ratio
        self.use_identifiers = use_identifiers
        self._fuzz = require("rapidfuzz.fuzz", "the default dedup confirmation")

    def __call__(self, a: str, b: str) -> bool:
        if self.use_identifiers:
            agreement = identifier_agreement(identifiers(a), identifiers(b))
            if agreement is not None:
                return agreement > 0.0
        return self._fuzz.token_set_ratio(a, b) >= self.min_ratio


def _resolve_confirm(confirm: Confirm | bool | None) -> Confirm | None:
    if confirm is None or confirm is False:
        return None
    if confirm is True:
        return StringConfirm()
    if not callable(confirm):
        raise TypeError(f"confirm must be a callable(a, b) -> bool, True or None, got {confirm!r}")
    return confirm


def _confirmed(pairs: Pairs, left: list[str], right: list[str], confirm: Confirm) -> Pairs:
    keep = np.array(
        [bool(confirm(left[a], right[b])) for a, b in zip(pairs.i, pairs.j, strict=True)],
        dtype=bool,
    )
    return Pairs(pairs.i[keep], pairs.j[keep], pairs.score[keep])


# ------------------------------------------------------------------------ candidates


def exact_pairs(vectors: np.ndarray, threshold: float, *, block: int | None = None) -> Pairs:
    """Every pair i < j with cosine >= threshold, computed block by block.

    Work memory is one block x block score tile whatever n is (the output holds every
    pair: dedup_vectors consumes the tiles instead, see `_exact_tiles`); time O(n^2 d).
    """
    return _concat(list(_exact_tiles(vectors, threshold, block=block)))


def _exact_tiles(
    vectors: np.ndarray,
    threshold: float,
    *,
    rows: np.ndarray | None = None,
    block: int | None = None,
) -> Iterator[Pairs]:
    """The pairs i < j above `threshold` among `rows` (default: all), one tile at a time,
    as indices into `vectors` (a device array stays there: only the pairs come back)."""
    block = block or _BLOCK
    rows = np.arange(len(vectors)) if rows is None else rows
    n = len(rows)
    for a in range(0, n, block):
        ra = rows[a : a + block]
        xa = _device.rows(vectors, ra)
        i, j, s = map(ops.to_host, ops.pairs_above(xa, threshold))
        yield _ordered(ra[i], ra[j], s)
        for b in range(a + block, n, block):
            rb = rows[b : b + block]
            i, j, s = map(ops.to_host, ops.pairs_above(xa, threshold, y=_device.rows(vectors, rb)))
            yield _ordered(ra[i], rb[j], s)


def _ordered(a: np.ndarray, b: np.ndarray, s: np.ndarray) -> Pairs:
    return Pairs(np.minimum(a, b), np.maximum(a, b), s)


def partitioned_pairs(
    vectors: np.ndarray,
    threshold: float,
    *,
    partitions: int | None = None,
    rounds: int = 2,
    seed: int = 0,
) -> Pairs:
    """Pairs i < j with cosine >= threshold, searched within k-means partitions.

    Each row joins two partitions, its nearest centroid's and the next nearest one's, and
    all pairs within each partition are compared: a pair split by a boundary is still
    found when its rows share either partition. `rounds` repeats this with differently
    seeded k-means and joins the results, as the boundaries then fall elsewhere.
    Approximate: recall is measured in benchmarks/bench_dedup_scale.py. Work ~ rounds *
    2 n * (n / partitions) * d; work memory ~ one block x block tile (a partition larger
    than a block, such as one full of copies, is compared tile by tile).
    """
    tiles = _partitioned_tiles(vectors, threshold, partitions=partitions, rounds=rounds, seed=seed)
    return _unique(_concat(list(tiles)))


def _partitioned_tiles(
    vectors: np.ndarray,
    threshold: float,
    *,
    partitions: int | None = None,
    rounds: int = 2,
    seed: int = 0,
) -> Iterator[Pairs]:
    """The pairs of partitioned_pairs one tile at a time (a pair may come more than once)."""
    n = len(vectors)
    k = partitions if partitions is not None else max(1, round(n / PARTITION_SIZE))
    if k <= 1:
        yield from _exact_tiles(vectors, threshold)
        return
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    for r in range(rounds):
        centroids = spherical_kmeans(
            vectors, k, seed=seed + r, iterations=10, sample=64 * k, init="random"
        )
        for rows in _two_nearest_partitions(vectors, centroids):
            if len(rows) > 1:
                yield from _exact_tiles(vectors, threshold, rows=rows)


def _two_nearest_partitions(vectors: np.ndarray, centroids: np.ndarray) -> list[np.ndarray]:
    """For each centroid, the rows whose nearest or second-nearest centroid it is."""
    k = len(centroids)
    _, home = nearest_centroid(vectors, centroids)
    by_home = _group(home, k)
    second = np.full(len(vectors), -1, dtype=np.int64)
    others = np.arange(k)
    for c, members in enumerate(by_home):
        if len(members):
            rest = np.delete(others, c)
            _, nearest = nearest_centroid(vectors[members], centroids[rest])
            second[members] = rest[nearest]
    by_second = _group(second, k)
    return [np.concatenate([by_home[c], by_second[c]]) for c in range(k)]


def _group(labels: np.ndarray, k: int) -> list[np.ndarray]:
    """Row indices carrying each label 0..k-1, ascending (rows labelled -1 are left out)."""
    order = np.argsort(labels, kind="stable")
    order = order[labels[order] >= 0]
    counts = np.bincount(labels[order], minlength=k)
    return np.split(order, np.cumsum(counts)[:-1])


def _concat(parts: list[Pairs]) -> Pairs:
    if not parts:
        return _empty_pairs()
    return Pairs(*(np.concatenate(column) for column in zip(*parts, strict=True)))


def _unique(pairs: Pairs) -> Pairs:
    """Drop repeated (i, j), sort by (i, j)."""
    if len(pairs.i) == 0:
        return pairs
    keys = pairs.i.astype(np.int64) * (int(pairs.j.max()) + 1) + pairs.j
    _, first = np.unique(keys, return_index=True)
    return Pairs(pairs.i[first], pairs.j[first], pairs.score[first])


# ------------------------------------------------------------------------- clusters


def connected_labels(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Union-find over edges (i, j): each node's label is the smallest index in its component.

    Vectorised: min-label propagation along edges plus pointer jumping until stable.
    Memory O(n + edges).
    """
    labels = np.arange(n, dtype=np.int64)
    if len(i) == 0:
        return labels
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    while True:
        low = np.minimum(labels[i], labels[j])
        np.minimum.at(labels, i, low)
        np.minimum.at(labels, j, low)
        jumped = labels[labels]
        while not np.array_equal(jumped, labels):
            labels, jumped = jumped, jumped[jumped]
        if np.array_equal(labels[i], labels[j]):
            return labels


def spanning_forest(pairs: Pairs) -> Pairs:
    """The fewest pairs that keep every component connected, strongest first.

    The maximum spanning forest (ties: lower (i, j) first), found by Borůvka rounds on
    the nodes the pairs touch: each component takes its best edge to another component,
    then components merge; O(log n) vectorised rounds. A forest has fewer edges than it
    has nodes, so a dense cluster of m rows keeps m - 1 pairs, not m^2 / 2.
    """
    if len(pairs.i) < 2:
        return pairs
    order = np.lexsort((pairs.j, pairs.i, -pairs.score))  # rank = position: strongest first
    i, j, s = pairs.i[order], pairs.j[order], pairs.score[order]
    nodes, local = np.unique(np.concatenate([i, j]), return_inverse=True)
    u, v = local[: len(i)], local[len(i) :]
    component = np.arange(len(nodes), dtype=np.int64)
    live = np.arange(len(i))  # candidate edges, in rank order
    chosen = []
    while len(live):
        cu, cv = component[u[live]], component[v[live]]
        crossing = cu != cv
        live, cu, cv = live[crossing], cu[crossing], cv[crossing]
        if not len(live):
            break
        ends = np.concatenate([cu, cv])
        ranks = np.concatenate([live, live])
        by_end = np.lexsort((ranks, ends))
        first = np.ones(len(by_end), dtype=bool)
        first[1:] = ends[by_end][1:] != ends[by_end][:-1]
        best = np.unique(ranks[by_end][first])  # each component's best crossing edge
        chosen.append(best)
        merged = connected_labels(len(nodes), component[u[best]], component[v[best]])
        component = merged[component]
    keep = np.sort(np.concatenate(chosen)) if chosen else np.empty(0, np.int64)
    return Pairs(i[keep], j[keep], s[keep])


def _exact_copies(x: np.ndarray, texts: list[str] | None) -> tuple[np.ndarray, np.ndarray]:
    """(first, inverse): the first occurrence of each distinct row (of each distinct
    (row, text) when `texts`), ascending, and each row's position in `first`."""
    if _device.on_device(x):
        keys = _device.row_keys(x)
    else:
        keys = np.ascontiguousarray(x).view(np.dtype((np.void, x.dtype.itemsize * x.shape[1])))
        keys = keys.reshape(len(x))
    if texts is not None:  # copies must also read the same for the confirmation to pass
        text_ids = np.unique(np.array(texts, dtype=object), return_inverse=True)[1]
        combined = np.empty(len(x), dtype=[("v", keys.dtype), ("t", np.int64)])
        combined["v"], combined["t"] = keys, text_ids.reshape(-1)
        keys = combined
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first)  # distinct rows in input order
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return first[order], rank[inverse.reshape(-1)]


def dedup_vectors(
    vectors: np.ndarray,
    threshold: float,
    *,
    texts: list[str] | None = None,
    confirm: Confirm | bool | None = None,
    method: str = "auto",
    partitions: int | None = None,
    seed: int = 0,
) -> Clusters:
    """Cluster unit rows whose cosine reaches `threshold`: the engine-free core of dedup.

    `method` is "exact" (all pairs, blocked), "partitioned" (k-means partitions) or
    "auto" (exact up to EXACT_LIMIT distinct rows). `confirm(text_a, text_b)` filters
    candidate pairs and needs `texts`; exact copies (same vector and same text) are joined
    without asking it. `Clusters.pairs` holds the strongest accepted pairs that connect
    each cluster (a spanning forest, fewer pairs than rows), not every pair inside it:
    memory stays linear in n however large a cluster is.

    A torch tensor or CuPy array stays where it is (on its GPU): the copies and the exact
    path's pairs are found there and only labels and pairs come to the host (the
    partitioned path's k-means runs on the host, on one copy of the distinct rows).
    """
    device = _device.on_device(vectors)
    x = _device.check(vectors, "vectors") if device else ops.check_vectors(vectors, "vectors")
    if isinstance(threshold, bool) or not -1.0 <= threshold <= 1.0:  # NaN fails too
        raise InvalidInputError(f"threshold is a cosine in [-1, 1], got {threshold}")
    check = _resolve_confirm(confirm)
    if check is not None and (texts is None or len(texts) != len(x)):
        raise InvalidInputError("confirm needs texts, one per vector")
    if method not in ("auto", "exact", "partitioned"):
        raise InvalidInputError(f"method must be 'auto', 'exact' or 'partitioned', got {method!r}")
    first, inverse = _exact_copies(x, texts if check is not None else None)
    distinct = _device.rows(x, first) if device else np.ascontiguousarray(x[first])
    if method == "auto":
        method = "exact" if len(distinct) <= EXACT_LIMIT else "partitioned"
    if device:
        _device.record("dedup")
        if method == "partitioned":
            distinct = ops.to_host(distinct)
    if method == "exact":
        tiles = _exact_tiles(distinct, threshold)
    else:
        tiles = _partitioned_tiles(distinct, threshold, partitions=partitions, seed=seed)
    distinct_texts = [texts[r] for r in first] if check is not None and texts is not None else []
    forest, held = [], 0
    for tile in tiles:
        if check is not None:
            tile = _confirmed(tile, distinct_texts, distinct_texts, check)
        if len(tile.i):
            forest.append(spanning_forest(tile))
            held += len(forest[-1].i)
        if held > 2 * len(distinct) + _BLOCK:  # keep the forest small as tiles accumulate
            forest = [spanning_forest(_concat(forest))]
            held = len(forest[0].i)
    found = spanning_forest(_concat(forest))
    copies = np.flatnonzero(first[inverse] != np.arange(len(x)))
    original = first[inverse[copies]]
    copy_scores = _copy_scores(x, original, copies)
    pairs = _concat(
        [Pairs(first[found.i], first[found.j], found.score), Pairs(original, copies, copy_scores)]
    )
    order = np.lexsort((pairs.j, pairs.i))
    pairs = Pairs(pairs.i[order], pairs.j[order], pairs.score[order])
    return Clusters(connected_labels(len(x), pairs.i, pairs.j), pairs)


def _copy_scores(x: np.ndarray, original: np.ndarray, copies: np.ndarray) -> np.ndarray:
    """The cosine of each exact copy with its original. A copy's row is its original's bit
    for bit, so on the device only the distinct originals come to the host."""
    if not _device.on_device(x):
        return np.einsum("ij,ij->i", x[original], x[copies]).astype(np.float32)
    distinct, back = np.unique(original, return_inverse=True)
    r = ops.to_host(_device.rows(x, distinct))
    return np.einsum("ij,ij->i", r, r)[back.reshape(-1)].astype(np.float32)


def dedup(
    engine: Engine,
    records: Sequence[Record],
    threshold: float = 0.9,
    *,
    fields: Sequence[str] | None = None,
    template: str | None = None,
    confirm: Confirm | bool | None = None,
    method: str = "auto",
    partitions: int | None = None,
    seed: int = 0,
) -> Clusters:
    """Group near-duplicate records: embed their texts, then dedup_vectors.

    `confirm` is None (embedding similarity alone), True (StringConfirm, the default
    check) or any callable(text_a, text_b) -> bool. On a device-resident engine the vectors
    stay on the GPU (module docstring).
    """
    texts = record_texts(records, fields=fields, template=template)
    vectors = _device.embed(engine, texts)
    return dedup_vectors(
        vectors,
        threshold,
        texts=texts,
        confirm=confirm,
        method=method,
        partitions=partitions,
        seed=seed,
    )


# -------------------------------------------------------------------------- matching

NGRAM_SIZES = (3, 4, 5)  # character n-grams inside word boundaries, as sklearn's "char_wb"
NUMBER_MIN_CHARS = 4  # see `numbers`: drops pack counts and sizes ("2", "10")
NULL_LAMBDA = 0.5  # Storey's lambda for the share of rows without a partner: auto_threshold
ASSIGNMENTS = ("greedy", "mutual", "none")
_PAIR_CHUNK = 1 << 21  # n-gram lookups per step of lexical_scores: bounds memory


def char_ngrams(text: str, sizes: Sequence[int] = NGRAM_SIZES) -> list[str]:
    """Character n-grams of each lower-cased word padded with spaces (" sony " -> " so", ...)."""
    grams = []
    for word in text.lower().split():
        padded = f" {word} "
        for size in sizes:
            grams.extend(padded[k : k + size] for k in range(max(1, len(padded) - size + 1)))
    return grams


class _Tfidf(NamedTuple):
    indptr: np.ndarray  # row r's entries are [indptr[r], indptr[r + 1])
    columns: np.ndarray  # n-gram ids, ascending within a row
    values: np.ndarray  # sublinear tf x smooth idf, rows of unit length
    vocabulary: int


def _tfidf(texts: Sequence[str]) -> _Tfidf:
    """Character n-gram TF-IDF rows (1 + log tf, smooth idf, l2 rows); IDF from these texts."""
    vocabulary: dict[str, int] = {}
    columns, counts, lengths = [], [], []
    for text in texts:
        ids: dict[int, int] = {}
        for gram in char_ngrams(text):
            column = vocabulary.setdefault(gram, len(vocabulary))
            ids[column] = ids.get(column, 0) + 1
        ordered = sorted(ids)
        columns.extend(ordered)
        counts.extend(ids[c] for c in ordered)
        lengths.append(len(ordered))
    cols = np.asarray(columns, dtype=np.int64)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    frequency = np.bincount(cols, minlength=len(vocabulary))
    idf = np.log((1 + len(texts)) / (1 + frequency)) + 1.0
    values = (1.0 + np.log(np.asarray(counts, dtype=np.float64))) * idf[cols]
    rows = np.repeat(np.arange(len(texts)), lengths)
    norms = np.sqrt(np.bincount(rows, weights=values**2, minlength=len(texts)))
    values /= np.maximum(norms, 1e-12)[rows]
    return _Tfidf(indptr, cols, values, len(vocabulary))


def lexical_scores(
    left: Sequence[str], right: Sequence[str], i: np.ndarray, j: np.ndarray
) -> np.ndarray:
    """TF-IDF cosine of character n-grams for the pairs (left[i], right[j]): (n,) float32.

    The IDF is computed over both tables together, so what counts as a telling n-gram
    adapts to the tables at hand (a brand shared by half the catalogue counts little).
    """
    tfidf = _tfidf([*left, *right])
    keys = np.repeat(np.arange(len(tfidf.indptr) - 1), np.diff(tfidf.indptr)) * tfidf.vocabulary
    keys = keys + tfidf.columns  # globally ascending: (row, column)
    out = np.zeros(len(i), dtype=np.float64)
    lengths = np.diff(tfidf.indptr)[i]
    bounds = np.searchsorted(np.cumsum(lengths), np.arange(0, lengths.sum(), _PAIR_CHUNK))
    for a, b in itertools.pairwise([*bounds.tolist(), len(i)]):
        if a == b:
            continue
        size = lengths[a:b]
        pair = np.repeat(np.arange(a, b), size)
        offset = np.arange(size.sum()) - np.repeat(np.cumsum(size) - size, size)
        position = tfidf.indptr[i[pair]] + offset
        wanted = (j[pair] + len(left)) * tfidf.vocabulary + tfidf.columns[position]
        found = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
        hit = keys[found] == wanted
        contribution = np.where(hit, tfidf.values[position] * tfidf.values[found], 0.0)
        out[a:b] = np.bincount(pair - a, weights=contribution, minlength=b - a)
    return out.astype(np.float32)


def numbers(text: str, min_chars: int = NUMBER_MIN_CHARS) -> set[str]:
    """The tokens of a text that carry a digit, `min_chars`+ characters long.

    Model numbers, years, versions and capacities ("PS-LX350H" -> "pslx350h", "1999",
    "500gb"): case and inner punctuation are dropped, and a letters-only token followed by
    a code is also joined ("KX TSC14W" -> "kxtsc14w"), as catalogues write codes both ways.
    The generalisation of `identifiers` that matching scores with (`number_weight`).
    """
    tokens = [t for t in _tokens(text) if t]
    found = _codes(tokens, keep=_has_digit, joinable=lambda t: _has_digit(t) and not t.isdigit())
    return {t for t in found if len(t) >= min_chars}


def _has_digit(token: str) -> bool:
    return any(c.isdigit() for c in token)


class ScoreParts(NamedTuple):
    """The evidence for each candidate pair, before weighting: three (n,) arrays."""

    cosine: np.ndarray  # of the embeddings
    lexical: np.ndarray  # `lexical_scores`: TF-IDF cosine of character n-grams
    numbers: np.ndarray  # `identifier_agreement` of the two `numbers` sets; NaN: no evidence


def score_parts(pairs: Pairs, left: Sequence[str], right: Sequence[str]) -> ScoreParts:
    """The cosine (pairs.score), lexical and numbers evidence of the pairs (left[i], right[j])."""
    lexical = lexical_scores(left, right, pairs.i, pairs.j)
    numbers_left = {a: numbers(left[a]) for a in np.unique(pairs.i).tolist()}
    numbers_right = {b: numbers(right[b]) for b in np.unique(pairs.j).tolist()}
    agreement = np.full(len(pairs.i), np.nan, dtype=np.float32)
    for n, (a, b) in enumerate(zip(pairs.i.tolist(), pairs.j.tolist(), strict=True)):
        value = identifier_agreement(numbers_left[a], numbers_right[b])
        if value is not None:
            agreement[n] = value
    return ScoreParts(pairs.score.astype(np.float32), lexical, agreement)


def combine_scores(parts: ScoreParts, lexical_weight: float, number_weight: float) -> np.ndarray:
    """(1 - lexical_weight) x cosine + lexical_weight x lexical, plus number_weight x
    (agreement - 0.5) where both sides carry numbers: a shared model number or year lifts
    a pair, conflicting ones sink it. (n,) float32."""
    score = (1.0 - lexical_weight) * parts.cosine + lexical_weight * parts.lexical
    bonus = np.where(np.isnan(parts.numbers), 0.0, number_weight * (parts.numbers - 0.5))
    return (score + bonus).astype(np.float32)


def hybrid_scores(
    pairs: Pairs,
    left: Sequence[str],
    right: Sequence[str],
    number_weight: float,
    lexical_weight: float = 0.0,
) -> np.ndarray:
    """`combine_scores` of `score_parts`: the score `match` ranks and thresholds pairs by."""
    if not lexical_weight and not number_weight:
        return pairs.score.astype(np.float32)
    return combine_scores(score_parts(pairs, left, right), lexical_weight, number_weight)


def assign(pairs: Pairs, assignment: str = "greedy") -> Pairs:
    """Keep at most one partner per row, sorted by (i, j).

    "greedy": strongest pairs first, a pair is kept when neither row is taken yet (a
    one-to-one matching; it keeps every mutual-best pair, and also the next-best partner
    of a row whose best partner preferred someone else). "mutual": only pairs that are the
    best of both their rows. "none": every pair. Dropping pairs below a threshold before or
    after gives the same result, so thresholds can be chosen on the assigned scores.
    """
    _check_assignment(assignment)
    if assignment == "mutual":
        pairs = _mutual_best(pairs)
    elif assignment == "greedy":
        pairs = _greedy_one_to_one(pairs)
    order = np.lexsort((pairs.j, pairs.i))
    return Pairs(pairs.i[order], pairs.j[order], pairs.score[order])


def _greedy_one_to_one(pairs: Pairs) -> Pairs:
    order = np.lexsort((pairs.j, pairs.i, -pairs.score))  # strongest first, ties: low (i, j)
    taken_left: set[int] = set()
    taken_right: set[int] = set()
    keep = []
    most = min(len(np.unique(pairs.i)), len(np.unique(pairs.j)))  # pairs a matching can hold
    ranked = zip(order.tolist(), pairs.i[order].tolist(), pairs.j[order].tolist(), strict=True)
    for n, a, b in ranked:
        if a not in taken_left and b not in taken_right:
            taken_left.add(a)
            taken_right.add(b)
            keep.append(n)
            if len(keep) == most:
                break
    keep_idx = np.asarray(keep, dtype=np.int64)
    return Pairs(pairs.i[keep_idx], pairs.j[keep_idx], pairs.score[keep_idx])


def auto_threshold(
    pairs: Pairs, *, assignment: str = "greedy", null_lambda: float = NULL_LAMBDA
) -> float:
    """A label-free cut for `select_matches`: the one with the best F1 that the scores of
    the tables at hand predict.

    Each row's second-best candidate is a pair that does not match yet looks as close as a
    non-match can, so for each table the second-best scores of its rows sample the best
    score of a row that has no partner (the "impostors"). The share of such rows is
    estimated as Storey does for p-values: rows whose best score lies below the impostors'
    `null_lambda` quantile, divided by `null_lambda`. For every cut, the expected false
    pairs are then (rows without partner) x (share of impostors above the cut), the true
    ones the assigned pairs above it minus those, and the cut with the best expected F1
    wins. Done for both tables, the higher cut is taken: the table whose rows search the
    larger other table meets the stronger impostors. Returns inf when no cut is expected to
    find a true pair. Chosen across abt_buy, dblp_acm and walmart_amazon
    (benchmarks/README.md, "Entity matching").
    """
    _check_assignment(assignment)
    if not 0.0 < null_lambda < 1.0:
        raise InvalidInputError(f"null_lambda must be in (0, 1), got {null_lambda!r}")
    kept = np.sort(assign(pairs, assignment).score)
    if len(kept) == 0:
        return float("inf")
    cuts = np.unique(kept)
    accepted = len(kept) - np.searchsorted(kept, cuts, side="left")
    cut, evidence = -np.inf, False
    for rows in (pairs.i, pairs.j):
        best, impostors = _best_and_second(rows, pairs.score)
        if len(impostors) == 0:  # rows with one candidate each: no impostors to learn from
            continue
        evidence = True
        impostors = np.sort(impostors)
        below = np.count_nonzero(best < np.quantile(impostors, null_lambda))
        unmatched = min(len(best), below / null_lambda)
        partners = len(best) - unmatched
        false = unmatched * (1.0 - np.searchsorted(impostors, cuts, side="left") / len(impostors))
        true = np.maximum(accepted - false, 0.0)
        f1 = 2.0 * true / (accepted + partners)
        if f1.max() > 0.0:
            cut = max(cut, float(cuts[np.argmax(f1)]))
    if not evidence:  # e.g. one row against one row: keep what the assignment kept
        return float(cuts[0])
    return float(cut) if cut > -np.inf else float("inf")


def _best_and_second(rows: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The best and second-best score of every row that has at least two pairs."""
    order = np.lexsort((-scores, rows))
    ranked, ordered = rows[order], scores[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = ranked[1:] != ranked[:-1]
    second = np.zeros(len(order), dtype=bool)
    second[1:] = first[:-1] & ~first[1:]
    has_second = np.zeros(len(order), dtype=bool)
    has_second[:-1] = second[1:]
    return ordered[first & has_second], ordered[second]


def _check_match_threshold(threshold: float | str) -> None:
    if threshold == "auto":
        return
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not -1.5 <= threshold <= 1.5  # cosine blend in [-1, 1] + numbers term in +-0.5
    ):
        raise InvalidInputError(
            f"threshold must be 'auto' or a score in [-1.5, 1.5], got {threshold!r}"
        )


def _check_assignment(assignment: str) -> None:
    if assignment not in ASSIGNMENTS:
        raise InvalidInputError(f"assignment must be one of {ASSIGNMENTS}, got {assignment!r}")


def _check_weights(number_weight: float, lexical_weight: float) -> None:
    for name, value in (("number_weight", number_weight), ("lexical_weight", lexical_weight)):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not 0.0 <= value <= 1.0  # False for NaN
        ):
            raise InvalidInputError(f"{name} must be in [0, 1], got {value!r}")


def match_vectors(
    left: np.ndarray,
    right: np.ndarray,
    threshold: float | str = "auto",
    *,
    left_texts: list[str] | None = None,
    right_texts: list[str] | None = None,
    confirm: Confirm | bool | None = None,
    assignment: str = "greedy",
    candidates: int = 10,
    number_weight: float = 0.3,
    lexical_weight: float = 0.5,
) -> Pairs:
    """Match rows of two tables: (i in left, j in right, score), sorted by (i, j).

    match_candidates, then select_matches at `threshold` ("auto": `auto_threshold`).
    """
    _check_match_threshold(threshold)
    _check_assignment(assignment)
    found = match_candidates(
        left,
        right,
        left_texts=left_texts,
        right_texts=right_texts,
        confirm=confirm,
        candidates=candidates,
        number_weight=number_weight,
        lexical_weight=lexical_weight,
    )
    auto = threshold == "auto"
    cut = auto_threshold(found, assignment=assignment) if auto else float(threshold)
    return select_matches(found, cut, assignment=assignment)


def match_candidates(
    left: np.ndarray,
    right: np.ndarray,
    *,
    left_texts: list[str] | None = None,
    right_texts: list[str] | None = None,
    confirm: Confirm | bool | None = None,
    candidates: int = 10,
    number_weight: float = 0.3,
    lexical_weight: float = 0.5,
) -> Pairs:
    """Scored candidate pairs across two tables, before any threshold.

    Candidates are each row's `candidates` nearest rows of the other table (ops.topk_cosine
    both ways: O((n_left + n_right) x candidates) pairs, never the full product). With
    texts, their score is `hybrid_scores` (cosine, character n-gram TF-IDF cosine and the
    numbers term); without, the cosine. Pairs failing `confirm(left, right)` are dropped.
    Device arrays (torch / CuPy) stay there: the top-k runs on them, candidates come back.
    """
    device = _device.on_device(left) or _device.on_device(right)
    check_vectors = _device.check if device else ops.check_vectors
    a = check_vectors(left, "left")
    b = check_vectors(right, "right", a.shape[1])
    check = _resolve_confirm(confirm)
    has_texts = left_texts is not None and right_texts is not None
    if has_texts and (len(left_texts) != len(a) or len(right_texts) != len(b)):
        raise InvalidInputError(
            f"texts must match the vectors: {len(left_texts)} / {len(right_texts)} texts "
            f"for {len(a)} / {len(b)} rows"
        )
    if check is not None and not has_texts:
        raise InvalidInputError("confirm needs left_texts and right_texts")
    if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
        raise InvalidInputError(f"candidates must be an int >= 1, got {candidates!r}")
    _check_weights(number_weight, lexical_weight)
    if len(a) == 0 or len(b) == 0:
        return _empty_pairs()
    if device:
        _device.record("match")
    pairs = _candidate_pairs(a, b, min(candidates, len(b)), min(candidates, len(a)))
    if has_texts:
        scores = hybrid_scores(pairs, left_texts, right_texts, number_weight, lexical_weight)
        pairs = Pairs(pairs.i, pairs.j, scores)
        if check is not None:
            pairs = _confirmed(pairs, left_texts, right_texts, check)
    return pairs


def select_matches(pairs: Pairs, threshold: float, *, assignment: str = "greedy") -> Pairs:
    """Scored pairs at or above `threshold`, then `assign`ed. Sorted by (i, j)."""
    keep = pairs.score >= threshold
    return assign(Pairs(pairs.i[keep], pairs.j[keep], pairs.score[keep]), assignment)


def _candidate_pairs(a: np.ndarray, b: np.ndarray, k_right: int, k_left: int) -> Pairs:
    """Each left row's k nearest right rows and each right row's k nearest left rows."""
    s_ab, ids_ab = map(ops.to_host, ops.topk_cosine(a, b, k_right))
    s_ba, ids_ba = map(ops.to_host, ops.topk_cosine(b, a, k_left))
    i = np.concatenate([np.repeat(np.arange(len(a)), k_right), ids_ba.ravel()])
    j = np.concatenate([ids_ab.ravel(), np.repeat(np.arange(len(b)), k_left)])
    s = np.concatenate([s_ab.ravel(), s_ba.ravel()]).astype(np.float32)
    valid = (i >= 0) & (j >= 0)
    return _unique(Pairs(i[valid], j[valid], s[valid]))


def _mutual_best(pairs: Pairs) -> Pairs:
    """Pairs that are the best of both their rows (ties: the lower other index)."""
    if len(pairs.i) == 0:
        return pairs
    best_left = _best_per_row(pairs.i, pairs.j, pairs.score, int(pairs.i.max()) + 1)
    best_right = _best_per_row(pairs.j, pairs.i, pairs.score, int(pairs.j.max()) + 1)
    keep = (best_left[pairs.i] == pairs.j) & (best_right[pairs.j] == pairs.i)
    return Pairs(pairs.i[keep], pairs.j[keep], pairs.score[keep])


def _best_per_row(rows: np.ndarray, others: np.ndarray, scores: np.ndarray, n: int) -> np.ndarray:
    """For each row id, the `other` of its highest-scoring pair (-1 when it has none)."""
    order = np.lexsort((others, -scores, rows))
    first = np.ones(len(order), dtype=bool)
    first[1:] = rows[order][1:] != rows[order][:-1]
    best = np.full(n, -1, dtype=np.int64)
    best[rows[order][first]] = others[order][first]
    return best


def match(
    engine: Engine,
    left: Sequence[Record],
    right: Sequence[Record],
    threshold: float | str = "auto",
    *,
    fields: Sequence[str] | None = None,
    template: str | None = None,
    left_fields: Sequence[str] | None = None,
    right_fields: Sequence[str] | None = None,
    left_template: str | None = None,
    right_template: str | None = None,
    confirm: Confirm | bool | None = None,
    assignment: str = "greedy",
    candidates: int = 10,
    number_weight: float = 0.3,
    lexical_weight: float = 0.5,
) -> Pairs:
    """Entity matching across two tables: embed both, then match_vectors.

    Records are str or dict, turned into text by `record_texts` (public, so you can embed
    the same text yourself). `fields` / `template` apply to both tables; `left_fields` /
    `right_fields` / `left_template` / `right_template` override them per table, for
    tables whose columns differ. Returns Pairs(i, j, score): i indexes `left`, j `right`.
    """
    if fields is not None and template is not None:
        raise InvalidInputError("give fields or template, not both")
    left_rule = _side(left_fields, left_template, fields, template, "left")
    right_rule = _side(right_fields, right_template, fields, template, "right")
    _check_match_threshold(threshold)
    _check_assignment(assignment)
    _check_weights(number_weight, lexical_weight)
    left_texts = record_texts(left, **left_rule)
    right_texts = record_texts(right, **right_rule)
    return match_vectors(
        _device.embed(engine, left_texts),
        _device.embed(engine, right_texts),
        threshold,
        left_texts=left_texts,
        right_texts=right_texts,
        confirm=confirm,
        assignment=assignment,
        candidates=candidates,
        number_weight=number_weight,
        lexical_weight=lexical_weight,
    )


def _side(
    own_fields: Sequence[str] | None,
    own_template: str | None,
    fields: Sequence[str] | None,
    template: str | None,
    name: str,
) -> dict:
    """One table's text rule: its own fields / template, else the shared ones."""
    if own_fields is not None and own_template is not None:
        raise InvalidInputError(f"give {name}_fields or {name}_template, not both")
    if own_fields is not None or own_template is not None:
        return {"fields": own_fields, "template": own_template}
    return {"fields": fields, "template": template}
