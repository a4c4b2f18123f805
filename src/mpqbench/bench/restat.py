"""Recompute the statistics of existing cell records from their stored alignments.

A record keeps every split's per-utterance alignment ops, so its significance tests
(MAPSSWE, bootstrap) and its lossless flag are derived values: when the statistics code
changes (for example p-values computed in log space), :func:`restat_records` recomputes
them for every record of a results directory with the current code, against the 32-bit
reference record found there by config hash, and rewrites each record atomically. The
alignments, WERs, timings and every other measurement are left as they are; a record
without an ``alignment`` field was scored with unit costs (the only weighting before the
field existed) and is labelled so. The record gains a ``restat`` entry (code revision and
time) saying its statistics were recomputed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpqbench._atomic import atomic_write_json
from mpqbench.bench.cell import FP32, CellSpec, judge_against_reference
from mpqbench.bench.environment import git_revision
from mpqbench.bench.stats import format_p
from mpqbench.bench.table import SOURCE_KEY, load_records, records_dir_of
from mpqbench.workloads.metrics.alignment import DEFAULT_ALIGNMENT


@dataclass(frozen=True)
class RestatChange:
    """What recomputing one record's statistics changed.

    Attributes:
        file: the record file.
        lines: one line per split whose p-value or decision changed.
        decision_changed: a split's significance decision or the lossless flag changed.
    """

    file: Path
    lines: tuple[str, ...]
    decision_changed: bool


def _label_alignment(record: dict[str, Any]) -> None:
    record.setdefault("alignment", DEFAULT_ALIGNMENT)
    for split in record["splits"].values():
        split.setdefault("alignment", record["alignment"])


def _p_text(test: Mapping[str, Any]) -> str:
    return format_p(float(test["p_value"]), test.get("log10_p"))


def restat_records(path: str | Path, *, write: bool = True) -> list[RestatChange]:
    """Recompute significance and lossless flags of every cell record under ``path``.

    Args:
        path: a records directory or a suite results directory holding ``records/``.
        write: rewrite the records (False: only report what would change).

    Returns:
        One :class:`RestatChange` per compressed-cell record, in file order.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a record that does not parse or lacks a field
            (:func:`~mpqbench.bench.table.load_records`), whose config does not rebuild its own
            config hash, or whose 32-bit reference record is not in the directory.
    """
    folder = records_dir_of(path)
    records = {Path(r.pop(SOURCE_KEY)): r for r in load_records(folder)}
    by_hash = {r["config_hash"]: r for r in records.values()}
    revision = git_revision()
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    changes = []
    for file, record in records.items():
        spec = CellSpec.from_dict(record["config"])
        if spec.config_hash() != record["config_hash"]:
            raise ValueError(
                f"record {file}: its config rebuilds config hash {spec.config_hash()}, not "
                f"the recorded {record['config_hash']}; it was written by other code"
            )
        _label_alignment(record)
        if spec.method == FP32:
            if write:
                atomic_write_json(file, record)
            continue
        ref_hash = spec.reference().config_hash()
        reference = by_hash.get(ref_hash)
        if reference is None:
            raise ValueError(f"record {file}: its 32-bit reference (config hash {ref_hash}) "
                             f"is not in {folder}")
        _label_alignment(reference)
        old = record.get("significance") or {}
        new, lossless = judge_against_reference(reference, record["splits"])
        lines = []
        changed = lossless != record.get("lossless")
        for name, sig in new.items():
            before = old.get(name)
            worse = sig["significantly_worse"]
            flipped = before is None or before["significantly_worse"] != worse
            changed |= flipped
            if flipped or before["mapsswe"]["p_value"] != sig["mapsswe"]["p_value"]:
                text_old = _p_text(before["mapsswe"]) if before else "none"
                lines.append(f"{name}: p {text_old} -> {_p_text(sig['mapsswe'])} "
                             f"(log10 p = {sig['mapsswe']['log10_p']:.2f}), "
                             f"significantly worse: {worse}")
        record["significance"] = new
        record["lossless"] = lossless
        record["restat"] = {"utc": now, "git": revision}
        if write:
            atomic_write_json(file, record)
        changes.append(RestatChange(file, tuple(lines), changed))
    return changes


__all__ = ["RestatChange", "restat_records"]
