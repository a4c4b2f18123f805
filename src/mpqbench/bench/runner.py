"""Run a suite: every cell once, resumable, shardable, crash-safe.

Each cell's record is written atomically to ``<results>/<suite>/records/<cell key>.json``
only after the cell has finished, so a killed run leaves either a complete record or
none. A rerun skips cells whose record exists (the key holds the cell's config hash);
``overwrite=True`` is the only way to replace one. ``shard=(i, n)`` runs the i-th of n
interleaved slices of the compressed cells; a shard that needs a 32-bit reference record
that does not exist yet computes it (identical in every shard; the atomic rename makes a
race harmless).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mpqbench._atomic import atomic_write_json
from mpqbench.bench.cell import run_cell, summary_line
from mpqbench.bench.suite import Cell, Suite
from mpqbench.quant.teacher import TeacherCache

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def records_dir(results: Path, suite_name: str) -> Path:
    return results / suite_name / "records"


def record_path(results: Path, suite_name: str, cell: Cell) -> Path:
    return records_dir(results, suite_name) / f"{cell.key}.json"


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with 0 <= i < n.

    Raises:
        ValueError: anything else.
    """
    try:
        i_text, n_text = text.split("/")
        i, n = int(i_text), int(n_text)
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"--shard {text!r}: need n >= 1 and 0 <= i < n")
    return i, n


def shard_cells(suite: Suite, shard: tuple[int, int]) -> list[Cell]:
    """The compressed cells of shard ``i`` of ``n`` (interleaved, stable)."""
    i, n = shard
    return [c for k, c in enumerate(suite.compressed()) if k % n == i]


def load_record(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"record {path} is not valid JSON ({exc})") from exc


def run_suite(
    suite: Suite,
    *,
    results: Path,
    name: str | None = None,
    shard: tuple[int, int] = (0, 1),
    overwrite: bool = False,
    device: str = "cpu",
    progress: bool = True,
) -> RunSummary:
    """Run (or resume) ``suite``; returns which cells ran and which were skipped.

    Args:
        suite: a validated suite.
        results: the results root (``results/``).
        name: results subdirectory (default: the suite's name), e.g. ``default-gpu``.
        shard: ``(i, n)``.
        overwrite: rerun cells whose record exists.
        device: "cpu" or "cuda".
        progress: progress bars.
    """
    name = name or suite.name
    summary = RunSummary()
    memo: dict[tuple[Any, ...], TeacherCache] = {}
    todo = shard_cells(suite, shard)
    refs_needed = {c.spec.reference().config_hash() for c in todo}
    if shard == (0, 1):
        refs_needed |= {c.spec.config_hash() for c in suite.references()}
    references: dict[str, dict[str, Any]] = {}
    planned = [c for c in suite.references() if c.spec.config_hash() in refs_needed] + todo
    for number, cell in enumerate(planned, 1):
        path = record_path(results, name, cell)
        what = f"[{number}/{len(planned)}] {cell.key}"
        is_ref = cell.spec.method == "fp32"
        if path.exists() and not (overwrite and (not is_ref or shard == (0, 1))):
            log.info("%s: record exists, skipped", what)
            summary.skipped.append(cell.key)
            if is_ref:
                references[cell.spec.config_hash()] = load_record(path)
            continue
        log.info("%s: running", what)
        reference = None if is_ref else references[cell.spec.reference().config_hash()]
        record = run_cell(cell.spec, reference=reference, device=device, progress=progress,
                          teacher_cache=memo)
        record["suite"] = {"name": suite.name, "results_name": name, "label": cell.label,
                           "file": str(suite.path.name)}
        atomic_write_json(path, record)
        log.info("%s: %s", what, summary_line(record))
        summary.ran.append(cell.key)
        if is_ref:
            references[cell.spec.config_hash()] = record
    return summary


__all__ = ["RunSummary", "load_record", "parse_shard", "record_path", "records_dir",
           "run_suite", "shard_cells"]
