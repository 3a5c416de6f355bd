"""`embengine serve` over real HTTP on 127.0.0.1: the official openai client, the jobs, limits.

One server per module (random free port, loopback only); the overload and shutdown tests
start their own small servers around an engine whose encoder waits for a gate, so that a
request is held in flight on purpose instead of by timing.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from embengine import Engine
from embengine.index import VectorIndex
from embengine.serve.app import ServeOptions, create_app, load_classifier

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from embengine.serve.server import background_server  # noqa: E402

DOCS = [
    "how do I reset my password",
    "the invoice shows the wrong amount",
    "the app crashes when I open settings",
    "cancel my subscription please",
    "refund for a double charge",
]
EXAMPLES = {
    "billing": ["I was charged twice", "my invoice is wrong", "refund my payment"],
    "bug": ["the app crashes on start", "error 500 when saving", "button does nothing"],
}


def post(url: str, payload: Any, *, raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
    """POST JSON; (status, decoded body) for successes and HTTP errors alike."""
    data = raw if raw is not None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


@pytest.fixture(scope="module")
def served(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("serve")
    engine.index(DOCS, ids=[f"d{i}" for i in range(len(DOCS))]).save(folder / "docs.idx")
    engine.classifier(EXAMPLES).save(folder / "clf.emb")
    index = VectorIndex.load(folder / "docs.idx", engine=engine)
    classifier = load_classifier(folder / "clf.emb", engine)
    options = ServeOptions(max_body_bytes=64 * 1024, max_inputs=64)
    app = create_app([engine], index=index, classifier=classifier, options=options)
    with background_server(app) as (_, url):
        yield {"url": url, "index": index, "classifier": classifier, "app": app}


@pytest.fixture(scope="module")
def client(served: dict[str, Any]) -> Any:
    return openai.OpenAI(base_url=served["url"] + "/v1", api_key="unused", max_retries=0)


def test_openai_client_gets_the_vectors_of_embed(client: Any, engine: Engine) -> None:
    texts = ["first text", "a second, longer text about invoices", "first text"]
    expected = engine.embed(texts)
    default = client.embeddings.create(model="any", input=texts)  # the client asks for base64
    floats = client.embeddings.create(model="any", input=texts, encoding_format="float")
    for response in (default, floats):
        got = np.array([d.embedding for d in response.data], dtype=np.float32)
        np.testing.assert_array_equal(got, expected)
        assert [d.index for d in response.data] == [0, 1, 2]
        assert response.usage.prompt_tokens == response.usage.total_tokens > 6
        assert response.model == engine.spec.name
    single = client.embeddings.create(model="any", input="first text", encoding_format="float")
    np.testing.assert_array_equal(np.float32(single.data[0].embedding), expected[0])


def test_dimensions_truncate_and_renormalise(client: Any, engine: Engine) -> None:
    full = engine.embed(["short vectors"])[0]
    got = client.embeddings.create(model="any", input=["short vectors"], dimensions=64)
    vector = np.array(got.data[0].embedding)
    assert vector.shape == (64,)
    np.testing.assert_allclose(vector, full[:64] / np.linalg.norm(full[:64]), atol=1e-6)
    with pytest.raises(openai.BadRequestError, match="dimensions must be an integer"):
        client.embeddings.create(model="any", input=["x"], dimensions=engine.dim + 1)


def test_bad_input_is_400_naming_the_item(served: dict[str, Any], client: Any) -> None:
    with pytest.raises(openai.BadRequestError, match=r"input\[1\] is int"):
        client.embeddings.create(model="any", input=["fine", 3])  # type: ignore[list-item]
    url = served["url"] + "/v1/embeddings"
    status, body = post(url, {"input": ["ok", None]})
    assert (status, body["error"]["param"]) == (400, "input[1]")
    assert post(url, {"input": []})[0] == 400
    assert post(url, {"model": "m"})[1]["error"]["param"] == "input"
    assert post(url, {"input": "x", "encoding_format": "int8"})[1]["error"]["param"] == (
        "encoding_format"
    )
    status, body = post(url, None, raw=b"{not json")
    assert status == 400
    assert "not valid JSON" in body["error"]["message"]


def test_payload_limits_are_413(served: dict[str, Any]) -> None:
    url = served["url"] + "/v1/embeddings"
    status, body = post(url, {"input": ["x" * 70_000]})
    assert status == 413
    assert "over 65536" in body["error"]["message"]
    status, body = post(url, {"input": ["x"] * 65})
    assert status == 413
    assert "65 items" in body["error"]["message"]


def test_search_and_classify_match_the_python_api(served: dict[str, Any], engine: Engine) -> None:
    queries = ["I forgot my password", "charged two times"]
    status, body = post(served["url"] + "/v1/search", {"query": queries, "k": 2})
    assert status == 200
    scores, ids = served["index"].search(engine.embed(queries), 2)
    for row, result in enumerate(body["data"]):
        assert [h["id"] for h in result["hits"]] == list(ids[row])
        np.testing.assert_allclose([h["score"] for h in result["hits"]], scores[row], atol=1e-6)
    assert body["usage"]["prompt_tokens"] > 0
    texts = ["the program crashed again", "please refund the payment"]
    status, body = post(served["url"] + "/v1/classify", {"input": texts})
    assert status == 200
    assert [r["label"] for r in body["data"]] == served["classifier"].predict(texts)
    assert all(0 < r["confidence"] <= 1 for r in body["data"])
    assert post(served["url"] + "/v1/search", {"query": "x", "k": 0})[1]["error"]["param"] == "k"


def test_health_models_and_metrics(served: dict[str, Any], client: Any) -> None:
    with urllib.request.urlopen(served["url"] + "/health", timeout=10) as response:
        health = json.load(response)
    assert health["status"] == "ok"
    assert health["index"]
    assert health["classifier"]
    assert [m.id for m in client.models.list()] == [health["model"]]
    client.embeddings.create(model="any", input=["counted"])
    with urllib.request.urlopen(served["url"] + "/metrics", timeout=10) as response:
        text = response.read().decode()
    values = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert float(values['embengine_requests_total{endpoint="embeddings",status="200"}']) >= 1
    assert float(values["embengine_batch_texts_count"]) >= 1
    assert float(values["embengine_tokens_total"]) > 0
    assert (
        values['embengine_batch_tokens_bucket{le="+Inf"}'] == values["embengine_batch_tokens_count"]
    )
    assert "embengine_queue_texts 0" in text
    assert "# TYPE embengine_request_seconds histogram" in text


def _wait(condition: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_full_queue_answers_429_and_the_held_requests_finish(gated: Callable[..., Any]) -> None:
    gated = gated()
    app = create_app([gated], options=ServeOptions(max_wait_ms=0, max_queue_texts=2))
    with background_server(app) as (_, url), ThreadPoolExecutor(2) as pool:
        url += "/v1/embeddings"
        held = pool.submit(post, url, {"input": ["in the encoder"]})
        assert gated.entered.wait(20)
        queued = pool.submit(post, url, {"input": ["queued one", "queued two"]})
        _wait(lambda: app.state.embedder.queue_texts == 2, "the second request to queue")
        status, body = post(url, {"input": ["one too many"]})
        assert status == 429
        assert body["error"]["type"] == "overloaded"
        gated.gate.set()
        assert held.result(30)[0] == 200
        assert len(queued.result(30)[1]["data"]) == 2
        with urllib.request.urlopen(url.replace("v1/embeddings", "metrics"), timeout=10) as r:
            assert 'embengine_errors_total{kind="overloaded"} 1' in r.read().decode()


def test_shutdown_drains_in_flight_requests(gated: Callable[..., Any]) -> None:
    gated = gated()
    app = create_app([gated], options=ServeOptions(max_wait_ms=0))
    pool = ThreadPoolExecutor(4)
    with background_server(app) as (server, url):
        url += "/v1/embeddings"
        replies = [pool.submit(post, url, {"input": [f"text {i}"]}) for i in range(4)]
        _wait(lambda: app.state.metrics.in_flight == 4, "four requests in flight")
        server.should_exit = True  # what SIGTERM does
        _wait(lambda: not server.servers or not server.servers[0].is_serving(), "stop accepting")
        with pytest.raises(urllib.error.URLError):
            post(url, {"input": ["too late"]})
        gated.gate.set()
        assert [r.result(30)[0] for r in replies] == [200] * 4
    pool.shutdown()
    assert app.state.embedder.close(1), "the coalescer was drained and stopped"
