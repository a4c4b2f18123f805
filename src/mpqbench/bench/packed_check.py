"""A cell's deployable artefact: export the quantized model packed, measure the file, reload
it and check it decodes what the fake-quant model decodes.

:func:`export_and_check` writes the model with :func:`mpqbench.quant.export.save_packed`
(bit-packed codes, scales, the 32-bit rest; the tied embedding/projection once), compares
the file's size with the accounting's ``size_packed_bytes``, loads the file onto a fresh
32-bit skeleton of the same model (:func:`mpqbench.quant.export.load_packed`) and greedy-
decodes a fixed seeded sample of utterances with both models, one batch each, in the same
precision (the fake-quant model with its weights frozen in that precision's dtype, as
evaluation runs it). The packed layers reproduce the fake-quant weights exactly, so the
transcripts must be identical; the record says how many were.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from mpqbench.precision import autocast, compute_dtype
from mpqbench.quant.accounting import Accounting
from mpqbench.quant.allocation import Allocation
from mpqbench.quant.export import load_packed, save_packed
from mpqbench.quant.layers import frozen_quantized_weights
from mpqbench.workloads.adapter import SpeechModel
from mpqbench.workloads.data.types import Utterance

#: Utterances decoded by both the fake-quant and the reloaded packed model.
DEFAULT_CHECK_UTTERANCES = 8


def _transcribe(model: SpeechModel, utterances: Sequence[Utterance], precision: str,
                **decoding: Any) -> list[str]:
    with torch.no_grad(), autocast(precision, model.device):
        return [t.text for t in model.transcribe([u.audio for u in utterances], **decoding)]


def export_and_check(
    model: SpeechModel,
    allocation: Allocation,
    accounting: Accounting,
    *,
    skeleton: Callable[[], SpeechModel],
    utterances: Sequence[Utterance],
    precision: str = "fp32",
    path: Path | None = None,
    max_new_tokens: int | None = None,
    max_tokens_per_s: float | None = None,
) -> dict[str, Any]:
    """Export ``model`` packed, measure the file, reload it and compare transcripts.

    Args:
        model: the quantized (fake-quant) model; left unchanged.
        allocation: its allocation.
        accounting: :func:`~mpqbench.quant.accounting.account` of the model (the size the
            file is compared with).
        skeleton: builds a fresh 32-bit model of the same architecture (and window).
        utterances: decoded by both models, as one batch.
        precision: decoding precision of both (:mod:`mpqbench.precision`).
        path: where the file is kept; None writes it to a temporary directory and deletes
            it after the check.
        max_new_tokens, max_tokens_per_s: decoding caps, as in evaluation.

    Returns:
        JSON-ready: ``file`` (the kept path or None), ``file_bytes``, ``header_bytes``,
        ``buffer_bytes``, ``accounted_bytes``, ``file_over_accounted`` (ratio), and
        ``reload`` = ``{"utterances", "identical", "ids", "precision"}``, and ``seconds``.
    """
    start = time.perf_counter()
    decoding = {"max_new_tokens": max_new_tokens, "max_tokens_per_s": max_tokens_per_s}
    with tempfile.TemporaryDirectory() as tmp:
        target = path if path is not None else Path(tmp) / "model.safetensors"
        target.parent.mkdir(parents=True, exist_ok=True)
        info = save_packed(model, allocation, target)
        reloaded = load_packed(skeleton(), target)
        with frozen_quantized_weights(model.model, compute_dtype(precision)):
            expected = _transcribe(model, utterances, precision, **decoding)
        got = _transcribe(reloaded, utterances, precision, **decoding)
    accounted = int(accounting.size_packed_bytes.value)
    return {
        "file": str(path) if path is not None else None,
        "file_bytes": info.file_bytes,
        "header_bytes": info.header_bytes,
        "buffer_bytes": info.buffer_bytes,
        "accounted_bytes": accounted,
        "file_over_accounted": info.file_bytes / accounted,
        "reload": {
            "utterances": len(utterances),
            "identical": sum(a == b for a, b in zip(expected, got, strict=True)),
            "ids": [u.id for u in utterances],
            "precision": precision,
        },
        "seconds": time.perf_counter() - start,
    }


__all__ = ["DEFAULT_CHECK_UTTERANCES", "export_and_check"]
