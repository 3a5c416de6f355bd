"""Running the app: replicas per device, uvicorn, and a background server for tests.

Replicas: `devices` lists one worker per entry ("cpu", "cuda", "cuda:1"); `workers` N
repeats the one `device` N times (default: one per core on the CPU, one per GPU). Entries
naming the same device share one engine: on the CPU its ONNX session gets cores // N
intra-op threads, so N gathered batches run side by side, one model copy, no
oversubscription (on the shared 2-core CPU, two single-threaded streams spent fewer CPU
seconds per text than one two-threaded stream, whose threads spin at every parallel
region); on GPUs each engine is built, and its worker thread runs, on its own device. All
workers take work from one queue.
"""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embengine.errors import InvalidInputError

# Most texts per encoder batch for CPU replicas. A served batch is a gather of whatever
# arrived, in random lengths; the length-aware planner (batching.plan_batches) cuts it
# where padding costs more than another batch, so the cap only bounds how long one batch
# holds a core. Measured (bench_serve.py exploration, 2-core CPU, 3 repeats): 16 gave
# 64 single-text clients 375-390 texts/s against 332-367 with 8, p99/p50 at half of
# saturation 2.8x either way (medians). Before the planner, fixed batches of 8 beat 32
# by 1.5x texts per CPU second on 32-text calls (padding 1.26x vs 2.39x real tokens).
SERVE_CPU_MAX_BATCH_SIZE = 16
# CPU replicas do not wait for company (coalesce max_wait_ms): a lone text in a batch of
# its own costs ~1.4x the compute of one in a full batch, but at half of saturation
# waiting 2 ms raised p50 from 13-16 to 17 ms with the same throughput at saturation;
# under load the queue fills batches without waiting.
SERVE_CPU_MAX_WAIT_MS = 0.0
# The interpreter's GIL switch interval under `serve` (default 5 ms): an encoder thread
# waking to take a request, or the event loop waking to answer one, waits up to this long
# while another thread runs Python. 0.5 ms: at half of saturation, queue wait p50 1.1 ->
# 0.4 ms, request p50 14.2 -> 11.5 ms and p99 50 -> 38 ms (2-core CPU, one run each).
SERVE_SWITCH_INTERVAL_S = 0.0005

if TYPE_CHECKING:
    import uvicorn
    from starlette.applications import Starlette

    from embengine.engine import Engine


def parse_devices(device: str, devices: str | None, workers: int) -> list[str]:
    """The replica list: `devices` ("cuda:0,cuda:1") if given, else `device` x workers."""
    if workers < 1:
        raise InvalidInputError(f"workers must be >= 1, got {workers}")
    if devices:
        found = [d.strip() for d in devices.split(",") if d.strip()]
        for d in found:
            base, _, number = d.partition(":")
            if base not in ("auto", "cpu", "cuda") or (number and not number.isdigit()):
                raise InvalidInputError(f"device {d!r} is not cpu, cuda or cuda:N")
        return found
    return [device] * workers


def build_engines(
    replicas: Sequence[str],
    *,
    model: str | Path | None = None,
    backend: str = "auto",
    batch_tokens: int | None = None,
    max_batch_size: int | None = None,
) -> tuple[list[Engine], Callable[[int], None] | None]:
    """One engine per replica entry, and the per-worker set-up (pin a GPU) or None.

    `max_batch_size` None: SERVE_CPU_MAX_BATCH_SIZE on the CPU, the engine's default on GPUs.
    """
    from embengine import Engine

    built: dict[str, Engine] = {}
    engines: list[Engine] = []
    gpu_of: dict[int, int] = {}
    for slot, entry in enumerate(replicas):
        base, _, number = entry.partition(":")
        if number:
            gpu_of[slot] = int(number)
        if entry not in built:
            with _on_gpu(int(number) if number else None):
                built[entry] = Engine(
                    model, device=base, backend=backend, batch_tokens=batch_tokens
                )
        engines.append(built[entry])
    for entry, engine in built.items():
        cpu = engine.encoder.device.value == "cpu"
        if max_batch_size is not None:
            engine.max_batch_size = max_batch_size
        elif cpu:
            engine.max_batch_size = SERVE_CPU_MAX_BATCH_SIZE
        streams = replicas.count(entry)
        if cpu and streams > 1:
            limit_cpu_threads(engine, max(1, (os.cpu_count() or 1) // streams))

    def pin(slot: int) -> None:
        if slot in gpu_of:
            import torch

            torch.cuda.set_device(gpu_of[slot])

    return engines, (pin if gpu_of else None)


@contextlib.contextmanager
def _on_gpu(index: int | None) -> Iterator[None]:
    """Build on GPU `index` (torch's current device), or as usual when None."""
    if index is None:
        yield
        return
    import torch

    with torch.cuda.device(index):
        yield


def limit_cpu_threads(engine: Engine, threads: int) -> None:
    """Rebuild a CPU ONNX session with `threads` intra-op threads (torch: process-wide, left).

    A `threads=` option on the encoder would make this unnecessary.
    """
    session = getattr(engine.encoder, "session", None)
    if session is None or engine.encoder.device.value != "cpu":
        return
    import onnxruntime as ort

    from embengine.models.onnx_export import cached_export

    model, _ = cached_export(engine.spec, precision=engine.encoder.precision)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    engine.encoder.session = ort.InferenceSession(  # type: ignore[attr-defined]
        model, options, providers=["CPUExecutionProvider"]
    )
    engine.encoder.details["intra_op_threads"] = threads


def uvicorn_server(app: Starlette, host: str, port: int, *, log_level: str = "info") -> Any:
    """A uvicorn.Server that drains in-flight requests for up to 30 s on shutdown."""
    import uvicorn

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=30,
        access_log=False,
    )
    return uvicorn.Server(config)


@contextlib.contextmanager
def background_server(
    app: Starlette, *, host: str = "127.0.0.1", startup_timeout: float = 30.0
) -> Iterator[tuple[uvicorn.Server, str]]:
    """Serve `app` on a free port of `host` in a thread; yields (server, base URL).

    Leaving the block asks the server to exit (draining in-flight requests) and waits.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn_server(app, host, port, log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    try:
        yield server, f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(startup_timeout)
        sock.close()


def serve(args: Any) -> None:
    """`embengine serve`: load engines, index and classifier, then run uvicorn until a signal."""
    from embengine.device import cuda_available
    from embengine.serve.app import ServeOptions, create_app, load_classifier

    workers = args.workers
    if workers is None:  # one stream per core on the CPU, one per GPU
        cpu = args.device == "cpu" or (args.device == "auto" and not cuda_available())
        workers = (os.cpu_count() or 1) if cpu and not args.devices else 1
    replicas = parse_devices(args.device, args.devices, workers)
    engines, pin = build_engines(
        replicas,
        model=args.model,
        backend=args.backend,
        batch_tokens=args.batch_tokens,
        max_batch_size=args.max_batch_size,
    )
    index = classifier = None
    if args.index:
        from embengine.index import VectorIndex

        index = VectorIndex.load(args.index, engine=engines[0])
    if args.classifier:
        classifier = load_classifier(args.classifier, engines[0])
    options = ServeOptions(coalesce=not args.no_coalesce)
    if all(e.encoder.device.value == "cpu" for e in engines):
        options.max_wait_ms = SERVE_CPU_MAX_WAIT_MS
    for flag, field in (
        ("max_wait_ms", "max_wait_ms"),
        ("max_queue", "max_queue_texts"),
        ("max_body_bytes", "max_body_bytes"),
    ):
        if getattr(args, flag) is not None:
            setattr(options, field, getattr(args, flag))
    app = create_app(
        engines, index=index, classifier=classifier, options=options, on_worker_start=pin
    )
    first = engines[0].describe()
    print(
        f"embengine serve: {first['model']} on {', '.join(replicas)} ({first['backend']}), "
        f"coalesce={options.coalesce}, http://{args.host}:{args.port}",
        flush=True,
    )
    sys.setswitchinterval(SERVE_SWITCH_INTERVAL_S)  # this process is the server's own
    # Models, index and imports are loaded for good: keep them out of the collector's full
    # passes (one took 22 ms, a stall for every request in flight, at half of saturation).
    gc.freeze()
    uvicorn_server(app, args.host, args.port, log_level="error" if args.quiet else "info").run()
