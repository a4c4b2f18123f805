"""The one interface between speech models and everything else in mpqbench.

Quantization code, training loops and the evaluator talk to a model only through a
:class:`SpeechModel`. Each model family (Whisper seq2seq, CTC encoders) implements it once.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from mpqbench.workloads.data.types import Utterance

SAMPLE_RATE = 16000

#: Layer groups every adapter reports (some may be empty for a family).
#: ``blocks``: every nn.Linear inside the transformer blocks (attention q/k/v/out, feed-forward);
#: ``feature_encoder``: the CNN front end (+ its projection) of CTC models; ``pos_conv``: the
#: positional convolution; ``head``: an output projection with a weight of its own;
#: ``embeddings``: token embeddings (Whisper's, whose table is also the output projection:
#: quantizing it quantizes that projection, one tensor); ``conv``: Whisper's two front-end
#: convolutions.
LAYER_GROUPS = ("blocks", "feature_encoder", "pos_conv", "head", "embeddings", "conv")


@dataclass
class ModelBatch:
    """A collated, device-placed training/evaluation batch.

    Attributes:
        ids: utterance ids, in batch order (used to key cached teacher outputs).
        inputs: model-specific input tensors (features, masks, labels), already on device.
    """

    ids: list[str]
    inputs: dict[str, torch.Tensor]


@dataclass
class ForwardOutput:
    """What one forward pass gives the training loop.

    Attributes:
        loss: scalar task loss (CTC, or teacher-forced cross-entropy for seq2seq).
        logits: ``(N, vocab)`` output scores at the ``N`` valid positions only, utterance by
            utterance and in time order within one (``full[mask]`` of the ``(batch, time,
            vocab)`` scores); their softmax is the output distribution used for distillation.
            Padding positions are left out so that no vocabulary-sized work is spent on them.
        mask: ``(batch, time)`` bool, True at the valid (not padding) positions.
    """

    loss: torch.Tensor
    logits: torch.Tensor
    mask: torch.Tensor


@dataclass(frozen=True)
class Transcript:
    """A decoded hypothesis. ``capped`` is True when decoding stopped at the token cap."""

    text: str
    capped: bool = False


class SpeechModel(abc.ABC):
    """A speech recogniser wrapped for quantization benchmarking.

    Attributes:
        name: registry name or path the model was loaded from.
        family: ``"whisper"`` (seq2seq) or ``"ctc"``.
        model: the underlying ``nn.Module`` (quantization swaps layers inside it in place).
    """

    name: str
    family: Literal["whisper", "ctc"]
    model: nn.Module

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> SpeechModel:
        self.model.to(device)
        return self

    @abc.abstractmethod
    def make_batch(self, utterances: Sequence[Utterance], *, trim: bool = False) -> ModelBatch:
        """Collate utterances (audio + reference text) into a device-placed batch.

        ``trim``: a model that pads every clip to a fixed window (Whisper) pads this batch
        only to its longest clip plus a margin instead, so a training step skips encoder
        work on silence. A model that already pads to the batch's longest clip (CTC)
        ignores it.
        """

    @abc.abstractmethod
    def forward(self, batch: ModelBatch) -> ForwardOutput:
        """One forward pass: task loss and output logits with their validity mask."""

    @abc.abstractmethod
    def transcribe(
        self,
        audios: Sequence[np.ndarray],
        *,
        max_new_tokens: int | None = None,
        max_tokens_per_s: float | None = None,
    ) -> list[Transcript]:
        """Greedy-decode a batch of 16 kHz mono float32 clips (in eval mode, no grad).

        ``max_new_tokens`` caps a clip's emitted tokens; ``max_tokens_per_s`` caps them at
        ``ceil(max_tokens_per_s * seconds heard)``. Both are for autoregressive decoders; a
        model whose output length is fixed by its frames (CTC) ignores them."""

    @abc.abstractmethod
    def layer_groups(self) -> dict[str, list[str]]:
        """Module names (as in ``model.named_modules()``) of quantizable layers, by group.

        Keys are exactly :data:`LAYER_GROUPS`; a group a family lacks maps to ``[]``.
        """
