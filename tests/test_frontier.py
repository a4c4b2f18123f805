"""Lossless-frontier bracketing search (bench/frontier.py): synthetic oracles, resumption,
non-monotone observations, budget and input errors."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpqbench.bench.frontier import (
    FrontierSpec,
    FrontierStep,
    frontier_grid,
    frontier_targets_run,
    max_frontier_cells,
    next_frontier_step,
)

#: 2..6 bits in steps of 0.5: K = 8 intervals, so a frontier inside the range takes exactly
#: 2 + log2(8) = 5 cells.
SPEC = FrontierSpec(low=2.0, high=6.0, resolution=0.5)
GRID = [2.0 + 0.5 * k for k in range(9)]


def monotone(t_star: float):
    """Lossless iff bits >= t_star."""
    return lambda bits: bits >= t_star


def run_targets(steps: list[FrontierStep]) -> list[float]:
    return [s.run for s in steps if not s.done]


@pytest.mark.parametrize(("field", "kwargs"), [
    ("resolution", {"low": 2, "high": 6, "resolution": 0}),
    ("resolution", {"low": 2, "high": 6, "resolution": -0.5}),
    ("low", {"low": 6, "high": 6, "resolution": 0.5}),
    ("low", {"low": 7, "high": 6, "resolution": 0.5}),
    ("low", {"low": math.nan, "high": 6, "resolution": 0.5}),
    ("high", {"low": 2, "high": math.inf, "resolution": 0.5}),
    ("high", {"low": 2, "high": "6", "resolution": 0.5}),
    ("resolution", {"low": 2, "high": 6, "resolution": True}),
])
def test_spec_validation_names_the_field(field, kwargs):
    with pytest.raises(ValueError, match=f"FrontierSpec.{field}"):
        FrontierSpec(**kwargs)


def test_grid():
    assert frontier_grid(SPEC) == tuple(GRID)
    # 3 * 0.1 is 0.30000000000000004 in floats; the grid rounds it. A range that is a whole
    # number of steps up to float error ((2.3 - 2) / 0.1 = 2.9999999999999982) gains no
    # sliver interval.
    assert frontier_grid(FrontierSpec(0.0, 0.4, 0.1)) == (0.0, 0.1, 0.2, 0.3, 0.4)
    assert frontier_grid(FrontierSpec(2.0, 2.3, 0.1)) == (2.0, 2.1, 2.2, 2.3)
    # A range that is not a whole number of steps: the last interval is shorter.
    assert frontier_grid(FrontierSpec(2.0, 3.05, 0.25)) == (2.0, 2.25, 2.5, 2.75, 3.0, 3.05)
    assert frontier_grid(FrontierSpec(2.0, 3.0, 5.0)) == (2.0, 3.0)
    assert [max_frontier_cells(FrontierSpec(0, k, 1)) for k in (1, 2, 3, 4, 5, 8, 9)] == [
        2, 3, 4, 4, 5, 5, 6]


# t* inside the range, on grid points and between them, at both edges of the grid.
@pytest.mark.parametrize("t_star", [2.01, 2.5, 2.7, 3.0, 4.25, 5.5, 5.99, 6.0])
def test_monotone_oracle_is_bracketed_in_2_plus_log2_k_cells(t_star):
    steps = frontier_targets_run(SPEC, monotone(t_star), max_cells=10)
    final = steps[-1]
    assert final.status == "bracketed" and final.done
    # Brute force over the grid: the bracket is (largest point < t*, smallest point >= t*).
    assert final.lossless == min(g for g in GRID if g >= t_star)
    assert final.lossy == max(g for g in GRID if g < t_star)
    assert final.lossless - final.lossy == pytest.approx(0.5)
    targets = run_targets(steps)
    assert targets[:2] == [6.0, 2.0]
    assert len(targets) == 2 + 3 == max_frontier_cells(SPEC)
    assert len(set(targets)) == len(targets) and set(targets) <= set(GRID)
    assert "bracketed: lossless at" in final.reason


def test_bisection_order_is_the_middle_of_the_bracket():
    # t* = 4.25: 6 lossless, 2 lossy, then 4 (lossy), 5 (lossless), 4.5 (lossless).
    assert run_targets(frontier_targets_run(SPEC, monotone(4.25), 10)) == [6, 2, 4, 5, 4.5]


@pytest.mark.parametrize(("t_star", "status", "targets", "reason"), [
    (7.0, "high_lossy", [6.0], "high is not lossless"),
    (6.01, "high_lossy", [6.0], "high is not lossless"),
    (2.0, "low_lossless", [6.0, 2.0], "low is lossless"),
    (0.5, "low_lossless", [6.0, 2.0], "low is lossless"),
])
def test_frontier_outside_the_range(t_star, status, targets, reason):
    steps = frontier_targets_run(SPEC, monotone(t_star), max_cells=10)
    assert steps[-1].status == status and reason in steps[-1].reason
    assert run_targets(steps) == targets
    if status == "high_lossy":
        assert (steps[-1].lossy, steps[-1].lossless) == (6.0, None)
    else:
        assert (steps[-1].lossless, steps[-1].lossy) == (2.0, None)


def test_uneven_grid_counts():
    spec = FrontierSpec(2.0, 3.05, 0.25)  # K = 5: 2 + ceil(log2 5) = 5 cells at most
    grid = [2.0, 2.25, 2.5, 2.75, 3.0, 3.05]
    counts = []
    for t_star in (2.1, 2.3, 2.6, 2.8, 3.01, 3.05):
        steps = frontier_targets_run(spec, monotone(t_star), max_cells=5)
        final = steps[-1]
        assert final.lossless == min(g for g in grid if g >= t_star)
        assert final.lossy == max(g for g in grid if g < t_star)
        counts.append(len(run_targets(steps)))
    # 2 + floor(log2 5) = 4 or 2 + ceil(log2 5) = 5, and the bound is reached.
    assert set(counts) == {4, 5} and max_frontier_cells(spec) == 5


def test_resumed_search_makes_the_same_choices():
    oracle = monotone(3.3)
    steps = frontier_targets_run(SPEC, oracle, max_cells=10)
    targets = run_targets(steps)
    for j in range(len(targets) + 1):
        done = {t: oracle(t) for t in targets[:j]}
        assert next_frontier_step(SPEC, done) == steps[j]
        # Order of the observations does not matter.
        shuffled = dict(random.Random(j).sample(sorted(done.items()), len(done)))
        assert next_frontier_step(SPEC, shuffled) == steps[j]
        # A resumed driver asks only for what is left, with the budget for what is left.
        asked: list[float] = []

        def recording(t: float, asked: list[float] = asked) -> bool:
            asked.append(t)
            return oracle(t)

        rest = frontier_targets_run(SPEC, recording, max_cells=len(targets) - j,
                                    observations=done)
        assert rest == steps[j:] and asked == targets[j:]


def test_non_monotone_observations_are_reported_and_stop_the_search():
    # Lossless at 4.5 and 5, lossy at 5.5 above them: the pair reported is the highest
    # lossy target and the lowest lossless one.
    obs = {6.0: True, 2.0: False, 4.5: True, 5.0: True, 5.5: False}
    step = next_frontier_step(SPEC, obs)
    assert step.status == "non_monotone" and step.done and step.run is None
    assert step.reason == "non-monotone: lossy at 5.5 but lossless at 4.5 < 5.5"
    steps = frontier_targets_run(SPEC, lambda t: pytest.fail("no cell may run"), 10,
                                 observations=obs)
    assert steps == [step]
    # Found before the high/low checks: a lossy high with a lossless point below it.
    assert next_frontier_step(SPEC, {6.0: False, 3.0: True}).reason == (
        "non-monotone: lossy at 6 but lossless at 3 < 6")


def test_non_monotone_oracle_stays_bounded():
    # Lossless only on [3, 4.5] and at 6: bisection finds a local boundary in at most
    # max_frontier_cells cells; the cells it ran agree with each other.
    def oracle(bits):
        return 3.0 <= bits <= 4.5 or bits == 6.0

    steps = frontier_targets_run(SPEC, oracle, max_cells=max_frontier_cells(SPEC))
    final = steps[-1]
    assert final.status == "bracketed" and len(steps) - 1 <= max_frontier_cells(SPEC)
    assert oracle(final.lossless) and not oracle(final.lossy)
    # The contradiction shows once a cell above the bracket is known to be lossy.
    seen = {t: oracle(t) for t in run_targets(steps)}
    assert next_frontier_step(SPEC, {**seen, 5.5: False}).status == "non_monotone"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.booleans(), min_size=9, max_size=9))
def test_any_oracle_finishes_within_the_bound(values):
    table = dict(zip(GRID, values, strict=True))
    steps = frontier_targets_run(SPEC, table.__getitem__, max_cells=max_frontier_cells(SPEC))
    targets = run_targets(steps)
    assert len(set(targets)) == len(targets) <= max_frontier_cells(SPEC)
    final = steps[-1]
    assert final.done and final.status != "non_monotone"  # bisection stays consistent
    if final.status == "bracketed":
        assert table[final.lossless] and not table[final.lossy]
        assert GRID.index(final.lossless) == GRID.index(final.lossy) + 1


@settings(max_examples=60, deadline=None)
@given(low=st.integers(0, 40), span=st.integers(1, 400), res=st.integers(1, 64),
       t=st.floats(0, 1))
def test_monotone_bracket_holds_the_frontier(low, span, res, t):
    spec = FrontierSpec(low / 8, (low + span) / 8, res / 16)
    t_star = spec.low + t * (spec.high - spec.low)
    final = frontier_targets_run(spec, monotone(t_star), max_cells=max_frontier_cells(spec))[-1]
    if t_star <= spec.low:
        assert final.status == "low_lossless"
    else:
        assert final.status == "bracketed"
        assert final.lossy < t_star <= final.lossless
        assert final.lossless - final.lossy <= spec.resolution + 1e-9


# ---- start = "middle": plain bisection over the grid ------------------------------------

MIDDLE = FrontierSpec(low=2.0, high=6.0, resolution=0.5, start="middle")


def test_middle_start_is_validated_and_bounded():
    with pytest.raises(ValueError, match=r"FrontierSpec\.start"):
        FrontierSpec(2.0, 6.0, 0.5, start="top")
    # ceil(log2(K + 2)): K = 1, 2, 3, 4, 6, 8 intervals
    assert [max_frontier_cells(FrontierSpec(0, k, 1, start="middle"))
            for k in (1, 2, 3, 4, 6, 8)] == [2, 2, 3, 3, 3, 4]


@pytest.mark.parametrize("t_star", [0.5, 2.0, 2.01, 2.5, 2.7, 3.0, 4.25, 5.5, 5.99, 6.0,
                                    6.01, 7.0])
def test_middle_start_finds_the_boundary_in_ceil_log2_k_plus_2_cells(t_star):
    steps = frontier_targets_run(MIDDLE, monotone(t_star), max_cells=4)
    final, targets = steps[-1], run_targets(steps)
    assert targets[0] == 4.0 and len(set(targets)) == len(targets) <= 4
    # Brute force over the grid, the same answers as a search from the ends.
    ends = frontier_targets_run(SPEC, monotone(t_star), max_cells=10)[-1]
    assert (final.status, final.lossless, final.lossy) == (ends.status, ends.lossless,
                                                            ends.lossy)
    if final.status == "bracketed":
        assert final.lossless - final.lossy == pytest.approx(0.5)


def test_middle_start_on_the_main_jobs_three_point_grid_takes_two_cells():
    spec = FrontierSpec(4, 8, 2, start="middle")
    for t_star, targets, status in [(3.0, [6, 4], "low_lossless"), (5.0, [6, 4], "bracketed"),
                                    (7.0, [6, 8], "bracketed"), (9.0, [6, 8], "high_lossy")]:
        steps = frontier_targets_run(spec, monotone(t_star), max_cells=2)
        assert run_targets(steps) == targets and steps[-1].status == status


def test_middle_start_reports_non_monotone_observations_and_stays_bounded():
    step = next_frontier_step(MIDDLE, {4.0: True, 5.0: False})
    assert step.status == "non_monotone" and "lossy at 5 but lossless at 4" in step.reason

    def oracle(bits):  # lossless only on [3, 4.5] and at 6
        return 3.0 <= bits <= 4.5 or bits == 6.0

    steps = frontier_targets_run(MIDDLE, oracle, max_cells=max_frontier_cells(MIDDLE))
    final = steps[-1]
    assert final.status == "bracketed" and oracle(final.lossless) and not oracle(final.lossy)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.booleans(), min_size=9, max_size=9))
def test_middle_start_any_oracle_finishes_within_the_bound(values):
    table = dict(zip(GRID, values, strict=True))
    steps = frontier_targets_run(MIDDLE, table.__getitem__,
                                 max_cells=max_frontier_cells(MIDDLE))
    final = steps[-1]
    assert final.done and final.status != "non_monotone"
    if final.status == "bracketed":
        assert table[final.lossless] and not table[final.lossy]
        assert GRID.index(final.lossless) == GRID.index(final.lossy) + 1


def test_budget_and_input_errors():
    with pytest.raises(ValueError, match="needs more than max_cells=4"):
        frontier_targets_run(SPEC, monotone(3.3), max_cells=4)
    with pytest.raises(ValueError, match="max_cells must be"):
        frontier_targets_run(SPEC, monotone(3.3), max_cells=-1)
    with pytest.raises(ValueError, match="returned 1, expected a bool"):
        frontier_targets_run(SPEC, lambda t: 1, max_cells=5)
    with pytest.raises(ValueError, match="not on the grid"):
        next_frontier_step(SPEC, {3.3: True})
    with pytest.raises(ValueError, match="must be a bool"):
        next_frontier_step(SPEC, {3.0: 1})
    with pytest.raises(ValueError, match="finite number"):
        next_frontier_step(SPEC, {math.nan: True})
    spec = FrontierSpec(2.0, 2.3, 0.1)
    # 2.1 + 0.2 = 2.3000000000000003 is the grid's 2.3 (within float error) ...
    assert 2.1 + 0.2 != 2.3
    assert next_frontier_step(spec, {2.1 + 0.2: True}).run == 2.0
    # ... so two values for it disagree.
    with pytest.raises(ValueError, match="disagree"):
        next_frontier_step(spec, {2.1 + 0.2: True, 2.3: False})
