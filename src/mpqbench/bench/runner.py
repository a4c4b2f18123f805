"""Run a suite: every cell once, resumable, shardable, crash-safe.

Each cell's record is written atomically to ``<results>/<suite>/records/<cell key>.json``
only after the cell has finished, so a killed run (SIGKILL included) leaves either a
complete record or none; a cell that was running when the process died has no record and
runs again on the rerun, its QAT stages resuming from their checkpoints in
``<results>/<suite>/checkpoints/<cell key>/`` (a checkpoint failing its sha256 check is
skipped for the previous one; a reference cell computed by several shards at once keeps
none); that directory is removed once the record is written. A rerun skips cells whose
record is complete (it parses and holds the cell's config hash; the key holds it too); a
file at a record's path that is not one (a partial copy, a full disk, a hand edit) is moved
aside to ``<key>.json.corrupt`` with a warning and its cell runs again. ``overwrite=True``
is the only way to replace a complete record. A kill inside a write can leave a hidden
``.<key>.json.*.tmp`` file beside the records; nothing reads those. Each compressed cell's
packed model is kept at ``<results>/<suite>/packed/<cell key>.safetensors`` (git-ignored
under ``results/``; the record holds its measured size and the reload check).

``shard=(i, n)`` runs the i-th of n interleaved slices of the compressed cells; a shard
that needs a 32-bit reference record that does not exist yet computes it (identical in
every shard; the atomic rename makes a race harmless).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
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


def checkpoint_path(results: Path, suite_name: str, cell: Cell) -> Path:
    """Where ``cell``'s training checkpoints live while it runs."""
    return results / suite_name / "checkpoints" / cell.key


def packed_path(results: Path, suite_name: str, cell: Cell) -> Path:
    """Where ``cell``'s packed model is kept (``mpqbench.quant.export`` format)."""
    return results / suite_name / "packed" / f"{cell.key}.safetensors"


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


def finished_record(path: Path, cell: Cell) -> dict[str, Any] | None:
    """The record at ``path`` if it is a complete record of ``cell``, else None.

    A file there that does not parse as a record of ``cell``'s config hash is renamed to
    ``<name>.corrupt`` (kept for inspection, out of ``*.json`` globs) with a warning.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        problem = str(exc)
    else:
        try:
            record = json.loads(text)
        except ValueError as exc:
            problem = f"not valid JSON ({exc})"
        else:
            found = record.get("config_hash") if isinstance(record, dict) else None
            if found == cell.spec.config_hash():
                return record
            problem = f"config_hash {found!r}, expected {cell.spec.config_hash()!r}"
    aside = path.with_name(path.name + ".corrupt")
    log.warning("record %s is not a complete record of its cell (%s); moved to %s, the cell "
                "runs again", path, problem, aside.name)
    with contextlib.suppress(FileNotFoundError):  # another shard moved it first
        os.replace(path, aside)
    return None


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
        if not (overwrite and (not is_ref or shard == (0, 1))):
            existing = finished_record(path, cell)
            if existing is not None:
                log.info("%s: record exists, skipped", what)
                summary.skipped.append(cell.key)
                if is_ref:
                    references[cell.spec.config_hash()] = existing
                continue
        log.info("%s: running", what)
        reference = None if is_ref else references[cell.spec.reference().config_hash()]
        shared = is_ref and shard[1] > 1  # other shards may train this cell concurrently
        checkpoints = None if shared else checkpoint_path(results, name, cell)
        record = run_cell(cell.spec, reference=reference, device=device, progress=progress,
                          teacher_cache=memo, checkpoint_dir=checkpoints,
                          export_path=packed_path(results, name, cell))
        if record.get("export") and record["export"].get("file"):
            # relative to the suite's results directory: records do not depend on where
            # the results root lives
            record["export"]["file"] = str(
                packed_path(results, name, cell).relative_to(results / name))
        record["suite"] = {"name": suite.name, "results_name": name, "label": cell.label,
                           "file": str(suite.path.name)}
        atomic_write_json(path, record)
        if checkpoints is not None:
            shutil.rmtree(checkpoints, ignore_errors=True)  # the record supersedes them
        log.info("%s: %s", what, summary_line(record))
        summary.ran.append(cell.key)
        if is_ref:
            references[cell.spec.config_hash()] = record
    return summary


__all__ = ["RunSummary", "checkpoint_path", "finished_record", "load_record", "packed_path",
           "parse_shard", "record_path", "records_dir", "run_suite", "shard_cells"]
