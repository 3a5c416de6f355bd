"""The HTTP server: an OpenAI-compatible embeddings endpoint and the jobs, on Starlette.

Endpoints: POST /v1/embeddings (OpenAI's request and response shapes, so the official
client works), POST /v1/search over an index loaded at start, POST /v1/classify over a
classifier loaded at start, GET /v1/models, GET /health, GET /metrics (Prometheus).
Errors use OpenAI's JSON shape {"error": {"message", "type", "param", "code"}}: 400 names
the bad field or item, 413 a body or input list past the limit, 429 a full queue, 503
after shutdown began. Embedding runs through the Coalescer (or, with coalesce=False, one
`embed` call per request in a thread pool, the peer the benchmark compares against).
"""

from __future__ import annotations

import base64
import contextlib
import inspect
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embengine.engine import EmbedStats
from embengine.errors import OverloadedError
from embengine.serve.coalesce import MAX_QUEUE_TEXTS, MAX_WAIT_MS, Coalescer
from embengine.serve.metrics import Metrics
from embengine.validation import check_texts

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from embengine.engine import Engine
    from embengine.index import VectorIndex
    from embengine.tasks.classify import Classifier

log = logging.getLogger("embengine")

MAX_BODY_BYTES = 4 * 1024 * 1024  # past it: 413 (a 2048-text request of ~2 KB texts fits)
MAX_INPUTS = 2048  # texts per request, as OpenAI's endpoint; past it: 413


@dataclass
class ServeOptions:
    """Limits and switches of one server (the `embengine serve` flags)."""

    coalesce: bool = True
    max_wait_ms: float = MAX_WAIT_MS
    max_queue_texts: int = MAX_QUEUE_TEXTS
    max_body_bytes: int = MAX_BODY_BYTES
    max_inputs: int = MAX_INPUTS


class HTTPError(Exception):
    """An error answer: status, message, and the request field at fault."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param

    @property
    def kind(self) -> str:
        return {
            400: "invalid_request_error",
            404: "not_found_error",
            413: "request_too_large",
            429: "overloaded",
            503: "unavailable",
        }.get(self.status, "server_error")


class _Direct:
    """No coalescing: each request is one `embed` call on a worker thread (round robin)."""

    def __init__(self, engines: Sequence[Engine], max_queue_texts: int) -> None:
        self.engines = list(engines)
        self.max_queue_texts = max_queue_texts
        self.queue_texts = 0  # texts accepted and not yet answered
        self.busy = 0
        self._next = 0

    async def aembed(self, texts: list[str]) -> tuple[np.ndarray, EmbedStats]:
        from anyio import to_thread

        if self.queue_texts and self.queue_texts + len(texts) > self.max_queue_texts:
            raise OverloadedError(f"{self.queue_texts} texts in flight: retry later")
        engine = self.engines[self._next % len(self.engines)]
        self._next += 1
        self.queue_texts += len(texts)
        try:
            texts = check_texts(texts)
            tokenized = engine.tokenizer(texts)  # once: the encoder reuses the ids
            vectors, stats = await to_thread.run_sync(engine.embed_tokenized, texts, tokenized)
        finally:
            self.queue_texts -= len(texts)
        # usage counts every input, repeats included
        stats.tokens, stats.texts = int(tokenized.lengths.sum()), len(texts)
        return vectors, stats

    def close(self, timeout: float | None = None) -> bool:
        return True


def load_classifier(path: str | Path, engine: Engine) -> Classifier:
    """Classifier.load by either signature: (path, engine=...), the contract, or (engine, path)."""
    from embengine.tasks.classify import Classifier

    first = next(iter(inspect.signature(Classifier.load).parameters))
    if first == "engine":
        return Classifier.load(engine, path)  # type: ignore[arg-type]
    return Classifier.load(path, engine=engine)  # type: ignore[call-arg]


def create_app(
    engines: Sequence[Engine],
    *,
    index: VectorIndex | None = None,
    classifier: Classifier | None = None,
    options: ServeOptions | None = None,
    on_worker_start: Callable[[int], None] | None = None,
) -> Starlette:
    """The ASGI app over `engines` (replicas of one model sharing one queue)."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    options = options or ServeOptions()
    engine = engines[0]
    embedder: Coalescer | _Direct
    if options.coalesce:
        embedder = Coalescer(
            engines,
            max_wait_ms=options.max_wait_ms,
            max_queue_texts=options.max_queue_texts,
            on_worker_start=on_worker_start,
        )
    else:
        embedder = _Direct(engines, options.max_queue_texts)
    metrics = Metrics(
        queue_texts=lambda: embedder.queue_texts,
        busy=lambda: embedder.busy,
    )
    if isinstance(embedder, Coalescer):
        embedder.observer = metrics
    model_name = engine.spec.name
    state = {"closing": False}

    async def embed(texts: list[str]) -> tuple[np.ndarray, EmbedStats]:
        if state["closing"]:
            raise HTTPError(503, "the server is shutting down")
        try:
            vectors, stats = await embedder.aembed(texts)
        except OverloadedError as exc:
            raise HTTPError(429, str(exc)) from None
        if not options.coalesce:
            metrics.texts.inc(len(texts))
            metrics.tokens.inc(stats.tokens)
        return vectors, stats

    async def body(request: Request) -> dict[str, Any]:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > options.max_body_bytes:
            raise HTTPError(413, f"body of {declared} bytes is over {options.max_body_bytes}")
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > options.max_body_bytes:
                raise HTTPError(413, f"body is over {options.max_body_bytes} bytes")
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise HTTPError(400, f"body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise HTTPError(400, "body must be a JSON object")
        return data

    def texts_of(data: dict[str, Any], field: str) -> list[str]:
        if field not in data:
            raise HTTPError(400, f"'{field}' is required", field)
        value = data[field]
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            raise HTTPError(
                400, f"'{field}' must be a string or a non-empty list of strings", field
            )
        if len(items) > options.max_inputs:
            raise HTTPError(
                413, f"'{field}' has {len(items)} items, over the limit {options.max_inputs}", field
            )
        for position, item in enumerate(items):
            if not isinstance(item, str):
                raise HTTPError(
                    400,
                    f"{field}[{position}] is {type(item).__name__}, expected a string "
                    "(token-id input is not supported)",
                    f"{field}[{position}]",
                )
        return items

    def usage(stats: EmbedStats) -> dict[str, int]:
        return {"prompt_tokens": stats.tokens, "total_tokens": stats.tokens}

    async def embeddings(request: Request) -> Response:
        data = await body(request)
        texts = texts_of(data, "input")
        fmt = data.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise HTTPError(
                400, f"encoding_format must be 'float' or 'base64', got {fmt!r}", "encoding_format"
            )
        dims = data.get("dimensions")
        if dims is not None and (
            isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= engine.dim
        ):
            raise HTTPError(
                400,
                f"dimensions must be an integer in [1, {engine.dim}], got {dims!r}",
                "dimensions",
            )
        vectors, stats = await embed(texts)
        if dims is not None and dims < engine.dim:
            vectors = vectors[:, :dims]
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        if fmt == "base64":
            rows: list[Any] = [
                base64.b64encode(np.ascontiguousarray(v, dtype="<f4").tobytes()).decode("ascii")
                for v in vectors
            ]
        else:
            rows = vectors.tolist()
        payload = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)
            ],
            "model": model_name,
            "usage": usage(stats),
        }
        return _json(payload)

    async def search(request: Request) -> Response:
        if index is None:
            raise HTTPError(404, "no index was loaded (start with --index PATH)")
        from anyio import to_thread

        data = await body(request)
        queries = texts_of(data, "query")
        k = data.get("k", 10)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise HTTPError(400, f"k must be an integer >= 1, got {k!r}", "k")
        mode = data.get("mode", "dense")
        if mode == "dense":
            vectors, stats = await embed(queries)
            found = await to_thread.run_sync(lambda: index.search(vectors, k))
        else:  # lexical / hybrid score words: the index embeds the texts itself
            stats = EmbedStats(texts=len(queries))
            try:
                found = await to_thread.run_sync(lambda: index.search(queries, k, mode=mode))
            except ValueError as exc:
                raise HTTPError(400, str(exc), "mode") from None
        scores, ids = found
        results = []
        for row, (score_row, id_row) in enumerate(zip(scores, ids, strict=True)):
            hits = [
                {"id": _plain(i), "score": float(s)}
                for s, i in zip(score_row, id_row, strict=True)
                if np.isfinite(s)  # missing results (-inf) are left out
            ]
            results.append({"index": row, "hits": hits})
        return _json(
            {"object": "list", "data": results, "model": model_name, "usage": usage(stats)}
        )

    async def classify(request: Request) -> Response:
        if classifier is None:
            raise HTTPError(404, "no classifier was loaded (start with --classifier PATH)")
        from anyio import to_thread

        data = await body(request)
        texts = texts_of(data, "input")
        vectors, stats = await embed(texts)

        def predict() -> tuple[list[Any], np.ndarray]:
            return classifier.predict_vectors(vectors), classifier.predict_proba_vectors(vectors)

        labels, proba = await to_thread.run_sync(predict)
        results = [
            {"index": i, "label": _plain(label), "confidence": float(p.max()) if p.size else 0.0}
            for i, (label, p) in enumerate(zip(labels, proba, strict=True))
        ]
        return _json(
            {"object": "list", "data": results, "model": model_name, "usage": usage(stats)}
        )

    async def health(request: Request) -> Response:
        return _json(
            {
                "status": "closing" if state["closing"] else "ok",
                "model": model_name,
                "dim": engine.dim,
                "replicas": len(engines),
                "device": engine.encoder.device.value,
                "backend": engine.encoder.name,
                "coalesce": options.coalesce,
                "queue_texts": embedder.queue_texts,
                "index": index is not None,
                "classifier": classifier is not None,
            },
            status=503 if state["closing"] else 200,
        )

    async def models(request: Request) -> Response:
        return _json(
            {
                "object": "list",
                "data": [{"id": model_name, "object": "model", "owned_by": "embengine"}],
            }
        )

    async def prometheus(request: Request) -> Response:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    def endpoint(
        name: str, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            started = time.perf_counter()
            metrics.enter()
            try:
                response = await handler(request)
            except HTTPError as exc:
                if exc.status == 429:
                    pass  # counted by the coalescer
                else:
                    metrics.on_error(exc.kind)
                response = _json(
                    {
                        "error": {
                            "message": exc.message,
                            "type": exc.kind,
                            "param": exc.param,
                            "code": None,
                        }
                    },
                    status=exc.status,
                )
            except Exception as exc:  # a bug or a backend failure: say so, keep serving
                log.exception("%s failed", name)
                metrics.on_error("internal")
                response = _json(
                    {
                        "error": {
                            "message": f"internal error: {exc}",
                            "type": "server_error",
                            "param": None,
                            "code": None,
                        }
                    },
                    status=500,
                )
            finally:
                metrics.leave()
            metrics.requests.inc(endpoint=name, status=str(response.status_code))
            metrics.latency.observe(time.perf_counter() - started, endpoint=name)
            return response

        return run

    def _json(payload: dict[str, Any], status: int = 200) -> Response:
        return JSONResponse(payload, status_code=status)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        # uvicorn has stopped accepting and waited for in-flight requests; whatever is
        # still queued is finished before the workers stop.
        state["closing"] = True
        from anyio import to_thread

        await to_thread.run_sync(embedder.close, 30.0)

    routes = [
        Route("/v1/embeddings", endpoint("embeddings", embeddings), methods=["POST"]),
        Route("/embeddings", endpoint("embeddings", embeddings), methods=["POST"]),
        Route("/v1/search", endpoint("search", search), methods=["POST"]),
        Route("/v1/classify", endpoint("classify", classify), methods=["POST"]),
        Route("/v1/models", endpoint("models", models), methods=["GET"]),
        Route("/health", endpoint("health", health), methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.embedder = embedder
    app.state.metrics = metrics
    return app


def _plain(value: Any) -> Any:
    """numpy scalars as Python values, for JSON."""
    return value.item() if isinstance(value, np.generic) else value
