"""WER: normaliser fidelity, alignment strings, hand-worked counts, cross-checks with jiwer."""

from __future__ import annotations

import jiwer
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpqbench.workloads.metrics.wer import (
    UtteranceScore,
    align_words,
    corpus_totals,
    corpus_wer,
    english_spelling_mapping,
    normalize_text,
    score_corpus,
    score_utterance,
)


def _edit_distance(ref: list[str], hyp: list[str], sub: int = 1, ins: int = 1,
                   dele: int = 1) -> int:
    """Weighted Levenshtein distance over words (an independent reference)."""
    prev = [j * ins for j in range(len(hyp) + 1)]
    for i, r in enumerate(ref, start=1):
        cur = [i * dele] + [0] * len(hyp)
        for j, h in enumerate(hyp, start=1):
            cur[j] = min(prev[j] + dele, cur[j - 1] + ins, prev[j - 1] + sub * (r != h))
        prev = cur
    return prev[-1]


#: Cost weights (substitution, insertion, deletion) of each alignment weighting.
_WEIGHTS = {"unit": (1, 1, 1), "sclite": (4, 3, 3)}


# --- the normaliser -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Behaviour documented by OpenAI's EnglishTextNormalizer.
        ("Mr. Smith met Dr. Jones.", "mister smith met doctor jones"),
        ("I won't go, they can't stay.", "i will not go they can not stay"),
        ("The colour of the centre", "the color of the center"),
        ("twenty one dogs and one hundred cats", "21 dogs and 100 cats"),
        ("one two three", "123"),
        ("It cost $20 million.", "it cost $20000000"),
        ("Hmm, um, yes [laughs] (aside) okay", "yes okay"),
        ("Café déjà vu", "cafe deja vu"),
        # Where whisper_normalizer 0.1.15 differs from OpenAI's: not applied here.
        ("The cause of it, kinda.", "the cause of it kinda"),
        # The repaired spelling-map entry.
        ("archaeology", "archeology"),
    ],
)
def test_whisper_english_normaliser(text, expected):
    assert normalize_text(text) == expected


def test_spelling_map_is_openais_with_no_markup():
    mapping = english_spelling_mapping()
    assert len(mapping) == 1739
    assert mapping["archaeology"] == "archeology"
    assert mapping["colour"] == "color"
    assert not any("<" in v or ">" in v for v in mapping.values())


@pytest.mark.parametrize(
    "text",
    [
        "He said he'd been there since nineteen ninety nine.",
        "The honour of the armour, Mrs. Brown!",
        "Three point five percent of the first twenty-second.",
        "Lt. Col. Jr. went home at 5 p.m.",
    ],
)
def test_agrees_with_whisper_normalizer_where_it_follows_openai(text):
    from whisper_normalizer.english import EnglishTextNormalizer

    assert normalize_text(text) == EnglishTextNormalizer()(text).strip()


# --- hand-worked alignments -----------------------------------------------------------


def test_hand_worked_deletion():
    score = score_utterance("u1", "The cat sat on the mat.", "the cat sat on mat")
    assert (score.n, score.s, score.d, score.i) == (6, 0, 1, 0)
    assert score.ops == "CCCCDC"
    assert score.ref == "the cat sat on the mat" and score.hyp == "the cat sat on mat"


def test_hand_worked_substitution_and_insertion():
    score = score_utterance("u2", "a b c d", "a x c d e")
    assert score.ops == "CSCCI"
    assert (score.n, score.s, score.d, score.i) == (4, 1, 0, 1)


def test_hand_worked_corpus():
    # u1: 1 deletion of 6 words; u2: 1 sub + 1 ins of 4; u3: "Mr." vs "mister" is correct.
    scores = score_corpus(
        ["u1", "u2", "u3"],
        ["The cat sat on the mat.", "a b c d", "Mr. Smith"],
        ["the cat sat on mat", "a x c d e", "mister smith"],
    )
    totals = corpus_totals(scores)
    assert (totals.n, totals.s, totals.d, totals.i) == (12, 1, 1, 1)
    assert corpus_wer(scores) == pytest.approx(3 / 12)
    assert scores[2].ops == "CC"


def test_empty_hypothesis_is_all_deletions():
    score = score_utterance("u", "red green blue", "")
    assert score.ops == "DDD" and score.d == 3 and score.hyp == ""
    assert score_utterance("u", "HELLO", "uh um").ops == "D"


@pytest.mark.parametrize("ref", ["", "   ", "um uh", "Hmm."])
def test_reference_empty_after_normalisation_is_refused_with_its_id(ref):
    with pytest.raises(ValueError, match=r"'utt-7'.*empty after"):
        score_utterance("utt-7", ref, "anything")


def test_corpus_guards():
    with pytest.raises(ValueError, match="zero utterances"):
        corpus_wer([])
    with pytest.raises(ValueError, match="differ in length"):
        score_corpus(["a"], ["x", "y"], ["x"])
    with pytest.raises(ValueError, match="duplicate utterance id 'a'"):
        score_corpus(["a", "a"], ["x", "y"], ["x", "y"])


def test_row_round_trip_and_inconsistent_row_refused():
    score = score_utterance("u", "a b c d", "a x c d e")
    assert UtteranceScore.from_dict({**score.to_dict(), "capped": False}) == score
    with pytest.raises(ValueError, match="disagree"):
        UtteranceScore.from_dict({**score.to_dict(), "s": 0})
    with pytest.raises(ValueError, match="disagree"):
        UtteranceScore.from_dict({**score.to_dict(), "ops": "CSCC"})


# --- property-based cross-checks --------------------------------------------------------

_words = st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), max_size=12)


@pytest.mark.parametrize("alignment", sorted(_WEIGHTS))
@settings(max_examples=300, deadline=None)
@given(ref=_words.filter(bool), hyp=_words)
def test_alignment_invariants_and_minimal_cost(alignment, ref, hyp):
    ops = align_words(ref, hyp, alignment)
    assert len(ops.replace("I", "")) == len(ref)
    assert len(ops.replace("D", "")) == len(hyp)
    # Walk the alignment: C pairs equal words, S pairs different words.
    r = h = 0
    for op in ops:
        if op in "CS":
            assert (ref[r] == hyp[h]) == (op == "C")
            r, h = r + 1, h + 1
        elif op == "D":
            r += 1
        else:
            h += 1
    assert (r, h) == (len(ref), len(hyp))
    sub, ins, dele = _WEIGHTS[alignment]
    cost = sub * ops.count("S") + ins * ops.count("I") + dele * ops.count("D")
    assert cost == _edit_distance(ref, hyp, sub, ins, dele)


@settings(max_examples=60, deadline=None)
@given(pairs=st.lists(st.tuples(_words.filter(bool), _words), min_size=1, max_size=8))
def test_corpus_wer_matches_jiwer(pairs):
    refs = [" ".join(r) for r, _ in pairs]
    hyps = [" ".join(h) for _, h in pairs]
    scores = score_corpus([f"u{k}" for k in range(len(pairs))], refs, hyps)
    assert corpus_wer(scores) == pytest.approx(jiwer.wer(refs, hyps))
    out = jiwer.process_words(refs, hyps)
    totals = corpus_totals(scores)
    assert (totals.s, totals.d, totals.i) == (out.substitutions, out.deletions, out.insertions)


def test_real_sentences_match_jiwer_on_normalised_text():
    refs = [
        "MISTER QUILTER IS THE APOSTLE OF THE MIDDLE CLASSES AND WE ARE GLAD TO WELCOME HIS GOSPEL",
        "NOR IS MISTER QUILTER'S MANNER LESS INTERESTING THAN HIS MATTER",
        "HE HAS GRAVE DOUBTS WHETHER SIR FREDERICK LEIGHTON'S WORK IS REALLY GREEK AFTER ALL",
    ]
    hyps = [
        "Mr. Quilter is the apostle of the middle classes, and we are glad to welcome his gospel.",
        "Nor is Mr. Quilter's manner less interesting than his matter.",
        "He has grave doubts whether Sir Frederick Layton's work is really Greek after all.",
    ]
    scores = score_corpus(["a", "b", "c"], refs, hyps)
    assert [s.errors for s in scores] == [0, 0, 1]
    # "LEIGHTON'S" -> "leighton is" (the normaliser expands 's), so the third has 15 words.
    assert [s.n for s in scores] == [17, 11, 15]
    assert scores[2].ops == "CCCCCCCSCCCCCCC"
    expected = jiwer.wer([normalize_text(r) for r in refs], [normalize_text(h) for h in hyps])
    assert corpus_wer(scores) == pytest.approx(expected) == pytest.approx(1 / 43)
