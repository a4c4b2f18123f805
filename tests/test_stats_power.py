"""Power of the MAPSSWE test (bench/stats/power.py): hand-worked numbers, scipy quantiles,
and Monte Carlo runs of the real MAPSSWE test."""

from __future__ import annotations

import math
import random

import pytest
from scipy.stats import norm

from mpqbench.bench.stats import mapsswe, significantly_worse
from mpqbench.bench.stats.power import METHOD, detectable_mean_difference, mapsswe_power

# z_{0.975} = 1.959964, z_{0.8} = 0.841621 (normal tables); their sum 2.801585.
Z_SUM = 2.801585


def test_hand_worked_example():
    # Four utterances of 10 reference words; errors 0, 1, 2 (S + D) and 1 (an insertion).
    ops = {"u1": "CCCCCCCCCC", "u2": "SCCCCCCCCC", "u3": "SDCCCCCCCC", "u4": "CCICCCCCCCC"}
    # n = 4, N = 40, errors 4, WER 0.1. Mean count 1; sample variance
    # ((0-1)^2 + 0 + (2-1)^2 + 0) / 3 = 2/3; sigma_d = sqrt(2 * 2/3) = 1.154701.
    # delta = 2.801585 * 1.154701 / sqrt(4) = 1.617496;
    # increase = delta * 4 / 40 = 0.1617496 (16.17 WER points), relative 1.617496.
    res = mapsswe_power(ops)
    assert (res.n_segments, res.ref_words, res.errors) == (4, 40, 4)
    assert res.wer == pytest.approx(0.1)
    assert res.sigma_d == pytest.approx(1.154701, abs=1e-6)
    assert res.detectable_mean_diff == pytest.approx(1.617496, abs=1e-5)
    assert res.detectable_wer_increase == pytest.approx(0.1617496, abs=1e-6)
    assert res.detectable_wer_increase_pts == pytest.approx(16.17496, abs=1e-4)
    assert res.detectable_relative_increase == pytest.approx(1.617496, abs=1e-5)
    assert (res.alpha, res.power, res.method) == (0.05, 0.8, METHOD)
    assert res.to_dict()["detectable_wer_increase"] == res.detectable_wer_increase


def test_detectable_difference_has_the_asked_power_under_scipy():
    # The normal test of the mean rejects (upper side) with probability
    # 1 - Phi(z_{1-alpha/2} - delta sqrt(n) / sigma); at the returned delta that is `power`.
    for alpha, power, sigma, n in ((0.05, 0.8, 2.0, 200), (0.01, 0.9, 0.7, 31),
                                   (0.1, 0.5, 5.0, 3)):
        delta = detectable_mean_difference(sigma, n, alpha=alpha, power=power)
        got = norm.sf(norm.ppf(1 - alpha / 2) - delta * math.sqrt(n) / sigma)
        assert got == pytest.approx(power, abs=1e-9)
    assert detectable_mean_difference(1.0, 1) == pytest.approx(Z_SUM, abs=1e-6)


def test_options_and_scaling():
    ops = {f"u{k}": "S" * (k % 3) + "C" * 8 for k in range(30)}
    base = mapsswe_power(ops)
    # Same utterances twice over: n doubles, N doubles, sigma the same up to the n - 1
    # divisor, so the increase shrinks by about sqrt(2).
    twice = mapsswe_power({**ops, **{f"v{k}": o for k, o in ops.items()}})
    ratio = base.detectable_wer_increase / twice.detectable_wer_increase
    assert ratio == pytest.approx(math.sqrt(2) * base.sigma_d / twice.sigma_d)
    stricter = mapsswe_power(ops, alpha=0.01, power=0.9)
    assert stricter.detectable_wer_increase > base.detectable_wer_increase
    assert stricter.detectable_mean_diff == pytest.approx(
        (norm.ppf(0.995) + norm.ppf(0.9)) * base.sigma_d / math.sqrt(30))


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, True, "0.05", math.nan])
@pytest.mark.parametrize("name", ["alpha", "power"])
def test_levels_outside_the_unit_interval_are_refused(name, bad):
    ops = {"a": "SC", "b": "CC"}
    with pytest.raises(ValueError, match=name):
        mapsswe_power(ops, **{name: bad})
    with pytest.raises(ValueError, match=name):
        detectable_mean_difference(1.0, 10, **{name: bad})


@pytest.mark.parametrize(("ops", "match"), [
    ({}, "no utterances"),
    ({"a": "SC"}, "at least 2 utterances"),
    ({"a": "SC", "b": "CX"}, "allowed are C, S, D, I"),
    ({"a": "I", "b": ""}, "no reference words"),
    ({"a": "SC", "b": "CS"}, "zero variance"),
    ({"a": "CC", "b": "CC"}, "zero variance"),
])
def test_input_errors(ops, match):
    with pytest.raises(ValueError, match=match):
        mapsswe_power(ops)


def test_detectable_difference_input_errors():
    with pytest.raises(ValueError, match="sigma_d"):
        detectable_mean_difference(-1.0, 10)
    with pytest.raises(ValueError, match="n must be"):
        detectable_mean_difference(1.0, 0)


def _prefix_ops(errors: list[int], words: int) -> dict[str, str]:
    """Each utterance's errors as substitutions at its start, so every utterance with an
    error in either system is exactly one MAPSSWE segment."""
    return {f"u{k:03d}": "S" * e + "C" * (words - e) for k, e in enumerate(errors)}


def test_monte_carlo_power_of_the_real_test_at_a_known_shift():
    # Per-segment errors uniform on {0..8} (variance 20/3) for the 32-bit system and the
    # same plus one error for the other, independent: Var(d) = 2 * 20/3 exactly and the
    # shift is 1. With n = 105 the formula's delta is 2.801585 * sqrt(40/3) / sqrt(105) =
    # 0.9983, so a shift of 1 should be detected about 80 % of the time.
    n, words, reps = 105, 11, 600
    assert detectable_mean_difference(math.sqrt(40 / 3), n) == pytest.approx(0.9983, abs=1e-4)
    rng = random.Random(1)
    hits, deltas = 0, []
    for _ in range(reps):
        ops_a = _prefix_ops([rng.randint(0, 8) for _ in range(n)], words)
        ops_b = _prefix_ops([rng.randint(0, 8) + 1 for _ in range(n)], words)
        test = mapsswe(ops_a, ops_b)
        assert test.n_segments == n
        hits += significantly_worse(test)
        deltas.append(mapsswe_power(ops_a).detectable_mean_diff)
    # The estimate from the 32-bit side alone recovers the delta (sd of one estimate ~4 %).
    assert sum(deltas) / reps == pytest.approx(0.9983, rel=0.02)
    # Binomial standard error of the empirical power: sqrt(0.8 * 0.2 / 600) = 0.016.
    assert hits / reps == pytest.approx(0.80, abs=0.05)


def test_monte_carlo_whole_utterance_segments_match_mapsswe_segments():
    # Errors scattered: every word independently wrong (rate 0.10 for the 32-bit system,
    # 0.10 + increase for the other), so MAPSSWE cuts utterances into its own segments.
    # The increase is the formula's for the known per-utterance variance 15 * 0.1 * 0.9;
    # the other system's variance is larger (15 * p_b * (1 - p_b)), so the expected power
    # is Phi(increase * N / sqrt(n (var_a + var_b)) - 1.96), about 0.75, not 0.80.
    n, words, p_a, reps = 100, 15, 0.10, 300
    var_a = words * p_a * (1 - p_a)
    increase = Z_SUM * math.sqrt(2 * var_a) * math.sqrt(n) / (n * words)
    p_b = p_a + increase
    var_b = words * p_b * (1 - p_b)
    expected = norm.cdf(increase * n * words / math.sqrt(n * (var_a + var_b)) - norm.ppf(0.975))
    assert expected == pytest.approx(0.75, abs=0.01)
    rng = random.Random(2)

    def draw(p: float) -> dict[str, str]:
        return {f"u{k:03d}": "".join("S" if rng.random() < p else "C" for _ in range(words))
                for k in range(n)}

    hits = 0
    for _ in range(reps):
        test = mapsswe(draw(p_a), draw(p_b))
        hits += significantly_worse(test)
    # Standard error sqrt(0.75 * 0.25 / 300) = 0.025.
    assert hits / reps == pytest.approx(expected, abs=0.075)
