"""Prometheus metrics in the text exposition format (version 0.0.4), without a client library.

Few metrics, all cheap: counters and gauges are floats under a lock, histograms fixed
cumulative buckets. `Metrics.render()` is what `GET /metrics` returns.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Sequence

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TOKEN_BUCKETS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 65536)

Labels = tuple[tuple[str, str], ...]


def _labels(labels: Labels, extra: str = "") -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in labels]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _number(value: float) -> str:
    return repr(float(value)) if value != int(value) else str(int(value))


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str) -> None:
        self.name, self.help = name, help_text
        self._lock = threading.Lock()

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, help_text)
        self._values: dict[Labels, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(tuple(sorted(labels.items())), 0.0)

    def lines(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [f"{self.name}{_labels(k)} {_number(v)}" for k, v in items]


class Gauge(_Metric):
    """A value read when scraped (queue depth), from a callable."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        super().__init__(name, help_text)
        self.read = read

    def lines(self) -> list[str]:
        return [f"{self.name} {_number(self.read())}"]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: Sequence[float]) -> None:
        super().__init__(name, help_text)
        self.buckets = tuple(buckets)
        self._series: dict[Labels, list[float]] = {}  # bucket counts..., +Inf count, sum

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        slot = bisect.bisect_left(self.buckets, value)
        with self._lock:
            series = self._series.setdefault(key, [0.0] * (len(self.buckets) + 2))
            series[slot] += 1
            series[-1] += value

    def count(self, **labels: str) -> int:
        series = self._series.get(tuple(sorted(labels.items())))
        return 0 if series is None else int(sum(series[:-1]))

    def lines(self) -> list[str]:
        with self._lock:
            items = [(k, list(v)) for k, v in sorted(self._series.items())]
        out = []
        for key, series in items:
            running = 0.0
            for bound, n in zip((*self.buckets, float("inf")), series[:-1], strict=True):
                running += n
                le = "+Inf" if bound == float("inf") else _number(bound)
                bucket = _labels(key, 'le="' + le + '"')
                out.append(f"{self.name}_bucket{bucket} {_number(running)}")
            out.append(f"{self.name}_sum{_labels(key)} {series[-1]!r}")
            out.append(f"{self.name}_count{_labels(key)} {_number(running)}")
        return out


class Metrics:
    """The server's metrics; also the coalescer's BatchObserver."""

    def __init__(self, queue_texts: Callable[[], float], busy: Callable[[], float]) -> None:
        self.requests = Counter("embengine_requests_total", "HTTP requests by endpoint and status")
        self.latency = Histogram(
            "embengine_request_seconds", "HTTP request latency by endpoint", LATENCY_BUCKETS
        )
        self.errors = Counter("embengine_errors_total", "errors by kind (overloaded, ...)")
        self.texts = Counter("embengine_texts_total", "texts embedded")
        self.tokens = Counter("embengine_tokens_total", "real tokens embedded")
        self.batch_texts = Histogram(
            "embengine_batch_texts", "texts per coalesced encoder call", SIZE_BUCKETS
        )
        self.batch_requests = Histogram(
            "embengine_batch_requests", "requests per coalesced encoder call", SIZE_BUCKETS
        )
        self.batch_tokens = Histogram(
            "embengine_batch_tokens", "real tokens per coalesced encoder call", TOKEN_BUCKETS
        )
        self.batch_seconds = Histogram(
            "embengine_batch_seconds", "encoder time per coalesced call", LATENCY_BUCKETS
        )
        self.queue_wait = Histogram(
            "embengine_queue_wait_seconds", "time a request waited in the queue", LATENCY_BUCKETS
        )
        self.in_flight = 0
        self._in_flight_lock = threading.Lock()
        self._all = [
            Gauge("embengine_queue_texts", "texts waiting in the coalescer queue", queue_texts),
            Gauge("embengine_busy_replicas", "replicas running a batch", busy),
            Gauge("embengine_in_flight_requests", "HTTP requests being served", self._read),
            self.requests,
            self.latency,
            self.errors,
            self.texts,
            self.tokens,
            self.batch_texts,
            self.batch_requests,
            self.batch_tokens,
            self.batch_seconds,
            self.queue_wait,
        ]

    def _read(self) -> float:
        return self.in_flight

    def enter(self) -> None:
        with self._in_flight_lock:
            self.in_flight += 1

    def leave(self) -> None:
        with self._in_flight_lock:
            self.in_flight -= 1

    def on_batch(
        self, *, texts: int, tokens: int, requests: int, waits: list[float], seconds: float
    ) -> None:
        self.batch_texts.observe(texts)
        self.batch_requests.observe(requests)
        self.batch_tokens.observe(tokens)
        self.batch_seconds.observe(seconds)
        self.texts.inc(texts)
        self.tokens.inc(tokens)
        for wait in waits:
            self.queue_wait.observe(wait)

    def on_error(self, kind: str) -> None:
        self.errors.inc(kind=kind)

    def render(self) -> str:
        lines: list[str] = []
        for metric in self._all:
            lines += metric.header() + metric.lines()
        return "\n".join(lines) + "\n"
