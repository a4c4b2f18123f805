"""The report's ablation section: each system against its base and against uniform.

Convention: a system labelled ``BASE+SWITCH`` (e.g. ``one_stage+target-init``) is the
system labelled ``BASE`` with one change. For every such cell whose base cell exists at the
same model, target and seed, the section gives, per evaluated split, the WER, the change
against the base and the MAPSSWE test between the two (paired on the same utterances);
and, when a ``uniform`` cell exists at the same model, target and seed, the same against
uniform: the direct comparison (not each against 32-bit).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mpqbench.bench.stats import format_p, mapsswe

__all__ = ["ablation_section", "direct_comparison"]


def _ops(split: Mapping[str, Any]) -> dict[str, str]:
    return {str(u["id"]): u["ops"] for u in split["utterances"]}


def direct_comparison(base: Mapping[str, Any], other: Mapping[str, Any], split: str) -> str:
    """``12.34% (-1.20 pts vs base, p=0.031, better)`` for ``other`` against ``base`` on
    ``split`` (MAPSSWE, alpha 0.05, two-sided), or ``-`` when either lacks the split."""
    if split not in base["splits"] or split not in other["splits"]:
        return "-"
    a, b = base["splits"][split], other["splits"][split]
    test = mapsswe(_ops(a), _ops(b))
    delta = 100 * (b["wer"] - a["wer"])
    p = format_p(test.p_value, test.log10_p)
    p = p if p.startswith("<") else f"={p}"
    verdict = ("**better**" if test.better == "b" else "**worse**") if test.significant \
        else "n.s."
    return f"{delta:+.2f} pts (p{p}, {verdict})"


def _key(record: Mapping[str, Any]) -> tuple[str, str, int]:
    cfg = record["config"]
    target = cfg.get("target") or {}
    bits = target.get("avg_bits")
    label = f"{bits:g}bit" if bits is not None else f"cr{target.get('compression_ratio')}"
    return cfg["model"], label, int(cfg["budget"].get("seed", 0))


def _label(record: Mapping[str, Any]) -> str:
    return (record.get("suite") or {}).get("label") or record["config"]["method"]


def ablation_section(records: Sequence[Mapping[str, Any]], model: str) -> list[str]:
    """Markdown lines for ``model``'s ``BASE+SWITCH`` systems (empty when there are none)."""
    mine = [r for r in records if r["config"]["model"] == model
            and r["config"]["method"] != "fp32"]
    by = {(_label(r), *_key(r)[1:]): r for r in mine}
    rows = []
    splits: list[str] = []
    for r in mine:
        label = _label(r)
        if "+" not in label:
            continue
        base_label = label.split("+", 1)[0]
        _, target, seed = _key(r)
        base = by.get((base_label, target, seed))
        uniform = by.get(("uniform", target, seed))
        if base is None and uniform is None:
            continue
        for split in r["splits"]:
            if split not in splits:
                splits.append(split)
        rows.append((label, target, seed, r, base, uniform))
    if not rows:
        return []
    seeds = len({row[2] for row in rows}) > 1
    header = ["system", "target", *(["seed"] if seeds else []), "avg bits"]
    for split in splits:
        header += [f"WER {split} (%)", f"vs base, {split}", f"vs uniform, {split}"]
    out = [f"### {model}: ablation (each BASE+SWITCH system against its base and uniform)",
           "", "Changes are WER points; p is the MAPSSWE test between the two systems on the "
           "same utterances (alpha 0.05; n.s. = not significant).", "",
           "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, target, seed, r, base, uniform in sorted(rows, key=lambda x: (x[1], x[0])):
        cells = [label, target, *([str(seed)] if seeds else []), f"{r['avg_bits']:.2f}"]
        for split in splits:
            wer = r["splits"].get(split, {}).get("wer")
            cells += ["-" if wer is None else f"{100 * wer:.2f}",
                      "no base at this target" if base is None
                      else direct_comparison(base, r, split),
                      "-" if uniform is None else direct_comparison(uniform, r, split)]
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    for key in dict.fromkeys((row[0].split("+", 1)[0], row[1], row[2]) for row in rows):
        base, uniform = by.get(key), by.get(("uniform", *key[1:]))
        if base is None or uniform is None or base is uniform:
            continue
        parts = [f"{s}: {direct_comparison(uniform, base, s)}" for s in base["splits"]]
        out.append(f"- Base {key[0]} at {key[1]} against uniform: " + "; ".join(parts) + ".")
    return [*out, ""]
