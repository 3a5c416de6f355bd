"""Shared fixtures: seeded data, one session-wide engine, and the GPU skip rule."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from embengine import Engine
from embengine.batching import Tokenized
from embengine.device import cuda_available, cuda_unavailable_reason


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` skip, saying why, when the CUDA kernels cannot run here."""
    if cuda_available():
        return
    skip = pytest.mark.skip(reason=f"needs a CUDA GPU: {cuda_unavailable_reason()}")
    for item in items:
        # the marker itself: item.keywords also holds every parent's name, so a checkout in a
        # directory called "gpu" would skip the whole suite
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """ONNX exports go to a fresh directory: each session exports once, never reads ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EMBENGINE_CACHE_DIR", str(tmp_path_factory.mktemp("embengine-cache")))
        yield


@pytest.fixture(scope="session")
def engine() -> Engine:
    """The default model on the CPU, loaded once for the whole session."""
    return Engine(device="cpu")


@pytest.fixture
def cli_engine(monkeypatch: pytest.MonkeyPatch, engine: Engine) -> Engine:
    """The CLI in-process with the session engine (no model load per call)."""
    from embengine import cli

    monkeypatch.setattr(cli, "_engine", lambda args: engine)
    return engine


class GatedEngine:
    """An engine whose encoder calls wait for `gate` (to hold a batch in flight on purpose)."""

    def __init__(self, engine: Engine, *, fail: bool = False) -> None:
        self.engine, self.fail = engine, fail
        self.gate, self.entered = threading.Event(), threading.Event()
        self.calls: list[int] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.engine, name)

    def embed_tokenized(self, texts: list[str], tokenized: Tokenized):
        self.calls.append(len(texts))
        self.entered.set()
        assert self.gate.wait(30), "test gate never opened"
        if self.fail:
            raise RuntimeError("encoder exploded")
        return self.engine.embed_tokenized(texts, tokenized)


@pytest.fixture
def gated(engine: Engine) -> Callable[..., GatedEngine]:
    """Makes engines whose batches wait for a gate (serving tests: requests held in flight)."""
    return lambda fail=False: GatedEngine(engine, fail=fail)


@pytest.fixture
def sim_gpu(monkeypatch: pytest.MonkeyPatch) -> object:
    """embengine.ops' CUDA path on the host, running the real kernels under the emulator
    (tests/gpu_fakes.py): device arrays are `gpu_fakes.dev(numpy_array)`."""
    from gpu_fakes import SimKernels, install_host_gpu

    return install_host_gpu(SimKernels(), monkeypatch)
