"""Bracketing search for the lossless frontier over an average-bits target (pure logic).

A method's lossless CR is a frontier quantity (DESIGN.md section 6): the fewest average
bits at which its system is still lossless (not significantly worse than 32-bit on dev).
Assuming losslessness is monotone in the target (more bits never hurt), the frontier is
bracketed by bisection over a fixed grid of targets:

- the grid is ``low, low + r, low + 2r, ...`` while below ``high``, then ``high`` itself,
  each point rounded to 12 significant digits (``0 + 3 * 0.1`` gives ``0.3``, not
  ``0.30000000000000004``); ``K`` is its number of intervals, ``ceil((high - low) / r)``,
  and every interval but possibly the last is ``r`` wide. Every target the search asks
  for is a grid point, so a rerun asks for the same targets, hence the same cells and
  cell hashes;
- ``start = "ends"`` (default): the search runs ``high`` first, then ``low``, then the
  grid point in the middle (rounded down) of the tightest bracket (highest lossy target
  below the lowest lossless one) until the bracket is one interval wide (width <= ``r``):
  at most ``2 + ceil(log2(K))`` cells (:func:`max_frontier_cells`), exactly that many when
  ``K`` is a power of two and the frontier lies in ``(low, high]``; it stops early, with a
  reason, when ``high`` is not lossless (no lossless point in range) or when ``low`` is
  lossless (the frontier is at or below ``low``);
- ``start = "middle"``: plain bisection over the whole grid, as if a lossy point lay one
  interval below ``low`` and a lossless one above ``high``: the middle grid point first,
  then the middle of the remaining bracket, ``high`` or ``low`` only when the bracket
  reaches them. At most ``ceil(log2(K + 2))`` cells whatever the outcome (2 for the
  3-point grid 4, 6, 8, where "ends" runs 3 when the frontier is inside the range), at the
  price of more cells than "ends" when nothing in range is lossless (2 instead of 1 there);
- either way the search stops, with a reason, when the observations contradict
  monotonicity (a lossy target above a lossless one), which is reported, never searched
  around, so the search cannot loop. Bisection only runs targets
  inside the current bracket, so the cells it ran itself never contradict each other; a
  contradiction comes from observations made elsewhere (cells of the same grid that were
  run for another reason, or by an earlier search of another range).

:func:`next_frontier_step` is stateless: it reads only the observations made so far, so a
rerun that already holds some cells continues where the last run stopped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "FrontierSpec",
    "FrontierStep",
    "frontier_grid",
    "frontier_targets_run",
    "max_frontier_cells",
    "next_frontier_step",
]

#: What a :class:`FrontierStep` says: run one more target, or done and why.
Status = Literal["run", "bracketed", "high_lossy", "low_lossless", "non_monotone"]

#: Where a search starts: at the range's ends, or in its middle (module docstring).
Start = Literal["ends", "middle"]


def _finite_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"FrontierSpec.{name} must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class FrontierSpec:
    """Range and resolution of a frontier search over the average-bits target.

    Attributes:
        low: lowest target searched (average bits).
        high: highest target searched; run first.
        resolution: the grid step; the search stops once the bracket is this narrow.
        start: ``"ends"`` (``high``, then ``low``, then bisection) or ``"middle"``
            (bisection from the middle of the grid); see the module docstring.

    Raises:
        ValueError: a field that is not a finite number, ``resolution <= 0``,
            ``low >= high``, or an unknown ``start`` (the field is named).
    """

    low: float
    high: float
    resolution: float
    start: Start = "ends"

    def __post_init__(self) -> None:
        low = _finite_number("low", self.low)
        high = _finite_number("high", self.high)
        resolution = _finite_number("resolution", self.resolution)
        if resolution <= 0:
            raise ValueError(f"FrontierSpec.resolution must be > 0, got {self.resolution!r}")
        if self.start not in ("ends", "middle"):
            raise ValueError(f"FrontierSpec.start must be 'ends' or 'middle', got "
                             f"{self.start!r}")
        if low >= high:
            raise ValueError(f"FrontierSpec.low must be < high, got low={self.low!r}, "
                             f"high={self.high!r}")
        if (high - low) / resolution > 1e6:
            raise ValueError(f"FrontierSpec.resolution {self.resolution!r} makes a grid of "
                             f"more than 1e6 points over [{low}, {high}]")


@dataclass(frozen=True)
class FrontierStep:
    """One decision of :func:`next_frontier_step`.

    Attributes:
        status: ``"run"`` (run ``run`` next) or, when done, ``"bracketed"`` (the frontier
            lies in ``(lossy, lossless]``), ``"high_lossy"`` (nothing in range is lossless),
            ``"low_lossless"`` (the frontier is at or below ``low``) or ``"non_monotone"``
            (the observations contradict monotonicity; see ``reason``).
        run: the next target to run (a grid point); ``None`` when done.
        lossless: the lowest lossless target (``"bracketed"``, ``"low_lossless"``).
        lossy: the highest lossy target below it (``"bracketed"``; ``high`` for
            ``"high_lossy"``).
        reason: why the search is done, for reports; ``""`` while running.
    """

    status: Status
    run: float | None = None
    lossless: float | None = None
    lossy: float | None = None
    reason: str = ""

    @property
    def done(self) -> bool:
        """True when there is nothing more to run."""
        return self.status != "run"


def _grid_point(spec: FrontierSpec, k: int, n_intervals: int) -> float:
    if k == n_intervals:
        return float(spec.high)
    return float(f"{spec.low + k * spec.resolution:.12g}")


def _n_intervals(spec: FrontierSpec) -> int:
    # The tolerance keeps a range that is a whole number of steps up to float error
    # ((2.3 - 2.0) / 0.1 = 2.9999999999999982; the other way, 1e-9 above a whole number)
    # from gaining a sliver interval.
    return max(1, math.ceil((spec.high - spec.low) / spec.resolution - 1e-9))


def frontier_grid(spec: FrontierSpec) -> tuple[float, ...]:
    """Every target the search may run, ascending: ``low + k r`` below ``high``, then
    ``high``."""
    n = _n_intervals(spec)
    return tuple(_grid_point(spec, k, n) for k in range(n + 1))


def max_frontier_cells(spec: FrontierSpec) -> int:
    """The most cells a search over ``spec`` runs, ``K`` its intervals:
    ``2 + ceil(log2(K))`` from the ends, ``ceil(log2(K + 2))`` from the middle."""
    n = _n_intervals(spec)
    if spec.start == "middle":
        return (n + 1).bit_length()  # (m - 1).bit_length() == ceil(log2(m)), m = n + 2
    return 2 + (n - 1).bit_length()  # (n - 1).bit_length() == ceil(log2(n)) for n >= 1


def _grid_index(spec: FrontierSpec, n_intervals: int, target: object) -> int:
    if isinstance(target, bool) or not isinstance(target, (int, float)) \
            or not math.isfinite(target):
        raise ValueError(f"frontier observation: target must be a finite number, got "
                         f"{target!r}")
    k = min(max(round((target - spec.low) / spec.resolution), 0), n_intervals)
    for j in (k, n_intervals):
        if abs(_grid_point(spec, j, n_intervals) - target) <= 1e-6 * spec.resolution:
            return j
    raise ValueError(
        f"frontier observation at target {target!r} is not on the grid of {spec} "
        f"(low + k * {spec.resolution:g}, then high); it was run with another spec"
    )


def _fmt(x: float) -> str:
    return f"{x:.12g}"


def next_frontier_step(spec: FrontierSpec, observations: Mapping[float, bool]) -> FrontierStep:
    """The next target of the frontier search, or why it is done.

    Args:
        spec: range and resolution.
        observations: target already run -> whether that system was lossless on dev
            (not significantly worse than 32-bit). Order does not matter; targets must be
            grid points of ``spec`` (:func:`frontier_grid`), as every earlier step's are.

    Returns:
        A :class:`FrontierStep`: ``run`` the next grid target, or done with the bracket or
        the reason it stopped. The same observations always give the same step.

    Raises:
        ValueError: a target off the grid or not a finite number, or a value that is not
            a bool.
    """
    top = _n_intervals(spec)
    seen: dict[int, bool] = {}
    for target, lossless in observations.items():
        if not isinstance(lossless, bool):
            raise ValueError(f"frontier observation at target {target!r}: lossless must be "
                             f"a bool, got {lossless!r}")
        k = _grid_index(spec, top, target)
        if seen.setdefault(k, lossless) != lossless:
            raise ValueError(f"frontier observations disagree at grid target "
                             f"{_grid_point(spec, k, top)!r} (given as {target!r})")

    def grid(k: int) -> float:
        return _grid_point(spec, k, top)

    lossy = [k for k, ok in seen.items() if not ok]
    good = [k for k, ok in seen.items() if ok]
    if lossy and good and min(good) < max(lossy):
        x, y = grid(max(lossy)), grid(min(good))
        return FrontierStep("non_monotone",
                            reason=f"non-monotone: lossy at {_fmt(x)} but lossless at "
                                   f"{_fmt(y)} < {_fmt(x)}")
    if spec.start == "middle":
        return _bisect_from_middle(top, seen, grid)
    if top not in seen:
        return FrontierStep("run", run=grid(top))
    if not seen[top]:
        return FrontierStep("high_lossy", lossy=grid(top),
                            reason=f"high is not lossless (lossy at {_fmt(grid(top))}): no "
                                   "lossless point in range")
    if 0 not in seen:
        return FrontierStep("run", run=grid(0))
    if seen[0]:
        return FrontierStep("low_lossless", lossless=grid(0),
                            reason=f"low is lossless (lossless at {_fmt(grid(0))}): the "
                                   "frontier is at or below the range")
    lo, hi = max(lossy), min(good)
    if hi - lo == 1:
        return FrontierStep("bracketed", lossless=grid(hi), lossy=grid(lo),
                            reason=f"bracketed: lossless at {_fmt(grid(hi))}, lossy at "
                                   f"{_fmt(grid(lo))}")
    return FrontierStep("run", run=grid((lo + hi) // 2))


def _bisect_from_middle(top: int, seen: Mapping[int, bool],
                        grid: Callable[[int], float]) -> FrontierStep:
    """Bisection over grid indices 0..top with a virtual lossy -1 and lossless top + 1
    (the observations are already known to be monotone)."""
    lo = max((k for k, ok in seen.items() if not ok), default=-1)
    hi = min((k for k, ok in seen.items() if ok), default=top + 1)
    if hi - lo > 1:
        return FrontierStep("run", run=grid((lo + hi) // 2))
    if hi == top + 1:
        return FrontierStep("high_lossy", lossy=grid(top),
                            reason=f"high is not lossless (lossy at {_fmt(grid(top))}): no "
                                   "lossless point in range")
    if lo == -1:
        return FrontierStep("low_lossless", lossless=grid(0),
                            reason=f"low is lossless (lossless at {_fmt(grid(0))}): the "
                                   "frontier is at or below the range")
    return FrontierStep("bracketed", lossless=grid(hi), lossy=grid(lo),
                        reason=f"bracketed: lossless at {_fmt(grid(hi))}, lossy at "
                               f"{_fmt(grid(lo))}")


def frontier_targets_run(
    spec: FrontierSpec,
    oracle: Callable[[float], bool],
    max_cells: int,
    observations: Mapping[float, bool] | None = None,
) -> list[FrontierStep]:
    """Drive :func:`next_frontier_step` with ``oracle`` until the search is done.

    Args:
        spec: range and resolution.
        oracle: target -> whether the system at that target is lossless on dev (a later
            runner runs the cell here).
        max_cells: the most targets ``oracle`` may be asked for in this call.
        observations: cells already run (a resumed search); they are not asked again and
            do not count against ``max_cells``.

    Returns:
        The steps in order: every ``"run"`` step whose target was asked of ``oracle``, then
        the final done step.

    Raises:
        ValueError: ``max_cells`` is not an integer >= 0, the search would need more than
            ``max_cells`` cells (:func:`max_frontier_cells` is enough), ``oracle`` returned a
            non-bool, or a bad observation (see :func:`next_frontier_step`).
    """
    if isinstance(max_cells, bool) or not isinstance(max_cells, int) or max_cells < 0:
        raise ValueError(f"max_cells must be an integer >= 0, got {max_cells!r}")
    seen = dict(observations or {})
    steps: list[FrontierStep] = []
    while True:
        step = next_frontier_step(spec, seen)
        if step.done:
            return [*steps, step]
        assert step.run is not None and step.run not in seen, "a step must be a new target"
        if len(steps) == max_cells:
            raise ValueError(f"frontier search over {spec} needs more than max_cells="
                             f"{max_cells} cells (next target {_fmt(step.run)}; at most "
                             f"{max_frontier_cells(spec)} are needed)")
        result = oracle(step.run)
        if not isinstance(result, bool):
            raise ValueError(f"frontier oracle at target {step.run!r} returned {result!r}, "
                             "expected a bool")
        seen[step.run] = result
        steps.append(step)
