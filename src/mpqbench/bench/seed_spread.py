"""The report's seed-spread section: mean and spread over seeds of WER and of frontiers.

Systems are grouped by (label, target); a group run with two or more seeds gets, per
split, the mean WER, the sample standard deviation over seeds and the range. Frontier
searches (runner summaries) are grouped by label; each seed's dev-chosen target and CR are
listed with their mean and range.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mpqbench.bench.headline import cells_of
from mpqbench.bench.plots import sort_cells

__all__ = ["seed_section"]


def _spread(values: Sequence[float], fmt: str) -> str:
    """``mean ± sd (min-max)`` of ``values`` (sd over seeds, divisor n - 1)."""
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return (f"{mean:{fmt}} ± {sd:{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})")


def _wer_rows(table: pd.DataFrame, model: str) -> tuple[list[str], list[list[str]]]:
    rows = table[table.model == model]
    splits = list(dict.fromkeys(rows.split))
    cells = sort_cells(cells_of(rows))
    body = []
    for (label, target), group in cells.groupby(["label", "target"], sort=False):
        seeds = sorted(set(group.seed))
        if len(seeds) < 2:
            continue
        files = set(group.record_file)
        mine = rows[rows.record_file.isin(files)]
        per = [(_spread([100 * w for w in mine[mine.split == s].wer], ".2f")
                if (mine.split == s).any() else "-") for s in splits]
        body.append([str(label), str(target), ", ".join(map(str, seeds)), *per])
    return splits, body


def _frontier_rows(frontiers: Sequence[Mapping[str, Any]], records: Sequence[Mapping[str, Any]],
                   model: str) -> list[list[str]]:
    by_key = {Path(r["_file"]).stem: r for r in records if r.get("_file")}
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for f in frontiers:
        if f.get("model") == model:
            groups.setdefault(f["label"], []).append(f)
    body = []
    for label, searches in groups.items():
        searches = sorted(searches, key=lambda f: f["seed"])
        if len(searches) < 2:
            continue
        per_seed, crs, bits = [], [], []
        for f in searches:
            chosen = by_key.get(f.get("chosen_cell") or "")
            if f.get("lossless_target") is None or chosen is None:
                per_seed.append(f"s{f['seed']}: none ({f['status']})")
                continue
            cr = float(chosen["compression_ratio"]["value"])
            crs.append(cr)
            bits.append(float(f["lossless_target"]))
            per_seed.append(f"s{f['seed']}: {f['lossless_target']:g} bits, {cr:.2f}x")
        body.append([label, "; ".join(per_seed),
                     _spread(bits, ".2f") if bits else "-",
                     _spread(crs, ".2f") if crs else "-"])
    return body


def seed_section(table: pd.DataFrame, model: str,
                 frontiers: Sequence[Mapping[str, Any]] = (),
                 records: Sequence[Mapping[str, Any]] = ()) -> list[str]:
    """Markdown lines on ``model``'s spread over seeds (empty when every system ran one
    seed)."""
    splits, wer_body = _wer_rows(table, model)
    front_body = _frontier_rows(frontiers, records, model)
    if not wer_body and not front_body:
        return []
    out = [f"### {model}: spread over seeds", ""]
    if wer_body:
        out += ["WER (%) per system over its seeds: mean ± standard deviation over seeds "
                "(min-max).", ""]
        header = ["system", "target", "seeds", *(f"WER {s} (%)" for s in splits)]
        out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(row) + " |" for row in wer_body] + [""]
    if front_body:
        out += ["Frontier per seed (the dev-chosen lowest lossless target and its CR): mean "
                "± standard deviation over the seeds that found one (min-max).", ""]
        header = ["system", "per seed", "frontier bits", "frontier CR"]
        out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(row) + " |" for row in front_body] + [""]
    return out
