"""Value types for speech data."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Utterance:
    """One utterance: 16 kHz mono float32 audio in [-1, 1] and its reference transcript.

    Attributes:
        id: LibriSpeech-style id ``<speaker>-<chapter>-<index>``.
        audio: shape ``(num_samples,)``, dtype float32, sample rate 16,000 Hz.
        text: the reference transcript as written in ``*.trans.txt``.
        path: the audio file it was read from ("" for synthetic data).
    """

    id: str
    audio: np.ndarray = field(repr=False)
    text: str
    path: str = ""

    @property
    def duration_s(self) -> float:
        return float(self.audio.shape[0]) / 16000.0
