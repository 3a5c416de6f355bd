"""From texts to padded batches: tokenise, sort by length, pack to a token budget.

Sorting by token length before batching means each batch pads only to its own longest
text; the budget counts padded tokens (batch size x longest), which is what the encoder
really computes. The caller scatters results back to input order.

`stream_batches` cuts a long input into chunks and tokenises and pads chunk k+1 in a worker
thread while the caller encodes chunk k (the tokenizer and the encoders release the GIL),
so tokenisation hides behind inference instead of adding to it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from tokenizers import Tokenizer

from embengine.models import ModelSpec


@dataclass
class Tokenized:
    """Token ids of many texts, unpadded."""

    ids: list[list[int]]
    lengths: np.ndarray  # int64, tokens per text including special tokens
    truncated: int  # texts cut to the model's max length
    cut: np.ndarray | None = None  # bool per text: was it truncated (None: not kept)

    def select(self, indices: Sequence[int] | np.ndarray) -> Tokenized:
        """The texts at `indices`, in that order (needs `cut`, which TextTokenizer keeps)."""
        if self.cut is None:
            raise ValueError("this Tokenized has no per-text truncation flags to select by")
        picked = np.asarray(indices, dtype=np.int64)
        cut = self.cut[picked]
        return Tokenized([self.ids[i] for i in picked], self.lengths[picked], int(cut.sum()), cut)

    @staticmethod
    def concat(parts: Sequence[Tokenized]) -> Tokenized:
        """One Tokenized of several, texts in order (a coalesced batch of requests)."""
        if len(parts) == 1:
            return parts[0]
        cuts = [p.cut for p in parts]
        return Tokenized(
            [ids for p in parts for ids in p.ids],
            np.concatenate([p.lengths for p in parts]),
            sum(p.truncated for p in parts),
            None if any(c is None for c in cuts) else np.concatenate(cuts),  # type: ignore[arg-type]
        )


class TextTokenizer:
    """The model's own tokenizer.json, truncating to the model's max sequence length."""

    def __init__(self, spec: ModelSpec) -> None:
        self._tokenizer = Tokenizer.from_file(str(spec.path / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=spec.max_seq_length)
        self.pad_id = spec.pad_token_id  # the tokenizer's own (<pad> is 1 in XLM-R / MPNet)
        self.max_length = spec.max_seq_length

    def __call__(self, texts: Sequence[str]) -> Tokenized:
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=True)
        ids = [e.ids for e in encodings]
        cut = np.fromiter((bool(e.overflowing) for e in encodings), dtype=bool, count=len(ids))
        return Tokenized(
            ids=ids,
            lengths=np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(ids)),
            truncated=int(cut.sum()),
            cut=cut,
        )


def plan_batches(
    lengths: np.ndarray,
    batch_tokens: int,
    max_batch_size: int,
    *,
    overhead_tokens: float | None = None,
    sizes: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Group text indices into batches, longest first, each within the padded-token budget.

    A text longer than the budget still gets a batch of its own. With `overhead_tokens`
    (the encoder's fixed cost of one batch, in tokens' worth of compute) the cuts are
    length-aware: among all ways to cut the length-sorted texts into batches within the
    limits, the one with the least cost, counted as overhead per batch plus padded tokens
    (batch x its longest). Texts of very different lengths then land in different
    batches (a short text joins a long one's batch only when padding it costs less than
    a batch of its own), and texts of alike length fill whole batches. Without it, every
    batch is as large as the limits allow. `sizes`: the texts each entry stands for (the
    coalescer plans whole requests; `lengths` is then each request's longest text).
    """
    if batch_tokens < 1 or max_batch_size < 1:
        raise ValueError("batch_tokens and max_batch_size must be positive")
    order = np.argsort(-lengths, kind="stable")
    longest = lengths[order].tolist()
    counts = None if sizes is None else sizes[order].tolist()
    if overhead_tokens is None:
        cuts = _fullest_cuts(longest, counts, batch_tokens, max_batch_size)
    else:
        counts = [1] * len(order) if counts is None else counts
        cuts = _cheapest_cuts(longest, counts, batch_tokens, max_batch_size, overhead_tokens)
    return [order[i:j] for i, j in cuts]


def _fits(texts: int, longest: int, batch_tokens: int, max_batch_size: int) -> bool:
    return texts <= max_batch_size and texts * longest <= batch_tokens


def _fullest_cuts(
    longest: list[int], counts: list[int] | None, batch_tokens: int, max_batch_size: int
) -> list[tuple[int, int]]:
    """(start, end) ranges of the sorted entries, each batch filled as far as the limits
    allow (an entry over them alone). counts=None: one text per entry, so each batch's
    size follows from its first (longest) entry at once."""
    cuts, start = [], 0
    while start < len(longest):
        if counts is None:
            size = max(1, min(max_batch_size, batch_tokens // max(longest[start], 1)))
            cuts.append((start, min(start + size, len(longest))))
            start += size
            continue
        end, texts = start + 1, counts[start]
        while end < len(longest) and _fits(
            texts + counts[end], longest[start], batch_tokens, max_batch_size
        ):
            texts += counts[end]
            end += 1
        cuts.append((start, end))
        start = end
    return cuts


def _cheapest_cuts(
    longest: list[int],
    counts: list[int],
    batch_tokens: int,
    max_batch_size: int,
    overhead_tokens: float,
) -> list[tuple[int, int]]:
    """(start, end) ranges of the sorted entries minimising the sum over batches of
    overhead + texts x longest: a dynamic programme, O(entries x max_batch_size)."""
    total = [0]
    for c in counts:
        total.append(total[-1] + c)
    best = [0.0] + [float("inf")] * len(longest)
    cut = [0] * (len(longest) + 1)
    for end in range(1, len(longest) + 1):
        for start in range(end - 1, -1, -1):
            texts = total[end] - total[start]
            # texts and longest[start] only grow as start moves left: once over, stop
            if start < end - 1 and not _fits(texts, longest[start], batch_tokens, max_batch_size):
                break
            cost = best[start] + overhead_tokens + texts * longest[start]
            if cost < best[end]:
                best[end], cut[end] = cost, start
    cuts, end = [], len(longest)
    while end > 0:
        cuts.append((cut[end], end))
        end = cut[end]
    return cuts[::-1]


def pad(ids: list[list[int]], indices: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Padded (input_ids, attention_mask) int64 arrays for the texts at `indices`."""
    width = max((len(ids[i]) for i in indices), default=0)
    input_ids = np.full((len(indices), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(indices), width), dtype=np.int64)
    for row, i in enumerate(indices):
        input_ids[row, : len(ids[i])] = ids[i]
        mask[row, : len(ids[i])] = 1
    return input_ids, mask


# Texts per chunk in stream_batches: large enough that sorting within a chunk leaves little
# padding, small enough that the first batch starts soon and overlap covers most of the work.
CHUNK_TEXTS = 1024


@dataclass
class Batch:
    """One padded batch; `indices` locate its rows in the texts given to stream_batches."""

    indices: np.ndarray
    input_ids: np.ndarray  # (batch, tokens) int64
    attention_mask: np.ndarray  # (batch, tokens) int64


@dataclass
class Chunk:
    """The batches of one chunk of texts, and its token counts."""

    batches: list[Batch] = field(default_factory=list)
    texts: int = 0
    tokens: int = 0
    truncated: int = 0


def stream_batches(
    texts: Sequence[str],
    tokenizer: TextTokenizer,
    *,
    batch_tokens: int,
    max_batch_size: int,
    chunk_texts: int | None = None,
    overhead_tokens: float | None = None,
    tokenized: Tokenized | None = None,
) -> Iterator[Chunk]:
    """Chunks of padded, length-sorted batches, the next one prepared while this one is used.

    `chunk_texts` defaults to CHUNK_TEXTS; `overhead_tokens` makes the cuts length-aware
    (see plan_batches). `tokenized`: `texts` already tokenised by `tokenizer` (the
    coalescer's ids, so a served text is tokenised once); the tokenizer is then not called.
    """
    chunk_texts = CHUNK_TEXTS if chunk_texts is None else chunk_texts
    if chunk_texts < 1:
        raise ValueError(f"chunk_texts must be positive, got {chunk_texts}")

    if tokenized is not None and len(tokenized.ids) != len(texts):
        raise ValueError(f"{len(tokenized.ids)} tokenised texts for {len(texts)} texts")

    def prepare(start: int) -> Chunk:
        if tokenized is None:
            part = tokenizer(texts[start : start + chunk_texts])
        elif start == 0 and len(texts) <= chunk_texts:
            part = tokenized
        else:
            part = tokenized.select(range(start, min(start + chunk_texts, len(texts))))
        chunk = Chunk(texts=len(part.ids), tokens=int(part.lengths.sum()), truncated=part.truncated)
        for indices in plan_batches(
            part.lengths, batch_tokens, max_batch_size, overhead_tokens=overhead_tokens
        ):
            input_ids, mask = pad(part.ids, indices, tokenizer.pad_id)
            chunk.batches.append(Batch(indices + start, input_ids, mask))
        return chunk

    starts = range(0, len(texts), chunk_texts)
    if len(starts) <= 1:  # nothing to overlap with
        yield from (prepare(start) for start in starts)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="embengine-tokenize") as pool:
        pending = pool.submit(prepare, starts[0])
        for next_start in [*starts[1:], None]:
            chunk = pending.result()
            if next_start is not None:
                pending = pool.submit(prepare, next_start)
            yield chunk
