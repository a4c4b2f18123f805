"""Run-to-run reproducible CPU training: torch's deterministic kernels inside a block.

With more than one intra-op thread, torch's CPU backward of an indexed lookup with repeated
indices (``index_put_`` with accumulation) adds the repeated rows in an order that depends
on thread timing. Whisper's decoder looks its learned positional embedding up that way (the
same positions for every row of a batch), so on 2 CPU threads two runs of the same QAT cell
gave gradients that differed in their last bits at the first step and weights, losses and
decoded text that drifted apart from there (docs/FINDINGS.md, "Run-to-run reproducibility").
Every other gradient of whisper-tiny.en was bit-identical between runs.

:func:`deterministic_kernels` turns on ``torch.use_deterministic_algorithms`` (warn-only, so
an op without a deterministic version warns instead of failing) for a block on a CPU
device, without filling uninitialised memory (a full pass over every new tensor that
reproducibility does not need), and restores the previous settings on exit. On CUDA it
changes nothing: deterministic cuBLAS needs ``CUBLAS_WORKSPACE_CONFIG`` set before the
process starts, and GPU timings would pay for slower deterministic kernels.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.utils.deterministic


@contextlib.contextmanager
def deterministic_kernels(device: str | torch.device) -> Iterator[None]:
    """Deterministic torch kernels inside the block on a CPU ``device`` (module docstring);
    on other devices a no-op. The previous settings are restored on exit."""
    if torch.device(device).type != "cpu":
        yield
        return
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = fill


__all__ = ["deterministic_kernels"]
