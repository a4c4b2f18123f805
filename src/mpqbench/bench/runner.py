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

A suite's frontier searches (``frontier = {...}`` systems) run after its fixed-target
cells, each choosing its next target from the dev verdicts of the cells it has so far
(:mod:`mpqbench.bench.frontier`); their cells are ordinary cells with ordinary records,
so a rerun re-reads them and the search continues where it stopped. Each search's
summary (steps, bracket, how it ended) is written to
``<results>/<suite>/frontiers/<search key>.json``.

``shard=(i, n)`` runs the i-th of n interleaved slices of the compressed cells (and of
the frontier searches); a shard
that needs a 32-bit reference record that does not exist yet computes it (identical in
every shard; the atomic rename makes a race harmless).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mpqbench._atomic import atomic_write_json
from mpqbench.bench.cell import run_cell, summary_line
from mpqbench.bench.frontier import max_frontier_cells, next_frontier_step
from mpqbench.bench.suite import Cell, FrontierSearch, Suite
from mpqbench.precision import emulated_bf16_warning
from mpqbench.quant.teacher import TeacherCache

log = logging.getLogger(__name__)


#: Version of the frontier summary files' layout.
FRONTIER_SCHEMA = 1


@dataclass
class RunSummary:
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    frontiers: list[str] = field(default_factory=list)  # "key: how the search ended"


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


def frontier_path(results: Path, suite_name: str, search: FrontierSearch) -> Path:
    """Where a frontier search's summary (its steps and bracket) is written."""
    return results / suite_name / "frontiers" / f"{search.key}.json"


def frontier_shard(suite: Suite, shard: tuple[int, int]) -> list[FrontierSearch]:
    """The frontier searches of shard ``i`` of ``n`` (interleaved, stable)."""
    i, n = shard
    return [f for k, f in enumerate(suite.frontiers) if k % n == i]


def dev_lossless(record: Mapping[str, Any], dev_split: str) -> bool:
    """A compressed record's verdict on the dev split (not significantly worse than 32-bit).

    Raises:
        ValueError: the record has no significance test on ``dev_split``.
    """
    if "lossless_dev" in record:
        return bool(record["lossless_dev"])
    block = (record.get("significance") or {}).get(dev_split)
    if block is None:
        raise ValueError(f"record {record.get('config_hash')!r} has no significance test on "
                         f"the dev split {dev_split!r}; a frontier decides on dev")
    return not block["significantly_worse"]


@dataclass
class _Run:
    """What :func:`run_suite` shares between its cells."""

    suite: Suite
    results: Path
    name: str
    shard: tuple[int, int]
    overwrite: bool
    device: str
    progress: bool
    summary: RunSummary
    memo: dict[tuple[Any, ...], TeacherCache] = field(default_factory=dict)
    references: dict[str, dict[str, Any]] = field(default_factory=dict)

    def cell(self, cell: Cell, what: str, frontier: str | None = None) -> dict[str, Any]:
        """Run ``cell`` or load its finished record; returns the record. ``frontier``: the
        key of the frontier search the cell belongs to (recorded in ``suite.frontier``)."""
        path = record_path(self.results, self.name, cell)
        is_ref = cell.spec.method == "fp32"
        if not (self.overwrite and (not is_ref or self.shard == (0, 1))):
            existing = finished_record(path, cell)
            if existing is not None:
                log.info("%s: record exists, skipped", what)
                self.summary.skipped.append(cell.key)
                if is_ref:
                    self.references[cell.spec.config_hash()] = existing
                return existing
        log.info("%s: running", what)
        reference = None if is_ref else self.references[cell.spec.reference().config_hash()]
        shared = is_ref and self.shard[1] > 1  # other shards may train this cell concurrently
        checkpoints = None if shared else checkpoint_path(self.results, self.name, cell)
        packed = packed_path(self.results, self.name, cell)
        record = run_cell(cell.spec, reference=reference, device=self.device,
                          progress=self.progress, teacher_cache=self.memo,
                          checkpoint_dir=checkpoints, export_path=packed)
        if record.get("export") and record["export"].get("file"):
            # relative to the suite's results directory: records do not depend on where
            # the results root lives
            record["export"]["file"] = str(packed.relative_to(self.results / self.name))
        record["suite"] = {"name": self.suite.name, "results_name": self.name,
                           "label": cell.label, "file": str(self.suite.path.name)}
        if frontier is not None:
            record["suite"]["frontier"] = frontier
        atomic_write_json(path, record)
        if checkpoints is not None:
            shutil.rmtree(checkpoints, ignore_errors=True)  # the record supersedes them
        log.info("%s: %s", what, summary_line(record))
        self.summary.ran.append(cell.key)
        if is_ref:
            self.references[cell.spec.config_hash()] = record
        return record

    def frontier(self, search: FrontierSearch) -> dict[str, Any]:
        """Run (or continue) one frontier search; writes and returns its summary.

        The search replays :func:`next_frontier_step` from nothing: a target whose cell has
        a finished record is read, not run (with ``overwrite``, each target it reaches is
        rerun once), so a rerun continues where an interrupted one stopped.
        """
        dev = search.template.dev_split
        seen: dict[float, bool] = {}
        steps: list[dict[str, Any]] = []
        while True:
            step = next_frontier_step(search.spec, seen)
            if step.done:
                break
            assert step.run is not None
            cell = search.cell(step.run)
            what = (f"[frontier {search.label} s{search.template.budget.seed} step "
                    f"{len(steps) + 1}/<={max_frontier_cells(search.spec)}] {cell.key}")
            record = self.cell(cell, what, frontier=search.key)
            seen[step.run] = dev_lossless(record, dev)
            steps.append(_frontier_step_row(step.run, cell, record, dev, seen[step.run]))
        chosen = lossy = None
        if step.lossless is not None:
            chosen = search.cell(step.lossless).key
        if step.lossy is not None:
            lossy = search.cell(step.lossy).key
        summary = {
            "schema": FRONTIER_SCHEMA,
            "kind": "frontier",
            "key": search.key,
            "label": search.label,
            "method": search.template.method,
            "model": search.template.model,
            "seed": search.template.budget.seed,
            "spec": dataclasses.asdict(search.spec),
            "max_cells": max_frontier_cells(search.spec),
            "decision_split": dev,
            "steps": steps,
            "status": step.status,
            "lossless_target": step.lossless,
            "lossy_target": step.lossy,
            "chosen_cell": chosen,
            "lossy_cell": lossy,
            "reason": step.reason,
            "suite": {"name": self.suite.name, "results_name": self.name,
                      "file": str(self.suite.path.name)},
        }
        atomic_write_json(frontier_path(self.results, self.name, search), summary)
        log.info("frontier %s: %s after %d cells", search.key, step.reason, len(steps))
        self.summary.frontiers.append(f"{search.key}: {step.reason}")
        return summary


def _frontier_step_row(target: float, cell: Cell, record: Mapping[str, Any], dev: str,
                       lossless: bool) -> dict[str, Any]:
    test = (record.get("significance") or {}).get(dev, {}).get("mapsswe", {})
    return {"target": target, "cell": cell.key, "avg_bits": record["avg_bits"],
            "compression_ratio": record["compression_ratio"]["value"],
            "dev_wer": record["splits"][dev]["wer"], "dev_p_value": test.get("p_value"),
            "lossless_dev": lossless, "lossless": bool(record["lossless"])}


def record_hashes(folder: Path) -> set[str]:
    """The config hashes of the records in ``<folder>/records`` (from their file names)."""
    return {p.stem.rsplit("__", 1)[-1] for p in (folder / "records").glob("*.json")}


def check_one_resolution(suite: Suite, folder: Path) -> None:
    """Refuse to add cells of an ``"auto"`` suite to a results folder that holds cells of
    the same suite resolved the other way (bf16 on one device, fp32 on another), so a report
    never mixes the two.

    Raises:
        ValueError: such cells are there; the message names how many and what to do.
    """
    other = suite.other_resolution()
    if other is None:
        return
    theirs = other.config_hashes() & record_hashes(folder)
    if theirs:
        raise ValueError(
            f"{folder} holds {len(theirs)} cell(s) of suite {suite.name} with precision "
            f"\"auto\" resolved to {other.auto_precision}, but on this device it resolves to "
            f"{suite.auto_precision}: its cells would be other experiments beside them. Run "
            f"on a device where it resolves to {other.auto_precision} to continue them, or "
            f"give these their own results name (--name {suite.name}-{suite.auto_precision})")


def _warn_emulated_bf16(suite: Suite, device: str) -> None:
    """Log a warning when the suite trains or decodes in bf16 that ``device`` emulates."""
    specs = [*(c.spec for c in suite.cells), *(f.template for f in suite.frontiers)]
    used = {p for spec in specs for p in (spec.budget.precision, spec.eval_precision_name)}
    warning = emulated_bf16_warning(used, device)
    if warning:
        log.warning("suite %s: %s", suite.name, warning)


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

    Fixed-target cells run first, then each frontier search of the shard
    (:meth:`_Run.frontier`), whose summaries go to ``<results>/<name>/frontiers/``.

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
    check_one_resolution(suite, results / name)
    _warn_emulated_bf16(suite, device)
    run = _Run(suite=suite, results=results, name=name, shard=shard, overwrite=overwrite,
               device=device, progress=progress, summary=RunSummary())
    todo = shard_cells(suite, shard)
    searches = frontier_shard(suite, shard)
    refs_needed = {c.spec.reference().config_hash() for c in todo}
    refs_needed |= {f.template.reference().config_hash() for f in searches}
    if shard == (0, 1):
        refs_needed |= {c.spec.config_hash() for c in suite.references()}
    planned = [c for c in suite.references() if c.spec.config_hash() in refs_needed] + todo
    for number, cell in enumerate(planned, 1):
        run.cell(cell, f"[{number}/{len(planned)}] {cell.key}")
    for search in searches:
        run.frontier(search)
    return run.summary


__all__ = ["FRONTIER_SCHEMA", "RunSummary", "check_one_resolution", "checkpoint_path",
           "dev_lossless", "finished_record", "frontier_path", "frontier_shard",
           "load_record", "packed_path", "parse_shard", "record_hashes", "record_path",
           "records_dir", "run_suite", "shard_cells"]
