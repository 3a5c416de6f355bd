"""The `embengine` command."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="embengine", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="what was built, the devices found, the default model")
    commands.add_parser("demo", help="every job on the bundled sample, with the default model")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "info":
        from embengine.__main__ import report

        print(json.dumps(report(), indent=2, default=str))
    elif args.command == "demo":
        from embengine.demo import main as demo

        demo()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
