"""The exact bit allocator: optimum against brute force, DP against ILP, edge cases."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpqbench.quant.allocator import allocate_bits


def brute_force(sizes, costs, target):
    """Least cost over every allocation within the budget (None when none fits)."""
    names = list(sizes)
    total = sum(sizes.values())
    best = None
    for combo in itertools.product(*(sorted(costs[n]) for n in names)):
        used = sum(b * sizes[n] for n, b in zip(names, combo, strict=True))
        if used / total > target:  # the reported average bits, a correctly rounded float
            continue
        cost = sum(costs[n][b] for n, b in zip(names, combo, strict=True))
        if best is None or cost < best:
            best = cost
    return best


def random_instance(rng: random.Random, max_layers: int = 5):
    n_layers = rng.randint(1, max_layers)
    shared = rng.random() < 0.5  # transformer-like: few distinct sizes with a large gcd
    base = rng.choice([1, 3, 64, 147456])
    sizes = {
        f"l{i}": base * (rng.choice([1, 4]) if shared else rng.randint(1, 40))
        for i in range(n_layers)
    }
    integer_costs = rng.random() < 0.3  # ties
    costs = {}
    for name in sizes:
        cands = rng.sample(range(1, 9), rng.randint(1, 4))
        costs[name] = {
            b: float(rng.randint(0, 5)) if integer_costs else rng.uniform(-1.0, 3.0)
            for b in cands
        }
    lo = sum(min(c) * sizes[n] for n, c in costs.items()) / sum(sizes.values())
    hi = sum(max(c) * sizes[n] for n, c in costs.items()) / sum(sizes.values())
    kind = rng.random()
    if kind < 0.15:
        target = lo  # tight: only the all-minimum allocations fit
    elif kind < 0.25:
        target = hi + rng.uniform(0, 2)  # not binding
    elif kind < 0.35:
        target = round(rng.uniform(lo, hi), 1)  # a decimal target
    else:
        target = rng.uniform(lo, hi)
    return sizes, costs, target


def check_solution(sizes, costs, target, sol, expected):
    assert set(sol.bits) == set(sizes)
    assert all(sol.bits[n] in costs[n] for n in sizes)
    total = sum(sizes.values())
    used = sum(sol.bits[n] * sizes[n] for n in sizes)
    assert used == sol.used_bits
    assert used / total <= target
    assert (sol.budget_bits + 1) / total > target  # the budget is the largest that fits
    assert sol.avg_bits <= target
    assert sol.cost == pytest.approx(sum(costs[n][sol.bits[n]] for n in sizes), abs=1e-12)
    assert sol.cost == pytest.approx(expected, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("solver", ["auto", "dp", "ilp"])
def test_optimum_equals_brute_force_on_random_instances(solver):
    rng = random.Random(20250101)
    n_cases = 150 if solver == "ilp" else 400
    for _ in range(n_cases):
        sizes, costs, target = random_instance(rng)
        expected = brute_force(sizes, costs, target)
        assert expected is not None  # targets are drawn at or above the all-minimum allocation
        sol = allocate_bits(sizes, costs, target, solver=solver)
        check_solution(sizes, costs, target, sol, expected)


@settings(max_examples=150, deadline=None)
@given(
    data=st.lists(
        st.tuples(
            st.integers(1, 30),
            st.dictionaries(st.integers(1, 8), st.floats(-5, 5, allow_nan=False),
                            min_size=1, max_size=4),
        ),
        min_size=1,
        max_size=5,
    ),
    target=st.floats(1.0, 9.0),
)
def test_optimum_equals_brute_force_hypothesis(data, target):
    sizes = {f"l{i}": n for i, (n, _) in enumerate(data)}
    costs = {f"l{i}": c for i, (_, c) in enumerate(data)}
    expected = brute_force(sizes, costs, target)
    if expected is None:
        with pytest.raises(ValueError, match="below the all-minimum-bits allocation"):
            allocate_bits(sizes, costs, target)
    else:
        check_solution(sizes, costs, target, allocate_bits(sizes, costs, target), expected)


def test_infeasible_target_raises():
    sizes = {"a": 10, "b": 30}
    costs = {"a": {2: 1.0, 4: 0.5}, "b": {3: 1.0, 8: 0.0}}
    # all-minimum: (2*10 + 3*30) / 40 = 2.75 average bits
    with pytest.raises(ValueError, match="below the all-minimum-bits allocation"):
        allocate_bits(sizes, costs, 2.7)
    sol = allocate_bits(sizes, costs, 2.75)
    assert sol.bits == {"a": 2, "b": 3}


def test_decimal_target_is_read_exactly():
    # (2*3 + 4*7) / 10 = 3.4 exactly; the float 3.4 is slightly below 17/5 in binary.
    sizes = {"a": 3, "b": 7}
    costs = {"a": {2: 0.0, 4: -1.0}, "b": {2: 0.0, 4: -2.0}}
    sol = allocate_bits(sizes, costs, 3.4)
    assert sol.bits == {"a": 2, "b": 4}
    assert sol.used_bits == 34 and sol.budget_bits == 34


def test_transformer_sizes_reduce_to_a_small_capacity():
    # whisper-tiny-like: 24 attention projections of 384^2 and 8 feed-forward of 4*384^2
    sizes = {f"attn{i}": 384 * 384 for i in range(24)}
    sizes |= {f"ffn{i}": 4 * 384 * 384 for i in range(8)}
    rng = random.Random(3)
    costs = {n: {2: rng.uniform(1, 2), 4: rng.uniform(0.1, 1), 8: 0.0} for n in sizes}
    sol = allocate_bits(sizes, costs, 4.0, solver="dp")
    assert sol.unit_bits == 2 * 384 * 384  # gcd of (b - 2) * N_l over {2, 4, 8}
    assert sol.capacity_units <= 3 * 24 + 12 * 8
    assert sol.avg_bits <= 4.0
    ilp = allocate_bits(sizes, costs, 4.0, solver="ilp")
    assert ilp.bits == sol.bits


def medium_instance(rng: random.Random):
    n_layers = rng.randint(20, 60)
    base = rng.choice([1, 7, 384 * 384])
    sizes = {f"l{i}": base * rng.choice([1, 2, 4, 9]) for i in range(n_layers)}
    cand_sets = [(2, 4, 8), (2, 3, 4, 6, 8), (1, 2, 4, 8), (3, 5, 8)]
    costs = {}
    for name in sizes:
        cands = rng.choice(cand_sets)
        # decreasing in bits, like a sensitivity, plus noise so the optimum is unique
        scale = rng.lognormvariate(0, 1)
        costs[name] = {b: scale * 2.0 ** (-b) + rng.uniform(0, 1e-3) for b in cands}
    lo = sum(min(c) * sizes[n] for n, c in costs.items()) / sum(sizes.values())
    hi = sum(max(c) * sizes[n] for n, c in costs.items()) / sum(sizes.values())
    return sizes, costs, rng.uniform(lo, lo + 0.8 * (hi - lo))


def test_dp_equals_ilp_on_medium_instances():
    rng = random.Random(7)
    for _ in range(25):
        sizes, costs, target = medium_instance(rng)
        dp = allocate_bits(sizes, costs, target, solver="dp")
        ilp = allocate_bits(sizes, costs, target, solver="ilp")
        assert dp.solver == "dp" and ilp.solver == "ilp"
        assert dp.cost == pytest.approx(ilp.cost, rel=1e-9, abs=1e-12)
        assert dp.bits == ilp.bits
        assert dp.avg_bits <= target and ilp.avg_bits <= target


def test_auto_switches_to_ilp_when_the_table_is_too_big():
    rng = random.Random(11)
    sizes = {f"l{i}": rng.randint(1000, 100000) for i in range(12)}  # gcd 1: huge capacity
    costs = {n: {2: rng.uniform(1, 2), 4: rng.uniform(0.2, 1), 8: 0.0} for n in sizes}
    big = allocate_bits(sizes, costs, 4.0, max_dp_cells=1000)
    assert big.solver == "ilp"
    assert big.capacity_units > 1000
    dp = allocate_bits(sizes, costs, 4.0, solver="dp")
    assert dp.bits == big.bits
    assert math.isclose(dp.cost, big.cost, rel_tol=1e-9)


def test_unconstrained_budget_takes_each_layers_cheapest():
    sizes = {"a": 5, "b": 5}
    costs = {"a": {2: 3.0, 8: 1.0}, "b": {2: 0.0, 8: 1.0}}
    sol = allocate_bits(sizes, costs, 8.0)
    assert sol.solver == "unconstrained"
    assert sol.bits == {"a": 8, "b": 2}


@pytest.mark.parametrize(
    ("sizes", "costs", "target", "message"),
    [
        ({}, {}, 4.0, "no layers"),
        ({"a": 4}, {"b": {2: 0.0}}, 4.0, "cover exactly"),
        ({"a": 0}, {"a": {2: 0.0}}, 4.0, "size must be"),
        ({"a": 4}, {"a": {}}, 4.0, "no candidate"),
        ({"a": 4}, {"a": {0: 1.0}}, 4.0, "candidate bits"),
        ({"a": 4}, {"a": {2: float("nan")}}, 4.0, "cost of 2 bits"),
        ({"a": 4}, {"a": {2: 0.0}}, float("inf"), "finite"),
    ],
)
def test_malformed_input_raises(sizes, costs, target, message):
    with pytest.raises(ValueError, match=message):
        allocate_bits(sizes, costs, target)


def test_unknown_solver_raises():
    with pytest.raises(ValueError, match="solver"):
        allocate_bits({"a": 1}, {"a": {2: 0.0}}, 4.0, solver="greedy")


@pytest.mark.parametrize("solver", ["auto", "dp"])
def test_equal_costs_keep_the_most_bits(solver):
    sizes = {"a": 3, "b": 3, "c": 6}
    zero = {"a": {2: 0.0, 4: 0.0, 8: 0.0}, "b": {2: 0.0, 4: 0.0, 8: 0.0},
            "c": {2: 1.0, 4: 0.5, 8: 0.0}}
    # not binding: every layer at its most bits (no cost difference to pay for fewer)
    assert allocate_bits(sizes, zero, 8.0, solver=solver).bits == {"a": 8, "b": 8, "c": 8}
    # binding: c takes the bits it pays for; a and b keep as many as the budget leaves
    sol = allocate_bits(sizes, zero, 6.0, solver=solver)
    assert sol.bits["c"] == 8 and sol.cost == 0.0
    assert sorted((sol.bits["a"], sol.bits["b"])) == [4, 4]
