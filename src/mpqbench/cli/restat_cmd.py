"""``mpqbench restat RESULTS``: recompute records' statistics from their stored alignments."""

from __future__ import annotations

import argparse
from pathlib import Path

from mpqbench.bench.restat import restat_records


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``restat`` subcommand."""
    p = subparsers.add_parser(
        "restat", help="recompute significance and lossless flags of existing records",
        description="Recompute every cell record's MAPSSWE and bootstrap tests and its "
                    "lossless flag from the per-utterance alignments it stores, with the "
                    "current statistics code, and rewrite the records atomically. "
                    "Measurements (alignments, WER, timings) are not touched. Prints what "
                    "changed; run 'mpqbench report' afterwards to regenerate tables.",
    )
    p.add_argument("results", type=Path, help="records directory (or results/<suite>)")
    p.add_argument("--dry-run", action="store_true", help="report changes, write nothing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    changes = restat_records(args.results, write=not args.dry_run)
    for change in changes:
        for line in change.lines:
            print(f"{change.file.name}: {line}")
    flips = sum(c.decision_changed for c in changes)
    verb = "would rewrite" if args.dry_run else "rewrote"
    print(f"restat: {verb} {len(changes)} compressed-cell records; "
          f"{flips} changed a significance decision or lossless flag")
    return 0
