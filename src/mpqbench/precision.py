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

bf16 is fast only where the hardware multiplies bf16 natively: a CUDA device with bf16
support, or a CPU with AVX512-BF16 or AMX instructions. Elsewhere torch emulates it, and a
4-bit QAT step of whisper-tiny.en under CPU bf16 autocast took 16.8x the fp32 step on an
AVX2 machine (docs/FINDINGS.md). Suites therefore say ``"auto"``: :func:`resolve_precision`
turns it into ``bf16`` on such a device and ``fp32`` elsewhere, and a record stores the
precision it resolved to.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

#: Precision names accepted by :func:`autocast`.
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
#: A suite's or a command's request for bf16 where the device multiplies it natively and
#: fp32 elsewhere (:func:`resolve_precision`).
AUTO = "auto"
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str] | None:
    """The CPU's feature flags from ``cpuinfo``'s ``flags`` lines, or None where they are
    unknown (no such file, or no flags line in it)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    lines = [line for line in text.splitlines() if line.split(":", 1)[0].strip() == "flags"]
    if not lines:
        return None
    return {flag for line in lines for flag in line.split(":", 1)[-1].split()}


def native_bf16(device: str | torch.device) -> bool:
    """Whether ``device`` multiplies bf16 in hardware: a CUDA device that torch reports bf16
    support for, or a CPU with AVX512-BF16 or AMX (torch's own CPU probes; ``/proc/cpuinfo``
    where this torch has none)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    probes = [getattr(torch.cpu, name, None)
              for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(callable(probe) for probe in probes):
        return any(bool(probe()) for probe in probes)  # type: ignore[misc]
    return any(flag in (cpu_flags() or ()) for flag in _BF16_CPU_FLAGS)


def resolve_precision(precision: object, device: str | torch.device) -> str:
    """``precision`` for ``device``: ``"auto"`` becomes ``"bf16"`` where the device has
    native bf16 (:func:`native_bf16`) and ``"fp32"`` elsewhere; any other name is checked
    and returned.

    Raises:
        ValueError: see :func:`check_precision`.
    """
    if precision == AUTO:
        return "bf16" if native_bf16(device) else "fp32"
    return check_precision(precision, device)


def emulated_bf16(precision: str, device: str | torch.device) -> bool:
    """Whether running ``precision`` on ``device`` means bf16 that torch emulates (slow)."""
    return precision == "bf16" and not native_bf16(device)


def emulated_bf16_warning(precisions: Iterable[str], device: str | torch.device) -> str | None:
    """A warning to log when any of ``precisions`` is bf16 that ``device`` emulates, else
    None."""
    if not any(emulated_bf16(p, device) for p in precisions):
        return None
    return (f"bf16 on this {torch.device(device).type}, which has no native bf16 (AVX512-BF16 "
            "or AMX on a CPU): torch emulates it, and a QAT step can take many times the fp32 "
            "one (docs/FINDINGS.md measured 16.8x on an AVX2 CPU); precision 'auto' picks "
            "fp32 on such a device")


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


__all__ = ["AUTO", "PRECISIONS", "autocast", "check_precision", "compute_dtype", "cpu_flags",
           "emulated_bf16", "emulated_bf16_warning", "native_bf16", "resolve_precision"]
