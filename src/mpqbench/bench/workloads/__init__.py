"""Speech model workloads behind one adapter interface."""

from __future__ import annotations

from mpqbench.bench.workloads.adapter import (
    LAYER_GROUPS,
    SAMPLE_RATE,
    ForwardOutput,
    ModelBatch,
    SpeechModel,
    Transcript,
)

__all__ = [
    "LAYER_GROUPS",
    "SAMPLE_RATE",
    "ForwardOutput",
    "ModelBatch",
    "SpeechModel",
    "Transcript",
]
