"""Engine: a model on a device, and the one `embed` every task is built on."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embengine.batching import Chunk, TextTokenizer, stream_batches
from embengine.device import Device, cuda_unavailable_reason, resolve_device
from embengine.encoders import Encoder, make_encoder
from embengine.models import ModelSpec, load_model_spec
from embengine.validation import check_texts

if TYPE_CHECKING:
    from embengine.index import VectorIndex
    from embengine.store import EmbeddingStore
    from embengine.tasks.anomaly import AnomalyDetector
    from embengine.tasks.classify import Classifier
    from embengine.tasks.dedup import Clusters, Pairs
    from embengine.tasks.recommend import Recommender

log = logging.getLogger("embengine")

# CPU batch budget, tuned with benchmarks/bench_encode.py --tune on the 2-core CPU (quiet
# machine, ONNX fp32, texts/s: 1024/16 182, 2048/32 177, 4096/64 164, 16384/256 116). Small
# batches stay in the caches; 2048/32 rather than the best 1024/16 because the torch
# backend pays more per call.
CPU_BATCH_TOKENS = 2048
CPU_MAX_BATCH_SIZE = 32


@dataclass
class EmbedStats:
    """Counters for embed calls; `Engine.last_stats` is the latest call, `Engine.stats` all."""

    texts: int = 0
    unique_texts: int = 0  # texts actually encoded (repeats in one call are encoded once)
    tokens: int = 0  # real tokens encoded
    padded_tokens: int = 0  # tokens the encoder computed, padding included
    truncated: int = 0  # texts cut to the model's max length
    batches: int = 0
    seconds: float = 0.0
    cache_hits: int = 0  # distinct texts served by the attached EmbeddingStore
    cache_misses: int = 0  # distinct texts the store lacked (encoded, then stored)

    def __iadd__(self, other: EmbedStats) -> EmbedStats:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    @property
    def texts_per_second(self) -> float:
        return self.texts / self.seconds if self.seconds > 0 else 0.0


class Engine:
    """Embeds texts with one model on one device.

    `model` is None for the packaged all-MiniLM-L6-v2, or a local sentence-transformers
    directory. `device` is "auto" (CUDA when usable, else CPU, and says which), "cpu" or
    "cuda" (raises when CUDA is not usable). `backend` is "auto" (the fastest available for
    the device; `describe()` says which and why), "torch", "onnx" or "onnx-tensorrt".
    `precision` is "auto" (fp32 on CPU, fp16 on CUDA), "fp32", "fp16", "bf16" (torch on
    CUDA) or "int8" (onnx on CPU, dynamic quantisation: explicit only, see README for its
    accuracy). `batch_tokens` caps padded tokens per batch and `max_batch_size` texts per
    batch (defaults per device, measured: small batches stay in the CPU's caches, large
    ones fill a GPU). `store`: an EmbeddingStore or a path to one, consulted before
    encoding (see `attach_store`).
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        device: str | Device = "auto",
        backend: str = "auto",
        precision: str = "auto",
        batch_tokens: int | None = None,
        max_batch_size: int | None = None,
        store: EmbeddingStore | str | Path | None = None,
    ) -> None:
        self.spec: ModelSpec = load_model_spec(model)
        self.device = resolve_device(device)
        if Device(device) is Device.AUTO and self.device is Device.CPU:
            log.info("device='auto' chose the CPU: %s", cuda_unavailable_reason())
        self.tokenizer = TextTokenizer(self.spec)
        self.encoder: Encoder
        self.encoder, self.backend_reason = make_encoder(
            self.spec,
            self.device,
            backend,
            precision,
            device_was_auto=Device(device) is Device.AUTO,
        )
        cuda = self.encoder.device is Device.CUDA
        self.batch_tokens = batch_tokens or (65536 if cuda else CPU_BATCH_TOKENS)
        self.max_batch_size = max_batch_size or (1024 if cuda else CPU_MAX_BATCH_SIZE)
        self.stats = EmbedStats()
        self.last_stats = EmbedStats()
        self.store: EmbeddingStore | None = None
        self.autosave = True
        if store is not None:
            self.attach_store(store)

    @property
    def dim(self) -> int:
        return self.spec.dim

    def describe(self) -> dict[str, object]:
        """Model, device, backend and precision in use, for logs and reports."""
        return {
            "model": self.spec.name,
            "model_path": str(self.spec.path),
            "dim": self.dim,
            "max_seq_length": self.spec.max_seq_length,
            "pooling": self.spec.pooling,
            "device": self.encoder.device.value,
            "backend": self.encoder.name,
            "backend_reason": self.backend_reason,
            "precision": self.encoder.precision,
            "batch_tokens": self.batch_tokens,
            "max_batch_size": self.max_batch_size,
            **self.encoder.details,
        }

    def embed(self, texts: Iterable[str], *, progress: bool = False) -> np.ndarray:
        """Embed texts: (n, dim) float32 unit rows, in input order.

        Identical texts in one call are encoded once. Texts longer than the model's max
        length are truncated and counted in `last_stats.truncated`.
        """
        started = time.perf_counter()
        items = check_texts(texts)
        unique, inverse = np.unique(np.array(items, dtype=object), return_inverse=True)
        stats = EmbedStats(texts=len(items), unique_texts=len(unique))
        if self.store is None:
            vectors = self._encode(list(unique), stats, progress)
        else:
            vectors = self._encode_missing(list(unique), stats, progress)
        stats.seconds = time.perf_counter() - started
        if stats.truncated:
            log.info(
                "truncated %d of %d texts to %d tokens",
                stats.truncated,
                len(unique),
                self.spec.max_seq_length,
            )
        self.last_stats = stats
        self.stats += stats
        return vectors[inverse.reshape(-1)] if len(items) else vectors

    def classifier(
        self,
        examples: Mapping[Hashable, Sequence[str]] | None = None,
        *,
        mode: str = "auto",
        k: int = 5,
        knn_temperature: float = 0.05,
        centroid_temperature: float = 0.05,
        lda_temperature: float = 10.0,
        center: bool = True,
        threshold: float | str | None = None,
        reject_rate: float = 0.05,
        oos_k: int = 3,
        unknown: str | int = "unknown",
    ) -> Classifier:
        """A classifier from labelled examples (embengine.tasks.classify.Classifier)."""
        from embengine.tasks.classify import Classifier

        return Classifier(
            self,
            examples,
            mode=mode,
            k=k,
            knn_temperature=knn_temperature,
            centroid_temperature=centroid_temperature,
            lda_temperature=lda_temperature,
            center=center,
            threshold=threshold,
            reject_rate=reject_rate,
            oos_k=oos_k,
            unknown=unknown,
        )

    def anomaly_detector(self, **options: Any) -> AnomalyDetector:
        """A rolling-window anomaly detector (embengine.tasks.anomaly.AnomalyDetector)."""
        from embengine.tasks.anomaly import AnomalyDetector

        return AnomalyDetector(self, **options)

    def attach_store(
        self, store: EmbeddingStore | str | Path | None, *, autosave: bool = True
    ) -> None:
        """Look texts up by content hash in `store` before encoding, and keep new vectors there.

        A path opens (or creates) the store for this engine's model; ModelMismatchError when
        the store belongs to another model; None detaches. autosave: save the store after
        each embed call that added vectors (the whole file is rewritten; turn off for many
        small calls and call `engine.store.save()`).
        """
        from embengine.store import EmbeddingStore

        if store is None:
            self.store = None
            return
        if not isinstance(store, EmbeddingStore):
            store = EmbeddingStore.for_engine(store, self)
        if store.fingerprint != self.spec.fingerprint or store.dim != self.dim:
            from embengine.io import ModelMismatchError

            raise ModelMismatchError(
                f"store holds {store.dim}-d vectors of model {store.fingerprint}, this engine "
                f"runs {self.spec.name} ({self.spec.fingerprint}, {self.dim}-d)"
            )
        self.store = store
        self.autosave = autosave

    def _encode_missing(self, texts: list[str], stats: EmbedStats, progress: bool) -> np.ndarray:
        """Vectors of distinct texts: from the store where present, else encoded and stored."""
        assert self.store is not None
        vectors, found = self.store.lookup(texts)
        missing = np.flatnonzero(~found)
        stats.cache_hits, stats.cache_misses = len(texts) - len(missing), len(missing)
        stats.unique_texts = len(missing)
        if len(missing):
            new_texts = [texts[i] for i in missing]
            vectors[missing] = self._encode(new_texts, stats, progress)
            self.store.put(new_texts, vectors[missing])
            if self.autosave and self.store.path is not None:
                self.store.save()
        return vectors

    def index(
        self,
        texts: Iterable[str],
        ids: Iterable[int | str] | None = None,
        *,
        kind: str = "flat",
        lexical: bool = False,
        **options: Any,
    ) -> VectorIndex:
        """A VectorIndex of `texts` under `ids` (default 0..n-1), searchable by text.

        kind "flat" (exact), "ivf" or "hnsw"; lexical=True adds BM25 for hybrid search;
        other options go to VectorIndex (device, exact, nlist, nprobe, m, ef_search, ...).
        """
        from embengine.index import VectorIndex

        items = check_texts(texts)
        index = VectorIndex(self.dim, kind=kind, lexical=lexical, engine=self, **options)
        index.add(items, None if ids is None else list(ids))
        return index

    def search(
        self, queries: Iterable[str], index: VectorIndex, k: int = 10, **options: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """Search `index` with text queries embedded by this engine: (scores, ids), (n, k).

        The index must hold this model's vectors (ModelMismatchError otherwise); options as
        VectorIndex.search (allow, mode, fusion, weight, depth).
        """
        index.attach_engine(self)
        return index.search(check_texts(queries), k, **options)

    def _encode(self, texts: list[str], stats: EmbedStats, progress: bool) -> np.ndarray:
        """Run the model on distinct texts: (n, dim) unit rows in their order; fills `stats`."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        chunks = stream_batches(
            texts,
            self.tokenizer,
            batch_tokens=self.batch_tokens,
            max_batch_size=self.max_batch_size,
        )
        for chunk in _progress(chunks, progress, len(texts)):
            for batch in chunk.batches:
                out[batch.indices] = self.encoder.encode(batch.input_ids, batch.attention_mask)
                stats.padded_tokens += batch.input_ids.size
            stats.tokens += chunk.tokens
            stats.truncated += chunk.truncated
            stats.batches += len(chunk.batches)
        return out

    def dedup(self, records: Sequence, threshold: float = 0.9, **options: Any) -> Clusters:
        """Near-duplicate clusters of str / dict records: see embengine.tasks.dedup.dedup."""
        from embengine.tasks.dedup import dedup

        return dedup(self, records, threshold, **options)

    def match(
        self,
        left: Sequence,
        right: Sequence,
        threshold: float | str = "auto",
        *,
        fields: Sequence[str] | None = None,
        template: str | None = None,
        left_fields: Sequence[str] | None = None,
        right_fields: Sequence[str] | None = None,
        left_template: str | None = None,
        right_template: str | None = None,
        confirm: Callable[[str, str], bool] | bool | None = None,
        mutual: bool = True,
        candidates: int = 10,
        identifier_weight: float = 0.3,
        lexical_weight: float = 0.3,
    ) -> Pairs:
        """Entity matching across two tables: see embengine.tasks.dedup.match."""
        from embengine.tasks.dedup import match

        return match(
            self,
            left,
            right,
            threshold,
            fields=fields,
            template=template,
            left_fields=left_fields,
            right_fields=right_fields,
            left_template=left_template,
            right_template=right_template,
            confirm=confirm,
            mutual=mutual,
            candidates=candidates,
            identifier_weight=identifier_weight,
            lexical_weight=lexical_weight,
        )

    def recommender(self, items: Mapping, **options: Any) -> Recommender:
        """Content-based recommender over {id: text | dict}: see embengine.tasks.recommend."""
        from embengine.tasks.recommend import Recommender

        return Recommender(self, items, **options)


def _progress(chunks: Iterable[Chunk], enabled: bool, total: int) -> Iterable[Chunk]:
    if not enabled:
        yield from chunks
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="text", desc="embed") as bar:
        for chunk in chunks:
            yield chunk
            bar.update(chunk.texts)
