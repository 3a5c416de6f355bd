"""Engine: a model on a device, and the one `embed` every task is built on."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from embengine.batching import Chunk, TextTokenizer, Tokenized, stream_batches
from embengine.device import Device, cuda_unavailable_reason, resolve_device
from embengine.encoders import Encoder, make_encoder
from embengine.errors import InvalidInputError
from embengine.models import ModelSpec, load_model_spec
from embengine.validation import check_texts

if TYPE_CHECKING:
    from embengine.index import VectorIndex
    from embengine.records import Record
    from embengine.serve.coalesce import Coalescer
    from embengine.store import EmbeddingStore
    from embengine.tasks.anomaly import AnomalyDetector
    from embengine.tasks.classify import Classifier
    from embengine.tasks.dedup import Clusters, Confirm, Pairs
    from embengine.tasks.recommend import Interaction, Recommender

log = logging.getLogger("embengine")

# CPU batch budget, tuned with benchmarks/bench_encode.py --tune on the 2-core CPU (quiet
# machine, ONNX fp32, texts/s: 1024/16 182, 2048/32 177, 4096/64 164, 16384/256 116). Small
# batches stay in the caches; 2048/32 rather than the best 1024/16 because the torch
# backend pays more per call.
CPU_BATCH_TOKENS = 2048
CPU_MAX_BATCH_SIZE = 32
# A CPU batch's fixed cost in tokens' worth of compute: batches are cut where padding a
# text would cost more (batching.plan_batches). Fitted on the 2-core EPYC, MiniLM fp32,
# one ONNX thread: time = 1.8 ms + 0.23 ms x padded tokens (b 1-16 x 8-64 tokens).
CPU_BATCH_OVERHEAD_TOKENS = 8.0
# Engine.embed(output=...): where the vectors come back. On CUDA, torch / cupy stay on the GPU.
OUTPUTS = ("numpy", "torch", "cupy")


@dataclass
class EmbedStats:
    """Counters for embed calls: `Engine.last_stats` is this thread's latest call,
    `Engine.stats` all calls; `Engine.embed_with_stats` returns a call's own."""

    texts: int = 0
    unique_texts: int = 0  # texts actually encoded (repeats in one call are encoded once)
    tokens: int = 0  # real tokens encoded
    padded_tokens: int = 0  # tokens the encoder computed, padding included
    truncated: int = 0  # texts cut to the model's max length
    batches: int = 0
    seconds: float = 0.0
    cache_hits: int = 0  # distinct texts served by the attached EmbeddingStore
    cache_misses: int = 0  # distinct texts the store lacked (encoded, then stored)
    device_outputs: int = 0  # calls whose vectors stayed on the GPU from encoder to result

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
    CUDA) or "int8" (onnx on CPU, dynamic quantisation: explicit only, see docs/encoders.md for its
    accuracy). `batch_tokens` caps padded tokens per batch and `max_batch_size` texts per
    batch (defaults per device, measured: small batches stay in the CPU's caches, large
    ones fill a GPU). `store`: an EmbeddingStore or a path to one, consulted before
    encoding (see `attach_store`). `truncate_dim`: keep the first truncate_dim dimensions
    (Matryoshka models), renormalised; `dim` is then truncate_dim. `coalesce`: small
    `embed` calls made while another is running join the request coalescer's next batch
    (docs/serving.md); `aembed` always coalesces. Safe to share between threads.
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
        truncate_dim: int | None = None,
        coalesce: bool = False,
    ) -> None:
        self.spec: ModelSpec = load_model_spec(model, truncate_dim=truncate_dim)
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
        # None (GPUs): batches as large as the limits allow, padding is cheap there
        self.batch_overhead_tokens = None if cuda else CPU_BATCH_OVERHEAD_TOKENS
        self.stats = EmbedStats()
        self._stats_lock = threading.Lock()
        self._local = threading.local()  # last_stats, per calling thread
        self.coalesce = coalesce
        self._coalescer: Coalescer | None = None
        self._running = 0  # direct embed calls in flight (coalesce=True queues behind them)
        self.store: EmbeddingStore | None = None
        self.autosave = True
        if store is not None:
            self.attach_store(store)

    @property
    def last_stats(self) -> EmbedStats:
        """Stats of the calling thread's latest `embed` (per thread, so never another's)."""
        return getattr(self._local, "stats", None) or EmbedStats()

    @last_stats.setter
    def last_stats(self, stats: EmbedStats) -> None:
        self._local.stats = stats

    @property
    def coalescer(self) -> Coalescer:
        """The request coalescer over this engine, made on first use (see `aembed`)."""
        with self._stats_lock:
            if self._coalescer is None:
                from embengine.serve.coalesce import Coalescer

                self._coalescer = Coalescer([self])
            return self._coalescer

    async def aembed(self, texts: Iterable[str]) -> np.ndarray:
        """`embed` for asyncio: awaits a batch shared with concurrent callers.

        Raises OverloadedError at once when the coalescer's queue is full.
        """
        vectors, stats = await self.coalescer.aembed(check_texts(texts))
        self.last_stats = stats
        return vectors

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
            "architecture": self.spec.model_type,
            "truncate_dim": self.spec.truncate_dim,
            "prompts": sorted(self.spec.prompts),
            "device": self.encoder.device.value,
            "backend": self.encoder.name,
            "backend_reason": self.backend_reason,
            "precision": self.encoder.precision,
            "batch_tokens": self.batch_tokens,
            "max_batch_size": self.max_batch_size,
            "device_resident_outputs": self._device_resident(),
            **self.encoder.details,
        }

    def embed(
        self,
        texts: Iterable[str],
        *,
        progress: bool = False,
        cache: bool = True,
        output: str = "numpy",
        prompt: str | None = None,
        prompt_name: str | None = None,
    ) -> Any:
        """Embed texts: (n, dim) float32 unit rows, in input order.

        Identical texts in one call are encoded once. Texts longer than the model's max
        length are truncated and counted in `last_stats.truncated`. With a store attached,
        texts found there are not encoded; new ones are added to it unless cache=False
        (search queries use cache=False: they are read from the store, never added).
        `output` is "numpy" (default), "torch" or "cupy". On CUDA without a store the pooled
        batches are gathered on the GPU: torch / cupy results stay there (no host copy; cupy
        shares the memory through DLPack) and "numpy" is copied to the host once, at the
        end; `last_stats.device_outputs` is 1 for such a call. With a store attached the
        vectors pass through the host, where the store lives. On the CPU, "torch" wraps the
        numpy result without a copy and "cupy" uploads it. A non-str text is an
        InvalidTypeError and a text with a lone surrogate (not valid Unicode) an
        InvalidInputError, each naming its position (see embengine.validation).
        prompt / prompt_name: text put before every input, as sentence-transformers does
        (prompt_name names one of the model's prompts; neither: its default_prompt_name).
        With coalesce=True, a small call made while another runs joins the coalescer's
        next batch.
        """
        if output not in OUTPUTS:
            raise InvalidInputError(f"output must be one of {OUTPUTS}, got {output!r}")
        items = self._prompted(check_texts(texts), prompt, prompt_name)
        coalescable = cache and output == "numpy" and not progress
        if self.coalesce and self._running and coalescable and len(items) < self.max_batch_size:
            vectors, stats = self.coalescer.embed(items)
        else:
            vectors, stats = self._embed_direct(items, progress, cache, output)
        self.last_stats = stats
        return vectors

    def embed_with_stats(
        self,
        texts: Iterable[str],
        *,
        progress: bool = False,
        cache: bool = True,
        output: str = "numpy",
    ) -> tuple[Any, EmbedStats]:
        """`embed` run directly in this thread (never coalesced, no prompt added), and this
        call's own stats."""
        if output not in OUTPUTS:
            raise InvalidInputError(f"output must be one of {OUTPUTS}, got {output!r}")
        return self._embed_direct(check_texts(texts), progress, cache, output)

    def embed_tokenized(self, texts: list[str], tokenized: Tokenized) -> tuple[Any, EmbedStats]:
        """`embed_with_stats` of checked `texts` that `self.tokenizer` has already tokenised
        (the serving path: the coalescer tokenises each request once, for its budgets and
        usage counts, and the engine reuses those ids). Same vectors as `embed`; with a
        store attached only the texts it lacks are encoded (tokenised again there)."""
        if len(tokenized.ids) != len(texts):
            raise InvalidInputError(f"{len(tokenized.ids)} tokenised texts for {len(texts)} texts")
        return self._embed_direct(texts, False, True, "numpy", tokenized)

    def _embed_direct(
        self,
        items: list[str],
        progress: bool,
        cache: bool,
        output: str,
        tokenized: Tokenized | None = None,
    ) -> tuple[Any, EmbedStats]:
        """embed_with_stats on texts already checked (embed checks them once)."""
        started = time.perf_counter()
        with self._stats_lock:
            self._running += 1
        try:
            vectors, stats = self._embed(items, progress, cache, output, tokenized)
        finally:
            with self._stats_lock:
                self._running -= 1
        stats.seconds = time.perf_counter() - started
        with self._stats_lock:
            self.stats += stats
        return vectors, stats

    def _embed(
        self,
        items: list[str],
        progress: bool,
        cache: bool,
        output: str,
        tokenized: Tokenized | None = None,
    ) -> tuple[Any, EmbedStats]:
        unique, first, inverse = np.unique(
            np.array(items, dtype=object), return_index=True, return_inverse=True
        )
        stats = EmbedStats(texts=len(items), unique_texts=len(unique))
        on_device = self.store is None and self._device_resident()
        if self.store is None:
            if tokenized is not None:  # unique is sorted: the ids of each distinct text
                tokenized = tokenized.select(first)
            vectors = self._encode(
                list(unique), stats, progress, on_device=on_device, tokenized=tokenized
            )
            stats.device_outputs = int(on_device)
        else:
            vectors = self._encode_missing(list(unique), stats, progress, cache)
        if stats.truncated:
            log.info(
                "truncated %d of %d texts to %d tokens",
                stats.truncated,
                len(unique),
                self.spec.max_seq_length,
            )
        if len(items):
            order = inverse.reshape(-1)
            if on_device:
                import torch

                order = torch.as_tensor(order, device=vectors.device)
            vectors = vectors[order]
        return _as_output(vectors, output), stats

    def _device_resident(self) -> bool:
        """Can embed keep vectors on the GPU? (a CUDA encoder that returns device rows)"""
        return self.encoder.device is Device.CUDA and hasattr(self.encoder, "encode_device")

    def embed_queries(
        self, texts: Iterable[str], *, prompt: str | None = None, prompt_name: str | None = None
    ) -> np.ndarray:
        """embed() for search queries: the model's "query" prompt unless one is given, as
        sentence-transformers' encode_query; read from an attached store, never added."""
        role = self._role_prompt("query", prompt, prompt_name)
        return self.embed(texts, cache=False, prompt=role)

    def embed_documents(
        self,
        texts: Iterable[str],
        *,
        progress: bool = False,
        prompt: str | None = None,
        prompt_name: str | None = None,
    ) -> np.ndarray:
        """embed() for documents: the model's "document" / "passage" / "corpus" prompt
        (the first it has) unless one is given, as sentence-transformers' encode_document."""
        role = self._role_prompt("document", prompt, prompt_name)
        return self.embed(texts, progress=progress, prompt=role)

    def _role_prompt(self, role: str, prompt: str | None, prompt_name: str | None) -> str:
        return self.spec.resolve_prompt(prompt, prompt_name, role=role)

    def _prompted(self, items: list[str], prompt: str | None, prompt_name: str | None) -> list[str]:
        """`items` with the resolved prompt put before each (the store keys the prompted text)."""
        prefix = self.spec.resolve_prompt(prompt, prompt_name)
        return [prefix + text for text in items] if prefix else items

    def classifier(
        self,
        examples: Mapping[Hashable, Sequence[str]] | None = None,
        *,
        mode: str = "auto",
        k: int = 5,
        knn_temperature: float = 0.05,
        centroid_temperature: float = 0.05,
        lda_temperature: float = 10.0,
        head_c: float = 4.0,
        head_weight: float = 0.5,
        center: bool = True,
        threshold: float | str | None = None,
        reject_rate: float = 0.05,
        oos_k: int = 3,
        oos_head_c: float = 2.0,
        oos_weight: float = 0.4,
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
            head_c=head_c,
            head_weight=head_weight,
            center=center,
            threshold=threshold,
            reject_rate=reject_rate,
            oos_k=oos_k,
            oos_head_c=oos_head_c,
            oos_weight=oos_weight,
            unknown=unknown,
        )

    def anomaly_detector(
        self,
        *,
        window: int = 20_000,
        quantile: float = 0.95,
        centroids: int = 1,
        novelty_weight: float | None = 5.0,
        admit_after: int | None = 10,
        group_radius: float = 0.1,
        min_threshold: float = 0.05,
        mask: Callable[[str], str] | Literal["default"] | None = "default",
        seed: int = 0,
    ) -> AnomalyDetector:
        """A rolling-window anomaly detector (embengine.tasks.anomaly.AnomalyDetector).

        The arguments are the detector's (see its docstring); mask="default" is `LogMask()`.
        """
        from embengine.tasks.anomaly import DEFAULT_MASK, AnomalyDetector

        return AnomalyDetector(
            self,
            window=window,
            quantile=quantile,
            centroids=centroids,
            novelty_weight=novelty_weight,
            admit_after=admit_after,
            group_radius=group_radius,
            min_threshold=min_threshold,
            mask=DEFAULT_MASK if mask == "default" else mask,
            seed=seed,
        )

    def attach_store(
        self, store: EmbeddingStore | str | Path | None, *, autosave: bool = True
    ) -> None:
        """Look texts up by content hash in `store` before encoding, and keep new vectors there.

        A path opens (or creates) the store for this engine's model; ModelMismatchError when
        the store belongs to another model; None detaches. autosave: after each embed call
        that added vectors, append them to the store's directory (one new segment, O(new
        rows)); many small calls make many segments, which `engine.store.compact()` merges.
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

    def _encode_missing(
        self, texts: list[str], stats: EmbedStats, progress: bool, cache: bool
    ) -> np.ndarray:
        """Vectors of distinct texts: from the store where present, else encoded (and stored
        when `cache`). Safe from many threads: the store's lookup and put are atomic."""
        store, autosave = self.store, self.autosave  # one store for the whole call
        assert store is not None
        vectors, found = store.lookup(texts)
        missing = np.flatnonzero(~found)
        stats.cache_hits, stats.cache_misses = len(texts) - len(missing), len(missing)
        stats.unique_texts = len(missing)
        if len(missing):
            new_texts = [texts[i] for i in missing]
            vectors[missing] = self._encode(new_texts, stats, progress)
            if cache:
                store.put(new_texts, vectors[missing], replace=False)
                if autosave and store.path is not None:
                    store.save()
        return vectors

    def index(
        self,
        texts: Iterable[str],
        ids: Iterable[int | str] | None = None,
        *,
        kind: str = "flat",
        lexical: bool = False,
        device: str = "auto",
        exact: str = "kernel",
        stem: bool = True,
        nlist: int | None = None,
        nprobe: int = 48,
        m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 128,
        prompt: str | None = None,
        prompt_name: str | None = None,
        compact: str | None = None,
        rescore: str | None = None,
    ) -> VectorIndex:
        """A VectorIndex of `texts` under `ids` (default 0..n-1), searchable by text.

        kind "flat" (exact), "ivf" or "hnsw"; lexical=True adds BM25 for hybrid search;
        compact "int8" / "binary" (+ rescore) keeps compact vectors (kind="flat", CPU);
        the other arguments are VectorIndex's (device, exact, stem and the ANN knobs).
        Texts are embedded with the document prompt (see embed_documents; prompt= or
        prompt_name= to choose another); the index stores the texts without it.
        """
        from embengine.index import VectorIndex

        items = check_texts(texts)
        index = VectorIndex(
            self.dim,
            kind=kind,
            lexical=lexical,
            device=device,
            exact=exact,
            stem=stem,
            engine=self,
            nlist=nlist,
            nprobe=nprobe,
            m=m,
            ef_construction=ef_construction,
            ef_search=ef_search,
            compact=compact,
            rescore=rescore,
        )
        vectors = self.embed_documents(items, prompt=prompt, prompt_name=prompt_name)
        index.add(vectors, None if ids is None else list(ids), texts=items)
        return index

    def search(
        self,
        queries: Iterable[str],
        index: VectorIndex,
        k: int = 10,
        *,
        allow: Iterable[int | str] | None = None,
        mode: str = "dense",
        fusion: str = "rrf",
        weight: float = 0.5,
        depth: int = 100,
        prompt: str | None = None,
        prompt_name: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Search `index` with text queries embedded by this engine: (scores, ids), (n, k).

        The index must hold this model's vectors (ModelMismatchError otherwise); the keyword
        arguments are VectorIndex.search's. Queries are read from an attached store but
        never added to it (embed them first to keep them). Queries get the query prompt
        (see embed_queries; prompt= or prompt_name= to choose another). On a GPU engine the
        query vectors reach the index as device tensors (no host copy; a flat index searched
        by the kernel scans its device copy of the rows, see VectorIndex).
        """
        index.attach_engine(self)
        items = check_texts(queries)
        options: dict[str, Any] = {
            "allow": allow,
            "mode": mode,
            "fusion": fusion,
            "weight": weight,
            "depth": depth,
        }
        role = self._role_prompt("query", prompt, prompt_name)
        if not role or mode == "lexical":  # BM25 scores the query's own words
            return index.search(items, k, **options)
        if mode != "dense":  # hybrid: the index embeds the dense side with the prompt
            return index.search(items, k, prompt=role, **options)
        output = "torch" if self._device_resident() else "numpy"
        queries = self.embed(items, cache=False, prompt=role, output=output)
        return index.search(queries, k, **options)

    def _encode(
        self,
        texts: list[str],
        stats: EmbedStats,
        progress: bool,
        *,
        on_device: bool = False,
        tokenized: Tokenized | None = None,
    ) -> Any:
        """Run the model on distinct texts: (n, dim) unit rows in their order; fills `stats`.

        on_device: the rows stay where the encoder pooled them (a torch tensor on its device).
        tokenized: `texts` already tokenised (not tokenised again).
        """
        if on_device:
            import torch

            device = self.encoder.torch_device  # type: ignore[attr-defined]
            out: Any = torch.zeros((len(texts), self.dim), dtype=torch.float32, device=device)
        else:
            out = np.zeros((len(texts), self.dim), dtype=np.float32)
        chunks = stream_batches(
            texts,
            self.tokenizer,
            batch_tokens=self.batch_tokens,
            max_batch_size=self.max_batch_size,
            overhead_tokens=self.batch_overhead_tokens,
            tokenized=tokenized,
        )
        for chunk in _progress(chunks, progress, len(texts)):
            for batch in chunk.batches:
                if on_device:
                    rows = torch.as_tensor(batch.indices, device=out.device)
                    out[rows] = self.encoder.encode_device(  # type: ignore[attr-defined]
                        batch.input_ids, batch.attention_mask
                    )
                else:
                    out[batch.indices] = self.encoder.encode(batch.input_ids, batch.attention_mask)
                stats.padded_tokens += batch.input_ids.size
            stats.tokens += chunk.tokens
            stats.truncated += chunk.truncated
            stats.batches += len(chunk.batches)
        return out

    def dedup(
        self,
        records: Sequence[Record],
        threshold: float = 0.9,
        *,
        fields: Sequence[str] | None = None,
        template: str | None = None,
        confirm: Confirm | bool | None = None,
        method: str = "auto",
        partitions: int | None = None,
        seed: int = 0,
    ) -> Clusters:
        """Near-duplicate clusters of str / dict records: see embengine.tasks.dedup.dedup."""
        from embengine.tasks.dedup import dedup

        return dedup(
            self,
            records,
            threshold,
            fields=fields,
            template=template,
            confirm=confirm,
            method=method,
            partitions=partitions,
            seed=seed,
        )

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
        assignment: str = "greedy",
        candidates: int = 10,
        number_weight: float = 0.3,
        lexical_weight: float = 0.5,
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
            assignment=assignment,
            candidates=candidates,
            number_weight=number_weight,
            lexical_weight=lexical_weight,
        )

    def recommender(
        self,
        items: Mapping[int | str, Record] | None = None,
        *,
        interactions: Iterable[Interaction] | None = None,
        alpha: float = 0.5,
        profiles: int = 1,
        diversity: float = 0.0,
        center: bool = True,
        fields: Sequence[str] | None = None,
        template: str | None = None,
    ) -> Recommender:
        """Content-based recommender over {id: text | dict}: see embengine.tasks.recommend."""
        from embengine.tasks.recommend import Recommender

        return Recommender(
            self,
            items,
            interactions=interactions,
            alpha=alpha,
            profiles=profiles,
            diversity=diversity,
            center=center,
            fields=fields,
            template=template,
        )


def _as_output(vectors: Any, output: str) -> Any:
    """numpy or a (device) torch tensor, in the framework `output` names."""
    on_host = isinstance(vectors, np.ndarray)
    if output == "numpy":
        return vectors if on_host else vectors.cpu().numpy()
    if output == "torch":
        if not on_host:
            return vectors
        import torch

        return torch.from_numpy(vectors)
    import cupy

    return cupy.asarray(vectors) if on_host else cupy.from_dlpack(vectors)


def _progress(chunks: Iterable[Chunk], enabled: bool, total: int) -> Iterable[Chunk]:
    if not enabled:
        yield from chunks
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="text", desc="embed") as bar:
        for chunk in chunks:
            yield chunk
            bar.update(chunk.texts)
