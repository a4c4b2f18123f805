"""The report's lossless-frontier section, from the runner's frontier summaries.

A frontier search (:mod:`mpqbench.bench.frontier`, run by :mod:`mpqbench.bench.runner`)
writes ``<results>/<suite>/frontiers/<key>.json``: its dev verdicts step by step and how it
ended. This module reads those files and words them per model: the dev bracket (the
lowest dev-lossless target and the highest dev-lossy one below it), then the test verdict
of both systems with each split's MAPSSWE p-value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mpqbench.bench.stats import format_p

__all__ = ["frontier_section", "load_frontiers"]


def load_frontiers(results_dir: Path) -> list[dict[str, Any]]:
    """The frontier summaries in ``results_dir/frontiers`` (none: an empty list).

    Raises:
        ValueError: a file that is not a frontier summary (the file is named).
    """
    out = []
    for path in sorted((results_dir / "frontiers").glob("*.json")):
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"frontier summary {path} is not valid JSON ({exc})") from None
        if not isinstance(summary, dict) or summary.get("kind") != "frontier":
            raise ValueError(f"{path} is not a frontier summary (kind != 'frontier')")
        out.append(summary)
    return out


def _bits(x: float | None) -> str:
    return "-" if x is None else f"{x:g}"


def _verdicts(record: Mapping[str, Any], dev: str) -> str:
    """``test-clean: lossless (p=0.31); test-other: **worse** (p=0.002)``."""
    parts = []
    for split, block in (record.get("significance") or {}).items():
        if split == dev:
            continue
        test = block["mapsswe"]
        p = format_p(float(test["p_value"]), test.get("log10_p"))
        p = p if p.startswith("<") else f"={p}"
        word = "**worse**" if block["significantly_worse"] else "lossless"
        parts.append(f"{split}: {word} (p{p})")
    return "; ".join(parts) or "no test split"


def _system(record: Mapping[str, Any] | None, dev: str) -> str:
    if record is None:
        return "-"
    return (f"{record['avg_bits']:.2f} bits, CR {record['compression_ratio']['value']:.2f}x; "
            f"{_verdicts(record, dev)}")


def frontier_section(frontiers: Sequence[Mapping[str, Any]],
                     records: Sequence[Mapping[str, Any]], model: str) -> list[str]:
    """Markdown lines for ``model``'s frontier searches (empty when it has none).

    Args:
        frontiers: :func:`load_frontiers` output.
        records: the loaded cell records (``_file`` holds each record's path).
        model: the model whose searches are shown.
    """
    mine = [f for f in frontiers if f.get("model") == model]
    if not mine:
        return []
    by_key = {Path(r["_file"]).stem: r for r in records if r.get("_file")}
    out = [f"### {model}: lossless frontier (decided on dev)", "",
           "Each search bisects the average-bits target between a lossless and a lossy "
           "point (lossless on dev: not significantly worse than 32-bit, MAPSSWE alpha "
           "0.05) to the stated resolution; the dev-chosen system and its lossy neighbour "
           "are then judged on the test splits. Steps: target (dev verdict, dev p).", ""]
    rows = []
    for f in sorted(mine, key=lambda f: (f["label"], f["seed"])):
        dev = f["decision_split"]
        spec = f["spec"]
        steps = ", ".join(
            f"{_bits(s['target'])} ({'ok' if s['lossless_dev'] else 'lossy'}"
            + (f", p={format_p(float(s['dev_p_value']))}" if s.get("dev_p_value") is not None
               else "") + ")"
            for s in f["steps"])
        chosen = by_key.get(f["chosen_cell"]) if f.get("chosen_cell") else None
        lossy = by_key.get(f["lossy_cell"]) if f.get("lossy_cell") else None
        rows.append([
            f["label"], f["seed"],
            f"{spec['low']:g}..{spec['high']:g} by {spec['resolution']:g}",
            f"{len(f['steps'])} (<= {f['max_cells']})", steps, f["reason"],
            _system(chosen, dev), _system(lossy, dev),
        ])
    header = ["system", "seed", "range (bits)", "cells", "steps on dev", "outcome",
              "dev-chosen system: test verdict", "lossy neighbour: test verdict"]
    out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return [*out, ""]
