"""The paper's headline comparisons, computed from records (DESIGN.md sections 1 and 6).

Xu et al. (2025) report, per model: one-stage MPQ's lossless compression ratio up to 1.7x
uniform precision's and 1.9x two-stage MPQ's, and a two-stage / one-stage compression time
ratio of 1.9x (wav2vec2-base) and 1.5x (HuBERT-large). This module computes the same three
ratios from a suite's cells and words the comparison with nothing but the measured numbers:
an undefined ratio says which method has no lossless system, a ratio below 1 says plainly
that one_stage lost.

Grouping: a method's lossless CR is the largest CR among *all* its lossless cells of that
model (every label, target and seed of the method), where "lossless" is the test verdict
(:func:`mpqbench.bench.cell.verdict_splits`) and a frontier search's cells count only on
the lossless side of the frontier its dev verdicts chose (:func:`beyond_dev_frontier`):
test results never pick a frontier system. With several seeds that maximum is each
method's best seed; :attr:`HeadlineModel.per_seed` repeats the computation within each
seed (a method's lossless CR and the two CR ratios among the cells of that seed alone), so
a report can say in how many seeds one_stage came out ahead rather than only comparing
best seeds. Compression time ratios pair cells of
the same model, target, seed, device and candidate bit-widths (one pair per two_stage
label), and sum seconds over the matched pairs; the shared 32-bit teacher cache is in neither side.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from mpqbench.bench.stats import lossless_compression_ratios

__all__ = [
    "PAPER",
    "HeadlineModel",
    "Ratio",
    "SeedHeadline",
    "TimePair",
    "beyond_dev_frontier",
    "cells_of",
    "cr_sentence",
    "headline",
    "seed_count_sentence",
    "seed_lines",
    "time_sentence",
]

#: The paper's reported figures (Xu et al. 2025, abstract).
PAPER = {"cr_vs_uniform": 1.7, "cr_vs_two_stage": 1.9, "time_low": 1.5, "time_high": 1.9}

ONE, UNIFORM, TWO = "one_stage", "uniform", "two_stage"
_EPS = 1e-9


@dataclass(frozen=True)
class Ratio:
    """``numerator / denominator`` or why it is undefined.

    Attributes:
        value: the ratio, or None.
        numerator, denominator: the two numbers (None when missing).
        reason: why ``value`` is None ("" when defined).
    """

    value: float | None
    numerator: float | None
    denominator: float | None
    reason: str = ""


@dataclass(frozen=True)
class TimePair:
    """A two_stage cell and the one_stage cell matched to it."""

    target: str
    seed: int
    device: str
    two_label: str
    one_label: str
    two_seconds: float
    one_seconds: float

    @property
    def ratio(self) -> float:
        return self.two_seconds / self.one_seconds if self.one_seconds > 0 else math.inf


@dataclass(frozen=True)
class SeedHeadline:
    """The lossless CRs and CR ratios of one seed's cells alone.

    Attributes:
        seed: the seed.
        lossless_cr: method -> largest lossless CR among that seed's cells (None: the method
            ran at this seed but none of its cells is lossless); methods without a cell at
            this seed are absent.
        cr_vs_uniform, cr_vs_two_stage: one_stage's lossless CR over uniform's / two_stage's
            within this seed.
    """

    seed: int
    lossless_cr: dict[str, float | None]
    cr_vs_uniform: Ratio
    cr_vs_two_stage: Ratio


@dataclass
class HeadlineModel:
    """Headline numbers of one model."""

    model: str
    lossless_cr: dict[str, float | None]
    systems: dict[str, tuple[int, int]]  # method -> (cells, lossless cells)
    cr_vs_uniform: Ratio
    cr_vs_two_stage: Ratio
    time_pairs: list[TimePair] = field(default_factory=list)
    time_ratio: Ratio = field(default_factory=lambda: Ratio(None, None, None, "no pairs"))
    unmatched_time: list[str] = field(default_factory=list)
    per_seed: list[SeedHeadline] = field(default_factory=list)


def beyond_dev_frontier(row: Any) -> bool:
    """Whether a table row is a frontier-search cell that was lossy on dev: beyond the
    frontier the dev split chose, so it is not a candidate for the headline (its test
    numbers stay in the summary table). Fixed-target cells are always candidates."""
    frontier = getattr(row, "frontier", None)
    dev = getattr(row, "lossless_dev", None)
    if not isinstance(frontier, str) or dev is None or pd.isna(dev):
        return False
    return not bool(dev)


def cells_of(table: pd.DataFrame) -> pd.DataFrame:
    """One row per cell (the first split's row) of a :func:`records_table` frame."""
    return table.drop_duplicates(subset=["record_file", "config_hash"], keep="first")


def _cr_ratio(crs: dict[str, float | None], num: str, den: str) -> Ratio:
    a, b = crs.get(num), crs.get(den)
    missing = [m for m in (num, den) if m not in crs]
    if missing:
        return Ratio(None, a, b, f"no {' and no '.join(missing)} cells in the records")
    empty = [m for m in (num, den) if crs[m] is None]
    if empty:
        has = " and ".join(empty)
        return Ratio(None, a, b, f"{has} {'has' if len(empty) == 1 else 'have'} no lossless "
                                 "system (every one is significantly worse than 32-bit)")
    assert a is not None and b is not None
    return Ratio(a / b, a, b)


def _time_pairs(cells: pd.DataFrame) -> tuple[list[TimePair], list[str]]:
    ones = cells[cells.method == ONE]
    twos = cells[cells.method == TWO]
    pairs, unmatched = [], []
    for _, two in twos.iterrows():
        match = ones[(ones.target == two.target) & (ones.seed == two.seed)
                     & (ones.device == two.device) & (ones.candidates == two.candidates)]
        if match.empty:
            unmatched.append(f"{two.label} {two.target} seed {two.seed}")
            continue
        for _, one in match.iterrows():
            pairs.append(TimePair(
                target=two.target, seed=int(two.seed), device=two.device,
                two_label=two.label, one_label=one.label,
                two_seconds=float(two.compression_seconds),
                one_seconds=float(one.compression_seconds),
            ))
    pairs.sort(key=lambda p: (p.target, p.seed, p.two_label, p.one_label))
    return pairs, unmatched


def _lossless_crs(every: pd.DataFrame) -> tuple[dict[str, float | None], pd.DataFrame]:
    """(method -> lossless CR or None, the candidate cells) of a model's compressed cells."""
    mine = every[[not beyond_dev_frontier(r) for r in every.itertuples()]]
    rows = [(r.method, float(r.cr), bool(r.lossless)) for r in mine.itertuples()]
    found = lossless_compression_ratios(rows)
    # a method whose every cell lies beyond its dev frontier has no candidate: None
    return {m: found.get(m) for m in dict.fromkeys(every.method)}, mine


def _per_seed(every: pd.DataFrame) -> list[SeedHeadline]:
    seeds = sorted({int(s) for s in every.seed})
    if len(seeds) < 2:
        return []
    out = []
    for seed in seeds:
        crs, _ = _lossless_crs(every[every.seed == seed])
        out.append(SeedHeadline(seed=seed, lossless_cr=crs,
                                cr_vs_uniform=_cr_ratio(crs, ONE, UNIFORM),
                                cr_vs_two_stage=_cr_ratio(crs, ONE, TWO)))
    return out


def headline(table: pd.DataFrame) -> list[HeadlineModel]:
    """The headline ratios per model of a :func:`records_table` frame.

    Args:
        table: the tidy table of a suite's records.

    Returns:
        One :class:`HeadlineModel` per model, in order of first appearance.
    """
    cells = cells_of(table)
    out = []
    for model in dict.fromkeys(cells.model):
        every = cells[(cells.model == model) & (cells.method != "fp32")]
        crs, mine = _lossless_crs(every)
        systems = {m: (int((mine.method == m).sum()), int(mine[mine.method == m].lossless.sum()))
                   for m in crs}
        # compression time does not depend on a verdict: every cell can be paired
        pairs, unmatched = _time_pairs(every)
        two = sum(p.two_seconds for p in pairs)
        one = sum(p.one_seconds for p in pairs)
        if not pairs:
            reason = ("no two_stage and one_stage cells of the same target, seed, device and "
                      "candidate bit-widths"
                      if (mine.method == TWO).any() and (mine.method == ONE).any()
                      else "the records lack two_stage or one_stage cells")
            time_ratio = Ratio(None, None, None, reason)
        elif one <= 0:
            time_ratio = Ratio(None, two, one, "one_stage recorded zero seconds")
        else:
            time_ratio = Ratio(two / one, two, one)
        out.append(HeadlineModel(
            model=model, lossless_cr=crs, systems=systems,
            cr_vs_uniform=_cr_ratio(crs, ONE, UNIFORM),
            cr_vs_two_stage=_cr_ratio(crs, ONE, TWO),
            time_pairs=pairs, time_ratio=time_ratio, unmatched_time=unmatched,
            per_seed=_per_seed(every),
        ))
    return out


def _versus(value: float, paper: float) -> str:
    if abs(value - paper) < 0.005:
        return f"equal to the paper's {paper:g}x (to two decimals)"
    return f"{'below' if value < paper else 'above'} the paper's {paper:g}x"


def cr_sentence(ratio: Ratio, other: str, paper: float) -> str:
    """One sentence on one_stage's lossless CR over ``other``'s, against the paper's figure."""
    if ratio.value is None:
        return (f"one_stage / {other} lossless CR: undefined, because {ratio.reason}; "
                f"the paper reports up to {paper:g}x.")
    head = (f"one_stage / {other} lossless CR = {ratio.numerator:.2f}x / "
            f"{ratio.denominator:.2f}x = **{ratio.value:.2f}x** (paper: up to {paper:g}x).")
    if ratio.value < 1 - _EPS:
        return (f"{head} one_stage loses here: its lossless CR is lower than {other}'s, the "
                "opposite of the paper's finding.")
    if ratio.value <= 1 + _EPS:
        return f"{head} No gain here: one_stage and {other} reach the same lossless CR."
    return f"{head} one_stage reaches a higher lossless CR than {other}, " \
           f"{_versus(ratio.value, paper)}."


def time_sentence(ratio: Ratio, pairs: Iterable[TimePair]) -> str:
    """One sentence on the two_stage / one_stage compression time ratio against 1.5-1.9x."""
    low, high = PAPER["time_low"], PAPER["time_high"]
    paper = f"the paper reports {low:g}x (HuBERT-large) to {high:g}x (wav2vec2-base)"
    if ratio.value is None:
        return f"two_stage / one_stage compression time: undefined, because {ratio.reason}; " \
               f"{paper}."
    per = [p.ratio for p in pairs]
    spread = (f" (per matched pair {min(per):.2f}x-{max(per):.2f}x)" if len(per) > 1 else "")
    head = (f"two_stage / one_stage compression time = {ratio.numerator:.1f} s / "
            f"{ratio.denominator:.1f} s = **{ratio.value:.2f}x**{spread}; {paper}.")
    if ratio.value < 1 - _EPS:
        return f"{head} one_stage was slower here: it took longer than two_stage."
    if low - 0.005 <= ratio.value <= high + 0.005:
        return f"{head} The measured ratio lies within the paper's range."
    side = "below" if ratio.value < low else "above"
    return f"{head} The measured ratio lies {side} the paper's range."


_OTHERS = (("uniform", UNIFORM, "cr_vs_uniform"), ("two_stage", TWO, "cr_vs_two_stage"))


def _both_ran(s: SeedHeadline, other: str) -> bool:
    return ONE in s.lossless_cr and other in s.lossless_cr


def _ratio_cell(s: SeedHeadline, other: str, ratio: Ratio) -> str:
    if not _both_ran(s, other):
        return "not run"
    if ratio.value is None:
        empty = [m for m in (ONE, other) if s.lossless_cr[m] is None]
        return f"undefined ({' and '.join(empty)}: none lossless)"
    return f"{ratio.value:.2f}x"


def seed_lines(h: HeadlineModel, methods: Iterable[str]) -> list[str]:
    """Markdown lines: the headline within each seed and how often one_stage led.

    Empty when the model's cells span one seed. ``methods``: the column order.
    """
    if not h.per_seed:
        return []
    methods = list(methods)
    header = ["seed", *(f"{m} lossless CR" for m in methods),
              *(f"one_stage / {name}" for name, _, _ in _OTHERS)]
    rows = []
    for s in h.per_seed:
        cr = [("not run" if m not in s.lossless_cr
               else "none" if s.lossless_cr[m] is None else f"{s.lossless_cr[m]:.2f}x")
              for m in methods]
        rows.append([str(s.seed), *cr, *(_ratio_cell(s, other, getattr(s, attr))
                                          for _, other, attr in _OTHERS)])
    out = ["", "Within each seed (the same rule applied to that seed's cells alone; the "
           "table above takes each method's best seed):", ""]
    out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    out += [""]
    out += [f"- {seed_count_sentence(h.per_seed, name, other, attr)}"
            for name, other, attr in _OTHERS]
    return out


def seed_count_sentence(per_seed: Sequence[SeedHeadline], name: str, other: str,
                        attr: str) -> str:
    """How many seeds one_stage's lossless CR beat, lost to or tied ``other``'s, and the
    median ratio over the seeds where both had a lossless system."""
    ran = [getattr(s, attr) for s in per_seed if _both_ran(s, other)]
    if not ran:
        return f"one_stage / {name} within a seed: no seed has cells of both methods."
    # no lossless system at a seed counts as CR 1.00x: only the 32-bit model is lossless
    ones = [(r.numerator or 1.0, r.denominator or 1.0) for r in ran]
    wins = sum(1 for a, b in ones if a > b + _EPS)
    losses = sum(1 for a, b in ones if a < b - _EPS)
    defined = [r.value for r in ran if r.value is not None]
    if not defined:
        tail = "; in no seed do both have a lossless system"
    elif len(defined) == 1:
        tail = f"; both have a lossless system in one seed, where the ratio is {defined[0]:.2f}x"
    else:
        tail = (f"; where both have a lossless system the ratio is "
                f"{statistics.median(defined):.2f}x median ({min(defined):.2f}x-"
                f"{max(defined):.2f}x over {len(defined)} seeds)")
    return (f"one_stage / {name} within a seed: one_stage's lossless CR is higher in "
            f"{wins}, lower in {losses} and equal in {len(ran) - wins - losses} of {len(ran)} "
            f"seeds with cells of both (a method without a lossless system counts as "
            f"1.00x, the 32-bit model){tail}.")
