"""The lexical side of hybrid search: BM25 (bm25s) over the texts of an index.

Everything goes through bm25s's public API: `tokenize`, `BM25.index`, `BM25.retrieve(k=...)`
with a `weight_mask`, and `BM25.save` / `BM25.load` for persistence. Retrieval is top-k per
query inside bm25s (one query's scores at a time), so no (queries x documents) matrix is
ever built here.

What bm25s allows incrementally, and what it does not:
- remove: free. Removed documents are masked out with `weight_mask` (they still count in
  the IDF and average length statistics until the next rebuild).
- add: bm25s's index is static (every stored score depends on the IDF and average document
  length of the whole collection), so an add makes the BM25 side stale and it is rebuilt at
  the next lexical search or save, from tokens cached per document at add time: the cost is
  `BM25.index` over all live documents (no re-tokenising), measured by
  benchmarks/bench_index.py.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from embengine._optional import require
from embengine.errors import CorruptFileError

# bm25s defaults ("lucene" BM25, k1 1.5, b 0.75), English stop words
BM25_PARAMS = {"k1": 1.5, "b": 0.75, "method": "lucene"}
STOPWORDS = "en"
_FILES = (  # what BM25.save writes for the lucene method, all loaded back by BM25.load
    "data.csc.index.npy",
    "indices.csc.index.npy",
    "indptr.csc.index.npy",
    "vocab.index.json",
    "params.index.json",
)


def _bm25s() -> Any:
    return require("bm25s", "hybrid search")


def _stemmer(stem: bool) -> Any:
    if not stem:
        return None
    return require("Stemmer", "BM25 with stemming (stem=True)").Stemmer("english")


def tokenize(texts: list[str], *, stem: bool) -> list[list[str]]:
    """bm25s tokens of each text (lower-cased, stop words dropped, stemmed when `stem`)."""
    if not texts:
        return []
    out = _bm25s().tokenize(
        texts, stopwords=STOPWORDS, stemmer=_stemmer(stem), return_ids=False, show_progress=False
    )
    return [list(tokens) for tokens in out]


class Lexical:
    """A bm25s retriever over a fixed list of documents (document i = row i)."""

    def __init__(self, retriever: Any, stem: bool) -> None:
        self._retriever = retriever
        self.stem = stem

    @classmethod
    def build(cls, tokens: list[list[str]], *, stem: bool) -> Lexical:
        """Index pre-tokenised documents (from `tokenize`)."""
        retriever = _bm25s().BM25(**BM25_PARAMS)
        retriever.index(tokens, show_progress=False)
        return cls(retriever, stem)

    @property
    def size(self) -> int:
        return int(self._retriever.scores["num_docs"])

    def retrieve(
        self, queries: list[str], k: int, mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, docs), each (len(queries), min(k, size)), best first; score 0 = no match.

        mask: float per document (0 drops it), or None. A query with no indexed word gets
        all-zero scores.
        """
        k = min(k, self.size)
        scores = np.zeros((len(queries), k), dtype=np.float32)
        docs = np.full((len(queries), k), -1, dtype=np.int64)
        if k == 0 or not queries:
            return scores, docs
        vocab = self._retriever.vocab_dict
        tokens = [[w for w in words if w in vocab] for words in tokenize(queries, stem=self.stem)]
        rows = [r for r, words in enumerate(tokens) if words]
        if rows:
            found_docs, found_scores = self._retriever.retrieve(
                [tokens[r] for r in rows],
                k=k,
                show_progress=False,
                n_threads=0,
                weight_mask=mask,
            )
            docs[rows] = found_docs
            scores[rows] = found_scores
        return scores, docs

    def to_arrays(self) -> dict[str, np.ndarray]:
        """bm25s's own saved files, each as a uint8 array (for io.save_arrays)."""
        with tempfile.TemporaryDirectory(prefix="embengine-bm25-") as tmp:
            self._retriever.save(tmp, show_progress=False)
            return {
                f"bm25_file_{i}": np.frombuffer((Path(tmp) / name).read_bytes(), np.uint8)
                for i, name in enumerate(_FILES)
            }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], *, stem: bool, path: object) -> Lexical:
        """Load what `to_arrays` wrote through BM25.load; CorruptFileError if inconsistent."""
        with tempfile.TemporaryDirectory(prefix="embengine-bm25-") as tmp:
            for i, name in enumerate(_FILES):
                blob = arrays.get(f"bm25_file_{i}")
                if blob is None or blob.dtype != np.uint8 or blob.ndim != 1:
                    raise CorruptFileError(f"{path}: the BM25 part is missing {name}")
                (Path(tmp) / name).write_bytes(blob.tobytes())
            try:
                params = json.loads((Path(tmp) / "params.index.json").read_text())
                if not isinstance(params, dict) or params.get("method") != "lucene":
                    raise CorruptFileError(f"{path}: unexpected BM25 parameters {params!r}")
                retriever = _bm25s().BM25.load(tmp, show_progress=False, verbosity=0)
            except CorruptFileError:
                raise
            except Exception as exc:  # bm25s / numpy / json errors on damaged parts
                raise CorruptFileError(f"{path}: the BM25 part does not load: {exc}") from exc
        _check_retriever(retriever, path)
        return cls(retriever, stem)


def _check_retriever(retriever: Any, path: object) -> None:
    """A loaded retriever's sparse matrix is consistent, so retrieval cannot index past it."""
    s = retriever.scores
    data, indices, indptr = (np.asarray(s[name]) for name in ("data", "indices", "indptr"))
    n_docs, n_words = int(s["num_docs"]), len(retriever.vocab_dict)
    ok = (
        data.ndim == indices.ndim == indptr.ndim == 1
        and len(data) == len(indices)
        and 1 <= len(indptr) <= n_words + 1  # the empty token may have no column
        and (len(indptr) == 0 or (indptr[0] == 0 and indptr[-1] == len(indices)))
        and bool(np.all(np.diff(indptr) >= 0))
        and (len(indices) == 0 or (indices.min() >= 0 and indices.max() < n_docs))
        and sorted(retriever.vocab_dict.values()) == list(range(n_words))
        and bool(np.isfinite(data).all())
    )
    if not ok:
        raise CorruptFileError(f"{path}: the BM25 part is inconsistent")
