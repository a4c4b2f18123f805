"""WER alignment weightings: unit costs and sclite's 4/3/3, worked by hand and checked
against a brute-force enumeration of every alignment (test_wer.py checks both weightings'
op strings and costs against an independent weighted edit distance on random texts)."""

from __future__ import annotations

import functools
import itertools

import pytest

from mpqbench.workloads.metrics.alignment import ALIGNMENTS, align_sclite, align_unit
from mpqbench.workloads.metrics.wer import align_words, score_corpus, score_utterance


def errors(ops: str) -> int:
    return sum(op != "C" for op in ops)


def sclite_cost(ops: str) -> int:
    return 4 * ops.count("S") + 3 * ops.count("D") + 3 * ops.count("I")


def all_alignments(ref: tuple[str, ...], hyp: tuple[str, ...]) -> list[str]:
    """Every edit path from ref to hyp (C only where the words are equal)."""

    @functools.cache
    def paths(i: int, j: int) -> tuple[str, ...]:
        if i == len(ref) and j == len(hyp):
            return ("",)
        out: list[str] = []
        if i < len(ref) and j < len(hyp):
            op = "C" if ref[i] == hyp[j] else "S"
            out += [op + p for p in paths(i + 1, j + 1)]
        if i < len(ref):
            out += ["D" + p for p in paths(i + 1, j)]
        if j < len(hyp):
            out += ["I" + p for p in paths(i, j + 1)]
        return tuple(out)

    return list(paths(0, 0))


# ---------------------------------------------------------------------------------------
# Worked by hand (A = reference, B = hypothesis; sclite: correct 0, sub 4, ins 3, del 3)
# ---------------------------------------------------------------------------------------


def test_the_two_weightings_give_different_error_totals():
    # ref: w1 w2 w3 x y    hyp: x y z1 z2 z3   (only x, y are shared)
    # unit costs: five substitutions, 5 errors (cost 5); keeping x, y correct needs
    #   3 deletions + 3 insertions = 6 errors (cost 6), so unit picks SSSSS.
    # sclite: SSSSS costs 5 * 4 = 20; DDD C C III costs 6 * 3 = 18 < 20, so sclite keeps
    #   x, y correct and reports 6 errors (3 deletions, 3 insertions, no substitution).
    ref, hyp = ["w1", "w2", "w3", "x", "y"], ["x", "y", "z1", "z2", "z3"]
    assert align_words(ref, hyp) == "SSSSS"
    assert align_words(ref, hyp, "sclite") == "DDDCCIII"
    # The same through scoring (normalised words: red green blue | cat dog | fox owl elk)
    unit = score_utterance("u", "Red green blue cat dog.", "cat dog fox owl elk")
    sclite = score_utterance("u", "Red green blue cat dog.", "cat dog fox owl elk",
                             alignment="sclite")
    assert (unit.s, unit.d, unit.i, unit.errors) == (5, 0, 0, 5)
    assert (sclite.s, sclite.d, sclite.i, sclite.errors) == (0, 3, 3, 6)
    assert sclite.n == unit.n == 5


def test_same_total_different_split():
    # ref: a b   hyp: b c
    # sclite: S S costs 8; D(a) C(b) I(c) costs 6 -> DCI (2 errors: 1 D, 1 I).
    # unit: both cost 2; the substitution path SS is as short as DCI.
    assert align_sclite(["a", "b"], ["b", "c"]) == "DCI"
    assert errors(align_unit(["a", "b"], ["b", "c"])) == 2


def test_sclite_prefers_the_diagonal_on_a_tie():
    # ref: a   hyp: b c
    # cell (a, b): sub 4, del 3 + 3 = 6, ins 3 + 3 = 6 -> S (4).
    # cell (a, c): sub = cost(0, 1) + 4 = 3 + 4 = 7; ins = cost(a, b) + 3 = 4 + 3 = 7;
    #   del = cost(0, 2) + 3 = 9. sub <= ins, so the diagonal wins: the last move is
    #   S (a -> c), reached from cost(0, 1) = one insertion of b: ops "IS".
    assert align_sclite(["a"], ["b", "c"]) == "IS"


def test_sclite_takes_the_insertion_when_deletion_ties_with_it():
    # ref: a b   hyp: b a
    # cost(a | b) = 4 (S); cost(a | b a) = cost(0 | b) + 0 = 3 (I then C);
    # cost(a b | b) = cost(a | 0) + 0 = 3 (D then C);
    # cost(a b | b a): sub = 4 + 4 = 8, del = cost(a | b a) + 3 = 6,
    #   ins = cost(a b | b) + 3 = 6. del is not < ins, so INS: the back-trace goes to
    #   (a b | b), which is C from (a | 0), a deletion: ops "DCI".
    # (Had deletion won the tie it would read "ICD".)
    assert align_sclite(["a", "b"], ["b", "a"]) == "DCI"


def test_empty_hypothesis_is_all_deletions():
    assert align_sclite(["a", "b", "c"], []) == "DDD"
    assert align_words(["a", "b", "c"], [], "sclite") == "DDD"


def test_identical_texts_are_all_correct():
    words = ["the", "cat", "sat", "on", "the", "mat"]
    assert align_sclite(words, words) == "C" * len(words)


# ---------------------------------------------------------------------------------------
# Brute force: every alignment of short strings over a small alphabet
# ---------------------------------------------------------------------------------------


def _cases():
    for n in range(1, 4):
        for m in range(0, 4):
            for ref in itertools.product("ab", repeat=n):
                for hyp in itertools.product("abc", repeat=m):
                    yield ref, hyp


def test_sclite_alignment_has_minimum_sclite_cost_and_unit_minimum_errors():
    checked = 0
    for ref, hyp in _cases():
        paths = all_alignments(ref, hyp)
        sclite = align_sclite(ref, hyp)
        unit = align_words(list(ref), list(hyp))
        assert sclite in paths and unit in paths
        assert sclite_cost(sclite) == min(map(sclite_cost, paths)), (ref, hyp)
        assert errors(unit) == min(map(errors, paths)), (ref, hyp)
        checked += 1
    assert checked == sum(2**n * 3**m for n in range(1, 4) for m in range(4))


# ---------------------------------------------------------------------------------------
# Interface
# ---------------------------------------------------------------------------------------


def test_unknown_alignment_is_refused_by_name():
    assert ALIGNMENTS == ("unit", "sclite")
    with pytest.raises(ValueError, match=r"alignment must be one of .*'levenshtein'"):
        align_words(["a"], ["a"], "levenshtein")
    with pytest.raises(ValueError, match="alignment must be one of"):
        score_utterance("u", "a", "a", alignment="SCLITE")


def test_score_corpus_passes_the_alignment_through():
    refs, hyps = ["red green blue cat dog", "a b"], ["cat dog fox owl elk", "a b"]
    rows = score_corpus(["u1", "u2"], refs, hyps, alignment="sclite")
    assert [r.ops for r in rows] == ["DDDCCIII", "CC"]
    assert [r.ops for r in score_corpus(["u1"], refs[:1], hyps[:1])] == ["SSSSS"]
