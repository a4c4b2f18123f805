"""Power of the MAPSSWE test: the smallest WER increase it would detect.

"Lossless" means *not significantly worse* than the 32-bit system (:mod:`.lossless`), so it
is only as strong as the test behind it. :func:`mapsswe_power` states that strength: from
the 32-bit system's own per-utterance alignments on a split, the smallest WER increase over
it that a two-sided MAPSSWE test (:func:`~mpqbench.bench.stats.mapsswe.mapsswe`) at level
``alpha`` would find significant with probability ``power``.

Method (normal approximation, the one MAPSSWE itself uses):

- MAPSSWE computes ``Z = mean(d) / (sd(d) / sqrt(n))`` over ``n`` segments, ``d`` the
  per-segment difference of the two systems' error counts. With true mean difference
  ``delta`` and standard deviation ``sigma_d``, ``Z`` is about normal with mean
  ``delta sqrt(n) / sigma_d`` and variance 1, so the two-sided test at ``alpha`` rejects
  with probability ``power`` when
  ``delta = (z_{1 - alpha/2} + z_{power}) * sigma_d / sqrt(n)``
  (``z_q`` the standard normal quantile; the chance of rejecting in the wrong direction,
  ``Phi(-2 z_{1-alpha/2} - z_{power})``, about 1e-6 at the defaults, is ignored).
- Segments: MAPSSWE's segments are bounded by words *both* systems got right, so they
  depend on the compressed system, which is not known in advance. The 32-bit system
  against itself gives only its own error stretches, every one with at least one error, so
  their spread misses the main source of variance (whether a stretch holds an error at
  all) and is 0 when every error is isolated. This module therefore uses **whole
  utterances as segments** (every utterance, error-free ones included): segments never
  cross utterances, so MAPSSWE's segments refine the utterances, and with errors
  independent across segments the sum of the per-segment variances, which is what ``Z``'s
  denominator estimates, is the same for both. Errors that cluster within an utterance
  make the per-utterance figure larger, i.e. conservative.
- ``sigma_d``: with the two systems' errors independent and of equal variance,
  ``Var(d) = 2 Var(e)``, ``e`` the 32-bit system's per-utterance error count, estimated by
  its sample variance (divisor ``n - 1``, as MAPSSWE's). Quantized copies of one model make
  errors that are *positively* correlated with the 32-bit system's (they fail on the same
  words), which makes ``Var(d)`` smaller, so the true detectable increase is smaller than
  this one: the figure is conservative (an upper bound under that correlation). It is not
  for a system whose own errors vary far more than the 32-bit system's (a broken one
  that loops on some utterances), but such a system is far beyond the detectable
  increase anyway (docs/FINDINGS.md has both measured on committed records).
- The detectable total error difference is ``delta * n``, so the detectable WER increase
  is ``delta * n / N`` (``N`` reference words) and the relative increase divides that by
  the 32-bit WER.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from scipy.special import ndtri

from mpqbench.bench.stats._ops import error_count, ref_word_count, validate_ops

__all__ = ["METHOD", "MapsswePower", "detectable_mean_difference", "mapsswe_power"]

#: One-line statement of the method, stored in every :class:`MapsswePower`.
METHOD = (
    "normal approximation of MAPSSWE's Z over whole-utterance segments: "
    "delta = (z_{1-alpha/2} + z_power) * sigma_d / sqrt(n), sigma_d = sqrt(2) * sd of the "
    "32-bit per-utterance error counts (independent errors of equal variance; conservative "
    "for positively correlated systems), WER increase = delta * n / reference words"
)


@dataclass(frozen=True)
class MapsswePower:
    """Outcome of :func:`mapsswe_power` on one split.

    Attributes:
        n_segments: segments of the estimate: the utterances, error-free ones included.
        ref_words: reference words ``N`` of the split.
        errors: the 32-bit system's errors (S + D + I).
        wer: the 32-bit system's WER, a fraction (``errors / ref_words``).
        sigma_d: assumed standard deviation of the per-segment error difference.
        detectable_mean_diff: ``delta``, the detectable mean per-segment error difference.
        detectable_wer_increase: ``delta * n / N``, the detectable absolute WER increase as
            a fraction like ``wer`` (0.0123 = 1.23 WER points).
        detectable_relative_increase: ``detectable_wer_increase / wer`` (0.5 = +50 %).
        alpha: two-sided significance level.
        power: probability of detection.
        method: :data:`METHOD`.
    """

    n_segments: int
    ref_words: int
    errors: int
    wer: float
    sigma_d: float
    detectable_mean_diff: float
    detectable_wer_increase: float
    detectable_relative_increase: float
    alpha: float
    power: float
    method: str = METHOD

    @property
    def detectable_wer_increase_pts(self) -> float:
        """The detectable absolute increase in WER points (percent of reference words)."""
        return 100.0 * self.detectable_wer_increase

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the fields."""
        return asdict(self)


def _check_level(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    return float(value)


def detectable_mean_difference(
    sigma_d: float, n: int, *, alpha: float = 0.05, power: float = 0.8
) -> float:
    """``(z_{1-alpha/2} + z_power) * sigma_d / sqrt(n)``: the mean per-segment difference a
    two-sided normal test of the mean over ``n`` segments detects with probability ``power``.

    Raises:
        ValueError: ``sigma_d < 0`` or not finite, ``n < 1``, or ``alpha`` / ``power``
            outside (0, 1).
    """
    alpha = _check_level("alpha", alpha)
    power = _check_level("power", power)
    if not (math.isfinite(sigma_d) and sigma_d >= 0):
        raise ValueError(f"sigma_d must be a finite number >= 0, got {sigma_d!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    z_sum = float(ndtri(1.0 - alpha / 2.0)) + float(ndtri(power))
    return z_sum * sigma_d / math.sqrt(n)


def mapsswe_power(
    ops: Mapping[str, str], *, alpha: float = 0.05, power: float = 0.8
) -> MapsswePower:
    """Smallest WER increase over the 32-bit system that MAPSSWE detects with ``power``.

    See the module docstring for the method and its assumptions.

    Args:
        ops: utterance id -> the 32-bit system's alignment op string over ``C/S/D/I`` on
            the split (as records store them in ``splits[name]["utterances"][k]["ops"]``).
        alpha: two-sided significance level of the test, in (0, 1).
        power: wanted probability of detection, in (0, 1).

    Returns:
        A :class:`MapsswePower`.

    Raises:
        ValueError: no utterances, fewer than 2, a bad op string, no reference words,
            per-utterance error counts that are all equal (zero variance: nothing to
            estimate ``sigma_d`` from, e.g. a system with no errors), or ``alpha`` /
            ``power`` outside (0, 1).
    """
    alpha = _check_level("alpha", alpha)
    power = _check_level("power", power)
    if not ops:
        raise ValueError("mapsswe_power: no utterances")
    counts = [error_count(validate_ops(u, o)) for u, o in ops.items()]
    ref_words = sum(ref_word_count(o) for o in ops.values())
    n = len(counts)
    if n < 2:
        raise ValueError(f"mapsswe_power: needs at least 2 utterances to estimate the "
                         f"variance of the error counts, got {n}")
    if ref_words == 0:
        raise ValueError("mapsswe_power: the utterances hold no reference words")
    mean = sum(counts) / n
    var = sum((c - mean) ** 2 for c in counts) / (n - 1)
    if var == 0.0:
        raise ValueError(
            f"mapsswe_power: every one of the {n} utterances has {counts[0]} errors; with zero "
            "variance the normal approximation has nothing to estimate sigma_d from"
        )
    sigma_d = math.sqrt(2.0 * var)
    delta = detectable_mean_difference(sigma_d, n, alpha=alpha, power=power)
    errors = sum(counts)
    increase = delta * n / ref_words
    wer = errors / ref_words
    return MapsswePower(
        n_segments=n,
        ref_words=ref_words,
        errors=errors,
        wer=wer,
        sigma_d=sigma_d,
        detectable_mean_diff=delta,
        detectable_wer_increase=increase,
        detectable_relative_increase=increase / wer,  # wer > 0: zero errors has var 0
        alpha=alpha,
        power=power,
    )
