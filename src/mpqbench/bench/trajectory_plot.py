"""The supernet search over its steps: expected average bits and logit spread per system.

Every record whose method info holds a ``trajectory`` (one_stage and two_stage-dnas:
:meth:`mpqbench.method.supernet_search.SupernetSchedule.trajectory`) is one line in each
of two panels: E[average bits] under softmax(alpha) against the step, with the cell's
target dotted in the line's colour, and the logit spread (max - min of a layer's logits;
solid: largest over layers, dashed: mean over layers). A marker on each line shows where
the mixing turned hard (``hard_from_frac``). The figure is written atomically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from mpqbench.bench.headline import cells_of
from mpqbench.bench.plots import COLOURS, legend_inches, save_figure, sort_cells

__all__ = ["plot_search_trajectory", "trajectories"]


def trajectories(
    records: Sequence[Mapping[str, Any]], table: pd.DataFrame, model: str
) -> list[tuple[str, float, dict[str, Any]]]:
    """``(system name, target average bits, trajectory)`` of every cell of ``model`` whose
    record holds a non-empty search trajectory, in report order."""
    by_file = {r.get("_file"): r for r in records}
    cells = cells_of(table)
    cells = sort_cells(cells[cells.model == model])
    seeds = cells.seed.nunique()
    out = []
    for row in cells.itertuples():
        info = by_file[row.record_file].get("info") or {}
        traj = info.get("trajectory") if isinstance(info, Mapping) else None
        if not isinstance(traj, Mapping) or not traj.get("step"):
            continue
        name = f"{row.label} {row.target}" + (f" s{row.seed}" if seeds > 1 else "")
        target = info.get("target_avg_bits", row.target_avg_bits)
        out.append((name, float(target), dict(traj)))
    return out


def plot_search_trajectory(
    records: Sequence[Mapping[str, Any]], table: pd.DataFrame, model: str, path: Path
) -> Path | None:
    """Two panels over the supernet stage's steps: E[average bits] and logit spread.

    Args:
        records: the records (trajectories are read from their ``info``).
        table: their :func:`~mpqbench.bench.table.records_table` frame.
        model: the model.
        path: the PNG to write.

    Returns:
        ``path``, or None when no cell of ``model`` recorded a trajectory.
    """
    systems = trajectories(records, table, model)
    if not systems:
        return None
    legend_title = "system (label, target)"
    legend_w, legend_h = legend_inches([name for name, _, _ in systems], 8, legend_title)
    fig = Figure(figsize=(9.0 + legend_w, max(4.8, legend_h + 0.8)), layout="constrained")
    ax_bits, ax_spread = fig.subplots(1, 2)
    for k, (name, target, traj) in enumerate(systems):
        colour = COLOURS[k % len(COLOURS)]
        steps = traj["step"]
        bits = [(s, e) for s, e in zip(steps, traj.get("expected_avg_bits") or [], strict=False)
                if e is not None]
        if bits:
            ax_bits.plot(*zip(*bits, strict=True), color=colour, lw=1.4)
            ax_bits.axhline(target, color=colour, lw=0.8, ls=":")
        ax_spread.plot(steps, traj["logit_spread_max"], color=colour, lw=1.4, label=name)
        ax_spread.plot(steps, traj["logit_spread_mean"], color=colour, lw=1.0, ls="--")
        hard = traj.get("hard_from_step")
        if hard is not None and steps and steps[0] <= hard <= steps[-1]:
            i = min(range(len(steps)), key=lambda j: abs(steps[j] - hard))
            ax_spread.plot([steps[i]], [traj["logit_spread_max"][i]], marker="v",
                           color=colour, ms=7)
    ax_bits.set_xlabel("supernet step")
    ax_bits.set_ylabel("E[average bits] under softmax(alpha)")
    ax_bits.set_title("expected bits (dotted: the cell's target)", fontsize=10)
    ax_spread.set_xlabel("supernet step")
    ax_spread.set_ylabel("logit spread, max - min (nats)")
    ax_spread.set_title("logit spread (solid: largest layer, dashed: mean;\n"
                        "v: hard mixing from this step)", fontsize=10)
    for ax in (ax_bits, ax_spread):
        ax.grid(True, alpha=0.3)
    fig.legend(fontsize=8, loc="outside right upper", title=legend_title)
    fig.suptitle(f"{model}: the supernet search over its steps")
    return save_figure(fig, path)
