"""The FAISS side of VectorIndex: make, place, search and (de)serialise one index.

Every FAISS index here holds unit vectors under inner product (cosine), numbered by slot:
the n-th vector added has FAISS id n. VectorIndex keeps the mapping to external ids and
the tombstones of removed slots; this module only talks to FAISS.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from embengine._optional import require

log = logging.getLogger("embengine")

KINDS = ("flat", "ivf", "hnsw")
GPU_KINDS = ("flat", "ivf")  # FAISS has no GPU HNSW


def faiss_module() -> Any:
    return require("faiss", "VectorIndex")


def faiss_gpu_count() -> int:
    """GPUs FAISS can use: 0 with faiss-cpu (no GPU symbols) or no visible device."""
    faiss = faiss_module()
    if not hasattr(faiss, "StandardGpuResources"):
        return 0
    return int(faiss.get_num_gpus())


@dataclass
class AnnParams:
    """Knobs of the approximate kinds (ignored by flat).

    ivf: `nlist` lists (None: about sqrt(n) of the first add, at most n / 39 so each list
    gets enough training points), `nprobe` lists visited per query. The defaults keep
    SciFact nDCG@10 within 0.5 points of exact search (benchmarks/eval_search.py).
    hnsw: `m` links per node, `ef_construction` and `ef_search` beam widths.
    """

    nlist: int | None = None
    nprobe: int = 48
    m: int = 32
    ef_construction: int = 200
    ef_search: int = 128

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_nlist(n: int) -> int:
    return max(1, min(int(math.sqrt(n)), n // 39))


def make_index(kind: str, dim: int, params: AnnParams, train: np.ndarray) -> Any:
    """An empty CPU index of `kind`; IVF is trained on `train` (unit rows)."""
    faiss = faiss_module()
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, params.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params.ef_construction
        index.hnsw.efSearch = params.ef_search
        return index
    if kind == "ivf":
        nlist = params.nlist or default_nlist(len(train))
        if len(train) < nlist:
            raise ValueError(
                f"an IVF index with nlist={nlist} needs at least {nlist} vectors in its first add "
                f"to train on, got {len(train)}: add more at once, or pass a smaller nlist"
            )
        params.nlist = nlist
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(np.ascontiguousarray(train, dtype=np.float32))
        index.nprobe = params.nprobe
        return index  # faiss's wrapper keeps `quantizer` alive with the index
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def to_gpu(index: Any) -> Any:
    """The same index on GPU 0 (flat and IVF)."""
    faiss = faiss_module()
    resources = faiss.StandardGpuResources()
    gpu_index = faiss.index_cpu_to_gpu(resources, 0, index)
    gpu_index.__dict__["_resources"] = resources  # must outlive the index
    return gpu_index


def to_cpu(index: Any) -> Any:
    faiss = faiss_module()
    return faiss.index_gpu_to_cpu(index) if is_gpu(index) else index


def is_gpu(index: Any) -> bool:
    return "Gpu" in type(index).__name__


def serialize(index: Any) -> np.ndarray:
    """The index as a uint8 array (GPU indexes are copied to the host first)."""
    return np.asarray(faiss_module().serialize_index(to_cpu(index)), dtype=np.uint8)


def deserialize(blob: np.ndarray) -> Any:
    return faiss_module().deserialize_index(np.ascontiguousarray(blob, dtype=np.uint8))


def search(
    index: Any, queries: np.ndarray, k: int, params: AnnParams, live: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """FAISS search over unit queries: (scores, slots), each (q, k), -inf / -1 past the end.

    `live` (bool per slot, None when every slot is live) excludes removed slots through an
    ID selector. GPU indexes take no selector (VectorIndex compacts them before searching).
    """
    faiss = faiss_module()
    k_eff = min(k, index.ntotal)
    q = np.ascontiguousarray(queries, dtype=np.float32)
    scores = np.full((len(q), k), -np.inf, dtype=np.float32)
    slots = np.full((len(q), k), -1, dtype=np.int64)
    if k_eff == 0 or len(q) == 0:
        return scores, slots
    if is_gpu(index):
        if live is not None:
            raise RuntimeError("GPU indexes take no ID selector: compact before searching")
        if hasattr(index, "nprobe"):
            index.nprobe = params.nprobe
        search_params = None
    else:
        search_params = _search_params(faiss, index, params, live)
    if search_params is None:
        d, i = index.search(q, k_eff)
    else:
        d, i = index.search(q, k_eff, params=search_params)
    found = i >= 0
    scores[:, :k_eff] = np.where(found, d, -np.inf)
    slots[:, :k_eff] = i
    return scores, slots


def _search_params(faiss: Any, index: Any, params: AnnParams, live: np.ndarray | None) -> Any:
    selector = None
    if live is not None:
        bitmap = np.packbits(live, bitorder="little")
        selector = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))
        selector.__dict__["_bitmap"] = bitmap  # keep the buffer alive during the search
    name = type(index).__name__
    if "HNSW" in name:
        p = faiss.SearchParametersHNSW()
        p.efSearch = max(params.ef_search, 1)
    elif "IVF" in name:
        p = faiss.SearchParametersIVF()
        p.nprobe = params.nprobe
    elif selector is None:
        return None
    else:
        p = faiss.SearchParameters()
    if selector is not None:
        p.sel = selector
    p.__dict__["_selector"] = selector
    return p
