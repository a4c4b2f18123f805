"""Lossless flag and lossless compression ratio (DESIGN.md section 6) on hand-made inputs."""

from __future__ import annotations

import pytest

from mpqbench.bench.stats import (
    MapssweResult,
    is_lossless,
    lossless_compression_ratio,
    lossless_compression_ratios,
    mapsswe,
    significantly_worse,
)


def _ops(diffs: dict[int, int]) -> tuple[dict[str, str], dict[str, str]]:
    # one segment per utterance with difference errors_A - errors_B = key
    pairs = {2: ("CSSC", "CCCC"), 1: ("CSC", "CCC"), 0: ("CDC", "CSC"), -1: ("CCC", "CSC")}
    a: dict[str, str] = {}
    b: dict[str, str] = {}
    for d, count in diffs.items():
        for i in range(count):
            a[f"d{d}_{i}"], b[f"d{d}_{i}"] = pairs[d]
    return a, b


# A = 32-bit baseline, B = compressed system
_base, _good = _ops({1: 8, 2: 2, 0: 2})  # B better on 12 segments: Z = +5.74, p ~ 1e-8
BETTER = mapsswe(_base, _good)
WORSE = mapsswe(_good, _base)  # the same data swapped: the system is significantly worse
_a, _b = _ops({1: 3, -1: 2, 0: 5})  # Z = 3/7, p = 0.67
SAME = mapsswe(_a, _b)
IDENTICAL = mapsswe(_base, dict(_base))


def test_fixtures_are_what_they_claim():
    assert BETTER.significant and BETTER.better == "b"
    assert WORSE.significant and WORSE.better == "a"
    assert not SAME.significant
    assert not IDENTICAL.significant and IDENTICAL.p_value == 1.0


def test_significantly_worse_sides():
    assert significantly_worse(WORSE)
    assert not significantly_worse(WORSE, system="a")  # the baseline is the better one
    assert not significantly_worse(BETTER)
    assert significantly_worse(BETTER, system="a")
    assert not significantly_worse(SAME) and not significantly_worse(IDENTICAL)
    with pytest.raises(ValueError, match="system"):
        significantly_worse(SAME, system="c")  # type: ignore[arg-type]


def test_lossless_needs_every_split():
    assert is_lossless({"test-clean": SAME, "test-other": IDENTICAL})
    # significantly better than 32-bit still counts as lossless (one-sided in effect)
    assert is_lossless({"test-clean": BETTER, "test-other": SAME})
    # significantly worse on a single split is enough to lose the flag
    assert not is_lossless({"test-clean": SAME, "test-other": WORSE})
    assert not is_lossless({"test-clean": WORSE})
    # the candidate on side A: roles swap
    assert not is_lossless({"test-clean": BETTER}, system="a")


def test_lossless_works_on_reloaded_records():
    reloaded = {k: MapssweResult.from_dict(v.to_dict()) for k, v in {"x": SAME, "y": WORSE}.items()}
    assert not is_lossless(reloaded)


def test_lossless_rejects_bad_input():
    with pytest.raises(ValueError, match="no evaluated splits"):
        is_lossless({})
    with pytest.raises(ValueError, match=r"'dev'.*MapssweResult"):
        is_lossless({"dev": 0.03})  # type: ignore[dict-item]


def test_lossless_cr_is_the_largest_lossless_one():
    # uniform-8 (CR 4.0) and mixed 5.1 lossless; 6.4 and 8.0 not -> 5.1
    systems = [(4.0, True), (6.4, False), (5.1, True), (8.0, False)]
    assert lossless_compression_ratio(systems) == 5.1
    assert lossless_compression_ratio([(4.0, False), (6.0, False)]) is None
    assert lossless_compression_ratio([]) is None
    assert lossless_compression_ratio([(3, True)]) == 3.0


@pytest.mark.parametrize(
    ("systems", "match"),
    [
        ([(0.0, True)], "> 0"),
        ([(float("nan"), True)], "finite"),
        ([("4", True)], "finite number"),
        ([(4.0, 1)], "bool"),
        ([(4.0,)], "expected"),
    ],
)
def test_lossless_cr_rejects_bad_input(systems, match):
    with pytest.raises(ValueError, match=match):
        lossless_compression_ratio(systems)


def test_lossless_cr_per_method():
    rows = [
        ("uniform", 4.0, True),
        ("two_stage", 5.3, True),
        ("uniform", 5.33, False),
        ("one_stage", 6.8, True),
        ("two_stage", 6.1, False),
        ("one_stage", 7.5, False),
        ("optuna", 6.0, False),
    ]
    assert lossless_compression_ratios(rows) == {
        "uniform": 4.0,
        "two_stage": 5.3,
        "one_stage": 6.8,
        "optuna": None,
    }
    with pytest.raises(ValueError, match="row 0"):
        lossless_compression_ratios([("m", 4.0)])  # type: ignore[list-item]
