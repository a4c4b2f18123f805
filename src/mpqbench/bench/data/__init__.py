"""Speech data: the LibriSpeech-layout reader and the embedded corpus."""

from __future__ import annotations

from mpqbench.bench.data.audio import read_audio
from mpqbench.bench.data.embedded import EMBEDDED, embedded_corpus_root, open_split
from mpqbench.bench.data.librispeech import LibriSpeechSplit, available_splits
from mpqbench.bench.data.types import Utterance

__all__ = [
    "EMBEDDED",
    "LibriSpeechSplit",
    "Utterance",
    "available_splits",
    "embedded_corpus_root",
    "open_split",
    "read_audio",
]
