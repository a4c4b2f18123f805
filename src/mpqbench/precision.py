"""Compute precision of training and evaluation: ``fp32``, ``bf16`` or (CUDA) ``fp16``.

Under ``bf16``/``fp16`` the model's forward runs inside ``torch.autocast``: matmuls and
convolutions in the low precision, while what autocast keeps in fp32 stays there (losses
such as cross-entropy and CTC, and every op on fp32 tensors outside its lower-precision
list). Master weights, optimizer state and the quantizers' arithmetic (scales, rounding,
the straight-through estimator, the supernet mixture) are fp32 tensors and stay fp32: a
weight's integer codes are the same whichever precision ran its forward. The matmul then
reads the fake-quantized weight rounded to the low precision.

Inference code runs under ``torch.no_grad``, not ``torch.inference_mode``: autocast keeps
its low-precision copy of a weight Parameter for the whole autocast region, but not under
inference mode (``python benchmarks/bench_decoding_kernels.py``, torch 2.13 CPU: a
51,864 x 384 linear on 16 rows under bf16 autocast took 26.9 ms a call under inference
mode, 6.4 ms under no_grad), and greedy decoding calls the same weights once per token.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

#: Precision names accepted by :func:`autocast`.
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: object, device: str | torch.device | None = None) -> str:
    """Return ``precision`` if valid (for ``device``, when given), else raise.

    Raises:
        ValueError: an unknown name, or ``fp16`` on a CPU (CPU autocast has no fp16 path
            worth using; use ``bf16``).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if device is not None and precision == "fp16" and torch.device(device).type != "cuda":
        raise ValueError("precision 'fp16' needs a CUDA device; use 'bf16' on CPU")
    return str(precision)


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype matmuls run in under ``precision`` (``torch.float32`` for ``fp32``).

    Raises:
        ValueError: an unknown name (see :func:`check_precision`).
    """
    check_precision(precision)
    return _DTYPES.get(precision, torch.float32)


@contextlib.contextmanager
def autocast(precision: str, device: str | torch.device) -> Iterator[None]:
    """``torch.autocast`` for ``precision`` on ``device``'s type; nothing for ``fp32``.

    Raises:
        ValueError: see :func:`check_precision`.
    """
    check_precision(precision, device)
    if precision == "fp32":
        yield
        return
    with torch.autocast(torch.device(device).type, dtype=_DTYPES[precision]):
        yield


__all__ = ["PRECISIONS", "autocast", "check_precision", "compute_dtype"]
