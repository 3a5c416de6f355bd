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

from embengine._optional import MissingDependency, require
from embengine.errors import CorruptFileError, InvalidInputError

log = logging.getLogger("embengine")

KINDS = ("flat", "ivf", "hnsw")
GPU_KINDS = ("flat", "ivf")  # FAISS has no GPU HNSW


def faiss_module() -> Any:
    return require("faiss", "VectorIndex")


def faiss_gpu_count() -> int:
    """GPUs FAISS can use: 0 with faiss-cpu (no GPU symbols), no visible device, or no FAISS
    at all (the exact flat index runs on embengine's own kernels; the kinds that need FAISS
    say so when they are made)."""
    try:
        faiss = faiss_module()
    except MissingDependency:
        return 0
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

    def __post_init__(self) -> None:
        """Bounded knobs: a saved file's values reach FAISS allocations (beam widths, lists)."""
        for name, low, high in _PARAM_RANGES:
            value = getattr(self, name)
            if value is None and name == "nlist":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise InvalidInputError(f"{name} must be an int, got {value!r}")
            if not low <= value <= high:
                raise InvalidInputError(f"{name} must be in [{low}, {high}], got {value}")
            setattr(self, name, int(value))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_PARAM_RANGES = (
    ("nlist", 1, 1 << 20),
    ("nprobe", 1, 1 << 20),
    ("m", 2, 256),
    ("ef_construction", 1, 1 << 16),
    ("ef_search", 1, 1 << 16),
)


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


def deserialize(blob: np.ndarray, *, kind: str, dim: int, ntotal: int) -> Any:
    """The index in `blob`, after checking its layout (see `check_blob`)."""
    blob = np.ascontiguousarray(blob, dtype=np.uint8)
    check_blob(blob, kind=kind, dim=dim, ntotal=ntotal)
    return faiss_module().deserialize_index(blob)


def search(
    index: Any, queries: np.ndarray, k: int, params: AnnParams, live_bits: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """FAISS search over unit queries: (scores, slots), each (q, k), -inf / -1 past the end.

    `live_bits` (a little-endian bitmap of live slots, None when every slot is live)
    excludes removed slots through an ID selector. GPU indexes take no selector
    (VectorIndex compacts them at every remove).
    """
    faiss = faiss_module()
    k_eff = min(k, index.ntotal)
    q = np.ascontiguousarray(queries, dtype=np.float32)
    scores = np.full((len(q), k), -np.inf, dtype=np.float32)
    slots = np.full((len(q), k), -1, dtype=np.int64)
    if k_eff == 0 or len(q) == 0:
        return scores, slots
    if is_gpu(index):
        if live_bits is not None:
            raise RuntimeError("GPU indexes take no ID selector: compact before searching")
        if hasattr(index, "nprobe"):
            index.nprobe = params.nprobe
        search_params = None
    else:
        search_params = _search_params(faiss, index, params, live_bits)
    if search_params is None:
        d, i = index.search(q, k_eff)
    else:
        d, i = index.search(q, k_eff, params=search_params)
    found = i >= 0
    scores[:, :k_eff] = np.where(found, d, -np.inf)
    slots[:, :k_eff] = i
    return scores, slots


def _search_params(faiss: Any, index: Any, params: AnnParams, bits: np.ndarray | None) -> Any:
    selector = None
    if bits is not None:
        selector = faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits))
        selector.__dict__["_bitmap"] = bits  # keep the buffer alive during the search
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


# ---- checking a serialised index before FAISS reads it ----------------------------------
#
# The file's sha256 guards against damage, not against a crafted file with a recomputed
# checksum. FAISS trusts the sizes inside its blob (a mutated vector length made
# deserialize_index allocate 14.9 GB from a 100 KB file) and the offsets of an HNSW graph
# (out-of-range neighbours read past the arrays at search time). So the three layouts
# VectorIndex writes (IndexFlatIP, IndexIVFFlat over an IndexFlatIP quantizer, IndexHNSWFlat
# over an IndexFlatIP store; FAISS 1.x format) are walked here first: every length must fit
# in the bytes that remain, the counts must agree with the index file's own arrays, and the
# graph / list contents must stay in range. Anything else is refused as corrupt, so FAISS
# never allocates more than about the blob's own size.

_FOURCC = {"flat": b"IxFI", "ivf": b"IwFl", "hnsw": b"IHNf"}
_METRIC_INNER_PRODUCT = 0


class _Reader:
    """Bounds-checked little-endian reads over a blob."""

    def __init__(self, blob: np.ndarray) -> None:
        self.blob = blob
        self.at = 0

    def fail(self, what: str) -> CorruptFileError:
        return CorruptFileError(f"FAISS index blob: {what} (at byte {self.at} of {len(self.blob)})")

    def take(self, n: int) -> np.ndarray:
        if n < 0 or n > len(self.blob) - self.at:
            raise self.fail(f"a field of {n} bytes runs past the end")
        out = self.blob[self.at : self.at + n]
        self.at += n
        return out

    def scalar(self, dtype: str) -> int | float:
        size = np.dtype(dtype).itemsize
        return self.take(size).view(dtype)[0].item()

    def array(self, dtype: str, count: int) -> np.ndarray:
        size = np.dtype(dtype).itemsize
        if count < 0 or count > (len(self.blob) - self.at) // size:
            raise self.fail(f"{count} items of {size} bytes do not fit in the blob")
        return self.take(count * size).view(dtype)

    def vector(self, dtype: str) -> np.ndarray:
        return self.array(dtype, int(self.scalar("<u8")))


def check_blob(blob: np.ndarray, *, kind: str, dim: int, ntotal: int) -> None:
    """CorruptFileError unless `blob` is a well-formed index of `kind` holding ntotal x dim."""
    r = _Reader(blob)
    if kind == "flat":
        _flat(r, dim, ntotal)
    elif kind == "ivf":
        _ivf(r, dim, ntotal)
    elif kind == "hnsw":
        _hnsw(r, dim, ntotal)
    else:
        raise CorruptFileError(f"unknown index kind {kind!r}")
    if r.at != len(blob):
        raise r.fail(f"{len(blob) - r.at} unexpected trailing bytes")


def _header(r: _Reader, kind: str, dim: int, ntotal: int) -> None:
    fourcc = r.take(4).tobytes()
    if fourcc != _FOURCC[kind]:
        raise r.fail(f"type {fourcc!r}, expected {_FOURCC[kind]!r} for kind {kind!r}")
    d, n = r.scalar("<i4"), r.scalar("<i8")
    r.take(16)  # two unused int64 fields
    r.take(1)  # is_trained
    metric = r.scalar("<i4")
    if d != dim or n != ntotal or metric != _METRIC_INNER_PRODUCT:
        raise r.fail(f"holds {n} x {d} (metric {metric}), expected {ntotal} x {dim} by IP")


def _flat(r: _Reader, dim: int, ntotal: int) -> None:
    _header(r, "flat", dim, ntotal)
    codes = r.vector("<f4")
    if len(codes) != dim * ntotal:
        raise r.fail(f"{len(codes)} floats for {ntotal} x {dim}")


def _ivf(r: _Reader, dim: int, ntotal: int) -> None:
    _header(r, "ivf", dim, ntotal)
    nlist = int(r.scalar("<u8"))
    r.take(8)  # nprobe: searches pass their own
    if not 1 <= nlist <= _PARAM_RANGES[0][2]:
        raise r.fail(f"nlist {nlist} out of range")
    _flat(r, dim, nlist)  # the coarse quantizer: one centroid per list
    if r.scalar("<u1") != 0 or len(r.vector("<i8")) != 0:
        raise r.fail("a direct map (VectorIndex never makes one)")
    if r.take(4).tobytes() != b"ilar":
        raise r.fail("inverted lists are not in-memory array lists")
    if r.scalar("<u8") != nlist or r.scalar("<u8") != 4 * dim:
        raise r.fail("inverted lists disagree with nlist or the code size")
    layout = r.take(4).tobytes()
    sizes = np.zeros(nlist, dtype=np.uint64)
    if layout == b"full":
        sizes = r.vector("<u8")
        if len(sizes) != nlist:
            raise r.fail(f"{len(sizes)} list sizes for {nlist} lists")
    elif layout == b"sprs":
        pairs = r.vector("<u8")
        if len(pairs) % 2 or (len(pairs) and pairs[0::2].max() >= nlist):
            raise r.fail("sparse list sizes out of range")
        sizes[pairs[0::2].astype(np.int64)] = pairs[1::2]
    else:
        raise r.fail(f"list size layout {layout!r}")
    if int(sizes.sum(dtype=np.float64)) != ntotal or sizes.max(initial=0) > ntotal:
        raise r.fail(f"lists hold {sizes.sum(dtype=np.float64):.0f} vectors, expected {ntotal}")
    seen = np.zeros(ntotal, dtype=bool)
    for size in sizes[sizes > 0].tolist():
        r.array("<f4", size * dim)
        ids = r.array("<i8", size)
        if ids.min() < 0 or ids.max() >= ntotal or seen[ids].any():
            raise r.fail("list ids out of range or repeated")
        seen[ids] = True


def _hnsw(r: _Reader, dim: int, ntotal: int) -> None:
    _header(r, "hnsw", dim, ntotal)
    r.vector("<f8")  # assign_probas: read by add only
    cum = r.vector("<i4").astype(np.int64)
    levels = r.vector("<i4").astype(np.int64)
    offsets = r.vector("<u8")
    neighbors = r.vector("<i4")
    entry, max_level = r.scalar("<i4"), r.scalar("<i4")
    r.take(12)  # efConstruction, efSearch (searches pass their own), unused
    n_levels = len(cum) - 1
    ok = (
        n_levels >= 1
        and cum[0] == 0
        and bool(np.all(np.diff(cum) >= 0))
        and len(levels) == ntotal
        and len(offsets) == ntotal + 1
        and (ntotal == 0 or (levels.min() >= 1 and levels.max() <= n_levels))
        and -1 <= max_level < n_levels
        and (entry == -1 if ntotal == 0 else 0 <= entry < ntotal)
        and (ntotal == 0 or levels[entry] - 1 == max_level)
    )
    if ok:
        offsets = offsets.astype(np.int64)
        ok = (
            offsets[0] == 0
            and offsets[-1] == len(neighbors)
            and bool(np.array_equal(np.diff(offsets), cum[levels] if ntotal else offsets[:0]))
            and (len(neighbors) == 0 or (neighbors.min() >= -1 and neighbors.max() < ntotal))
        )
    if not ok:
        raise r.fail("HNSW graph is inconsistent (levels, offsets or neighbours out of range)")
    _flat(r, dim, ntotal)  # the stored vectors
