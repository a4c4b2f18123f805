"""Report plots (matplotlib, no pyplot state, Agg canvas): one PNG per model and view.

- :func:`plot_wer_vs_cr`: WER against compression ratio per method, one panel per evaluated
  split; in each panel filled markers are not significantly worse than 32-bit on that
  split, hollow ones are; the 32-bit system is a black star; a dashed line marks the CR
  each frontier search chose on dev.
- :func:`plot_bit_allocation`: per-layer bits of every mixed-precision system (layers in
  model order, short names), discrete colour scale.
- :func:`plot_compression_time`: compression wall clock per system, stacked by stage.

Every figure is written atomically (temporary file beside the target, then rename).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullFormatter, ScalarFormatter

from mpqbench._atomic import atomic_path
from mpqbench.bench.headline import cells_of
from mpqbench.bench.layer_names import model_order, short_names

__all__ = [
    "COLOURS",
    "MIXED_EXCLUDED",
    "frontier_crs",
    "legend_inches",
    "method_order",
    "plot_bit_allocation",
    "plot_compression_time",
    "plot_wer_vs_cr",
    "save_figure",
    "sort_cells",
]

#: Methods whose allocation is not mixed precision by construction.
MIXED_EXCLUDED = ("fp32", "uniform")
_METHOD_RANK = {"fp32": 0, "uniform": 1, "one_stage": 2, "two_stage": 3, "optuna": 4}
_MARKERS = ("o", "s", "D", "^", "v", "P", "X", "<", ">", "h", "p", "*")
#: The line/marker palette every report plot cycles through.
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
            "#17becf", "#7f7f7f", "#bcbd22")
_DPI = 110


def method_order(labels: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """``(method, label)`` pairs sorted: fp32, uniform, one_stage, two_stage, optuna, rest."""
    return sorted(dict.fromkeys(labels), key=lambda ml: (_METHOD_RANK.get(ml[0], 9), ml[1]))


def sort_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """Cells in report order: by method (:func:`method_order`), label, target (most bits
    first), seed."""
    pairs = list(zip(cells.method, cells.label, strict=True))
    order = {lab: k for k, (_, lab) in enumerate(method_order(pairs))}
    return cells.assign(_o=cells.label.map(order)).sort_values(
        ["_o", "target_avg_bits", "target_cr", "seed"], ascending=[True, False, True, True])


def save_figure(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI, bbox_inches="tight")
    return path


def legend_inches(labels: Sequence[str], fontsize: float, title: str = "") -> tuple[float, float]:
    """Generous estimate of a legend's (width, height) in inches: the longest line of its
    entries and title, and all their lines, at ``fontsize`` points plus the marker column.

    Report figures size themselves from it, so that a legend outside the axes never leaves
    the axes too little room (many systems with long labels collapsed them to zero width).
    """
    lines = [line for text in (*labels, title) if text for line in text.split("\n")]
    if not lines:
        return 0.0, 0.0
    char = 0.62 * fontsize / 72  # a proportional font's mean advance, generously
    width = 0.75 + char * max(len(line) for line in lines)
    height = 0.35 + 1.45 * fontsize / 72 * len(lines)
    return width, height


#: Angle of category tick labels too long for their slot.
_SLANT_DEGREES = 55


def _slanted_inches(labels: Sequence[str], slot_inches: float, fontsize: float) -> float:
    """0 when every tick label fits its slot; else the height its slanted labels need."""
    longest = max((len(line) for text in labels for line in text.split("\n")), default=0)
    width = longest * 0.62 * fontsize / 72
    if width <= 0.95 * slot_inches:
        return 0.0
    return width * math.sin(math.radians(_SLANT_DEGREES))


def _tick_labels(ax: Any, labels: Sequence[str], slot_inches: float, fontsize: float) -> None:
    """Category tick labels, slanted when their longest line does not fit its slot."""
    if not _slanted_inches(labels, slot_inches, fontsize):
        ax.set_xticks(range(len(labels)), labels, fontsize=fontsize)
        return
    ax.set_xticks(range(len(labels)), labels, fontsize=fontsize, rotation=_SLANT_DEGREES,
                  ha="right", rotation_mode="anchor")


def _style(labels: Sequence[tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """label -> (colour, marker), stable for a given set of labels."""
    ordered = [lab for _, lab in method_order(labels)]
    return {lab: (COLOURS[k % len(COLOURS)], _MARKERS[k % len(_MARKERS)])
            for k, lab in enumerate(ordered)}


def _cr_axis(ax: Any, crs: Sequence[float]) -> None:
    lo, hi = min(crs), max(crs)
    if hi / lo >= 4:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2g}x"))
        pad = max(0.05, 0.06 * (hi - lo))
        ax.set_xlim(lo - pad, hi + pad)


#: WER spread (largest / smallest, in %) beyond which the WER axis is logarithmic: broken
#: systems (WER of hundreds of %) would otherwise flatten every useful point onto the floor.
LOG_WER_SPREAD = 20.0


def _wer_axis(ax: Any, wers_pct: Sequence[float]) -> str:
    """Linear WER axis, or logarithmic (symlog when some WER is 0) for a wide spread.

    Returns the y-axis label.
    """
    values = [v for v in wers_pct if math.isfinite(v)]
    positive = [v for v in values if v > 0]
    if not positive or max(values) / min(positive) <= LOG_WER_SPREAD:
        return "WER (%)"
    if len(positive) < len(values):
        ax.set_yscale("symlog", linthresh=1.0)
    else:
        ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.get_major_formatter().set_scientific(False)
    return "WER (%, log scale)"


def frontier_crs(rows: pd.DataFrame) -> list[float]:
    """Per frontier search among ``rows``, the CR of the dev-chosen system: the largest CR
    among the search's dev-lossless cells."""
    if "frontier" not in rows:
        return []
    mine = rows[rows.frontier.notna() & (rows.lossless_dev == True)]  # noqa: E712 (object)
    return sorted(float(g.cr.max()) for _, g in mine.groupby("frontier"))


_WER_VS_CR_NOTES = (
    "filled: not significantly worse\nthan 32-bit on this split",
    "hollow: significantly worse on\nthis split (MAPSSWE)",
    "dashed: the frontier a search\nchose on dev (its CR)",
)


def plot_wer_vs_cr(table: pd.DataFrame, model: str, path: Path) -> Path:
    """WER (%) against compression ratio for every system of ``model``, a panel per split.

    Args:
        table: a :func:`mpqbench.bench.table.records_table` frame.
        model: the model whose rows are drawn.
        path: the PNG to write.

    Returns:
        ``path``.
    """
    rows = table[table.model == model]
    splits = list(dict.fromkeys(rows.split))
    styles = _style(list(zip(rows.method, rows.label, strict=True)))
    legend_w, legend_h = legend_inches([*styles, "32-bit", *_WER_VS_CR_NOTES], 9, "system")
    fig = Figure(figsize=(6.0 * len(splits) + 0.5 + legend_w, max(5.0, legend_h + 0.8)),
                 layout="constrained")
    axes = fig.subplots(1, len(splits), squeeze=False)[0]
    for ax, split in zip(axes, splits, strict=True):
        part = rows[rows.split == split]
        for rank, (label, (colour, marker)) in enumerate(styles.items()):
            sel = part[part.label == label]
            size = max(30, 120 - 18 * rank)  # later systems smaller: coincident points nest
            if sel.empty:
                continue
            if (sel.method == "fp32").all():
                ax.scatter(sel.cr, 100 * sel.wer, marker="*", s=220, color="black", zorder=4)
                ax.axhline(100 * sel.wer.mean(), color="black", lw=0.8, ls=":", zorder=1)
                continue
            mean = sel.groupby("cr", as_index=False).wer.mean().sort_values("cr")
            ax.plot(mean.cr, 100 * mean.wer, color=colour, lw=1.2, alpha=0.7, zorder=2)
            for fine, face in ((True, colour), (False, "white")):
                pts = sel[sel.significantly_worse != fine]  # this panel's split
                ax.scatter(pts.cr, 100 * pts.wer, marker=marker, s=size, facecolors=face,
                           edgecolors=colour, linewidths=1.6, zorder=3)
            for cr in frontier_crs(sel):
                ax.axvline(cr, color=colour, lw=1.0, ls="--", alpha=0.8, zorder=1)
        _cr_axis(ax, list(rows.cr))
        ax.set_xlabel("compression ratio (32-bit size / compressed size, x)")
        ax.set_ylabel(_wer_axis(ax, list(100 * rows.wer)))
        ax.set_title(f"{split}")
        ax.grid(True, alpha=0.3)
    handles = [Line2D([], [], color="black", marker="*", ls=":", ms=12, label="32-bit")]
    handles += [Line2D([], [], color=c, marker=m, ms=8, label=lab)
                for lab, (c, m) in styles.items() if lab != "fp32"]
    filled, hollow, dashed = _WER_VS_CR_NOTES
    handles += [
        Line2D([], [], color="gray", marker="o", ls="", ms=8, label=filled),
        Line2D([], [], color="gray", marker="o", ls="", ms=8, markerfacecolor="white",
               label=hollow),
    ]
    if "frontier" in rows and rows.frontier.notna().any():
        handles.append(Line2D([], [], color="gray", ls="--", label=dashed))
    fig.legend(handles=handles, loc="outside right upper", fontsize=9, title="system")
    fig.suptitle(f"{model}: WER vs compression ratio", x=0.02, ha="left")
    return save_figure(fig, path)


def _system_name(row: Any, seeds: int) -> str:
    name = f"{row.label}\n{row.target}"
    return f"{name} s{row.seed}" if seeds > 1 else name


def plot_bit_allocation(
    records: Sequence[Mapping[str, Any]], table: pd.DataFrame, model: str, path: Path
) -> Path | None:
    """Heatmap of per-layer bits of every mixed-precision system of ``model``.

    Args:
        records: the records (allocations are read from them).
        table: their :func:`records_table` frame (labels, targets, seeds).
        model: the model.
        path: the PNG to write.

    Returns:
        ``path``, or None when the model has no mixed-precision system.
    """
    by_file = {r.get("_file"): r for r in records}
    cells = cells_of(table)
    cells = cells[(cells.model == model) & ~cells.method.isin(MIXED_EXCLUDED)]
    if cells.empty:
        return None
    cells = sort_cells(cells)
    allocs = [by_file[f]["allocation"]["layers"] for f in cells.record_file]
    layers = model_order({name for a in allocs for name in a})
    names = short_names(layers)
    grid = np.array([[a.get(layer) if a.get(layer) is not None else 32 for a in allocs]
                     for layer in layers], dtype=float)
    levels = sorted({int(v) for v in grid.flat})
    cmap = ListedColormap([_bit_colour(b) for b in levels])
    index = np.vectorize(levels.index)(grid.astype(int))
    norm = BoundaryNorm(np.arange(len(levels) + 1) - 0.5, len(levels))
    n_layers, n_sys = grid.shape
    seeds = cells.seed.nunique()
    tick_labels = [_system_name(r, seeds) for r in cells.itertuples()]
    fig = Figure(figsize=(max(5.5, 1.2 * n_sys + 3.0),
                          max(3.5, 0.22 * n_layers + 1.8) + _slanted_inches(tick_labels, 1.2, 8)),
                 layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(index, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    _tick_labels(ax, tick_labels, slot_inches=1.2, fontsize=8)
    ax.set_yticks(range(n_layers), [names[layer] for layer in layers],
                  fontsize=8 if n_layers <= 80 else 6)
    ax.set_xlabel("system (method, target)")
    ax.set_ylabel("layer (model order)")
    if n_layers * n_sys <= 2000:
        for y in range(n_layers):
            for x in range(n_sys):
                bits = int(grid[y, x])
                ax.text(x, y, "32" if bits == 32 else str(bits), ha="center", va="center",
                        fontsize=7, color="white" if bits <= 2 else "black")
    bar = fig.colorbar(image, ax=ax, ticks=range(len(levels)), fraction=0.05)
    bar.ax.set_yticklabels([("32 (kept)" if b == 32 else f"{b}") for b in levels])
    bar.set_label("bits per weight")
    fig.suptitle(f"{model}: per-layer bit allocation of the mixed-precision systems")
    return save_figure(fig, path)


def _bit_colour(bits: int) -> str:
    table = {1: "#3b0f70", 2: "#8c2981", 3: "#de4968", 4: "#fe9f6d", 5: "#fcc98a",
             6: "#fde3a7", 8: "#fcfdbf", 16: "#d9f0d3", 32: "#bdbdbd"}
    return table.get(bits, "#a6cee3")


def plot_compression_time(stages: pd.DataFrame, model: str, path: Path) -> Path | None:
    """Stacked bars of compression wall clock per system of ``model``, split by stage.

    Args:
        stages: one row per (cell, stage) with columns model, method, label, target, seed,
            stage, kind, seconds, device (see :func:`mpqbench.bench.report.stage_frame`).
        model: the model.
        path: the PNG to write.

    Returns:
        ``path``, or None when the model has no compressed system.
    """
    rows = stages[stages.model == model]
    if rows.empty:
        return None
    systems = method_order(list(zip(rows.method, rows.label, strict=True)))
    keys = []
    for _method, label in systems:
        sel = rows[rows.label == label]
        seeds = sorted(set(sel.seed))
        targets = sel.drop_duplicates("target").sort_values(
            ["target_avg_bits", "target_cr"], ascending=[False, True]).target
        keys += [(label, t, s) for t in targets for s in seeds
                 if not sel[(sel.target == t) & (sel.seed == s)].empty]
    first = list(dict.fromkeys(rows.stage))  # search stages run first: stack them lowest
    stage_names = sorted(first, key=lambda s: ((rows[rows.stage == s].kind != "search").all(),
                                                 first.index(s)))
    colours = {s: COLOURS[k % len(COLOURS)] for k, s in enumerate(stage_names)}
    kinds = {stage: rows[rows.stage == stage].kind.iloc[0] for stage in stage_names}
    legend_title = "stage (kind;\nhatched = search)"
    legend_w, _ = legend_inches([f"{stage} ({kind})" for stage, kind in kinds.items()], 8,
                                legend_title)
    seeds = rows.seed.nunique()
    tick_labels = [f"{lab}\n{t}" + (f" s{s}" if seeds > 1 else "") for lab, t, s in keys]
    fig = Figure(figsize=(max(6.0, 0.9 * len(keys) + 3.0) + legend_w,
                          5.0 + _slanted_inches(tick_labels, 0.9, 8)),
                 layout="constrained")
    ax = fig.subplots()
    bottoms = np.zeros(len(keys))
    for stage in stage_names:
        heights = np.array([
            rows[(rows.label == lab) & (rows.target == t) & (rows.seed == s)
                 & (rows.stage == stage)].seconds.sum() for lab, t, s in keys])
        ax.bar(range(len(keys)), heights, bottom=bottoms, color=colours[stage],
               edgecolor="black", linewidth=0.5,
               hatch="//" if kinds[stage] == "search" else None,
               label=f"{stage} ({kinds[stage]})")
        bottoms += heights
    for x, total in enumerate(bottoms):
        ax.text(x, total, f"{total:.0f} s" if total >= 10 else f"{total:.1f} s",
                ha="center", va="bottom", fontsize=8)
    _tick_labels(ax, tick_labels, slot_inches=0.9, fontsize=8)
    ax.set_ylabel("compression wall clock (s)")
    ax.set_xlabel("system (method, target)")
    ax.set_ylim(0, max(1.0, float(bottoms.max())) * 1.12)
    ax.grid(True, axis="y", alpha=0.3)
    fig.legend(title=legend_title, fontsize=8, loc="outside right upper")
    devices = sorted(set(rows.device))
    fig.suptitle(f"{model}: compression time by stage (shared 32-bit teacher cache not "
                 f"included)\non {'; '.join(devices)}", fontsize=11)
    return save_figure(fig, path)

