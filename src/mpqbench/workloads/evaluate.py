"""Batched greedy-decoding evaluation of a :class:`SpeechModel` on a split.

Audio is read batch by batch (a split is lazy), so memory stays flat on a full
LibriSpeech split. CTC batches are formed from clips sorted by length, which keeps
padding small; Whisper pads every clip to its 30 s window anyway, so its clips stay in
split order. Rows come back in split order either way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from mpqbench.precision import autocast, check_precision
from mpqbench.timing import synchronize
from mpqbench.workloads.adapter import SAMPLE_RATE, SpeechModel
from mpqbench.workloads.data.types import Utterance
from mpqbench.workloads.metrics.alignment import DEFAULT_ALIGNMENT, check_alignment
from mpqbench.workloads.metrics.wer import (
    UtteranceScore,
    WerTotals,
    corpus_totals,
    normalize_text,
    score_utterance,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalRow:
    """One scored utterance: its alignment and whether decoding hit the token cap."""

    score: UtteranceScore
    capped: bool

    def to_dict(self) -> dict[str, Any]:
        return {**self.score.to_dict(), "capped": self.capped}


@dataclass(frozen=True)
class EvalResult:
    """The outcome of :func:`evaluate`.

    Attributes:
        rows: per-utterance scores, in split order.
        totals: corpus N, S, D, I and WER.
        num_capped: utterances whose decoding stopped at the token cap.
        wall_s: seconds for the whole evaluation (audio reading, decoding, scoring).
        audio_s: seconds of audio evaluated.
        batch_size: clips per ``transcribe`` call.
        max_new_tokens: the token cap passed to the model (``None``: the model's default).
        max_tokens_per_s: the duration cap passed to the model (``None``: none).
        alignment: the WER alignment weighting the rows were scored with.
    """

    rows: tuple[EvalRow, ...]
    totals: WerTotals
    num_capped: int
    wall_s: float
    audio_s: float
    batch_size: int
    max_new_tokens: int | None
    alignment: str = DEFAULT_ALIGNMENT
    max_tokens_per_s: float | None = None

    @property
    def wer(self) -> float:
        return self.totals.wer

    @property
    def utterances_per_s(self) -> float:
        return len(self.rows) / self.wall_s if self.wall_s > 0 else float("inf")

    @property
    def real_time_factor(self) -> float:
        """Processing seconds per second of audio."""
        return self.wall_s / self.audio_s if self.audio_s > 0 else float("nan")

    def timing_dict(self) -> dict[str, float]:
        return {
            "wall_s": self.wall_s,
            "audio_s": self.audio_s,
            "utterances_per_s": self.utterances_per_s,
            "real_time_factor": self.real_time_factor,
        }


def evaluate(
    model: SpeechModel,
    split: Sequence[Utterance],
    *,
    batch_size: int = 16,
    max_new_tokens: int | None = None,
    max_tokens_per_s: float | None = None,
    progress: bool = True,
    alignment: str = DEFAULT_ALIGNMENT,
    precision: str = "fp32",
) -> EvalResult:
    """Transcribe every utterance of ``split`` with greedy decoding and score it.

    The model is put in eval mode (its previous mode is restored afterwards) and run
    under ``torch.no_grad``.

    Args:
        model: the recogniser.
        split: the utterances; a :class:`~mpqbench.workloads.data.LibriSpeechSplit` is read
            lazily, one batch at a time.
        batch_size: clips per ``transcribe`` call.
        max_new_tokens: token cap for seq2seq decoding (``None``: the model's default).
        max_tokens_per_s: also cap each clip at ``ceil(max_tokens_per_s * seconds)``
            tokens (``None``: no duration cap); see :meth:`SpeechModel.transcribe`.
        progress: show a tqdm progress bar.
        alignment: WER alignment weighting, ``"unit"`` or ``"sclite"``
            (:mod:`mpqbench.workloads.metrics.alignment`).
        precision: compute precision of decoding (:func:`mpqbench.precision.autocast`).

    Returns:
        Per-utterance rows in split order, totals, capped count and timing.

    Raises:
        ValueError: ``batch_size`` < 1, an empty split, an unknown ``alignment``, or a
            reference that is empty after normalisation (checked before any decoding; the
            message names the utterance).
    """
    check_alignment(alignment)
    check_precision(precision, model.device)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if max_new_tokens is not None and max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if max_tokens_per_s is not None and not max_tokens_per_s > 0:
        raise ValueError(f"max_tokens_per_s must be > 0, got {max_tokens_per_s}")
    if len(split) == 0:
        raise ValueError("cannot evaluate an empty split")
    _check_references(split)

    order = _batch_order(model, split)
    scores: list[EvalRow | None] = [None] * len(split)
    audio_samples = 0
    was_training = model.model.training
    model.model.eval()
    start = time.perf_counter()
    try:
        with (
            torch.no_grad(),  # not inference_mode: see mpqbench.precision
            tqdm(total=len(split), unit="utt", desc="eval", disable=not progress) as bar,
        ):
            for first in range(0, len(order), batch_size):
                indices = order[first : first + batch_size]
                utterances = [split[i] for i in indices]
                audio_samples += sum(int(u.audio.shape[0]) for u in utterances)
                with autocast(precision, model.device):
                    transcripts = model.transcribe(
                        [u.audio for u in utterances], max_new_tokens=max_new_tokens,
                        max_tokens_per_s=max_tokens_per_s,
                    )
                if len(transcripts) != len(utterances):
                    raise RuntimeError(
                        f"{type(model).__name__}.transcribe returned {len(transcripts)} "
                        f"transcripts for {len(utterances)} clips"
                    )
                for index, utt, transcript in zip(indices, utterances, transcripts, strict=True):
                    score = score_utterance(utt.id, utt.text, transcript.text,
                                            alignment=alignment)
                    scores[index] = EvalRow(score=score, capped=bool(transcript.capped))
                bar.update(len(utterances))
        synchronize(model.device)
    finally:
        model.model.train(was_training)
    wall_s = time.perf_counter() - start

    rows = tuple(r for r in scores if r is not None)
    assert len(rows) == len(split), "every utterance is scored exactly once"
    result = EvalResult(
        rows=rows,
        totals=corpus_totals(r.score for r in rows),
        num_capped=sum(r.capped for r in rows),
        wall_s=wall_s,
        audio_s=audio_samples / SAMPLE_RATE,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        alignment=alignment,
        max_tokens_per_s=max_tokens_per_s,
    )
    logger.info(
        "WER %.2f%% over %d utterances (%d words), %d capped, %.1f s (%.2f utt/s)",
        100 * result.wer, len(rows), result.totals.n, result.num_capped, wall_s,
        result.utterances_per_s,
    )
    return result


def _check_references(split: Sequence[Utterance]) -> None:
    """Refuse references that normalise to nothing before spending time on decoding."""
    entries = getattr(split, "entries", None)
    if entries is not None:
        pairs = [(e.id, e.text) for e in entries]
    else:
        pairs = [(u.id, u.text) for u in split]
    for utt_id, text in pairs:
        if not normalize_text(text):
            raise ValueError(
                f"utterance {utt_id!r}: the reference {text!r} is empty after Whisper English "
                "normalisation; it cannot be scored"
            )


def _batch_order(model: SpeechModel, split: Sequence[Utterance]) -> list[int]:
    """Indices in decoding order: by length for CTC (less padding), split order otherwise."""
    indices = list(range(len(split)))
    if model.family != "ctc":
        return indices
    num_samples = getattr(split, "num_samples", None)
    lengths = (
        [num_samples(i) for i in indices]
        if num_samples is not None
        else [int(split[i].audio.shape[0]) for i in indices]
    )
    return sorted(indices, key=lambda i: (lengths[i], i))


__all__ = ["EvalResult", "EvalRow", "evaluate"]
