"""The one record layout every mpqbench command writes.

Every record is one JSON object with ``schema`` (:data:`RECORD_SCHEMA`), ``kind``
(``"cell"`` for a benchmark cell, ``"eval"`` for ``mpqbench eval``), ``config`` (what
defines the result), ``environment`` (:func:`environment_block`: device, library versions,
git revision) and ``splits``: split name -> :func:`split_record` (WER, totals, timing and
the per-utterance rows with their alignments, from which every statistic is derived).
A cell record adds its allocation, accounting, stages and significance against the 32-bit
reference (:mod:`mpqbench.bench.cell`).

Schema history: 1 -- cell records as before (eval records kept their split at the top
level); 2 -- eval records use the cell layout, ``alignment`` recorded in every record and
split, MAPSSWE results carry ``log10_p``.
"""

from __future__ import annotations

from typing import Any

import torch

from mpqbench.bench.environment import device_info, git_revision, library_versions
from mpqbench.workloads.evaluate import EvalResult

#: Version of the record layout; bump when a field changes meaning.
RECORD_SCHEMA = 2


def environment_block(device: str) -> dict[str, Any]:
    """Where a record was made: device, library versions, git revision."""
    return {
        "device": device_info(device),
        "libraries": library_versions(),
        "git": git_revision(),
    }


def precision_block(train: str, evaluation: str, device: str) -> dict[str, Any]:
    """The compute precisions a record was made with, and on CUDA whether fp32 matmuls
    were allowed to use TF32 (``torch.backends.cuda.matmul.allow_tf32``)."""
    tf32 = bool(torch.backends.cuda.matmul.allow_tf32) if device.startswith("cuda") else None
    return {"train": train, "eval": evaluation, "cuda_matmul_tf32": tf32}


def split_record(result: EvalResult) -> dict[str, Any]:
    """A split's evaluation as stored in records (raw per-utterance rows kept)."""
    return {
        "alignment": result.alignment,
        "wer": result.wer,
        "totals": result.totals.to_dict(),
        "num_utterances": len(result.rows),
        "num_capped": result.num_capped,
        "timing": result.timing_dict(),
        "utterances": [r.to_dict() for r in result.rows],
    }


__all__ = ["RECORD_SCHEMA", "environment_block", "precision_block", "split_record"]
