"""Request coalescing: many small concurrent `embed` calls become a few token-budget batches.

A service that embeds one text per request pays the encoder's whole per-batch cost for
every text. The Coalescer queues requests from any thread or asyncio task. A free worker
(one or more per engine) plans everything queued, up to a budget of texts and tokens:
requests sorted by length and cut into encoder batches where padding would cost more
than a batch of its own (batching.plan_batches), the batches ordered by their oldest
request. Every worker takes the next planned batch, so all replicas (e.g. one per CPU
core) stay busy on one plan, and each batch is one `embed` call whose requests are
answered as soon as it ends, not when the whole plan does. A worker that finds the queue
nearly empty while another runs a batch waits at most `max_wait_ms` (from the oldest
request's arrival) for company; with no other batch running it starts at once.

The queue is bounded in texts: a request that would overflow it raises OverloadedError at
once (HTTP 429) instead of waiting behind an unbounded backlog.

Replicas are anything with the small `Replica` interface (an embengine.Engine).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from embengine.batching import Tokenized, plan_batches
from embengine.engine import EmbedStats
from embengine.errors import InvalidInputError, OverloadedError
from embengine.validation import check_texts

# Defaults, measured with benchmarks/bench_serve.py on the 2-core CPU (docs/serving.md).
MAX_WAIT_MS = 2.0  # the most a request waits for company while another batch runs
# One plan holds up to max(GATHER_TEXTS, 4 x the engine's max_batch_size) texts and
# max(GATHER_TOKENS, 4 x its batch_tokens) real tokens: enough to sort by length well.
GATHER_TEXTS = 128
GATHER_TOKENS = 8192
MAX_QUEUE_TEXTS = 2048  # ~10 s of backlog on the 2-core CPU: past it, OverloadedError
WORKER_IDLE_EXIT_S = 30.0  # an idle worker thread ends (and restarts on the next request)


class Replica(Protocol):
    """What the coalescer needs from an engine (embengine.Engine has all of it)."""

    batch_tokens: int
    max_batch_size: int
    batch_overhead_tokens: float | None

    @property
    def tokenizer(self) -> Callable[[Sequence[str]], Tokenized]: ...

    def embed_tokenized(
        self, texts: list[str], tokenized: Tokenized
    ) -> tuple[np.ndarray, EmbedStats]: ...


class BatchObserver(Protocol):
    """Told about each coalesced batch (the server's Prometheus metrics implement it)."""

    def on_batch(
        self, *, texts: int, tokens: int, requests: int, waits: list[float], seconds: float
    ) -> None: ...

    def on_error(self, kind: str) -> None: ...


@dataclass
class _Request:
    texts: list[str]
    tokenized: Tokenized  # by the replicas' tokenizer at submit, reused by the encoder
    tokens: int
    longest: int  # tokens of its longest text (the padding it forces on a batch)
    truncated: int
    enqueued: float
    future: Future


class Coalescer:
    """Gathers concurrent embed requests into shared batches over one or more replicas.

    `replicas`: engines (same model) sharing this one queue, one worker thread per entry
    (one per GPU; on the CPU, the same engine listed once per stream). `max_wait_ms`: how
    long the oldest request may wait for others while another batch runs. `batch_texts` /
    `batch_tokens`: the most texts / real tokens gathered into one call (defaults:
    GATHER_TEXTS / GATHER_TOKENS, or 4 of the first replica's batches when larger).
    `max_queue_texts`: queued texts past which new requests are refused.
    """

    def __init__(
        self,
        replicas: Sequence[Replica],
        *,
        max_wait_ms: float = MAX_WAIT_MS,
        batch_texts: int | None = None,
        batch_tokens: int | None = None,
        max_queue_texts: int = MAX_QUEUE_TEXTS,
        observer: BatchObserver | None = None,
        on_worker_start: Callable[[int], None] | None = None,
    ) -> None:
        if not replicas:
            raise InvalidInputError("a Coalescer needs at least one replica")
        if max_wait_ms < 0 or max_queue_texts < 1:
            raise InvalidInputError(
                f"max_wait_ms must be >= 0 and max_queue_texts >= 1, got {max_wait_ms}, "
                f"{max_queue_texts}"
            )
        self.replicas = list(replicas)
        first = self.replicas[0]
        self.max_wait = max_wait_ms / 1000
        self.batch_texts = batch_texts or max(GATHER_TEXTS, 4 * first.max_batch_size)
        self.batch_tokens = batch_tokens or max(GATHER_TOKENS, 4 * first.batch_tokens)
        self.max_queue_texts = max_queue_texts
        self.observer = observer
        self._on_worker_start = on_worker_start
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[_Request] = deque()
        self._planned: deque[list[_Request]] = deque()  # batches planned, not yet running
        self._queued_texts = 0  # in _queue and _planned
        self._queued_tokens = 0
        self._busy = 0  # workers running a batch
        self._closing = False
        self._workers: list[threading.Thread | None] = [None] * len(self.replicas)

    # -- callers ---------------------------------------------------------------------------

    def submit(self, texts: Sequence[str]) -> Future:
        """Queue `texts`; the Future gives (vectors, stats) for exactly these texts.

        OverloadedError at once when the queue is full or the coalescer is closed.
        """
        items = check_texts(texts)
        future: Future = Future()
        if not items:
            future.set_result((np.zeros((0, self.dim), dtype=np.float32), _stats(0, 0, 0, 0.0)))
            return future
        tokenized = self.replicas[0].tokenizer(items)  # outside the lock: callers in parallel
        lengths = tokenized.lengths
        request = _Request(
            items,
            tokenized,
            int(lengths.sum()),
            int(lengths.max()),
            tokenized.truncated,
            time.perf_counter(),
            future,
        )
        with self._cond:
            if self._closing:
                raise OverloadedError("the embedding queue is shutting down")
            if self._queued_texts and self._queued_texts + len(items) > self.max_queue_texts:
                if self.observer is not None:
                    self.observer.on_error("overloaded")
                raise OverloadedError(
                    f"the embedding queue is full ({self._queued_texts} texts waiting, limit "
                    f"{self.max_queue_texts}): retry later"
                )
            self._queue.append(request)
            self._queued_texts += len(items)
            self._queued_tokens += request.tokens
            self._start_workers()
            self._cond.notify()
        return future

    def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, EmbedStats]:
        """Blocking `submit`: (vectors, stats) of these texts."""
        return self.submit(texts).result()

    async def aembed(self, texts: Sequence[str]) -> tuple[np.ndarray, EmbedStats]:
        """`submit` for asyncio: awaits (vectors, stats) without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(texts))

    @property
    def dim(self) -> int:
        return int(self.replicas[0].dim)  # type: ignore[attr-defined]

    @property
    def queue_texts(self) -> int:
        """Texts waiting (not yet in a batch)."""
        return self._queued_texts

    @property
    def queue_requests(self) -> int:
        return len(self._queue) + sum(len(batch) for batch in self._planned)

    @property
    def busy(self) -> int:
        """Replicas running a batch now."""
        return self._busy

    def close(self, timeout: float | None = None) -> bool:
        """Refuse new requests, finish the queued ones, stop the workers; True when drained."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            workers = [w for w in self._workers if w is not None]
        deadline = None if timeout is None else time.monotonic() + timeout
        for worker in workers:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            worker.join(left)
        return not any(w.is_alive() for w in workers)

    # -- workers ---------------------------------------------------------------------------

    def _start_workers(self) -> None:
        """Start every replica's worker that is not running (called holding the lock)."""
        for slot, worker in enumerate(self._workers):
            if worker is None:
                worker = threading.Thread(
                    target=self._work, args=(slot,), name=f"embengine-coalesce-{slot}", daemon=True
                )
                self._workers[slot] = worker
                worker.start()

    def _work(self, slot: int) -> None:
        if self._on_worker_start is not None:
            self._on_worker_start(slot)
        replica = self.replicas[slot]
        while True:
            batch = self._gather(slot)
            if batch is None:
                return
            self._run(replica, batch)

    def _gather(self, slot: int) -> list[_Request] | None:
        """The next requests to run together, or None when this worker should end."""
        with self._cond:
            while True:
                if self._planned:
                    batch = self._planned.popleft()
                    self._queued_texts -= sum(len(r.texts) for r in batch)
                    self._queued_tokens -= sum(r.tokens for r in batch)
                    self._busy += 1
                    if self._planned or self._queue:
                        self._cond.notify()  # the rest is for another replica
                    return batch
                if not self._queue:
                    if self._closing:
                        self._workers[slot] = None
                        return None
                    if not self._cond.wait(WORKER_IDLE_EXIT_S) and not self._queue:
                        self._workers[slot] = None  # idle: end; submit starts a new one
                        return None
                    continue
                left = self._queue[0].enqueued + self.max_wait - time.perf_counter()
                # Wait for company only while another batch runs and less than one batch
                # is queued: an idle encoder starts at once, and requests arriving
                # meanwhile form the next, larger batch.
                if left > 0 and self._busy and not self._closing and not self._one_batch():
                    self._cond.wait(left)
                    continue  # another worker may have taken the requests meanwhile
                self._plan()

    def _one_batch(self) -> bool:
        """Does the queue hold a whole encoder batch? (holding the lock, nothing planned)"""
        replica = self.replicas[0]
        return (
            self._queued_texts >= replica.max_batch_size
            or self._queued_tokens >= replica.batch_tokens
        )

    def _plan(self) -> None:
        """Move the oldest queued requests, up to one plan's budget, into planned batches
        (called holding the lock): sorted by length, cut where padding costs more than a
        batch (plan_batches), run oldest request first."""
        taken = [self._queue.popleft()]  # a request over budget is planned alone
        texts, tokens = len(taken[0].texts), taken[0].tokens
        while self._queue:
            nxt = self._queue[0]
            if texts + len(nxt.texts) > self.batch_texts or tokens + nxt.tokens > self.batch_tokens:
                break
            taken.append(self._queue.popleft())
            texts, tokens = texts + len(nxt.texts), tokens + nxt.tokens
        replica = self.replicas[0]
        groups = plan_batches(
            np.array([r.longest for r in taken], dtype=np.int64),
            replica.batch_tokens,
            replica.max_batch_size,
            overhead_tokens=getattr(replica, "batch_overhead_tokens", None),
            sizes=np.array([len(r.texts) for r in taken], dtype=np.int64),
        )
        # Fewer batches than idle replicas: halve the largest until every idle replica
        # has one (latency: two half batches side by side end sooner than one whole).
        idle = len(self.replicas) - self._busy
        while len(groups) < idle and max(len(g) for g in groups) > 1:
            largest = max(range(len(groups)), key=lambda i: len(groups[i]))
            group = groups.pop(largest)
            groups[largest:largest] = [group[: len(group) // 2], group[len(group) // 2 :]]
        # taken is oldest first, so a group's smallest index is its oldest request
        for group in sorted(groups, key=lambda g: int(g.min())):
            self._planned.append([taken[i] for i in sorted(group.tolist())])

    def _run(self, replica: Replica, batch: list[_Request]) -> None:
        """One embed call for the whole batch; each request's future gets its own rows.

        The requests' token ids go with their texts: each text is tokenised once."""
        started = time.perf_counter()
        texts = [t for request in batch for t in request.texts]
        try:
            tokenized = Tokenized.concat([request.tokenized for request in batch])
            vectors, _ = replica.embed_tokenized(texts, tokenized)
        except BaseException as exc:  # every waiting caller must hear of it
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(exc)
            if self.observer is not None:
                self.observer.on_error(type(exc).__name__)
            return
        finally:
            with self._cond:
                self._busy -= 1
        done = time.perf_counter()
        if self.observer is not None:
            self.observer.on_batch(
                texts=len(texts),
                tokens=sum(r.tokens for r in batch),
                requests=len(batch),
                waits=[started - r.enqueued for r in batch],
                seconds=done - started,
            )
        offset = 0
        for request in batch:
            n = len(request.texts)
            stats = _stats(n, request.tokens, request.truncated, done - request.enqueued)
            request.future.set_result((vectors[offset : offset + n], stats))
            offset += n


def _stats(texts: int, tokens: int, truncated: int, seconds: float) -> EmbedStats:
    """A coalesced request's share: its texts and tokens, wall time including the wait."""
    return EmbedStats(
        texts=texts, unique_texts=texts, tokens=tokens, truncated=truncated, seconds=seconds
    )
