"""The supernet precision search that one_stage and two_stage-dnas share.

:class:`SupernetSearchConfig` holds the search's settings (candidates, Gumbel-softmax
temperature schedule, logit learning rate, the bit-budget term, the fill rule) with their
validation, once: :class:`mpqbench.search.one_stage.OneStageConfig` and
:class:`mpqbench.baselines.two_stage.TwoStageConfig` extend it, so a comparison of the two
methods changes only what it means to change. The pieces of the search run by both:

- :class:`BitBudget`, the budget term ``f(step) -> loss``: ``"penalty"``
  ``budget_weight * relu(E - T)^2`` or ``"lagrangian"`` ``mu * (E - T)`` with projected dual
  ascent on mu, where E is the size-weighted expected average bits under softmax(alpha);
- :class:`SupernetSchedule`, the loop's ``on_step``: anneal tau, draw the Gumbel noise;
- :func:`repair_allocation`, the most probable allocation within the target (exact
  knapsack), and :func:`fill_allocation`, the most probable one that spends the budget to
  within ``fill_tolerance`` bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from mpqbench.quant.allocator import allocate_bits
from mpqbench.quant.supernet import (
    ANNEAL_KINDS,
    DEFAULT_CANDIDATES,
    ExpectedBits,
    anneal_tau,
    check_candidates,
    sample_mixing_,
)

BUDGET_MODES: tuple[str, ...] = ("penalty", "lagrangian")


@dataclass(frozen=True, kw_only=True)
class SupernetSearchConfig:
    """Settings of the supernet precision search (shared by one_stage and two_stage-dnas).

    Subclasses set :attr:`config_name`, the prefix of their validation messages.
    """

    config_name: ClassVar[str] = "supernet"

    candidates: tuple[int, ...] = field(
        default=DEFAULT_CANDIDATES, metadata={"help": "candidate bit-widths of every layer"}
    )
    hard: bool = field(default=False, metadata={"help": "straight-through hard Gumbel-softmax"})
    tau_start: float = field(default=1.0, metadata={"help": "Gumbel-softmax temperature, start"})
    tau_end: float = field(default=0.1, metadata={"help": "Gumbel-softmax temperature, end"})
    anneal: str = field(default="exponential", metadata={"help": "exponential or linear"})
    arch_lr: float = field(default=2e-2, metadata={"help": "peak learning rate of the logits"})
    budget_mode: str = field(default="penalty", metadata={"help": "penalty or lagrangian"})
    budget_weight: float = field(
        default=10.0, metadata={"help": "penalty: lambda in lambda*relu(E[bits]-target)^2"}
    )
    dual_lr: float = field(
        default=0.5, metadata={"help": "lagrangian: multiplier step per bit of excess"}
    )
    fill_tolerance: float | None = field(
        default=0.25,
        metadata={"help": "fill an allocation more than this many bits under the target "
                          "(None: off)"},
    )

    def __post_init__(self) -> None:
        what = self.config_name
        object.__setattr__(
            self, "candidates", check_candidates(self.candidates, what=f"{what}.candidates")
        )
        for name in ("tau_start", "tau_end", "arch_lr"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                raise ValueError(f"{what}.{name} must be a positive number, got {value!r}")
        for name in ("budget_weight", "dual_lr"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value >= 0 and math.isfinite(value)):
                raise ValueError(f"{what}.{name} must be >= 0, got {value!r}")
        if self.anneal not in ANNEAL_KINDS:
            raise ValueError(f"{what}.anneal must be one of {ANNEAL_KINDS}, got {self.anneal!r}")
        if self.budget_mode not in BUDGET_MODES:
            raise ValueError(
                f"{what}.budget_mode must be one of {BUDGET_MODES}, got {self.budget_mode!r}"
            )
        if not isinstance(self.hard, bool):
            raise ValueError(f"{what}.hard must be a bool, got {self.hard!r}")
        check_fill_tolerance(self.fill_tolerance, what=f"{what}.fill_tolerance")


class BitBudget:
    """The budget term ``f(step) -> loss`` for the shared loop, and its trajectory.

    Args:
        layers: name -> supernet layer.
        sizes: name -> N_l.
        target: T, the target average bits over ``layers``.
        mode: ``"penalty"`` or ``"lagrangian"`` (see the module docstring).
        weight: the penalty's lambda.
        dual_lr: the multiplier's step size (lagrangian).
    """

    def __init__(self, layers: dict[str, Any], sizes: dict[str, int], target: float, *,
                 mode: str, weight: float, dual_lr: float) -> None:
        if mode not in BUDGET_MODES:
            raise ValueError(f"budget mode must be one of {BUDGET_MODES}, got {mode!r}")
        self.layers, self.sizes, self.target = layers, sizes, float(target)
        self.mode, self.weight, self.dual_lr = mode, float(weight), float(dual_lr)
        self.multiplier = 0.0
        self.expected: list[float] = []
        #: E[average bits] under softmax(alpha): call it for a differentiable 0-d tensor.
        self.expected_bits = ExpectedBits(layers, sizes)

    def __call__(self, step: int) -> torch.Tensor:
        e = self.expected_bits()
        excess = e - self.target
        value = float(e.detach())
        self.expected.append(value)
        if self.mode == "penalty":
            return self.weight * torch.relu(excess).square()
        term = self.multiplier * excess
        self.multiplier = max(0.0, self.multiplier + self.dual_lr * (value - self.target))
        return term


class SupernetSchedule:
    """The loop's ``on_step``: anneal tau, then draw every layer's Gumbel noise (batched).

    Args:
        layers: the supernet layers.
        total: steps of the supernet stage (tau reaches ``end`` at the last one).
        start, end, kind: see :func:`~mpqbench.quant.supernet.anneal_tau`.
    """

    def __init__(self, layers: list[Any], total: int, start: float, end: float,
                 kind: str) -> None:
        self.layers, self.total = layers, total
        self.start, self.end, self.kind = start, end, kind
        self.taus: list[float] = []

    def __call__(self, step: int) -> None:
        tau = anneal_tau(step, self.total, self.start, self.end, self.kind)
        self.taus.append(tau)
        for layer in self.layers:
            layer.tau = tau
        sample_mixing_(self.layers)


def repair_allocation(
    logits: dict[str, list[float]],
    candidates: dict[str, tuple[int, ...]],
    sizes: dict[str, int],
    target_bits: float,
) -> tuple[dict[str, int], dict[str, Any]]:
    """The most probable allocation whose average bits are <= ``target_bits``.

    Exact: minimises sum_l -log softmax(logits_l)[b_l] under the budget with
    :func:`~mpqbench.quant.allocator.allocate_bits`. When the argmax allocation fits it is
    returned unchanged.

    Args:
        logits: layer -> its logits, aligned with ``candidates[layer]`` (ascending bits).
        candidates: layer -> candidate bit-widths.
        sizes: layer -> N_l.
        target_bits: the average-bits budget.

    Returns:
        ``(bits, report)``: layer -> bits, and a JSON-ready report (argmax average bits,
        whether a repair was needed, each changed layer with its from/to bits and the
        log-probability given up, the final average bits, the solver).

    Raises:
        ValueError: the target is below the all-smallest-candidate allocation.
    """
    costs: dict[str, dict[int, float]] = {}
    argmax: dict[str, int] = {}
    for name, row in logits.items():
        logp = torch.log_softmax(torch.tensor(row, dtype=torch.float64), dim=0).tolist()
        costs[name] = {b: -lp for b, lp in zip(candidates[name], logp, strict=True)}
        argmax[name] = candidates[name][int(torch.argmax(torch.tensor(row)))]
    total = sum(sizes[n] for n in logits)
    argmax_avg = sum(argmax[n] * sizes[n] for n in logits) / total
    solved = allocate_bits({n: sizes[n] for n in logits}, costs, target_bits)
    # When the argmax fits it is the unconstrained optimum; take it as is (so that float
    # rounding in the costs can never move a layer that needs no repair).
    bits = argmax if argmax_avg <= target_bits else dict(solved.bits)
    changes = [
        {"layer": n, "from": argmax[n], "to": bits[n],
         "logp_lost": costs[n][bits[n]] - costs[n][argmax[n]]}
        for n in logits if bits[n] != argmax[n]
    ]
    report = {
        "argmax_avg_bits": argmax_avg,
        "repaired": bool(changes),
        "changes": changes,
        "avg_bits": sum(bits[n] * sizes[n] for n in logits) / total,
        "solver": solved.solver if changes else "none",
    }
    return bits, report


def check_fill_tolerance(value: Any, *, what: str) -> None:
    """Refuse a fill tolerance that is not None or a number of bits in [0, 8).

    Raises:
        ValueError: naming ``what`` and the value.
    """
    if value is not None and not (
        isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value < 8.0
    ):
        raise ValueError(f"{what} must be None or in [0, 8), got {value!r}")


def fill_allocation(
    logits: dict[str, list[float]],
    candidates: dict[str, tuple[int, ...]],
    sizes: dict[str, int],
    target_bits: float,
    tolerance: float,
    *,
    iterations: int = 40,
) -> tuple[dict[str, int], dict[str, Any]]:
    """The most probable allocation that spends the budget: average bits in
    ``[target_bits - tolerance, target_bits]`` where some allocation reaches it.

    Lagrangian relaxation of the lower bound: for a reward lambda per bit the knapsack
    (:func:`~mpqbench.quant.allocator.allocate_bits`, always <= the target) minimises
    sum_l [-log p_l(b_l) - lambda * b_l * N_l / N_mean]; the average bits of its solution
    grow with lambda, and bisection finds the smallest lambda that reaches the lower bound.
    lambda = 0 gives the argmax (returned when it already reaches the bound); a lambda
    large enough to dominate every log-probability gives the most bits the target admits
    (returned when no lambda reaches the bound).

    Returns:
        ``(bits, report)``: layer -> bits and a JSON-ready report (lambda, average bits, the
        layers raised with their from/to bits and log-probability given up).
    """
    names = list(logits)
    logp = {n: torch.log_softmax(torch.tensor(logits[n], dtype=torch.float64), 0).tolist()
            for n in names}
    mean_size = sum(sizes[n] for n in names) / len(names)
    total = sum(sizes[n] for n in names)
    low = target_bits - tolerance

    def solve(lam: float) -> tuple[dict[str, int], float]:
        costs = {n: {b: -lp - lam * b * sizes[n] / mean_size
                     for b, lp in zip(candidates[n], logp[n], strict=True)} for n in names}
        bits = dict(allocate_bits({n: sizes[n] for n in names}, costs, target_bits).bits)
        return bits, sum(bits[n] * sizes[n] for n in names) / total

    argmax = {n: candidates[n][max(range(len(logp[n])), key=logp[n].__getitem__)]
              for n in names}
    best, avg = solve(0.0)
    lam_lo, lam_hi, lam_used = 0.0, 1.0, 0.0
    if avg < low:
        # Grow lambda until the bound is reached (or the reward dominates every log-prob).
        cap = 1e6
        hi_bits, hi_avg = solve(lam_hi)
        while hi_avg < low and lam_hi < cap:
            lam_lo, lam_hi = lam_hi, lam_hi * 4
            hi_bits, hi_avg = solve(lam_hi)
        best, avg, lam_used = hi_bits, hi_avg, lam_hi
        if hi_avg >= low:
            for _ in range(iterations):
                mid = 0.5 * (lam_lo + lam_hi)
                mid_bits, mid_avg = solve(mid)
                if mid_avg >= low:
                    lam_hi, best, avg, lam_used = mid, mid_bits, mid_avg, mid
                else:
                    lam_lo = mid
    index = {n: {b: i for i, b in enumerate(candidates[n])} for n in names}
    changes = [
        {"layer": n, "from": argmax[n], "to": best[n],
         "logp_lost": logp[n][index[n][argmax[n]]] - logp[n][index[n][best[n]]]}
        for n in names if best[n] != argmax[n]
    ]
    report = {"lambda": lam_used, "lower_bound": low, "avg_bits": avg,
              "reached": avg >= low, "changes": changes}
    return best, report


__all__ = [
    "BUDGET_MODES",
    "BitBudget",
    "SupernetSchedule",
    "SupernetSearchConfig",
    "check_fill_tolerance",
    "fill_allocation",
    "repair_allocation",
]
