"""Metrics: word error rate with per-utterance alignments."""

from __future__ import annotations

from mpqbench.workloads.metrics.wer import (
    UtteranceScore,
    WerTotals,
    corpus_totals,
    corpus_wer,
    normalize_text,
    score_corpus,
    score_utterance,
)

__all__ = [
    "UtteranceScore",
    "WerTotals",
    "corpus_totals",
    "corpus_wer",
    "normalize_text",
    "score_corpus",
    "score_utterance",
]
