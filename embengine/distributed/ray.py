"""Bulk embedding and dedup on Ray: the same Engine, one per actor, on one machine or many.

Embedding is a Ray Data `map_batches` over an actor pool: each actor loads one Engine once
and embeds the batches sent to it; on GPU machines each actor takes `gpus_per_actor` GPUs.
Dedup cuts the vectors into row blocks and runs `embengine.ops.pairs_above` on every pair
of blocks as a Ray task: the union is exactly the single-process result.

Needs the `ray` extra (`pip install "embengine[ray]"`). Errors inside actors surface as
Ray task errors whose message holds the original one.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embengine._optional import require
from embengine.bulk.job import RAY_MARKER, job_kind, refuse_inputs_inside, remove_job_files
from embengine.bulk.readers import Fields, InputError, detect_format
from embengine.io import atomic_write
from embengine.ops import check_vectors, pairs_above

if TYPE_CHECKING:
    import pyarrow as pa
    import ray.data


def init_ray(address: str = "local", *, num_cpus: int | None = None) -> None:
    """Connect to Ray: "local" starts a private instance here (`num_cpus` logical CPUs),
    anything else is a cluster address ("auto", "ray://host:10001"). Does nothing when Ray
    is already initialised."""
    ray = require("ray", "the Ray path")
    if ray.is_initialized():
        return
    if address == "local":
        ray.init(num_cpus=num_cpus, include_dashboard=False, configure_logging=False)
    else:
        ray.init(address=address)


class _EmbedActor:
    """One Engine per actor, loaded once; embeds Arrow batches, adding hash and vector."""

    def __init__(self, model: str | None, device: str, batch_tokens: int | None, text: str):
        from embengine import Engine

        self.engine = Engine(model, device=device, batch_tokens=batch_tokens)
        self.text_field = text

    def __call__(self, batch: pa.Table) -> pa.Table:
        pa = require("pyarrow", "the Ray path")
        texts = batch.column(self.text_field).to_pylist()
        for position, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(
                    f"field {self.text_field!r} is {text!r} in a batch starting with "
                    f"{batch.slice(0, 1).to_pylist()[0]} (row {position} of the batch)"
                )
        vectors = self.engine.embed(texts)
        hashes = [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]
        flat = pa.array(vectors.reshape(-1))
        return batch.append_column("text_sha256", pa.array(hashes, pa.string())).append_column(
            "vector", pa.FixedSizeListArray.from_arrays(flat, self.engine.dim)
        )


def embed_dataset(
    ds: ray.data.Dataset,
    *,
    text_field: str = "text",
    model: str | None = None,
    device: str = "auto",
    batch_tokens: int | None = None,
    actors: int = 2,
    gpus_per_actor: float | None = None,
    cpus_per_actor: float = 1.0,
    batch_size: int = 1024,
) -> ray.data.Dataset:
    """`ds` with two columns added: `text_sha256` and `vector` (fixed-size float32 lists).

    `actors` Engines embed in parallel; `gpus_per_actor` defaults to 1 when `device` is
    "cuda", else 0 (a fraction lets actors share a GPU). The cluster needs CPUs beyond the
    actors' for reading and writing, or the pipeline waits for ever. Lazy, like every Ray
    dataset.
    """
    if actors < 1:
        raise ValueError(f"actors must be >= 1, got {actors}")
    gpus = gpus_per_actor if gpus_per_actor is not None else (1.0 if device == "cuda" else 0.0)
    rd = require("ray.data", "the Ray path")
    return ds.map_batches(
        _EmbedActor,
        fn_constructor_kwargs={
            "model": None if model is None else str(model),
            "device": device,
            "batch_tokens": batch_tokens,
            "text": text_field,
        },
        batch_format="pyarrow",
        batch_size=batch_size,
        compute=rd.ActorPoolStrategy(size=actors),
        num_cpus=cpus_per_actor,
        num_gpus=gpus,
    )


def read_files(
    inputs: Sequence[str | Path],
    *,
    fmt: str | None = None,
    fields: Fields = Fields(),  # noqa: B008
) -> ray.data.Dataset:
    """A Ray dataset of the text (and id) columns of files in one format, read by Ray."""
    rd = require("ray.data", "the Ray path")
    paths = [str(Path(p).resolve()) for p in inputs]
    formats = {fmt or detect_format(p) for p in paths}
    if len(formats) != 1:
        raise InputError(f"the Ray path reads one format at a time, got {sorted(formats)}")
    (file_format,) = formats
    if file_format == "text":
        if fields.id is not None or fields.text != "text":
            raise InputError("plain text files have one field, 'text', and no id field")
        return rd.read_text(paths)
    columns = [name for name in (fields.text, fields.id) if name is not None]
    if file_format == "parquet":
        return rd.read_parquet(paths, columns=columns)
    ds = rd.read_json(paths, lines=True) if file_format == "jsonl" else rd.read_csv(paths)
    return ds.select_columns(columns)


def embed_files_ray(
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    fmt: str | None = None,
    fields: Fields = Fields(),  # noqa: B008
    model: str | None = None,
    device: str = "auto",
    batch_tokens: int | None = None,
    actors: int = 2,
    gpus_per_actor: float | None = None,
    cpus_per_actor: float = 1.0,
    overwrite: bool = False,
) -> int:
    """Embed files on Ray into the Parquet dataset directory `out`; the rows written.

    Columns: `id` (str, when `fields.id`), `text_sha256`, `vector`, and `text` when there is
    no id field (Ray has no global row position, so the text keeps each vector identified).
    Unlike `embengine.bulk.embed_files` there is no resume: a failed job is rerun whole.
    `out` must be new or empty, or hold an earlier embed job (Ray or single-process) to
    replace when `overwrite`; a directory holding anything else is refused, never emptied.
    """
    pc = require("pyarrow.compute", "the Ray path")
    out = Path(out)
    prepare_ray_output(out, inputs, overwrite=overwrite)
    ds = read_files(inputs, fmt=fmt, fields=fields)
    if fields.id is not None:

        def ids_as_strings(batch: pa.Table) -> pa.Table:
            ids = pc.cast(batch.column(fields.id), "string")
            return batch.drop_columns([fields.id]).append_column("id", ids)

        ds = ds.map_batches(ids_as_strings, batch_format="pyarrow")
    ds = embed_dataset(
        ds,
        text_field=fields.text,
        model=model,
        device=device,
        batch_tokens=batch_tokens,
        actors=actors,
        gpus_per_actor=gpus_per_actor,
        cpus_per_actor=cpus_per_actor,
    )
    if fields.id is not None:
        ds = ds.select_columns(["id", "text_sha256", "vector"])
    ds.write_parquet(str(out))
    pq = require("pyarrow.parquet", "the Ray path")
    return sum(pq.ParquetFile(f).metadata.num_rows for f in sorted(out.glob("*.parquet")))


def prepare_ray_output(out: str | Path, inputs: Sequence[str | Path], *, overwrite: bool) -> None:
    """Make `out` ready for a Ray embed job, or refuse (InputError) before anything runs.

    New or empty: created and marked as a Ray job's. Holding an embed job: refused, or with
    `overwrite` that job's files are removed (other files stay). Holding anything else, or
    one of the inputs: refused.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a directory")
    refuse_inputs_inside(out, [Path(p) for p in inputs])
    if out.is_dir() and any(p.name != RAY_MARKER for p in out.iterdir()):
        if job_kind(out) is None:
            raise InputError(
                f"{out} is not empty and holds no embed job: choose a new directory "
                "(overwrite replaces only an embed job's output, never other files)"
            )
        if not overwrite:
            raise InputError(f"{out} holds an embed job: pass overwrite to replace it")
        remove_job_files(out)
    marker = json.dumps({"kind": "ray", "version": 1}).encode()
    atomic_write(out / RAY_MARKER, lambda f: f.write(marker))


def _block_pairs(
    x: np.ndarray, y: np.ndarray | None, threshold: float, x_start: int, y_start: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    i, j, scores = pairs_above(x, threshold, y=y)
    return i + x_start, j + y_start, scores


def dedup_pairs(
    vectors: Any, threshold: float, *, blocks: int = 4
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair i < j with cosine >= threshold, as Ray tasks: (i, j, score), sorted by (i, j).

    The rows are cut into `blocks` blocks, each put in the object store once, and each pair
    of blocks is one task; the result equals `embengine.ops.pairs_above(vectors, threshold)`.
    """
    ray = require("ray", "the Ray path")
    x = check_vectors(vectors, "vectors")
    if blocks < 1:
        raise ValueError(f"blocks must be >= 1, got {blocks}")
    bounds = np.linspace(0, len(x), min(blocks, max(len(x), 1)) + 1).astype(int)
    spans = list(itertools.pairwise(bounds))
    refs = [ray.put(np.ascontiguousarray(x[start:stop])) for start, stop in spans]
    task = ray.remote(_block_pairs)
    futures = [
        task.remote(refs[a], None if a == b else refs[b], threshold, spans[a][0], spans[b][0])
        for a in range(len(spans))
        for b in range(a, len(spans))
    ]
    results = ray.get(futures)
    if not results:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    i, j, scores = (np.concatenate(parts) for parts in zip(*results, strict=True))
    order = np.lexsort((j, i))
    return i[order], j[order], scores[order]
