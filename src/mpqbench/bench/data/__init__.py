"""Speech data: the LibriSpeech-layout reader and the embedded corpus."""

from __future__ import annotations

from mpqbench.bench.data.types import Utterance

__all__ = ["Utterance"]
