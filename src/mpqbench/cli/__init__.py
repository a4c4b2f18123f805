"""The ``mpqbench`` command line: one subcommand per module in this package."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from mpqbench import __version__
from mpqbench.errors import MpqbenchError

#: Subcommand modules; each defines ``register(subparsers)`` which adds its parser and sets
#: ``func`` (called with the parsed namespace, returns an exit code).
COMMAND_MODULES = (
    "mpqbench.cli.eval_cmd",
    "mpqbench.cli.quantize_cmd",
    "mpqbench.cli.run_cmd",
    "mpqbench.cli.report_cmd",
    "mpqbench.cli.compare_cmd",
    "mpqbench.cli.methods_cmd",
    "mpqbench.cli.restat_cmd",
    "mpqbench.cli.search_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mpqbench",
        description="Benchmark mixed-precision quantization of speech foundation models.",
    )
    parser.add_argument("--version", action="version", version=f"mpqbench {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, MpqbenchError) as exc:
        # User-facing errors: one clear line, no traceback.
        print(f"mpqbench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mpqbench {args.command}: interrupted", file=sys.stderr)
        return 130


__all__ = ["build_parser", "main"]
