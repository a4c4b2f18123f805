"""``mpqbench report SUITE``: report.md, table.csv and plots from a suite's records."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mpqbench.bench.runner import record_hashes
from mpqbench.bench.suite import Suite, load_suite, resolve_suite_path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``report`` subcommand."""
    p = subparsers.add_parser(
        "report", help="write report.md, table.csv and PNG plots from a suite's records",
        description="Read results/<name>/records/*.json (no model is run) and write "
                    "results/<name>/report.md, table.csv and plots/*.png. These are derived "
                    "files: they are rewritten on every call. Given a suite (not a bare "
                    "results name), the report first says which of its cells and frontier "
                    "searches have not run.",
    )
    p.add_argument("suite", help="a shipped suite name, a suite TOML file, or a results name")
    p.add_argument("--results", type=Path, default=Path("results"), help="results root")
    p.add_argument("--name", default=None,
                   help="results subdirectory (default: the suite's name), e.g. default-gpu")
    p.add_argument("--cr-rule", choices=("cr_paper", "cr_blocks_only"), default="cr_paper",
                   help="compression-ratio rule of the report (cr_paper: every quantized "
                        "layer, the whole model under the default groups; cr_blocks_only: "
                        "only the transformer blocks counted as quantized)")
    p.set_defaults(func=run)


def suite_name(suite: str) -> str:
    """The results name of ``suite``: its ``[suite] name`` when it is a suite file or a
    shipped suite, else ``suite`` itself (a results directory name).

    Raises:
        ValueError: a suite file without a readable ``[suite] name``.
    """
    try:
        path = resolve_suite_path(suite)
    except ValueError:
        return suite
    try:
        name = tomllib.loads(path.read_text(encoding="utf-8"))["suite"]["name"]
    except (tomllib.TOMLDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read [suite] name ({exc})") from None
    if not isinstance(name, str):
        raise ValueError(f"{path}: suite.name must be a string")
    return name


def checkable_suite(suite: str, folder: Path | None = None) -> Suite | None:
    """``suite`` loaded (for the report's completeness section), or ``None`` when it is a
    results name or a suite file that does not validate (its problem goes to stderr).

    A suite whose precision is ``"auto"`` has one set of cells where it resolved to bf16 and
    another where it resolved to fp32 (mpqbench.precision); the report checks the set whose
    config hashes more of the records in ``folder`` carry (on a tie: this machine's).
    """
    try:
        resolve_suite_path(suite)
    except ValueError:
        return None
    try:
        loaded = load_suite(suite)
        other = loaded.other_resolution()
        if other is None or folder is None:
            return loaded
        have = record_hashes(folder)
        mine, theirs = len(loaded.config_hashes() & have), len(other.config_hashes() & have)
        return other if theirs > mine else loaded
    except ValueError as exc:
        print(f"mpqbench report: completeness not checked: {exc}", file=sys.stderr)
        return None


def run(args: argparse.Namespace) -> int:
    name = args.name or suite_name(args.suite)
    from mpqbench.bench.report import write_report  # lazy: pandas, matplotlib
    files = write_report(args.results / name, cr_rule=args.cr_rule,
                         suite=checkable_suite(args.suite, args.results / name))
    print(f"report: {files.report}")
    print(f"table: {files.table}")
    for plot in files.plots:
        print(f"plot: {plot}")
    return 0


__all__ = ["checkable_suite", "register", "run", "suite_name"]
