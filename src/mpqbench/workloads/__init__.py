"""The ground floor: speech-model and data interfaces, the models and data readers behind
them, and evaluation (greedy decoding + WER). Imports nothing else of mpqbench except the
root utilities (``_atomic``, ``timing``, ``errors``, ``precision``)."""

from __future__ import annotations

from mpqbench.workloads.adapter import (
    LAYER_GROUPS,
    SAMPLE_RATE,
    ForwardOutput,
    ModelBatch,
    SpeechModel,
    Transcript,
)
from mpqbench.workloads.data.types import Utterance

__all__ = [
    "LAYER_GROUPS",
    "SAMPLE_RATE",
    "ForwardOutput",
    "ModelBatch",
    "SpeechModel",
    "Transcript",
    "Utterance",
]
