"""``mpqbench run SUITE``: run or resume a benchmark suite."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mpqbench.bench.frontier import max_frontier_cells
from mpqbench.bench.runner import (
    check_one_resolution,
    frontier_shard,
    parse_shard,
    record_path,
    run_suite,
    shard_cells,
)
from mpqbench.bench.suite import load_suite
from mpqbench.cli._shared import resolve_device
from mpqbench.precision import AUTO, resolve_precision

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``run`` subcommand."""
    p = subparsers.add_parser(
        "run", help="run or resume a benchmark suite (smoke, default, ablation, paper or a file)",
        description="Run every cell of a suite; finished cells (records that exist) are skipped.",
    )
    p.add_argument("suite", help="a shipped suite name or a suite TOML file")
    p.add_argument("--results", type=Path, default=Path("results"), help="results root")
    p.add_argument("--name", default=None,
                   help="results subdirectory (default: the suite name), e.g. default-gpu")
    p.add_argument("--shard", default="0/1", help="run shard i of n (i/n, default 0/1)")
    p.add_argument("--overwrite", action="store_true", help="rerun cells that have a record")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--dry-run", action="store_true",
                   help="validate the suite and list its cells; load no model")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    # "auto" precisions resolve for the device that runs the cells (and so their hashes)
    suite = load_suite(args.suite, auto_precision=resolve_precision(AUTO, device))
    shard = parse_shard(args.shard)
    name = args.name or suite.name
    if args.dry_run:
        check_one_resolution(suite, args.results / name)  # as the run itself would
        cells = suite.references() + shard_cells(suite, shard)
        print(f"suite {suite.name} ({suite.path}): {len(suite.cells)} cells, "
              f"shard {args.shard}: {len(cells)}"
              + (f"; precision auto = {suite.auto_precision} on {device}"
                 if suite.auto_precision else ""))
        for cell in cells:
            done = record_path(args.results, name, cell).exists()
            print(f"  {'done' if done else 'todo'}  {cell.key}")
        searches = frontier_shard(suite, shard)
        if searches:
            print(f"frontier searches, shard {args.shard}: {len(searches)} (each runs at most "
                  "the cells shown; which ones depends on the dev verdicts)")
        for search in searches:
            grid = search.grid_cells()
            have = sum(record_path(args.results, name, c).exists() for c in grid)
            print(f"  {search.key}: <= {max_frontier_cells(search.spec)} of {len(grid)} grid "
                  f"targets, {have} with records")
        return 0
    if suite.auto_precision:
        log.info("suite %s: precision \"auto\" is %s on %s", suite.name, suite.auto_precision,
                 device)
    summary = run_suite(suite, results=args.results, name=name, shard=shard,
                        overwrite=args.overwrite, device=device, progress=not args.no_progress)
    print(f"suite {suite.name}: ran {len(summary.ran)} cells, skipped {len(summary.skipped)} "
          f"(records in {args.results / name / 'records'})")
    for line in summary.frontiers:
        print(f"  frontier {line}")
    return 0


__all__ = ["register", "run"]
