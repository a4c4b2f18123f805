"""``results/<name>/``: report.md, table.csv and plots/*.png from a suite's records.

Reads only records; runs no model. Every file is written atomically; the report holds no
timestamp, so the same records always give the same report.md and table.csv.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mpqbench._atomic import atomic_write_text
from mpqbench.bench.ablation_section import ablation_section
from mpqbench.bench.completeness import completeness_section
from mpqbench.bench.frontier_section import frontier_section, load_frontiers
from mpqbench.bench.headline import (
    PAPER,
    HeadlineModel,
    beyond_dev_frontier,
    cells_of,
    cr_sentence,
    headline,
    seed_lines,
    time_sentence,
)
from mpqbench.bench.layer_names import layer_block, layer_kind, model_order, short_names
from mpqbench.bench.plots import (
    MIXED_EXCLUDED,
    method_order,
    plot_bit_allocation,
    plot_compression_time,
    plot_wer_vs_cr,
    sort_cells,
)
from mpqbench.bench.seed_spread import seed_section
from mpqbench.bench.stats import format_p, lossless_compression_ratios, mapsswe_power
from mpqbench.bench.suite import Suite
from mpqbench.bench.table import device_of, load_records, records_table
from mpqbench.bench.trajectory_plot import plot_search_trajectory

log = logging.getLogger(__name__)

__all__ = ["ReportFiles", "render_report", "stage_frame", "write_report"]

_PLOT_PREFIXES = ("wer_vs_cr_", "bit_allocation_", "compression_time_", "search_trajectory_")
_LIST_LAYERS = 8


@dataclass
class ReportFiles:
    """What :func:`write_report` wrote."""

    report: Path
    table: Path
    plots: list[Path] = field(default_factory=list)


def stage_frame(records: Sequence[Mapping[str, Any]], table: pd.DataFrame) -> pd.DataFrame:
    """One row per (compressed cell, stage): model, method, label, target, seed, stage, kind,
    seconds, device (the stage's own device label)."""
    cells = cells_of(table).set_index("record_file")
    rows = []
    for record in records:
        cell = cells.loc[record["_file"]]
        for stage in record["stages"]:
            rows.append({
                "model": cell.model, "method": cell.method, "label": cell.label,
                "target": cell.target, "target_avg_bits": cell.target_avg_bits,
                "target_cr": cell.target_cr, "seed": cell.seed, "stage": stage["name"],
                "kind": stage.get("kind", "qat"), "seconds": float(stage["seconds"]),
                "device": stage.get("device") or device_of(record),
            })
    return pd.DataFrame(rows, columns=["model", "method", "label", "target", "target_avg_bits",
                                       "target_cr", "seed", "stage", "kind", "seconds",
                                       "device"])


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in text)[-60:]


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def _fmt_cr(value: float | None) -> str:
    return "none" if value is None else f"{value:.2f}x"


def _p_text(row: Any) -> str:
    """``=0.0123`` / ``=3.1e-45`` / ``<1e-300, log10 p = ...`` for a table row."""
    log10_p = None if math.isnan(row.log10_p) else float(row.log10_p)
    text = format_p(float(row.p_value), log10_p)
    return text if text.startswith("<") else f"={text}"


def _summary_table(table: pd.DataFrame, model: str) -> list[str]:
    rows = table[table.model == model]
    splits = list(dict.fromkeys(rows.split))
    cells = sort_cells(cells_of(rows))
    seeds = cells.seed.nunique() > 1
    header = ["method", "target", *(["seed"] if seeds else []), "avg bits", "CR"]
    header += [f"WER {s} (%)" for s in splits]
    header += ["significantly worse than 32-bit? (MAPSSWE p)", "lossless", "compression time (s)"]
    body = []
    for cell in cells.itertuples():
        per = rows[rows.record_file == cell.record_file].set_index("split")
        wers = [f"{100 * per.loc[s].wer:.2f}" if s in per.index else "-" for s in splits]
        if cell.method == "fp32":
            sig = "reference"
        else:
            sig = "; ".join(
                f"{s}: {'**yes**' if per.loc[s].significantly_worse else 'no'} "
                f"(p{_p_text(per.loc[s])})" for s in splits if s in per.index)
        time = "-" if cell.method == "fp32" else f"{cell.compression_seconds:.1f}"
        label = cell.label
        if cell.method == "fp32" and cell.compression_seconds > 0:
            label = f"{cell.label} (fine-tuned)"
        body.append([label, cell.target, *([cell.seed] if seeds else []),
                     f"{cell.avg_bits:.2f}", f"{cell.cr:.2f}x", *wers, sig,
                     "yes" if cell.lossless else "no", time])
    return _md_table(header, body)


def _power_line(where: str, split: Mapping[str, Any]) -> str:
    """One split's power line, from the 32-bit record's per-utterance alignment ops."""
    rows = split.get("utterances") or []
    if not rows:
        return (f"- Power ({where}): cannot be computed: the 32-bit record has no "
                "per-utterance rows.")
    try:
        ops = {str(u["id"]): u["ops"] for u in rows}
    except (KeyError, TypeError):
        return (f"- Power ({where}): cannot be computed: the 32-bit record's per-utterance "
                "rows hold no alignment ops.")
    try:
        p = mapsswe_power(ops)
    except ValueError as exc:
        return f"- Power ({where}): cannot be computed: {str(exc).removeprefix('mapsswe_power: ')}."
    return (f"- Power ({where}, {p.ref_words:,} words, {p.n_segments:,} utterance segments): "
            f"MAPSSWE at alpha {p.alpha:g} detects a WER increase of >= "
            f"{p.detectable_wer_increase_pts:.2f} points ({100 * p.power:.0f}% power; "
            f"+{100 * p.detectable_relative_increase:.0f}% relative to the 32-bit WER of "
            f"{100 * p.wer:.2f}%).")


def _power_section(records: Sequence[Mapping[str, Any]], table: pd.DataFrame,
                   model: str) -> list[str]:
    """Per evaluation split, the smallest WER increase MAPSSWE would detect (the power of
    the lossless verdicts), from each 32-bit record of ``model``."""
    by_file = {r["_file"]: r for r in records}
    cells = cells_of(table)
    refs = cells[(cells.model == model) & (cells.method == "fp32")]
    out = ["Power of the lossless verdicts: the smallest WER increase over the 32-bit system "
           "that MAPSSWE (two-sided, alpha 0.05) finds significant with 80% power, from the "
           "32-bit system's per-utterance error counts with whole utterances as segments and "
           "errors assumed independent between the systems (conservative for systems that "
           "fail where the 32-bit one fails, as near-lossless quantized copies do; method "
           "and its check in docs/FINDINGS.md).", ""]
    if refs.empty:
        return [*out, "- Power: cannot be computed: no 32-bit record of this model."]
    seeds = refs.seed.nunique() > 1
    for ref in refs.itertuples():
        record = by_file[ref.record_file]
        for name, split in record["splits"].items():
            out.append(_power_line(f"seed {ref.seed}, {name}" if seeds else name, split))
    return out


def _label_lossless(table: pd.DataFrame, model: str) -> list[str]:
    """A line of lossless CRs per system label, when some label is not its method's name."""
    cells = cells_of(table)
    cells = cells[(cells.model == model) & (cells.method != "fp32")]
    if (cells.label == cells.method).all():
        return []
    crs = lossless_compression_ratios(
        [(r.label, float(r.cr), bool(r.lossless)) for r in cells.itertuples()])
    pairs = method_order(list(dict.fromkeys(zip(cells.method, cells.label, strict=True))))
    return ["", "By system label: " + ", ".join(f"{lab} {_fmt_cr(crs[lab])}"
                                                for _, lab in pairs) + "."]


def _verdict_text(table: pd.DataFrame, cell: Any) -> str:
    """``label target (avg bits, CR): split p=..., ...`` over the verdict splits."""
    rows = table[(table.record_file == cell.record_file) & table.verdict_split]
    ps = "; ".join(f"{r.split} p{_p_text(r)}" for r in rows.itertuples())
    return f"{cell.label} {cell.target} ({cell.avg_bits:.2f} bits, {cell.cr:.2f}x): {ps}"


def _bracket(table: pd.DataFrame, model: str, method: str) -> tuple[str, str]:
    """The method's best lossless candidate and the first lossy candidate of higher CR."""
    cells = cells_of(table)
    cells = cells[(cells.model == model) & (cells.method == method)]
    cells = cells[[not beyond_dev_frontier(r) for r in cells.itertuples()]].sort_values("cr")
    good = cells[cells.lossless]
    if good.empty:
        return "none", "-"
    best = good.iloc[-1]
    above = cells[(cells.cr > best.cr) & ~cells.lossless]
    lossy = _verdict_text(table, above.iloc[0]) if not above.empty else \
        "none run (no candidate of higher CR)"
    return _verdict_text(table, best), lossy


def _headline_section(h: HeadlineModel, table: pd.DataFrame) -> list[str]:
    out = [f"### {h.model}", ""]
    rows = []
    for m, _ in method_order([(m, m) for m in h.lossless_cr]):
        best, lossy = _bracket(table, h.model, m)
        rows.append([m, _fmt_cr(h.lossless_cr[m]), f"{h.systems[m][1]} of {h.systems[m][0]}",
                     best, lossy])
    out += _md_table(["method", "lossless CR (largest CR among its lossless systems)",
                      "lossless systems", "that system (MAPSSWE p vs 32-bit)",
                      "first lossy system of higher CR"], rows)
    out += _label_lossless(table, h.model)
    out += ["", f"- {cr_sentence(h.cr_vs_uniform, 'uniform', PAPER['cr_vs_uniform'])}",
            f"- {cr_sentence(h.cr_vs_two_stage, 'two_stage', PAPER['cr_vs_two_stage'])}",
            f"- {time_sentence(h.time_ratio, h.time_pairs)}"]
    out += seed_lines(h, [m for m, _ in method_order([(m, m) for m in h.lossless_cr])])
    if h.time_pairs:
        out += ["", "Compression time pairs (matched: same model, target, seed, device and "
                "candidate bit-widths; seconds are each method's own stages, the shared "
                "32-bit teacher cache excluded):", ""]
        out += _md_table(
            ["target", "seed", "two_stage system", "two_stage (s)", "one_stage system",
             "one_stage (s)", "ratio"],
            [[p.target, p.seed, p.two_label, f"{p.two_seconds:.1f}", p.one_label,
              f"{p.one_seconds:.1f}", f"{p.ratio:.2f}x"] for p in h.time_pairs])
    if h.unmatched_time:
        out += ["", "two_stage cells without a matching one_stage cell: "
                + ", ".join(h.unmatched_time) + "."]
    return [*out, ""]


def _layer_section(records: Sequence[Mapping[str, Any]], table: pd.DataFrame,
                   model: str) -> list[str]:
    by_file = {r["_file"]: r for r in records}
    cells = cells_of(table)
    cells = sort_cells(cells[(cells.model == model) & ~cells.method.isin(MIXED_EXCLUDED)])
    if cells.empty:
        return []
    out = [f"### {model}", ""]
    per_system: list[tuple[str, dict[str, list[int]], dict[str, list[int]]]] = []
    all_layers: set[str] = set()
    for cell in cells.itertuples():
        alloc = by_file[cell.record_file]["allocation"]["layers"]
        quant = {n: b for n, b in alloc.items() if b is not None}
        if not quant:
            continue
        all_layers |= set(quant)
        names = short_names(alloc)
        groups: dict[int, list[str]] = {}
        for layer in model_order(quant):
            groups.setdefault(quant[layer], []).append(names[layer])
        parts = []
        for bits in sorted(groups):
            shown = groups[bits][:_LIST_LAYERS]
            more = len(groups[bits]) - len(shown)
            parts.append(f"{bits} bits ({len(groups[bits])}): {', '.join(shown)}"
                         + (f" +{more} more" if more else ""))
        lo, hi = min(groups), max(groups)
        what = (f"fewest bits ({lo}) in {len(groups[lo])} layers, most ({hi}) in "
                f"{len(groups[hi])}" if lo != hi else f"every layer at {lo} bits")
        seed = f" seed {cell.seed}" if cells.seed.nunique() > 1 else ""
        out.append(f"- **{cell.label} {cell.target}{seed}** (avg {cell.avg_bits:.2f} bits; "
                   + (f"{what}): " + "; ".join(parts) if lo != hi else f"{what})"))
        per_kind: dict[str, list[int]] = {}
        per_block: dict[str, list[int]] = {}
        for layer, bits in quant.items():
            per_kind.setdefault(layer_kind(layer), []).append(bits)
            per_block.setdefault(layer_block(layer), []).append(bits)
        per_system.append((f"{cell.label} {cell.target}{seed}", per_kind, per_block))
    ordered = model_order(all_layers)
    for title, index, columns in (
        ("Mean bits by layer role (unweighted, over blocks):", 1,
         list(dict.fromkeys(layer_kind(n) for n in ordered))),
        ("Mean bits by block (unweighted, over the block's layers):", 2,
         list(dict.fromkeys(layer_block(n) for n in ordered))),
    ):
        if not columns or len(columns) > 60:
            continue
        out += ["", title, ""]
        out += _md_table(["system", *columns], [
            [row[0], *[f"{sum(row[index][k]) / len(row[index][k]):.1f}" if k in row[index]
                       else "-" for k in columns]] for row in per_system])
    return [*out, ""]


_CR_TEXT = {
    "cr_paper": "CR = 32 N_total / (sum b_l N_l + 32 N_rest) over every quantized layer "
    "(rule cr_paper, DESIGN.md section 4: the whole model as quantized, token embedding "
    "included where the groups name it)",
    "cr_blocks_only": "CR = 32 N_total / (sum b_l N_l + 32 N_rest) counting only the "
    "transformer-block layers as quantized and every other parameter at 32 bits (rule "
    "cr_blocks_only, the figure before whole-model quantization; `mpqbench report "
    "--cr-rule cr_paper` gives the whole-model figure)",
}


def _cr_line(records: Sequence[Mapping[str, Any]], table: pd.DataFrame) -> str:
    rule = str(table.cr_rule.iloc[0])
    groups = sorted(set(table[table.method != "fp32"].groups))
    kept: dict[str, int] = {}
    for r in records:
        if r["config"]["method"] != "fp32":
            for category, entry in (r.get("kept_fp32") or {}).items():
                kept[category] = max(kept.get(category, 0), entry["parameters"])
    text = f"- {_CR_TEXT[rule]}. Quantized layer groups: {', '.join(groups) or '-'}."
    if kept:
        text += (" Kept 32-bit (parameters, largest over the systems): "
                 + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in kept.items())
                 + " (why: docs/DESIGN.md section 4).")
    return text


def _export_lines(table: pd.DataFrame) -> list[str]:
    cells = cells_of(table)
    done = cells[cells.packed_file_bytes.notna()]
    if done.empty:
        return []
    ratio = done.packed_over_accounted
    same = int(done.reload_identical.sum())
    total = int(done.reload_utterances.sum())
    return [f"- Packed export: every one of {len(done)} compressed systems was written "
            f"bit-packed; file size / accounted packed size {ratio.min():.4f}-"
            f"{ratio.max():.4f} (the file adds its header and persistent buffers); "
            f"reloaded, it decoded {same}/{total} sampled utterances to the same text as "
            "the fake-quant model."]


def _device_kind(record: Mapping[str, Any]) -> str:
    """``"AVX2, bf16 emulated"`` and the like, from a record's environment ('' if absent)."""
    dev = (record.get("environment") or {}).get("device") or {}
    parts = [str(dev["cpu_capability"])] if dev.get("cpu_capability") else []
    if "bf16_native" in dev:
        parts.append("native bf16" if dev["bf16_native"] else "bf16 emulated")
    return f"{dev.get('type', '?')} {', '.join(parts)}" if parts else ""


def _setup_section(records: Sequence[Mapping[str, Any]], table: pd.DataFrame) -> list[str]:
    cells = cells_of(table)
    budgets = {tuple(sorted((k, v) for k, v in r["config"]["budget"].items() if k != "seed"))
               for r in records if r["config"]["method"] != "fp32"}
    devices = sorted(set(table.device))
    out = ["## Setup", ""]
    out.append(f"- Models: {', '.join(dict.fromkeys(cells.model))}; data: "
               f"{', '.join(sorted({str(r['config'].get('data')) for r in records}))}.")
    out.append(f"- Device(s): {'; '.join(devices)}.")
    kinds = sorted({_device_kind(r) for r in records} - {""})
    if kinds:
        out.append(f"- CPU kernels and bf16 (from the records' environments): "
                   f"{'; '.join(kinds)}.")
    for budget in sorted(budgets):
        text = ", ".join(f"{k}={v}" for k, v in budget)
        same = "the same for every method" if len(budgets) == 1 else "NOT the same for all cells"
        out.append(f"- Budget ({same}): {text}; seeds "
                   f"{sorted(set(cells[cells.method != 'fp32'].seed))}.")
    tuned = sorted({r["config"]["budget"]["train_steps"] for r in records
                    if r["config"]["method"] == "fp32" and r["config"]["budget"]["train_steps"]})
    if tuned:
        out.append(f"- 32-bit reference: the model fine-tuned in 32 bits by the same loop, on "
                   f"the same data, for {', '.join(map(str, tuned))} steps (fp32_reference = "
                   "\"finetuned\"), so QAT's adaptation to the data is not counted as "
                   "quantization gain; its fine-tuning time is not a compression time.")
    else:
        out.append("- 32-bit reference: the model as loaded (no fine-tuning).")
    evals = table[table.method == "fp32"] if (table.method == "fp32").any() else table
    for split, part in evals.groupby("split", sort=False):
        first = part.iloc[0]
        out.append(f"- Evaluation split {split}: {int(first.num_utterances)} utterances, "
                   f"{int(first.n)} reference words.")
    decided = table[(table.method != "fp32") & ~table.verdict_split]
    lossless = ("Lossless = not significantly worse on any evaluated split"
                + (f" but {', '.join(sorted(set(decided.split)))}, which chose the frontier "
                   "targets (its verdict is the dev column of the summary)."
                   if not decided.empty else "."))
    out.append("- Significance: NIST MAPSSWE (as SCTK sc_stats), two-sided, alpha = 0.05, "
               "each system against the 32-bit system of its model on the same utterances. "
               + lossless)
    out.append(_cr_line(records, table))
    out += _export_lines(table)
    teacher = cells.groupby("model").teacher_seconds.sum()
    if (teacher > 0).any():
        out.append("- Shared 32-bit teacher cache (built once per model, used by every "
                   "method, not in any compression time): "
                   + ", ".join(f"{m} {s:.1f} s" for m, s in teacher.items()) + ".")
    gits = sorted({(r.git_commit or "unknown")[:12] + ("+dirty" if r.git_dirty else "")
                   for r in cells.itertuples()})
    out.append(f"- Code revision(s): {', '.join(gits)}.")
    return [*out, ""]


def render_report(records: Sequence[Mapping[str, Any]], table: pd.DataFrame, name: str,
                  plots: Mapping[str, list[str]],
                  frontiers: Sequence[Mapping[str, Any]] = (),
                  suite: Suite | None = None) -> str:
    """The report.md text.

    Args:
        records: the loaded records.
        table: their :func:`records_table` frame.
        name: the results name (title).
        plots: model -> PNG paths relative to the report.
        frontiers: the suite's frontier summaries (:func:`load_frontiers`).
        suite: the suite the records belong to; given, the report first says whether
            every cell and frontier search of it has run (:func:`completeness_section`).
    """
    cells = cells_of(table)
    suites = sorted({str(s) for s in table.suite.dropna()})
    lines = [f"# Benchmark report: {name}", "",
             f"Generated by `mpqbench report` from {len(records)} records in `records/` "
             f"(suite {', '.join(suites) or 'unknown'}); no model was run to make it. "
             "`table.csv` holds one row per (system, evaluated split).", ""]
    lines += _setup_section(records, table)
    if suite is not None:
        lines += completeness_section(suite, records, frontiers)
    lines += ["## Headline: lossless compression and compression time", "",
              "Per model. A method's lossless CR is the largest CR among all its lossless "
              "systems (every label, target and seed of that method). The paper (Xu et al. "
              f"2025) reports one_stage up to {PAPER['cr_vs_uniform']:g}x uniform's and "
              f"{PAPER['cr_vs_two_stage']:g}x two_stage's lossless CR, and a two_stage / "
              f"one_stage compression time ratio of {PAPER['time_low']:g}-"
              f"{PAPER['time_high']:g}x.", ""]
    if frontiers:
        lines += ["Frontier searches decide on the dev split; their cells beyond the "
                  "dev-chosen frontier (lossy on dev) are not candidates here, whatever their "
                  "test verdict, so no test result picks a system.", ""]
    for h in headline(table):
        lines += _headline_section(h, table)
        lines += frontier_section(frontiers, records, h.model)
    lines += ["## Summary table", ""]
    for model in dict.fromkeys(cells.model):
        lines += [f"### {model}", "", *_summary_table(table, model), "",
                  *_power_section(records, table, model), ""]
        lines += seed_section(table, model, frontiers, records)
        lines += ablation_section(records, model)
    layer_lines = [ln for model in dict.fromkeys(cells.model)
                   for ln in _layer_section(records, table, model)]
    if layer_lines:
        lines += ["## Per-layer allocation of the mixed-precision systems", "",
                  "Layers grouped by their bits (model order, short names: encN/decN = "
                  "block N of the encoder/decoder, xattn = cross-attention).", "",
                  *layer_lines]
    lines += ["## Plots", ""]
    for model, files in plots.items():
        lines += [f"### {model}", ""]
        lines += [f"![{Path(f).stem}]({f})" for f in files] + [""]
    return "\n".join(lines).rstrip() + "\n"


def write_report(results_dir: str | Path, *, cr_rule: str = "cr_paper",
                 suite: Suite | None = None) -> ReportFiles:
    """Write report.md, table.csv and plots/*.png for the records in ``results_dir``.

    Args:
        results_dir: ``results/<name>`` (its ``records/`` subdirectory holds the records).
        cr_rule: the compression-ratio rule of every CR in the report, table and plots
            (:data:`mpqbench.bench.table.CR_RULES`).
        suite: the suite the records belong to (for the completeness section).

    Returns:
        The files written.

    Raises:
        FileNotFoundError: no records directory.
        ValueError: no records, or a corrupt record (its file is named).
    """
    results_dir = Path(results_dir)
    records_dir = results_dir / "records"
    if not records_dir.is_dir():
        raise FileNotFoundError(f"no records directory {records_dir} (run the suite first)")
    records = load_records(records_dir)
    if not records:
        raise ValueError(f"no records in {records_dir} (run the suite first)")
    table = records_table(records, cr_rule=cr_rule)
    stages = stage_frame(records, table)
    plot_dir = results_dir / "plots"
    written: dict[str, list[Path]] = {}
    for model in dict.fromkeys(table.model):
        slug = _slug(model)
        files = [plot_wer_vs_cr(table, model, plot_dir / f"wer_vs_cr_{slug}.png"),
                 plot_bit_allocation(records, table, model,
                                     plot_dir / f"bit_allocation_{slug}.png"),
                 plot_compression_time(stages, model, plot_dir / f"compression_time_{slug}.png"),
                 plot_search_trajectory(records, table, model,
                                        plot_dir / f"search_trajectory_{slug}.png")]
        written[model] = [f for f in files if f is not None]
    keep = {p for files in written.values() for p in files}
    for old in plot_dir.glob("*.png"):
        if old not in keep and old.name.startswith(_PLOT_PREFIXES):
            log.info("removing stale plot %s", old)
            old.unlink()
    rel = {m: [str(p.relative_to(results_dir)) for p in files] for m, files in written.items()}
    report = results_dir / "report.md"
    atomic_write_text(report, render_report(records, table, results_dir.name, rel,
                                            load_frontiers(results_dir), suite))
    csv = results_dir / "table.csv"
    atomic_write_text(csv, table.drop(columns=["record_file"]).assign(
        record=[Path(f).name for f in table.record_file]).to_csv(index=False))
    return ReportFiles(report=report, table=csv, plots=sorted(keep))
