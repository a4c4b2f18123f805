"""Regression check of a new run against a baseline run, cell by cell, from records only.

Cells are matched by config hash (the hash covers model, data, method, parameters, target,
budget, splits and decoding, so a matched pair is the same experiment); cells left over are
paired when their configs agree once null-valued fields are dropped (a field added to the
cell config later, with a null default, changes every hash but not the experiment; the pair
is reported). For each matched cell NEW regresses when:

- **WER**: on some split NEW is significantly worse than BASE under NIST MAPSSWE on the two
  runs' stored per-utterance alignments (two-sided test at ``wer_alpha``; NEW worse);
- **CR**: NEW's compression ratio is below BASE's by more than ``cr_tolerance`` (relative;
  default 0: any fall);
- **time**: NEW's compression wall clock exceeds ``time_tolerance`` x BASE's (default 2.0x,
  because CI machines are noisy and shared) and by more than ``time_floor_s`` seconds
  (timer noise on tiny cells), where both ran on the same device (device label, thread
  count and, where recorded, the CPU kernel set torch used); across devices the two times
  are printed, not checked: a baseline made on one machine says nothing about the wall
  clock of another (an AVX2 CPU, another thread count).

A BASE cell missing from NEW, or a split whose utterances or references differ, also counts
as a regression (the comparison could not cover it); cells only in NEW are listed.
Everything else that moved (non-significant WER changes, average bits, allocation, lossless
flag, devices) is printed as information.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mpqbench.bench.stats import format_p, mapsswe
from mpqbench.bench.table import device_of, load_records, split_counts, target_label

__all__ = ["Change", "Comparison", "Tolerances", "compare_dirs", "compare_records"]


@dataclass(frozen=True)
class Tolerances:
    """How much NEW may differ from BASE before it counts as a regression.

    Attributes:
        wer_alpha: significance level of the MAPSSWE test of NEW against BASE.
        time_tolerance: NEW's compression time may be up to this factor of BASE's (>= 1;
            ``inf`` disables the time check).
        cr_tolerance: relative fall of the compression ratio that is tolerated, in [0, 1).
        time_floor_s: a time growth of at most this many seconds never counts.
    """

    wer_alpha: float = 0.05
    time_tolerance: float = 2.0
    cr_tolerance: float = 0.0
    time_floor_s: float = 1.0

    def __post_init__(self) -> None:
        if not (0.0 < self.wer_alpha < 1.0):
            raise ValueError(f"--wer-alpha must be in (0, 1), got {self.wer_alpha}")
        if math.isnan(self.time_tolerance) or self.time_tolerance < 1.0:
            raise ValueError(f"--time-tolerance must be >= 1 (a factor), got "
                             f"{self.time_tolerance}")
        if not (0.0 <= self.cr_tolerance < 1.0):
            raise ValueError(f"--cr-tolerance must be in [0, 1), got {self.cr_tolerance}")
        if not (self.time_floor_s >= 0.0):
            raise ValueError(f"--time-floor must be >= 0 seconds, got {self.time_floor_s}")


@dataclass(frozen=True)
class Change:
    """One difference between BASE and NEW.

    Attributes:
        cell: readable cell name (model, label, target, seed, config hash).
        kind: ``wer``, ``cr``, ``time``, ``missing``, ``incomparable``, ``only_new`` or
            ``info``.
        regression: whether it fails the comparison.
        message: what changed, with both values.
    """

    cell: str
    kind: str
    regression: bool
    message: str

    def line(self) -> str:
        return f"{'REGRESSION' if self.regression else 'changed   '} {self.cell}: {self.message}"


@dataclass
class Comparison:
    """Outcome of :func:`compare_records`."""

    tolerances: Tolerances
    matched: list[str] = field(default_factory=list)
    only_base: list[str] = field(default_factory=list)
    only_new: list[str] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.regression]

    @property
    def ok(self) -> bool:
        return not self.regressions

    def summary(self) -> str:
        kinds: dict[str, int] = {}
        for change in self.regressions:
            kinds[change.kind] = kinds.get(change.kind, 0) + 1
        tol = self.tolerances
        what = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) or "none"
        return (
            f"compare: {len(self.matched)} matched cells, {len(self.only_base)} only in BASE, "
            f"{len(self.only_new)} only in NEW; regressions: {what} -> "
            f"{'OK' if self.ok else 'FAIL'} (WER: MAPSSWE alpha {tol.wer_alpha:g}; CR "
            f"tolerance {100 * tol.cr_tolerance:g}%; time tolerance {tol.time_tolerance:g}x "
            f"and > {tol.time_floor_s:g} s, loose because CI machines are noisy)"
        )

    def lines(self) -> list[str]:
        """One line per change (regressions first), then the summary line."""
        ordered = self.regressions + [c for c in self.changes if not c.regression]
        return [c.line() for c in ordered] + [self.summary()]


def _name(record: Mapping[str, Any]) -> str:
    cfg = record["config"]
    label = (record.get("suite") or {}).get("label") or cfg["method"]
    seed = cfg["budget"].get("seed", 0)
    return f"{cfg['model']} {label} {target_label(cfg)} s{seed} [{record['config_hash']}]"


def _index(records: Sequence[Mapping[str, Any]], side: str) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for record in records:
        key = record["config_hash"]
        if key in out:
            raise ValueError(
                f"{side}: records {out[key].get('_file')} and {record.get('_file')} have the "
                f"same config hash {key}; keep one"
            )
        out[key] = record
    return out


def _loose_key(record: Mapping[str, Any]) -> str:
    """The record's config without null-valued fields, as canonical JSON."""
    cfg = {k: v for k, v in record["config"].items() if v is not None}
    return json.dumps(cfg, sort_keys=True, separators=(",", ":"))


def _wer_changes(name: str, base: Mapping[str, Any], new: Mapping[str, Any],
                 alpha: float) -> list[Change]:
    out = []
    for split in sorted(set(base["splits"]) | set(new["splits"])):
        if split not in base["splits"] or split not in new["splits"]:
            side = "NEW" if split not in new["splits"] else "BASE"
            out.append(Change(name, "incomparable", True, f"split {split} missing in {side}"))
            continue
        b, n = base["splits"][split], new["splits"][split]
        cb = split_counts(b, str(base.get("_file")))
        cn = split_counts(n, str(new.get("_file")))
        wer_b, wer_n = cb["errors"] / max(cb["n"], 1), cn["errors"] / max(cn["n"], 1)
        ops_b = {u["id"]: u["ops"] for u in b["utterances"]}
        ops_n = {u["id"]: u["ops"] for u in n["utterances"]}
        try:
            test = mapsswe(ops_b, ops_n, alpha=alpha)
        except ValueError as exc:
            out.append(Change(name, "incomparable", True,
                              f"WER {split}: BASE and NEW cannot be paired ({exc})"))
            continue
        text = (f"WER {split} {100 * wer_b:.2f}% -> {100 * wer_n:.2f}% "
                f"({100 * (wer_n - wer_b):+.2f} pts; errors {cb['errors']} -> {cn['errors']}; "
                f"MAPSSWE z={test.z:.2f}, p={format_p(test.p_value, test.log10_p)})")
        if test.significant and test.better == "a":
            out.append(Change(name, "wer", True, f"{text}, NEW significantly worse"))
        elif test.significant:
            out.append(Change(name, "info", False, f"{text}, NEW significantly better"))
        elif ops_b != ops_n:
            out.append(Change(name, "info", False, f"{text}, not significant"))
    return out


def _machine(record: Mapping[str, Any]) -> str:
    """The record's device label, with the CPU kernel set torch used where it is recorded
    (two CPUs of one model name can differ in it, and in their speed many times over)."""
    label = device_of(record)
    dev = (record.get("environment") or {}).get("device") or {}
    return f"{label}, {dev['cpu_capability']}" if dev.get("cpu_capability") else label


def _cell_changes(name: str, base: Mapping[str, Any], new: Mapping[str, Any],
                  tol: Tolerances) -> list[Change]:
    out = _wer_changes(name, base, new, tol.wer_alpha)
    cr_b = float(base["compression_ratio"]["value"])
    cr_n = float(new["compression_ratio"]["value"])
    if cr_n < cr_b * (1.0 - tol.cr_tolerance) * (1.0 - 1e-12):
        out.append(Change(name, "cr", True,
                          f"CR {cr_b:.4f}x -> {cr_n:.4f}x ({100 * (cr_n / cr_b - 1):+.2f}%, "
                          f"tolerance -{100 * tol.cr_tolerance:g}%)"))
    elif cr_n != cr_b:
        out.append(Change(name, "info", False, f"CR {cr_b:.4f}x -> {cr_n:.4f}x"))
    t_b, t_n = float(base["compression_seconds"]), float(new["compression_seconds"])
    dev_b, dev_n = _machine(base), _machine(new)
    if dev_b != dev_n:
        out.append(Change(name, "info", False,
                          f"device differs ({dev_b} -> {dev_n}): compression time {t_b:.1f} s "
                          f"-> {t_n:.1f} s, not checked across devices"))
    elif t_n > t_b * tol.time_tolerance and t_n - t_b > tol.time_floor_s:
        factor = f"{t_n / t_b:.2f}x" if t_b > 0 else "from zero"
        out.append(Change(name, "time", True,
                          f"compression time {t_b:.1f} s -> {t_n:.1f} s ({factor} > "
                          f"{tol.time_tolerance:g}x tolerance)"))
    if float(base["avg_bits"]) != float(new["avg_bits"]):
        out.append(Change(name, "info", False,
                          f"avg bits {base['avg_bits']:.3f} -> {new['avg_bits']:.3f}"))
    la = base.get("allocation", {}).get("layers", {})
    lb = new.get("allocation", {}).get("layers", {})
    moved = sorted(k for k in set(la) | set(lb) if la.get(k) != lb.get(k))
    if moved:
        out.append(Change(name, "info", False,
                          f"{len(moved)} layers changed bits (e.g. {moved[0]}: "
                          f"{la.get(moved[0])} -> {lb.get(moved[0])})"))
    if bool(base["lossless"]) != bool(new["lossless"]):
        out.append(Change(name, "info", False,
                          f"lossless vs its 32-bit run {base['lossless']} -> {new['lossless']}"))
    return out


def compare_records(base: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]],
                    tolerances: Tolerances | None = None) -> Comparison:
    """Compare two runs' records cell by cell (see the module docstring for the rules).

    Args:
        base: the baseline records.
        new: the new run's records.
        tolerances: thresholds (defaults: alpha 0.05, time 2.0x and 1 s, CR 0 %).

    Returns:
        A :class:`Comparison`; ``ok`` is False when anything regressed.

    Raises:
        ValueError: BASE has no records, or one side has two records with one config hash.
    """
    tol = tolerances or Tolerances()
    if not base:
        raise ValueError("BASE holds no records")
    b, n = _index(base, "BASE"), _index(new, "NEW")
    pairs = {key: key for key in b if key in n}
    # A config field added later with a null default changes every hash without changing
    # the experiment: pair the leftovers whose configs agree once null fields are dropped.
    loose_new = {_loose_key(n[k]): k for k in n if k not in b}
    for key in b:
        if key not in pairs and _loose_key(b[key]) in loose_new:
            pairs[key] = loose_new.pop(_loose_key(b[key]))
    paired_new = set(pairs.values())
    result = Comparison(tolerances=tol)
    for key, record in b.items():
        name = _name(record)
        if key not in pairs:
            result.only_base.append(name)
            result.changes.append(Change(name, "missing", True, "no record in NEW"))
            continue
        result.matched.append(name)
        other = n[pairs[key]]
        if pairs[key] != key:
            fields = sorted(set(record["config"]) ^ set(other["config"]))
            result.changes.append(Change(
                name, "info", False,
                f"matched NEW [{pairs[key]}] by config: the hashes differ only in null or "
                f"absent fields {fields or '(null values)'}"))
        result.changes += _cell_changes(name, record, other, tol)
    for key, record in n.items():
        if key not in paired_new:
            result.only_new.append(_name(record))
            result.changes.append(Change(_name(record), "only_new", False, "no record in BASE"))
    return result


def compare_dirs(base: str | Path, new: str | Path,
                 tolerances: Tolerances | None = None) -> Comparison:
    """:func:`compare_records` on two records directories (or suite results directories).

    Raises:
        FileNotFoundError: a directory does not exist.
        ValueError: a corrupt record (named), no BASE records, duplicate config hashes.
    """
    return compare_records(load_records(base), load_records(new), tolerances)
