"""NIST MAPSSWE: the Matched-Pairs Sentence-Segment Word Error test.

Gillick and Cox (1989), "Some statistical issues in the comparison of speech recognition
algorithms", ICASSP; Pallett et al. (1990), "Tools for the analysis of benchmark speech
recognition tests", ICASSP. This is a port of what NIST SCTK's ``sc_stats -t mapsswe``
computes, read from usnistgov/SCTK:

- ``src/sclite/mtchprs.c`` (newest stored version, commit 925fe89a): ``test_comp_sents``
  (segmentation state machine), ``count_seg`` / ``seg_count`` (per-segment counts),
  ``do_mtch_pairs_on_sys`` (differences, Z, two-sided confidence), ``analyze_Z_score``
  (direction of the winner);
- ``src/sclite/statdist.c``: ``calc_mean_var_std_dev_Zstat`` (mean, variance with divisor
  n - 1, Z = mean / (sd / sqrt(n)), and Z = 0 when the squared deviations sum to 0),
  ``Z_pass`` (significant when |Z| > 1.960, the 95 % row of the two-tailed table);
- ``src/sclite/sc_stats.c``: ``run_multi_sys`` calls ``do_mtch_pairs`` with a minimum of
  ``"2"`` good boundary words (also ``DEFAULT_MIN_NUM_GOOD 2`` in ``sctk.h``).

Segmentation rule (``test_comp_sents``), per utterance, walking both alignments in step over
the reference words:

- a reference word is *good* when both systems got it right (``C`` in both);
- any insertion in either system, or a word that is not good, puts the walk in the error
  state; a segment is closed once ``min_good`` (2) consecutive good words follow, and it ends
  with those good words;
- a segment starts ``min_good - 1`` ops before the last good word seen before the errors
  began (clamped to the utterance start), so neighbouring segments share their buffer of
  good words, which hold no errors, so no error is counted twice;
- the utterance end closes an open segment (segments never cross utterances); the newest
  SCTK also closes one when the walk is in the good state but system B still has trailing
  insertions, which this port keeps;
- a segment's error count for a system is the number of its non-``C`` ops inside the
  segment (S, D and I alike); a segment where both systems have 0 errors is dropped.

What equals SCTK exactly, given the same alignments: the segmentation, each segment's
error and reference-word counts, the mean and sample standard deviation (divisor n - 1) of
the differences, Z, and the two-sided test (checked against sclite + ``sc_stats`` built
from source on every committed system pair; docs/FINDINGS.md).

Deviations from SCTK, all at edges where SCTK is undefined or table-bound:

- p-value: the exact two-sided normal tail ``2 Phi(-|Z|)``, computed in log space
  (``scipy.special.log_ndtr``) so it never underflows: ``log10_p`` is exact for any Z,
  ``p_value = 10 ** log10_p`` is floored at the smallest normal double (2.2e-308, reached
  near |Z| = 37.5) and is never 0. SCTK's ``normprob`` reads p from a table on a 0.01 grid
  in |Z| (rounding p up) that stops at 2e-7, so SCTK's printed p differs from this one
  in the third digit and is 2e-7 for every |Z| beyond the table. ``significant`` is
  ``p < alpha`` where SCTK tests ``|Z| > 1.960`` (its two-tailed table has only 90-99 %
  rows); for alpha = 0.05 the two disagree only for 1.95996 < |Z| <= 1.960.
- Alignment: the test takes the alignments it is given. sclite aligns with substitution
  4, insertion 3, deletion 3; mpqbench's default scoring (``alignment="unit"``) uses unit
  costs, which can give a different S/D/I split and, rarely, a different error total. Score
  with ``alignment="sclite"`` (:mod:`mpqbench.workloads.metrics.wer`) to reproduce sclite's
  alignments; given the same alignments, the segments and Z equal ``sc_stats``' exactly.
- No segments at all (neither system made an error): SCTK divides 0 by 0; here Z = 0,
  p = 1, not significant.
- Zero variance: as in SCTK, when every segment difference is the same (identical systems,
  a single segment, or a constant non-zero difference) Z = 0, so p = 1 and the result is not
  significant. A constant non-zero difference is logged as a warning, since the normal
  approximation has nothing to say there.
- SCTK re-synchronises references that differ (alternations); here both systems must be
  scored against the same normalised reference, so the number of reference words must match
  per utterance (ValueError otherwise), and ids must match (SCTK warns and skips).
- ``min_good < 1`` raises ValueError (SCTK warns and uses 2).
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from scipy.special import log_ndtr

from mpqbench.bench.stats._ops import check_same_ids, error_count, ref_word_count, validate_ops

__all__ = [
    "MapssweResult",
    "Segment",
    "format_p",
    "mapsswe",
    "mapsswe_segments",
    "normal_two_sided_log10_p",
]

log = logging.getLogger(__name__)

#: SCTK's minimum number of consecutive words both systems got right that closes a segment.
SCTK_MIN_GOOD = 2


@dataclass(frozen=True)
class Segment:
    """One MAPSSWE segment.

    Attributes:
        utterance: id of the utterance the segment lies in.
        errors_a: system A's errors (non-``C`` ops) in the segment.
        errors_b: system B's errors in the segment.
        ref_words: ``(ref_a + ref_b) // 2`` reference words in the segment, as SCTK stores
            it (buffer words shared with a neighbouring segment count in both).
    """

    utterance: str
    errors_a: int
    errors_b: int
    ref_words: int


@dataclass(frozen=True)
class MapssweResult:
    """Outcome of :func:`mapsswe` (A versus B).

    Attributes:
        n_utterances: utterances compared.
        n_segments: segments with at least one error in either system.
        errors_a: system A's errors summed over the segments (= its total S + D + I).
        errors_b: system B's errors summed over the segments.
        mean_diff: mean over segments of ``errors_a - errors_b`` (> 0: B makes fewer errors).
        std_diff: sample standard deviation (divisor n - 1) of those differences.
        z: ``mean_diff / (std_diff / sqrt(n_segments))``; 0 when ``std_diff`` is 0.
        p_value: two-sided normal p-value of ``z``, floored at the smallest normal double
            (``sys.float_info.min``) so it is never 0; use ``log10_p`` below that.
        alpha: significance level used.
        significant: ``p_value < alpha``.
        better: ``"a"`` or ``"b"``, the system with fewer errors per segment on average,
            ``None`` when equal; a direction only, see ``significant``.
        min_good: good words that close a segment.
        segments: the segments, in utterance-id order (omitted from :meth:`to_dict` unless
            asked for).
        log10_p: base-10 logarithm of the exact two-sided p-value (finite for any ``z``;
            ``None`` only in results read from records written before it existed).
    """

    n_utterances: int
    n_segments: int
    errors_a: int
    errors_b: int
    mean_diff: float
    std_diff: float
    z: float
    p_value: float
    alpha: float
    significant: bool
    better: Literal["a", "b"] | None
    min_good: int = SCTK_MIN_GOOD
    segments: tuple[Segment, ...] = field(default=(), repr=False, compare=False)
    log10_p: float | None = None

    @property
    def winner(self) -> Literal["a", "b"] | None:
        """The significantly better system, or ``None`` when the difference is not
        significant (SCTK's comparison-matrix entry)."""
        return self.better if self.significant else None

    def to_dict(self, include_segments: bool = False) -> dict[str, Any]:
        """JSON-ready dict; segments only when ``include_segments``."""
        out = asdict(self)
        if include_segments:
            out["segments"] = [asdict(s) for s in self.segments]
        else:
            out.pop("segments")
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MapssweResult:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: a field is missing or unknown.
        """
        names = {f.name for f in cls.__dataclass_fields__.values()}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"MapssweResult: unknown fields {unknown}")
        kwargs = dict(data)
        kwargs["segments"] = tuple(Segment(**s) for s in data.get("segments", ()))
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ValueError(f"MapssweResult: {exc}") from None


def _count(ops: str, beg: int, end: int) -> tuple[int, int]:
    """SCTK ``seg_count``: (errors, reference words) of ``ops[beg..end]`` (inclusive)."""
    part = ops[max(beg, 0) : end + 1]
    return error_count(part), ref_word_count(part)


def mapsswe_segments(
    ops_a: str, ops_b: str, min_good: int = SCTK_MIN_GOOD, utterance: str = ""
) -> list[Segment]:
    """Split one utterance pair into MAPSSWE segments (SCTK ``test_comp_sents``).

    Args:
        ops_a: system A's op string for the utterance.
        ops_b: system B's op string for the same utterance.
        min_good: consecutive words both systems got right that close a segment.
        utterance: id stored in the segments and named in errors.

    Returns:
        The segments with at least one error in either system, in order.

    Raises:
        ValueError: bad op characters, different reference-word counts, or ``min_good < 1``.
    """
    if isinstance(min_good, bool) or not isinstance(min_good, int) or min_good < 1:
        raise ValueError(f"min_good must be an integer >= 1, got {min_good!r}")
    a = validate_ops(utterance, ops_a)
    b = validate_ops(utterance, ops_b)
    if ref_word_count(a) != ref_word_count(b):
        raise ValueError(
            f"utterance {utterance!r}: system A aligns {ref_word_count(a)} reference words and "
            f"system B {ref_word_count(b)}; both must be scored against the same reference"
        )
    n1, n2 = len(a), len(b)
    i1 = i2 = 0
    eog1 = eog2 = 0  # index of the last good word (end of good) in each system
    state = "b"  # b: between segments, e: in errors, g: counting good words after errors
    num_good = 0
    segments: list[Segment] = []

    def close(end1: int, end2: int) -> None:
        err1, ref1 = _count(a, eog1 - (min_good - 1), end1)
        err2, ref2 = _count(b, eog2 - (min_good - 1), end2)
        if err1 or err2:
            segments.append(Segment(utterance, err1, err2, (ref1 + ref2) // 2))

    while i1 < n1:
        while i1 < n1 and a[i1] == "I":
            i1 += 1
            state = "e"
        while i2 < n2 and b[i2] == "I":
            i2 += 1
            state = "e"
        # Same reference, so both walks reach their next reference word (or the end) together.
        assert (i1 < n1) == (i2 < n2), "reference walks out of step"
        good = i1 < n1 and a[i1] == "C" and b[i2] == "C"
        if state == "b":
            if good:
                eog1, eog2 = i1, i2
            else:
                state = "e"
        elif state == "e":
            if good:
                num_good = 1
                if num_good == min_good:
                    close(i1, i2)
                    eog1, eog2, state = i1, i2, "b"
                else:
                    state = "g"
        else:  # "g"
            if good:
                num_good += 1
                if num_good == min_good:
                    close(i1, i2)
                    eog1, eog2, state = i1, i2, "b"
            else:
                state = "e"
        if i1 < n1:
            i1 += 1
        if i2 < n2:
            i2 += 1
    # The utterance end closes an open segment; newest SCTK also catches trailing
    # insertions of system B left after A's walk ended in the good state.
    if state != "b" or i2 < n2:
        close(n1 - 1, n2 - 1)
    return segments


def _normal_two_sided_log_p(z: float) -> float:
    """Natural log of the two-sided standard normal tail ``2 Phi(-|z|)``; 0.0 at z = 0.

    ``log_ndtr`` keeps full precision far into the tail, where ``erfc`` underflows to 0
    (|z| > 38.5).
    """
    return math.log(2.0) + float(log_ndtr(-abs(z))) if z else 0.0


def normal_two_sided_log10_p(z: float) -> float:
    """log10 of the two-sided standard normal tail ``2 Phi(-|z|)``, exact for any finite z."""
    return _normal_two_sided_log_p(z) / math.log(10.0)


def format_p(p_value: float, log10_p: float | None = None) -> str:
    """A p-value for reports: ``0.0123``, ``3.1e-45``; below 1e-300 ``<1e-300``, followed
    by ``, log10 p = -372995.9`` when the exact logarithm is known.

    Args:
        p_value: the (floored) p-value.
        log10_p: its exact base-10 logarithm when known (records before it have none).
    """
    exponent = log10_p if log10_p is not None else math.log10(max(p_value, 5e-324))
    if exponent >= -300:
        return f"{p_value:.3g}"
    return "<1e-300" if log10_p is None else f"<1e-300, log10 p = {log10_p:.1f}"


def mapsswe(
    ops_a: Mapping[str, str],
    ops_b: Mapping[str, str],
    *,
    alpha: float = 0.05,
    min_good: int = SCTK_MIN_GOOD,
) -> MapssweResult:
    """Matched-pairs sentence-segment word error test of system A against system B.

    Follows NIST SCTK ``sc_stats -t mapsswe`` (see the module docstring for the files and
    functions ported, the segmentation rule and the deviations). The per-segment difference
    is ``errors_a - errors_b``; Z uses the sample standard deviation (divisor n - 1) and the
    normal approximation; the test is two-sided.

    Args:
        ops_a: utterance id -> system A's alignment op string over ``C/S/D/I``.
        ops_b: utterance id -> system B's op string, same ids, same reference words.
        alpha: two-sided significance level, in (0, 1).
        min_good: consecutive words both systems got right that close a segment (SCTK: 2).

    Returns:
        A :class:`MapssweResult`. When every segment difference is equal (identical systems,
        a single segment) or there are no errors at all, ``z = 0``, ``p_value = 1`` and
        ``significant`` is False.

    Raises:
        ValueError: empty input, different utterance ids, a bad op character, a reference
            word count that differs between the systems (the utterance is named), or
            ``alpha`` / ``min_good`` out of range.
    """
    if not (isinstance(alpha, (int, float)) and 0.0 < alpha < 1.0):
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    ids = check_same_ids(ops_a, ops_b)
    segments: list[Segment] = []
    total_a = total_b = 0
    for utt in ids:
        segs = mapsswe_segments(ops_a[utt], ops_b[utt], min_good=min_good, utterance=utt)
        segments.extend(segs)
        total_a += error_count(ops_a[utt])
        total_b += error_count(ops_b[utt])
    errors_a = sum(s.errors_a for s in segments)
    errors_b = sum(s.errors_b for s in segments)
    assert (errors_a, errors_b) == (total_a, total_b), "segments must hold every error once"

    diffs = [s.errors_a - s.errors_b for s in segments]
    n = len(diffs)
    if n == 0:
        mean = std = z = 0.0
    else:
        mean = sum(diffs) / n
        ss = sum((d - mean) ** 2 for d in diffs)
        if ss != 0.0:
            std = math.sqrt(ss / (n - 1))
            z = mean / (std / math.sqrt(n))
        else:  # SCTK calc_mean_var_std_dev_Zstat: variance, sd and Z all set to 0
            std = z = 0.0
            if mean != 0.0:
                log.warning(
                    "MAPSSWE: all %d segment differences equal %+g; zero variance, so "
                    "Z = 0 and not significant (as in SCTK)",
                    n,
                    mean,
                )
    log_p = _normal_two_sided_log_p(z)  # exp(log_p) is more exact than 10 ** log10_p
    log10_p = log_p / math.log(10.0)
    p = max(math.exp(log_p), sys.float_info.min)
    better: Literal["a", "b"] | None = "b" if mean > 0 else "a" if mean < 0 else None
    return MapssweResult(
        n_utterances=len(ids),
        n_segments=n,
        errors_a=errors_a,
        errors_b=errors_b,
        mean_diff=mean,
        std_diff=std,
        z=z,
        p_value=p,
        alpha=float(alpha),
        significant=p < alpha,
        better=better,
        min_good=min_good,
        segments=tuple(segments),
        log10_p=log10_p,
    )
