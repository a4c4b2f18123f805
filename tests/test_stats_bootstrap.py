"""Paired bootstrap of the WER difference: hand cases, scipy's bootstrap as an independent
reference, coverage on simulated data with a known difference, speed, validation."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.stats import bootstrap

from mpqbench.bench.stats import bootstrap_wer_diff, counts_from_ops, wer_from_counts


def _rows(errors, refs, prefix="u"):
    pairs = zip(errors, refs, strict=True)
    return {f"{prefix}{i:04d}": (int(e), int(n)) for i, (e, n) in enumerate(pairs)}


def simulate(rng: np.random.Generator, n_utt: int, delta: float = 0.02, fix: float = 0.2):
    """Paired systems with a known population WER difference ``delta`` (B - A, fraction).

    Per utterance: n words, difficulty p ~ U(0.05, 0.30); A errs on Binomial(n, p) words;
    B fixes each of A's errors with probability ``fix`` and errs on each of A's correct
    words with probability g = (delta + fix p) / (1 - p), so that
    E[e_B - e_A | n, p] = n (-fix p + (1 - p) g) = n delta, and the corpus-level difference
    E[sum (e_B - e_A)] / E[sum n] is exactly delta.
    """
    n = rng.integers(3, 30, n_utt)
    p = rng.uniform(0.05, 0.30, n_utt)
    e_a = rng.binomial(n, p)
    fixed = rng.binomial(e_a, fix)
    new = rng.binomial(n - e_a, (delta + fix * p) / (1.0 - p))
    e_b = e_a - fixed + new
    return _rows(e_a, n), _rows(e_b, n)


def test_point_estimate_and_wers():
    a = {"x": (1, 10), "y": (3, 20), "z": (0, 5)}
    b = {"x": (2, 10), "y": (1, 20), "z": (2, 5)}
    r = bootstrap_wer_diff(a, b, n_boot=200, seed=1)
    # A: 4 / 35 = 11.428571 %, B: 5 / 35 = 14.285714 %, B - A = 1 / 35 = 2.857143 points
    assert r.wer_a_pct == pytest.approx(100 * 4 / 35)
    assert r.wer_b_pct == pytest.approx(100 * 5 / 35)
    assert r.diff_pts == pytest.approx(100 / 35)
    assert r.wer_a_pct == pytest.approx(100 * wer_from_counts(a))
    assert r.ci_low_pts <= r.diff_pts <= r.ci_high_pts
    assert (r.n_utterances, r.n_boot, r.seed, r.alpha) == (3, 200, 1, 0.05)


def test_identical_systems_give_a_zero_interval():
    a = _rows([1, 0, 4, 2], [10, 8, 12, 9])
    r = bootstrap_wer_diff(a, dict(a), n_boot=500, seed=0)
    assert (r.diff_pts, r.ci_low_pts, r.ci_high_pts, r.poi) == (0.0, 0.0, 0.0, 0.0)
    assert not r.excludes_zero


def test_constant_per_utterance_shift_gives_a_degenerate_interval():
    # Every utterance has 10 words and B one more error: any resample of 4 utterances has
    # sum d = 4 and sum n = 40 -> B - A = 10 points exactly, in every resample.
    a = _rows([1, 2, 0, 1], [10] * 4)
    b = _rows([2, 3, 1, 2], [10] * 4)
    r = bootstrap_wer_diff(a, b, n_boot=300, seed=3)
    assert r.diff_pts == pytest.approx(10.0)
    assert r.ci_low_pts == pytest.approx(10.0) and r.ci_high_pts == pytest.approx(10.0)
    assert r.poi == 0.0 and r.excludes_zero
    # ... and the other way round B improves in every resample: POI = 1.
    assert bootstrap_wer_diff(b, a, n_boot=300, seed=3).poi == 1.0


def test_seeded_and_order_independent():
    rng = np.random.default_rng(7)
    a, b = simulate(rng, 120)
    r1 = bootstrap_wer_diff(a, b, n_boot=2000, seed=11)
    shuffled = dict(reversed(list(a.items())))
    r2 = bootstrap_wer_diff(shuffled, b, n_boot=2000, seed=11)
    assert r1 == r2
    r3 = bootstrap_wer_diff(a, b, n_boot=2000, seed=12)
    assert (r3.ci_low_pts, r3.ci_high_pts) != (r1.ci_low_pts, r1.ci_high_pts)


def test_agrees_with_scipy_paired_percentile_bootstrap():
    rng = np.random.default_rng(2024)
    a, b = simulate(rng, 400)
    ids = sorted(a)
    d = np.array([b[u][0] - a[u][0] for u in ids], dtype=float)
    n = np.array([a[u][1] for u in ids], dtype=float)
    ref = bootstrap(
        (d, n),
        lambda d, n, axis=-1: 100 * d.sum(axis=axis) / n.sum(axis=axis),
        paired=True,
        vectorized=True,
        n_resamples=20_000,
        method="percentile",
        confidence_level=0.95,
        random_state=np.random.default_rng(99),
    ).confidence_interval
    r = bootstrap_wer_diff(a, b, n_boot=20_000, seed=5)
    width = ref.high - ref.low
    # different random draws: endpoints agree up to Monte Carlo error (a few % of width)
    assert r.ci_low_pts == pytest.approx(ref.low, abs=0.05 * width)
    assert r.ci_high_pts == pytest.approx(ref.high, abs=0.05 * width)


def test_interval_covers_the_true_difference_at_the_stated_rate():
    # 400 simulated test sets of 300 utterances with a true B - A of 2 WER points; the 95 %
    # interval must cover 2.0 in 92-98 % of them (binomial sd at 95 % over 400 is 1.1 %).
    rng = np.random.default_rng(0)
    covered = 0
    for k in range(400):
        a, b = simulate(rng, 300, delta=0.02)
        r = bootstrap_wer_diff(a, b, n_boot=1000, seed=k)
        covered += r.ci_low_pts <= 2.0 <= r.ci_high_pts
    assert 0.92 <= covered / 400 <= 0.98, covered / 400


def test_90_percent_interval_is_narrower():
    rng = np.random.default_rng(5)
    a, b = simulate(rng, 300)
    r95 = bootstrap_wer_diff(a, b, n_boot=4000, seed=0, alpha=0.05)
    r90 = bootstrap_wer_diff(a, b, n_boot=4000, seed=0, alpha=0.10)
    assert r95.ci_low_pts < r90.ci_low_pts < r90.ci_high_pts < r95.ci_high_pts


def test_ten_thousand_resamples_of_a_thousand_utterances_are_fast():
    rng = np.random.default_rng(1)
    a, b = simulate(rng, 1000)
    bootstrap_wer_diff(a, b, n_boot=100, seed=0)  # warm up
    t0 = time.perf_counter()
    bootstrap_wer_diff(a, b, n_boot=10_000, seed=0)
    elapsed = time.perf_counter() - t0
    # about 0.1 s here; the bound is loose because other jobs share the 2 CPU cores, but a
    # per-resample Python loop would take tens of seconds.
    assert elapsed < 3.0, elapsed


def test_rows_from_ops():
    assert counts_from_ops("CSCIDC") == (3, 5)
    assert counts_from_ops("") == (0, 0)
    with pytest.raises(ValueError):
        counts_from_ops("CX")


@pytest.mark.parametrize(
    ("a", "b", "kwargs", "match"),
    [
        ({}, {}, {}, "no utterances"),
        ({"x": (1, 5)}, {"y": (1, 5)}, {}, "only in A"),
        ({"x": (1, 5)}, {"x": (1, 6)}, {}, "'x'.*5 reference words.*6"),
        ({"x": (-1, 5)}, {"x": (1, 5)}, {}, "errors must be a non-negative integer"),
        ({"x": (1, 5.0)}, {"x": (1, 5)}, {}, "ref_words"),
        ({"x": (1,)}, {"x": (1, 5)}, {}, "expected \\(errors, ref_words\\)"),
        ({"x": (1, 0)}, {"x": (1, 0)}, {}, "0 reference words"),
        ({"x": (1, 5)}, {"x": (1, 5)}, {"n_boot": 0}, "n_boot"),
        ({"x": (1, 5)}, {"x": (1, 5)}, {"alpha": 1.0}, "alpha"),
        ({"x": (1, 5)}, {"x": (1, 5)}, {"seed": "a"}, "seed"),
    ],
)
def test_bad_input_rejected(a, b, kwargs, match):
    with pytest.raises(ValueError, match=match):
        bootstrap_wer_diff(a, b, **kwargs)
