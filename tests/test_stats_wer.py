"""WER from per-utterance counts, checked against jiwer via the scorer's op strings."""

from __future__ import annotations

import jiwer
import pytest

from mpqbench.bench.stats import counts_from_ops, wer_from_counts
from mpqbench.workloads.metrics.wer import align_words


def test_wer_by_hand():
    # (2 + 0 + 3) errors over (10 + 5 + 5) words = 5 / 20 = 0.25
    assert wer_from_counts({"a": (2, 10), "b": (0, 5), "c": (3, 5)}) == 0.25
    assert wer_from_counts([(2, 10), (0, 5), (3, 5)]) == 0.25
    # insertions can push WER above 1
    assert wer_from_counts([(4, 2)]) == 2.0


def test_wer_matches_jiwer():
    refs = ["the cat sat on the mat", "hello world", "a b c d"]
    hyps = ["the cat sat on mat", "hello there big world", "a x c d e"]
    # the scorer's op strings (the MAPSSWE input format) -> (errors, ref_words) rows
    rows = [
        counts_from_ops(align_words(r.split(), h.split())) for r, h in zip(refs, hyps, strict=True)
    ]
    assert wer_from_counts(rows) == pytest.approx(jiwer.wer(refs, hyps))


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        ([], "no utterances"),
        ([(0, 0)], "0 reference words"),
        ([(1, -2)], "ref_words must be a non-negative integer"),
        ([(True, 2)], "errors"),
        ([(1, 2, 3)], "expected"),
    ],
)
def test_bad_rows_rejected(rows, match):
    with pytest.raises(ValueError, match=match):
        wer_from_counts(rows)
