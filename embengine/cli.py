"""The `embengine` command: bulk embedding to Parquet, and the jobs built on it.

Exit codes, for scripts: 0 done, every record embedded; 1 failed (bad input in stop mode,
unreadable file, another job in the output...: the message names file and line; finished
parts are kept, so rerunning resumes); 2 bad command line; 3 done, but some records were
skipped (--on-error skip; they are listed); 130 interrupted (rerun to resume).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from embengine.bulk import Fields
    from embengine.engine import Engine

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_SKIPPED = 3
EXIT_INTERRUPTED = 130

_SHOW_BAD = 10  # bad records printed in the summary


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
    embed.add_argument("inputs", nargs="+", help="input files (.jsonl .csv .parquet .txt, .gz ok)")
    embed.add_argument("-o", "--out", required=True, help="output directory (a Parquet dataset)")
    embed.add_argument(
        "--format",
        choices=["jsonl", "csv", "parquet", "text"],
        help="input format (default: from each file's suffix; unknown suffixes are text)",
    )
    embed.add_argument("--text-field", default="text", help="field holding the text")
    embed.add_argument(
        "--id-field", help="field holding the id (default: the record's 0-based position)"
    )
    embed.add_argument("--keep-text", action="store_true", help="also write a text column")
    embed.add_argument(
        "--on-error",
        choices=["stop", "skip"],
        default="stop",
        help="on a bad record: stop (exit 1) or skip and report it (exit 3)",
    )
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.ERROR if getattr(args, "quiet", False) else logging.WARNING,
        format="embengine: %(message)s",
    )
    if args.command == "info":
        from embengine.__main__ import report

        print(json.dumps(report(), indent=2, default=str))
        return EXIT_OK
    if args.command == "demo":
        from embengine.demo import main as demo

        demo()
        return EXIT_OK
    runners = {"embed": _run_embed}
    try:
        return runners[args.command](args)
    except KeyboardInterrupt:
        print(f"embengine {args.command}: interrupted; rerun to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, TypeError, OSError, ImportError) as exc:
        hint = ""
        from embengine.bulk import BadRecordError

        if isinstance(exc, BadRecordError):
            hint = (
                "\n  (finished parts are kept: rerun with --on-error skip to go on past bad "
                "records, or fix the input and rerun with --overwrite)"
            )
        print(f"embengine {args.command}: error: {exc}{hint}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
