"""Speech data: the LibriSpeech-layout reader and the embedded corpus."""

from __future__ import annotations

from mpqbench.workloads.data.audio import read_audio
from mpqbench.workloads.data.embedded import EMBEDDED, embedded_corpus_root, open_split
from mpqbench.workloads.data.librispeech import LibriSpeechSplit, available_splits
from mpqbench.workloads.data.types import Utterance

__all__ = [
    "EMBEDDED",
    "LibriSpeechSplit",
    "Utterance",
    "available_splits",
    "embedded_corpus_root",
    "open_split",
    "read_audio",
]
