"""The lexical side of hybrid search: BM25 (bm25s) over the texts of an index.

bm25s builds a static index, so the BM25 side is rebuilt from the live texts after
adds and removes (lazily, at the next lexical search or save): fast next to embedding,
seconds for SciFact's 5k abstracts on two cores. Its arrays persist in the index file.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from embengine._optional import require

# bm25s defaults ("lucene" BM25, k1 1.5, b 0.75), English stop words
BM25_PARAMS = {"k1": 1.5, "b": 0.75, "method": "lucene"}
STOPWORDS = "en"


def _bm25s() -> Any:
    return require("bm25s", "hybrid search")


def _stemmer(stem: bool) -> Any:
    if not stem:
        return None
    return require("Stemmer", "BM25 with stemming (stem=True)").Stemmer("english")


class Lexical:
    """BM25 scores of queries against a fixed list of documents (document i = row i)."""

    def __init__(self, retriever: Any, stem: bool) -> None:
        self._retriever = retriever
        self.stem = stem

    @classmethod
    def build(cls, texts: list[str], *, stem: bool = True) -> Lexical:
        bm25s = _bm25s()
        tokens = bm25s.tokenize(
            texts, stopwords=STOPWORDS, stemmer=_stemmer(stem), show_progress=False
        )
        retriever = bm25s.BM25(**BM25_PARAMS)
        retriever.index(tokens, show_progress=False)
        return cls(retriever, stem)

    @property
    def size(self) -> int:
        return int(self._retriever.scores["num_docs"])

    def scores(self, queries: list[str]) -> np.ndarray:
        """(len(queries), size) float32 BM25 scores; 0 where a document shares no term."""
        bm25s = _bm25s()
        tokenized = bm25s.tokenize(
            queries,
            stopwords=STOPWORDS,
            stemmer=_stemmer(self.stem),
            return_ids=False,
            show_progress=False,
        )
        vocab = self._retriever.vocab_dict
        out = np.zeros((len(queries), self.size), dtype=np.float32)
        for row, words in enumerate(tokenized):
            known = [vocab[w] for w in words if w in vocab]
            if known:
                out[row] = self._retriever.get_scores_from_ids(known)
        return out

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The BM25 index as arrays (for io.save_arrays) and JSON metadata."""
        r = self._retriever
        vocab = sorted(r.vocab_dict.items(), key=lambda item: item[1])
        if [i for _, i in vocab] != list(range(len(vocab))):
            raise RuntimeError("bm25s vocabulary ids are not 0..n-1; cannot persist it")
        arrays = {
            "bm25_data": np.asarray(r.scores["data"]),
            "bm25_indices": np.asarray(r.scores["indices"]),
            "bm25_indptr": np.asarray(r.scores["indptr"]),
            "bm25_vocab": np.array([w for w, _ in vocab], dtype=str),
        }
        meta = {"num_docs": self.size, "stem": self.stem, "params": BM25_PARAMS}
        return arrays, meta

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Lexical:
        retriever = _bm25s().BM25(**meta["params"])
        vocab = arrays["bm25_vocab"].tolist()
        retriever.vocab_dict = {word: i for i, word in enumerate(vocab)}
        retriever.unique_token_ids_set = set(range(len(vocab)))
        retriever.scores = {
            "data": arrays["bm25_data"],
            "indices": arrays["bm25_indices"],
            "indptr": arrays["bm25_indptr"],
            "num_docs": int(meta["num_docs"]),
        }
        retriever.nonoccurrence_array = None
        return cls(retriever, bool(meta["stem"]))
