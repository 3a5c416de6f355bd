"""The `embengine` command: bulk embedding to Parquet, and the jobs built on it.

Exit codes, for scripts: 0 done, every record embedded; 1 failed (bad input in stop mode,
unreadable file, another job in the output...: the message names file and line; finished
parts are kept, so rerunning resumes); 2 bad command line; 3 done, but some records were
skipped (--on-error skip; they are listed); 130 interrupted (rerun to resume).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import itertools
import json
import logging
import math
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from embengine.bulk import Fields, Record
    from embengine.engine import Engine

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_SKIPPED = 3
EXIT_INTERRUPTED = 130

_SHOW_BAD = 10  # bad records printed in the summary
_CHUNK = 1000  # records embedded at a time by the task commands (bounds their memory)
OUTPUT_FORMATS = ("jsonl", "csv", "tsv")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embengine",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="what was built, the devices found, the default model")
    commands.add_parser("demo", help="every job on the bundled sample, with the default model")
    _add_embed(commands)
    _add_index(commands)
    _add_search(commands)
    _add_classify(commands)
    _add_anomaly(commands)
    _add_dedup(commands)
    _add_recommend(commands)
    _add_serve(commands)
    return parser


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model and device")
    group.add_argument(
        "--model", help="a local sentence-transformers directory (default: packaged)"
    )
    group.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    group.add_argument("--backend", default="auto", help="encoder backend (default: auto)")
    group.add_argument(
        "--batch-tokens", type=int, help="padded tokens per batch (default: per device)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")


def _add_embed(commands: argparse._SubParsersAction) -> None:
    embed = commands.add_parser(
        "embed",
        help="embed JSONL / CSV / Parquet / text files into a Parquet dataset (resumable)",
        description="Embed files into a Parquet dataset directory: columns id, text_sha256, "
        "vector. Rerunning the same command after a kill resumes where it stopped.",
    )
    embed.set_defaults(run=_run_embed)
    embed.add_argument("inputs", nargs="+", help="input files (.jsonl .csv .parquet .txt, .gz ok)")
    embed.add_argument("-o", "--out", required=True, help="output directory (a Parquet dataset)")
    _add_input_options(embed)
    embed.add_argument("--keep-text", action="store_true", help="also write a text column")
    embed.add_argument(
        "--chunk-rows", type=int, default=10_000, help="records per part file (bounds memory)"
    )
    embed.add_argument(
        "--overwrite", action="store_true", help="replace an existing job instead of resuming"
    )
    embed.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run on Ray: a local instance, or the cluster at ADDRESS (e.g. 'auto')",
    )
    embed.add_argument(
        "--ray-actors", type=int, default=2, help="Ray: embedding actors (one Engine each)"
    )
    embed.add_argument(
        "--ray-gpus", type=float, default=None, help="Ray: GPUs per actor (default: 1 with cuda)"
    )
    embed.add_argument("--ray-cpus", type=float, default=1.0, help="Ray: CPUs per actor")
    _add_engine_options(embed)


def _add_input_options(parser: argparse.ArgumentParser) -> None:
    """How records are read: the options every command that reads record files shares."""
    parser.add_argument(
        "--format",
        choices=["jsonl", "csv", "parquet", "text"],
        help="input format (default: from each file's suffix; unknown suffixes are text)",
    )
    parser.add_argument("--text-field", default="text", help="field holding the text")
    parser.add_argument(
        "--id-field", help="field holding the id (default: the record's 0-based position)"
    )
    parser.add_argument(
        "--on-error",
        choices=["stop", "skip"],
        default="stop",
        help="on a bad record: stop (exit 1) or skip and report it (exit 3)",
    )


def _add_output_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("-o", "--out", help=f"{what} file (default: standard output)")
    parser.add_argument(
        "--output-format",
        choices=OUTPUT_FORMATS,
        help="jsonl, csv or tsv (default: from the --out suffix, else jsonl)",
    )


def _add_index(commands: argparse._SubParsersAction) -> None:
    index = commands.add_parser("index", help="build a vector index from record files")
    actions = index.add_subparsers(dest="index_command", required=True)
    build = actions.add_parser(
        "build",
        help="embed record files into a saved VectorIndex (for `embengine search`)",
        description="Embed every record and save a VectorIndex file under the records' ids "
        "(--id-field values as strings, else 0-based positions); texts are kept in it.",
    )
    build.set_defaults(run=_run_index_build)
    build.add_argument("inputs", nargs="+", help="input files (.jsonl .csv .parquet .txt, .gz ok)")
    build.add_argument("-o", "--out", required=True, help="the index file to write")
    _add_input_options(build)
    build.add_argument("--kind", choices=["flat", "ivf", "hnsw"], default="flat")
    build.add_argument(
        "--lexical", action="store_true", help="also keep BM25 (for --mode lexical/hybrid)"
    )
    _add_engine_options(build)


def _add_search(commands: argparse._SubParsersAction) -> None:
    search = commands.add_parser(
        "search",
        help="search a saved index with query texts",
        description="One output row per hit: query (and query_id), rank, id, score.",
    )
    search.set_defaults(run=_run_search)
    search.add_argument("index", help="an index file from `embengine index build`")
    search.add_argument("queries", nargs="*", help="query texts")
    search.add_argument("--queries-file", help="a record file of queries (read like inputs)")
    _add_input_options(search)
    search.add_argument("-k", "--k", type=int, default=10, help="hits per query")
    search.add_argument("--mode", choices=["dense", "lexical", "hybrid"], default="dense")
    _add_output_options(search, "results")
    _add_engine_options(search)


def _add_classify(commands: argparse._SubParsersAction) -> None:
    classify = commands.add_parser(
        "classify",
        help="label records from a file of labelled examples",
        description="Output rows: id, label, confidence (the label's probability).",
    )
    classify.set_defaults(run=_run_classify)
    classify.add_argument("inputs", nargs="+", help="records to label")
    classify.add_argument(
        "--examples", required=True, help="labelled examples (text and label fields)"
    )
    classify.add_argument("--label-field", default="label", help="examples' field with the label")
    _add_input_options(classify)
    classify.add_argument(
        "--mode",
        choices=["auto", "logistic", "lda", "neighbours", "knn", "centroid"],
        default="auto",
    )
    classify.add_argument(
        "--threshold",
        help="open set: an out-of-scope score in [0, 1], or 'auto'; records scoring above it "
        "get an empty label",
    )
    _add_output_options(classify, "predictions")
    _add_engine_options(classify)


def _add_anomaly(commands: argparse._SubParsersAction) -> None:
    anomaly = commands.add_parser(
        "anomaly",
        help="flag unusual lines in a stream, against a file of normal ones",
        description="Fit on normal records, then judge the inputs in order (normal lines join "
        "the rolling window). Output rows: where, id, score, threshold, anomalous, group "
        "(alert group, -1 if normal), first (opens its group), text; only the anomalous ones "
        "unless --all.",
    )
    anomaly.set_defaults(run=_run_anomaly)
    anomaly.add_argument("inputs", nargs="+", help="records to judge, in stream order")
    anomaly.add_argument("--normal", required=True, help="normal records to fit on")
    _add_input_options(anomaly)
    anomaly.add_argument("--window", type=int, default=20_000, help="normal lines remembered")
    anomaly.add_argument(
        "--quantile",
        type=float,
        default=0.95,
        help="threshold: this quantile of the window patterns' leave-one-out scores",
    )
    anomaly.add_argument("--all", action="store_true", help="output every line, not just flagged")
    _add_output_options(anomaly, "detections")
    _add_engine_options(anomaly)


def _add_dedup(commands: argparse._SubParsersAction) -> None:
    dedup = commands.add_parser(
        "dedup",
        help="group near-duplicate records",
        description="Output rows, one per record: id, cluster (the id of the cluster's "
        "representative, its earliest record), is_representative (keep these to deduplicate). "
        "All records are held in memory.",
    )
    dedup.set_defaults(run=_run_dedup)
    dedup.add_argument("inputs", nargs="+", help="records to deduplicate")
    _add_input_options(dedup)
    dedup.add_argument(
        "--threshold", type=float, default=0.9, help="cosine at which two records are duplicates"
    )
    dedup.add_argument(
        "--confirm",
        action="store_true",
        help="also require the strings to agree (codes, fuzzy ratio; needs rapidfuzz)",
    )
    dedup.add_argument("--method", choices=["auto", "exact", "partitioned"], default="auto")
    dedup.add_argument(
        "--pairs", help="also write the accepted duplicate pairs (id_a, id_b, score) to this file"
    )
    _add_output_options(dedup, "clusters")
    _add_engine_options(dedup)


def _add_recommend(commands: argparse._SubParsersAction) -> None:
    recommend = commands.add_parser(
        "recommend",
        help="recommend items by content: like one item, or for a history of items",
        description="Output rows: rank, id, score (cosine to the item or the history's "
        "centroid, on embeddings centred on the catalogue). Items are named by their "
        "--id-field values, else by their 0-based positions.",
    )
    recommend.set_defaults(run=_run_recommend)
    recommend.add_argument("inputs", nargs="+", help="the item records (the catalogue)")
    _add_input_options(recommend)
    wanted = recommend.add_mutually_exclusive_group(required=True)
    wanted.add_argument("--similar", metavar="ID", help="items most like this one")
    wanted.add_argument(
        "--history", metavar="ID[,ID...]", help="items for a user who liked these (not repeated)"
    )
    recommend.add_argument("-k", "--k", type=int, default=10, help="items to recommend")
    _add_output_options(recommend, "recommendations")
    _add_engine_options(recommend)


def _add_serve(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser(
        "serve",
        help="HTTP server: OpenAI-compatible /v1/embeddings, /v1/search, /v1/classify, /metrics",
        description="Serve the model over HTTP (needs the serve extra: pip install "
        "'embengine[serve]'). Concurrent requests are coalesced into shared batches; a full "
        "queue answers 429. SIGINT / SIGTERM drain in-flight requests, then exit.",
    )
    serve.set_defaults(run=_run_serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--index", help="a saved VectorIndex to serve at /v1/search")
    serve.add_argument("--classifier", help="a saved Classifier to serve at /v1/classify")
    serve.add_argument(
        "--workers",
        type=int,
        help="batches run side by side on --device (default: one per core on the CPU, 1 on CUDA)",
    )
    serve.add_argument(
        "--devices", help="one replica per listed device instead, e.g. cuda:0,cuda:1"
    )
    serve.add_argument(
        "--no-coalesce", action="store_true", help="one encoder call per request (for comparison)"
    )
    serve.add_argument("--max-wait-ms", type=float, help="how long a request waits for company")
    serve.add_argument("--max-queue", type=int, help="queued texts past which requests get 429")
    serve.add_argument("--max-body-bytes", type=int, help="request bodies past this get 413")
    serve.add_argument(
        "--max-batch-size", type=int, help="most texts per encoder batch (default: 16 on the CPU)"
    )
    _add_engine_options(serve)


def _run_serve(args: argparse.Namespace) -> int:
    from embengine.serve.server import serve

    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the signal once drained
        serve(args)
    return EXIT_OK


def _engine(args: argparse.Namespace) -> Engine:
    from embengine import Engine

    return Engine(
        args.model, device=args.device, backend=args.backend, batch_tokens=args.batch_tokens
    )


def _run_embed(args: argparse.Namespace) -> int:
    from embengine.bulk import Fields, embed_files

    fields = Fields(text=args.text_field, id=args.id_field)
    if args.ray:
        return _run_embed_ray(args, fields)
    result = embed_files(
        _engine(args),
        args.inputs,
        args.out,
        fmt=args.format,
        fields=fields,
        chunk_rows=args.chunk_rows,
        on_error=args.on_error,
        keep_text=args.keep_text,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    if not args.quiet:
        resumed = f"; kept {result.resumed_parts} finished parts" if result.resumed_parts else ""
        print(
            f"embedded {result.rows} of {result.records} records into {result.out} "
            f"({result.parts} parts{resumed}) in {result.seconds:.1f} s: "
            f"{result.rows_per_second:.0f} texts/s",
            file=sys.stderr,
        )
    if result.bad:
        print(f"skipped {result.bad} bad records:", file=sys.stderr)
        for bad in result.bad_records[:_SHOW_BAD]:
            print(f"  {bad['where']}: {bad['error']}", file=sys.stderr)
        if result.bad > _SHOW_BAD:
            print(f"  ... all listed in {result.out}/_embengine_job.json", file=sys.stderr)
        return EXIT_SKIPPED
    return EXIT_OK


def _run_embed_ray(args: argparse.Namespace, fields: Fields) -> int:
    from embengine.distributed.ray import embed_files_ray, init_ray

    if args.on_error != "stop" or args.chunk_rows != 10_000:
        raise ValueError("--on-error skip and --chunk-rows apply to the single-process path")
    from embengine.distributed.ray import prepare_ray_output

    prepare_ray_output(args.out, args.inputs, overwrite=args.overwrite)  # before Ray starts
    if args.ray == "local":  # room for the reading and writing tasks beside the actors
        init_ray(
            "local",
            num_cpus=max(os.cpu_count() or 1, math.ceil(args.ray_actors * args.ray_cpus) + 1),
        )
    else:
        init_ray(args.ray)
    if args.quiet:
        import ray.data

        ray.data.DataContext.get_current().enable_progress_bars = False
    rows = embed_files_ray(
        args.inputs,
        args.out,
        fmt=args.format,
        fields=fields,
        model=args.model,
        device=args.device,
        batch_tokens=args.batch_tokens,
        actors=args.ray_actors,
        gpus_per_actor=args.ray_gpus,
        cpus_per_actor=args.ray_cpus,
        overwrite=args.overwrite,
    )
    if not args.quiet:
        print(f"embedded {rows} records into {args.out} on Ray", file=sys.stderr)
    return EXIT_OK


# ---------------------------------------------------------------- task commands


class _Reader:
    """Good records of record files with their 0-based positions, as `embed` reads them.

    A bad record raises BadRecordError naming file and line (--on-error stop) or is kept
    in `bad` and reported by `finish` (skip).
    """

    def __init__(
        self, args: argparse.Namespace, *, text: str, id: str | None, id_is: str = "id"
    ) -> None:
        from embengine.bulk import Fields

        self.fmt, self.fields, self.on_error = args.format, Fields(text=text, id=id), args.on_error
        self.id_is = id_is  # what the id field means here, for messages ("label")
        self.bad: list[Record] = []

    def records(self, paths: Sequence[str]) -> Iterator[tuple[int, Record]]:
        from embengine.bulk import read_records

        records = read_records([Path(p) for p in paths], self.fmt, self.fields)
        for position, record in enumerate(records):
            if record.error is None:
                yield position, record
            else:
                self.reject(record, str(record.error).replace("id field", f"{self.id_is} field"))

    def reject(self, record: Record, error: str) -> None:
        """A bad record: raise (stop) or keep it for the report (skip)."""
        from embengine.bulk import BadRecordError

        if self.on_error == "stop":
            raise BadRecordError(f"{record.where}: {error}")
        self.bad.append(dataclasses.replace(record, error=error))

    def finish(self) -> int:
        """EXIT_SKIPPED after listing the skipped records, or EXIT_OK when there were none."""
        if not self.bad:
            return EXIT_OK
        print(f"skipped {len(self.bad)} bad records:", file=sys.stderr)
        for record in self.bad[:_SHOW_BAD]:
            print(f"  {record.where}: {record.error}", file=sys.stderr)
        if len(self.bad) > _SHOW_BAD:
            print(f"  ... and {len(self.bad) - _SHOW_BAD} more", file=sys.stderr)
        return EXIT_SKIPPED


def _record_id(position: int, record: Record, fields: Fields) -> Any:
    return position if fields.id is None else record.id


def _chunks(items: Iterable[Any], size: int = _CHUNK) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _write_rows(
    args: argparse.Namespace, columns: Sequence[str], rows: Iterable[dict[str, Any]]
) -> int:
    """Stream rows to --out (written atomically) or stdout as JSONL, CSV or TSV; the count."""
    out = args.out if args.out not in (None, "-") else None
    fmt = args.output_format or (
        {".csv": "csv", ".tsv": "tsv"}.get(Path(out).suffix.lower(), "jsonl") if out else "jsonl"
    )
    count = 0

    def write(stream: TextIO) -> None:
        nonlocal count
        writer = None
        if fmt != "jsonl":
            writer = csv.DictWriter(stream, columns, delimiter="," if fmt == "csv" else "\t")
            writer.writeheader()
        for row in rows:
            if writer is None:
                stream.write(json.dumps(row, ensure_ascii=False) + "\n")
            else:
                writer.writerow(row)
            count += 1

    if out is None:
        write(sys.stdout)
        sys.stdout.flush()
        return count

    def write_file(binary: IO[bytes]) -> None:
        stream = io.TextIOWrapper(binary, encoding="utf-8", newline="")
        write(stream)
        stream.flush()
        stream.detach()

    from embengine.io import atomic_write

    atomic_write(out, write_file)
    return count


def _say(args: argparse.Namespace, message: str) -> None:
    if not args.quiet:
        print(message, file=sys.stderr)


def _run_index_build(args: argparse.Namespace) -> int:
    reader = _Reader(args, text=args.text_field, id=args.id_field)
    texts, ids = [], []
    for position, record in reader.records(args.inputs):
        texts.append(record.text)
        ids.append(position if args.id_field is None else str(record.id))
    if not texts:
        raise ValueError(f"no records to index in {', '.join(args.inputs)}")
    index = _engine(args).index(texts, ids, kind=args.kind, lexical=args.lexical)
    index.save(args.out)
    _say(args, f"indexed {len(index)} records ({args.kind}) into {args.out}")
    return reader.finish()


def _run_search(args: argparse.Namespace) -> int:
    import numpy as np

    from embengine.index import VectorIndex

    if bool(args.queries) == bool(args.queries_file):
        raise ValueError("give query texts or --queries-file (one of the two)")
    engine = _engine(args)
    index = VectorIndex.load(args.index, engine=engine)
    reader = _Reader(args, text=args.text_field, id=args.id_field)
    if args.queries_file:
        queries: Iterable[tuple[Any, str]] = (
            (_record_id(p, r, reader.fields), r.text)
            for p, r in reader.records([args.queries_file])
        )
    else:
        queries = enumerate(args.queries)

    def rows() -> Iterator[dict[str, Any]]:
        for chunk in _chunks(queries):
            scores, ids = engine.search([q for _, q in chunk], index, args.k, mode=args.mode)
            for (query_id, query), row_scores, row_ids in zip(chunk, scores, ids, strict=True):
                hits = [(s, i) for s, i in zip(row_scores, row_ids, strict=True) if s > -np.inf]
                for rank, (score, hit) in enumerate(hits, start=1):
                    hit = hit.item() if isinstance(hit, np.generic) else hit
                    yield {
                        "query_id": query_id,
                        "query": query,
                        "rank": rank,
                        "id": hit,
                        "score": round(float(score), 6),
                    }

    count = _write_rows(args, ["query_id", "query", "rank", "id", "score"], rows())
    _say(args, f"wrote {count} hits")
    return reader.finish()


def _run_classify(args: argparse.Namespace) -> int:
    threshold = args.threshold
    if threshold is not None and threshold != "auto":
        threshold = float(threshold)
    engine = _engine(args)
    examples: dict[Any, list[str]] = {}
    example_reader = _Reader(args, text=args.text_field, id=args.label_field, id_is="label")
    for _, record in example_reader.records([args.examples]):
        if isinstance(record.id, str) and not record.id.strip():
            example_reader.reject(record, f"field {args.label_field!r} is empty")
        else:
            examples.setdefault(record.id, []).append(record.text)
    if not examples:
        raise ValueError(f"{args.examples} holds no labelled examples")
    classifier = engine.classifier(examples, mode=args.mode, threshold=threshold, unknown="")
    reader = _Reader(args, text=args.text_field, id=args.id_field)

    def rows() -> Iterator[dict[str, Any]]:
        for chunk in _chunks(reader.records(args.inputs)):
            vectors = engine.embed([record.text for _, record in chunk])
            labels = classifier.predict_vectors(vectors)
            confidence = classifier.predict_proba_vectors(vectors).max(axis=1)
            for (position, record), label, p in zip(chunk, labels, confidence, strict=True):
                yield {
                    "id": _record_id(position, record, reader.fields),
                    "label": label,
                    "confidence": round(float(p), 6),
                }

    count = _write_rows(args, ["id", "label", "confidence"], rows())
    _say(args, f"labelled {count} records with {len(classifier.labels)} labels")
    return max(example_reader.finish(), reader.finish())


def _run_anomaly(args: argparse.Namespace) -> int:
    engine = _engine(args)
    normal_reader = _Reader(args, text=args.text_field, id=None)
    normal = [record.text for _, record in normal_reader.records([args.normal])]
    detector = engine.anomaly_detector(window=args.window, quantile=args.quantile).fit(normal)
    reader = _Reader(args, text=args.text_field, id=args.id_field)
    records, texts = itertools.tee(reader.records(args.inputs))
    judged = zip(records, detector.process(record.text for _, record in texts), strict=True)
    flagged = 0

    def rows() -> Iterator[dict[str, Any]]:
        nonlocal flagged
        for (position, record), detection in judged:
            flagged += detection.anomalous
            if detection.anomalous or args.all:
                yield {
                    "where": record.where,
                    "id": _record_id(position, record, reader.fields),
                    "score": round(detection.score, 6),
                    "threshold": round(detection.threshold, 6),
                    "anomalous": detection.anomalous,
                    "group": detection.group,
                    "first": detection.first,
                    "text": record.text,
                }

    columns = ["where", "id", "score", "threshold", "anomalous", "group", "first", "text"]
    count = _write_rows(args, columns, rows())
    _say(args, f"flagged {flagged} lines" + (f" of {count}" if args.all else ""))
    return max(normal_reader.finish(), reader.finish())


def _run_dedup(args: argparse.Namespace) -> int:
    reader = _Reader(args, text=args.text_field, id=args.id_field)
    ids, texts = [], []
    for position, record in reader.records(args.inputs):
        ids.append(_record_id(position, record, reader.fields))
        texts.append(record.text)
    if not texts:
        raise ValueError(f"no records to deduplicate in {', '.join(args.inputs)}")
    clusters = _engine(args).dedup(
        texts, args.threshold, confirm=args.confirm or None, method=args.method
    )
    labels = clusters.labels.tolist()
    rows = (
        {"id": ids[n], "cluster": ids[label], "is_representative": n == label}
        for n, label in enumerate(labels)
    )
    _write_rows(args, ["id", "cluster", "is_representative"], rows)
    if args.pairs:
        i, j, score = clusters.pairs
        pairs = (
            {"id_a": ids[a], "id_b": ids[b], "score": round(s, 6)}
            for a, b, s in zip(i.tolist(), j.tolist(), score.tolist(), strict=True)
        )
        pairs_args = argparse.Namespace(**{**vars(args), "out": args.pairs})
        _write_rows(pairs_args, ["id_a", "id_b", "score"], pairs)
    kept = len(clusters.representatives)
    _say(args, f"{len(texts)} records: {kept} kept, {len(texts) - kept} duplicates")
    return reader.finish()


def _run_recommend(args: argparse.Namespace) -> int:
    import numpy as np

    reader = _Reader(args, text=args.text_field, id=args.id_field)
    items: dict[Any, str] = {}
    for position, record in reader.records(args.inputs):
        item_id = position if args.id_field is None else str(record.id)
        if item_id in items:
            reader.reject(record, f"item id {item_id!r} repeats an earlier record's")
        else:
            items[item_id] = record.text
    if not items:
        raise ValueError(f"no items in {', '.join(args.inputs)}")
    given = [args.similar] if args.similar is not None else args.history.split(",")
    wanted: list[Any] = [w.strip() for w in given]
    if args.id_field is None:
        if not all(w.isdigit() for w in wanted):
            raise ValueError(f"items are named by position (no --id-field): got {wanted}")
        wanted = [int(w) for w in wanted]
    unknown = [w for w in wanted if w not in items]
    if unknown:
        raise ValueError(f"unknown item ids {unknown[:5]} (not in {', '.join(args.inputs)})")
    recommender = _engine(args).recommender(items)
    if args.similar is not None:
        scores, ids = recommender.similar([wanted[0]], args.k)
    else:
        scores, ids = recommender.for_user([wanted], args.k)
    found = np.isfinite(scores[0])  # slots past the catalogue hold -inf
    rows = (
        {
            "rank": rank,
            "id": item.item() if isinstance(item, np.generic) else item,
            "score": round(float(score), 6),
        }
        for rank, (score, item) in enumerate(
            zip(scores[0][found], ids[0][found], strict=True), start=1
        )
    )
    count = _write_rows(args, ["rank", "id", "score"], rows)
    _say(args, f"recommended {count} of {len(items)} items")
    return reader.finish()


def _written_inputs(args: argparse.Namespace) -> str | None:
    """Why the command would write over one of its own inputs, or None when it would not.

    Outputs are -o/--out and --pairs (for `embed`, a directory: no input may lie inside
    it); inputs are every file the command reads. Same file means same path after
    resolving links, or the same inode.
    """
    inputs = [*getattr(args, "inputs", [])]
    inputs += [getattr(args, name, None) for name in ("examples", "normal", "queries_file")]
    if args.command == "search":
        inputs.append(args.index)
    inputs = [Path(p) for p in inputs if p not in (None, "-")]
    outputs = [getattr(args, name, None) for name in ("out", "pairs")]
    outputs = [Path(p) for p in outputs if p not in (None, "-")]
    if len(outputs) == 2 and _same_file(*outputs):
        return f"-o and --pairs name the same file {outputs[0]}"
    for out in outputs:
        for path in inputs:
            if args.command == "embed" and path.resolve().is_relative_to(out.resolve()):
                return f"input {path} is inside the output directory {out}"
            if _same_file(out, path):
                return f"the output {out} is also an input ({path}): it would be overwritten"
    return None


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    clash = _written_inputs(args) if hasattr(args, "run") else None
    if clash is not None:
        print(f"embengine {args.command}: error: {clash}; choose another output", file=sys.stderr)
        return EXIT_USAGE
    level = logging.ERROR if getattr(args, "quiet", False) else logging.WARNING
    handler = logging.StreamHandler()
    handler.setLevel(level)  # on the handler too: bm25s sets its own logger to DEBUG
    handler.setFormatter(logging.Formatter("embengine: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    if args.command == "info":
        from embengine.__main__ import report

        print(json.dumps(report(), indent=2, default=str))
        return EXIT_OK
    if args.command == "demo":
        from embengine.demo import main as demo

        demo()
        return EXIT_OK
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print(f"embengine {args.command}: interrupted; rerun to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, TypeError, OSError, ImportError) as exc:
        hint = ""
        from embengine.bulk import BadRecordError

        if isinstance(exc, BadRecordError) and args.command == "embed":
            hint = (
                "\n  (finished parts are kept: rerun with --on-error skip to go on past bad "
                "records, or fix the input and rerun with --overwrite)"
            )
        print(f"embengine {args.command}: error: {exc}{hint}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
