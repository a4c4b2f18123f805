"""Exact bit allocation under an average-bits budget (multiple-choice knapsack).

Problem: every layer l has a size N_l (weight elements), a candidate set B_l of bit-widths
and a cost c_l(b) for each candidate (a sensitivity, a negative log-probability, ...).
Choose one b_l in B_l per layer to

    minimise   sum_l c_l(b_l)
    subject to sum_l b_l N_l <= C

where C, the budget in bits, is the largest integer whose average ``C / sum_l N_l``
(correctly rounded to a float, as Python's ``int / int`` and the accounting compute it) is
<= ``target_bits``. So an allocation is feasible exactly when its reported average bits
are <= the target, and a decimal target means what it says: at 3.4 bits, layers of 3 and 7
elements may use 34 bits even though the float 3.4 lies just below 17/5. C is found with
exact ``fractions.Fraction`` arithmetic, never by float multiplication.

Exactness-preserving reduction to a small integer capacity:

1. Every layer must take at least its smallest candidate, so write b = b_min,l + d and
   charge only the *extra* weight w_l(b) = (b - b_min,l) N_l against the slack
   S = C - sum_l b_min,l N_l. If S < 0 no allocation meets the target (``ValueError``).
2. Every extra weight is a multiple of G = gcd of all nonzero w_l(b). A sum of multiples
   of G is <= S exactly when it is <= G * floor(S / G), so dividing the weights by G and
   the slack by G (rounding the slack *down*) keeps the feasible set identical.
   Transformer layers have few distinct sizes, all multiples of d_model^2, so G is large:
   Whisper tiny with {2, 4, 8} needs a capacity of a few hundred units.
3. The capacity is capped at the largest extra weight any allocation can use (the sum of
   every layer's largest extra weight); beyond that the budget is not binding.

Solvers (both return the exact optimum of the same problem):

- ``"dp"``: dynamic programme over the reduced capacity, one vectorised pass per layer,
  O(L * K * capacity) time and an int16 choice table of L * (capacity + 1) entries.
  Ties between allocations of equal cost are broken deterministically: candidates are
  scanned in descending bits and only a strict improvement replaces an earlier one, so the
  backtrack (last layer first) prefers larger bit-widths, as does the unconstrained fast
  path (each layer's cheapest candidate, the most bits among equals): an equal estimated
  cost is no reason to drop precision (a sensitivity that is 0 at every width, such as a
  Hessian trace estimate clamped at 0, must not send a layer to its fewest bits).
- ``"ilp"``: the same problem as a 0/1 integer programme (one binary per layer and
  candidate, one-hot rows, one knapsack row in reduced units) solved by HiGHS through
  ``scipy.optimize.milp`` with a relative gap of 0. Costs are shifted per layer (subtract the
  layer's smallest cost: a constant, so the argmin is unchanged) and scaled to a maximum of
  1 so that HiGHS's absolute tolerances are small against any cost difference. The
  returned integer solution is checked against the knapsack row in exact integer
  arithmetic.
- ``"auto"`` (default): each layer's cheapest candidate when that already fits the budget
  (then it is trivially optimal), else the DP when L * K * (capacity + 1) <=
  ``max_dp_cells``, else the ILP.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

SOLVERS: tuple[str, ...] = ("auto", "dp", "ilp")

#: DP table size (layers x candidates x capacity cells) above which ``auto`` uses the ILP.
DEFAULT_MAX_DP_CELLS = 50_000_000


@dataclass(frozen=True)
class BitAllocation:
    """The optimum of one allocation problem.

    Attributes:
        bits: layer -> chosen bit-width, in the order of the ``sizes`` given.
        cost: sum of the chosen candidates' costs.
        used_bits: sum_l b_l N_l of the choice.
        budget_bits: C, the most bits the choice may use (see the module docstring).
        avg_bits: used_bits / sum_l N_l.
        solver: ``"dp"`` or ``"ilp"`` (what ran), or ``"unconstrained"`` when the budget
            does not bind and each layer simply takes its cheapest candidate.
        capacity_units: the reduced DP/ILP capacity (0 when unconstrained).
        unit_bits: G, the size in bits of one capacity unit.
    """

    bits: dict[str, int]
    cost: float
    used_bits: int
    budget_bits: int
    avg_bits: float
    solver: str
    capacity_units: int
    unit_bits: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        return {
            "bits": dict(self.bits),
            "cost": self.cost,
            "used_bits": self.used_bits,
            "budget_bits": self.budget_bits,
            "avg_bits": self.avg_bits,
            "solver": self.solver,
            "capacity_units": self.capacity_units,
            "unit_bits": self.unit_bits,
        }


@dataclass(frozen=True)
class _Reduced:
    names: list[str]
    cands: list[list[int]]  # ascending bit-widths per layer
    costs: list[np.ndarray]  # float64 per layer, aligned with cands
    units: list[np.ndarray]  # int64 extra weight per candidate, in units of G
    capacity: int
    unit_bits: int
    budget_bits: int
    total: int


def _validate(
    sizes: Mapping[str, int], costs: Mapping[str, Mapping[int, float]], target_bits: float
) -> _Reduced:
    if not sizes:
        raise ValueError("allocate_bits: no layers given")
    missing = [n for n in sizes if n not in costs]
    extra = [n for n in costs if n not in sizes]
    if missing or extra:
        raise ValueError(
            f"allocate_bits: costs must cover exactly the sized layers; missing {missing[:5]}, "
            f"unknown {extra[:5]}"
        )
    if isinstance(target_bits, bool) or not isinstance(target_bits, (int, float)):
        raise ValueError(f"allocate_bits: target_bits must be a number, got {target_bits!r}")
    if not math.isfinite(target_bits) or target_bits <= 0:
        raise ValueError(f"allocate_bits: target_bits must be finite and > 0, got {target_bits}")
    names = list(sizes)
    cands: list[list[int]] = []
    cost_arrays: list[np.ndarray] = []
    for name in names:
        n = sizes[name]
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"allocate_bits: layer {name!r} size must be an int >= 1, got {n!r}")
        table = costs[name]
        if not table:
            raise ValueError(f"allocate_bits: layer {name!r} has no candidate bit-widths")
        for b, c in table.items():
            if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1:
                raise ValueError(
                    f"allocate_bits: layer {name!r}: candidate bits must be ints >= 1, got {b!r}"
                )
            if not math.isfinite(float(c)):
                raise ValueError(f"allocate_bits: layer {name!r}: cost of {b} bits is {c!r}")
        ordered = sorted(int(b) for b in table)
        cands.append(ordered)
        cost_arrays.append(np.array([float(table[b]) for b in ordered], dtype=np.float64))
    total = sum(int(sizes[n]) for n in names)
    budget = _budget_bits(float(target_bits), total)
    base = sum(c[0] * int(sizes[n]) for n, c in zip(names, cands, strict=True))
    if base > budget:
        raise ValueError(
            f"target of {target_bits:g} average bits is below the all-minimum-bits allocation "
            f"({base / total:.4f} average bits); raise the target or add smaller candidates"
        )
    extras = [
        [(b - c[0]) * int(sizes[n]) for b in c] for n, c in zip(names, cands, strict=True)
    ]
    g = 0
    for row in extras:
        for w in row:
            g = math.gcd(g, w)
    g = max(g, 1)
    max_use = sum(max(row) for row in extras) // g
    capacity = min((budget - base) // g, max_use)
    units = [np.array([w // g for w in row], dtype=np.int64) for row in extras]
    return _Reduced(names, cands, cost_arrays, units, capacity, g, budget, total)


def _budget_bits(target: float, total: int) -> int:
    """Largest C with float(C / total) <= target (rounding is monotone, so C is a bound)."""
    budget = math.floor(Fraction(target) * total)
    while (budget + 1) / total <= target:  # int / int is correctly rounded
        budget += 1
    return budget


def allocate_bits(
    sizes: Mapping[str, int],
    costs: Mapping[str, Mapping[int, float]],
    target_bits: float,
    *,
    solver: str = "auto",
    max_dp_cells: int = DEFAULT_MAX_DP_CELLS,
) -> BitAllocation:
    """The exact minimum-cost bit allocation whose average bits are <= ``target_bits``.

    Args:
        sizes: layer -> N_l, its number of weight elements (int >= 1).
        costs: layer -> {bit-width: cost}; the keys of the inner mapping are the layer's
            candidates (any ints >= 1; they may differ across layers). Costs must be finite.
        target_bits: the average-bits budget over these layers (weighted by N_l).
        solver: ``"auto"``, ``"dp"`` or ``"ilp"`` (see the module docstring).
        max_dp_cells: the DP/ILP switch of ``"auto"``.

    Returns:
        A :class:`BitAllocation`.

    Raises:
        ValueError: the target is below the all-minimum-bits allocation, an unknown solver,
            or malformed sizes/costs (the message names the layer).
        RuntimeError: the ILP solver failed (it should not on a feasible problem).
    """
    if solver not in SOLVERS:
        raise ValueError(f"allocate_bits: solver must be one of {SOLVERS}, got {solver!r}")
    red = _validate(sizes, costs, target_bits)
    width = max(len(c) for c in red.cands)
    # ties go to the most bits: an equal estimated cost is no reason to drop precision
    cheapest = [len(c) - 1 - int(np.argmin(c[::-1])) for c in red.costs]
    if solver == "auto" and sum(
        int(u[k]) for u, k in zip(red.units, cheapest, strict=True)
    ) <= red.capacity:
        choice, used = cheapest, "unconstrained"
    else:
        cells = len(red.names) * width * (red.capacity + 1)
        use_dp = solver == "dp" or (solver == "auto" and cells <= max_dp_cells)
        choice = _solve_dp(red) if use_dp else _solve_ilp(red)
        used = "dp" if use_dp else "ilp"
    bits = {n: c[k] for n, c, k in zip(red.names, red.cands, choice, strict=True)}
    used_bits = sum(bits[n] * int(sizes[n]) for n in red.names)
    assert used_bits <= red.budget_bits, "allocator returned an infeasible allocation"
    cost = float(sum(float(c[k]) for c, k in zip(red.costs, choice, strict=True)))
    logger.debug("allocate_bits: %d layers, capacity %d units of %d bits, solver %s",
                 len(red.names), red.capacity, red.unit_bits, used)
    return BitAllocation(
        bits=bits,
        cost=cost,
        used_bits=used_bits,
        budget_bits=red.budget_bits,
        avg_bits=used_bits / red.total,
        solver=used,
        capacity_units=red.capacity if used in ("dp", "ilp") else 0,
        unit_bits=red.unit_bits,
    )


def _solve_dp(red: _Reduced) -> list[int]:
    """Multiple-choice knapsack DP; ``best[c]`` = least cost of the layers so far within c."""
    cap = red.capacity
    best = np.zeros(cap + 1, dtype=np.float64)
    choices = np.zeros((len(red.names), cap + 1), dtype=np.int16)
    for layer, (cost, units) in enumerate(zip(red.costs, red.units, strict=True)):
        new = np.full(cap + 1, np.inf)
        pick = choices[layer]
        for k in reversed(range(len(cost))):  # at equal cost the most bits win
            w = int(units[k])
            if w > cap:
                continue
            cand = best[: cap + 1 - w] + cost[k]
            better = cand < new[w:]
            new[w:] = np.where(better, cand, new[w:])
            pick[w:] = np.where(better, k, pick[w:])
        best = new
    assert math.isfinite(best[cap]), "DP found no feasible allocation"
    choice = [0] * len(red.names)
    c = cap
    for layer in range(len(red.names) - 1, -1, -1):
        k = int(choices[layer, c])
        choice[layer] = k
        c -= int(red.units[layer][k])
    assert c >= 0
    return choice


def _solve_ilp(red: _Reduced) -> list[int]:
    """The same problem as a 0/1 ILP (HiGHS via scipy.optimize.milp, zero relative gap)."""
    try:
        from scipy.optimize import Bounds, LinearConstraint, milp
        from scipy.sparse import csr_array
    except ImportError as exc:  # pragma: no cover - scipy is a dependency
        raise RuntimeError("the ILP allocator needs scipy (pip install scipy)") from exc
    offsets = np.cumsum([0] + [len(c) for c in red.cands])
    n_var = int(offsets[-1])
    shifted = [c - c.min() for c in red.costs]
    scale = float(max(s.max() for s in shifted)) or 1.0
    obj = np.concatenate(shifted) / scale
    weights = np.concatenate(red.units).astype(np.float64)
    rows, cols = [], []
    for layer in range(len(red.cands)):
        for j in range(int(offsets[layer]), int(offsets[layer + 1])):
            rows.append(layer)
            cols.append(j)
    onehot = csr_array((np.ones(len(cols)), (rows, cols)), shape=(len(red.cands), n_var))
    capacity = red.capacity
    for _ in range(4):
        res = milp(
            obj,
            constraints=[
                LinearConstraint(onehot, 1.0, 1.0),
                LinearConstraint(weights[None, :], -np.inf, float(capacity)),
            ],
            integrality=np.ones(n_var),
            bounds=Bounds(0.0, 1.0),
            options={"mip_rel_gap": 0.0, "presolve": True},
        )
        if res.x is None:
            raise RuntimeError(f"ILP allocator failed: {res.message}")
        choice = [
            int(np.argmax(res.x[offsets[i] : offsets[i + 1]])) for i in range(len(red.cands))
        ]
        used = sum(int(red.units[i][k]) for i, k in enumerate(choice))
        if used <= red.capacity:
            return choice
        # HiGHS's integrality tolerance let a rounded solution exceed the row; tighten.
        capacity -= used - red.capacity
    raise RuntimeError("ILP allocator could not find an integer-feasible solution")


__all__ = ["DEFAULT_MAX_DP_CELLS", "SOLVERS", "BitAllocation", "allocate_bits"]
