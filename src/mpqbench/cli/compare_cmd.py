"""``mpqbench compare BASE NEW``: fail when a new run regressed against a baseline run."""

from __future__ import annotations

import argparse
from pathlib import Path

from mpqbench.bench.compare import Tolerances, compare_dirs


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``compare`` subcommand."""
    p = subparsers.add_parser(
        "compare", help="compare a new run's records with a baseline; exit 1 on a regression",
        description="Match cells of BASE and NEW by config hash and exit 1 when, for a matched "
                    "cell, NEW's WER is significantly worse than BASE's (MAPSSWE on the stored "
                    "per-utterance alignments), its compression ratio fell, or its compression "
                    "time grew beyond the tolerance; a BASE cell missing from NEW also fails. "
                    "Prints a line per change and a summary. Exit 0: no regression.",
    )
    p.add_argument("base", type=Path, help="baseline records directory (or results/<suite>)")
    p.add_argument("new", type=Path, help="new records directory (or results/<suite>)")
    p.add_argument("--wer-alpha", type=float, default=0.05,
                   help="significance level of the MAPSSWE test NEW vs BASE (default 0.05)")
    p.add_argument("--time-tolerance", type=float, default=2.0,
                   help="allowed factor of compression time growth (default 2.0: CI machines "
                        "are noisy; 'inf' disables the check)")
    p.add_argument("--time-floor", type=float, default=1.0,
                   help="a time growth of at most this many seconds never fails (default 1.0)")
    p.add_argument("--cr-tolerance", type=float, default=0.0,
                   help="allowed relative fall of the compression ratio (default 0.0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    tolerances = Tolerances(wer_alpha=args.wer_alpha, time_tolerance=args.time_tolerance,
                            cr_tolerance=args.cr_tolerance, time_floor_s=args.time_floor)
    result = compare_dirs(args.base, args.new, tolerances)
    for line in result.lines():
        print(line)
    return 0 if result.ok else 1


__all__ = ["register", "run"]
