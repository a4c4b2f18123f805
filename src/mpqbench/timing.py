"""Wall-clock timing of compression stages, device-synchronised and device-labelled."""

from __future__ import annotations

import contextlib
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch


def device_label(device: str | torch.device) -> str:
    """A human-readable name of the device that ran the work.

    ``"cpu: <processor model> (<n> threads)"`` or ``"cuda: <GPU name>"``.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {cpu_model()} ({torch.get_num_threads()} threads)"


def cpu_model() -> str:
    """The processor model name (from /proc/cpuinfo where it exists)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def synchronize(device: str | torch.device) -> None:
    """Wait for queued device work (CUDA) so that wall-clock readings are honest."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Stopwatch:
    """Accumulated seconds of one stage."""

    seconds: float = 0.0


@contextlib.contextmanager
def stage_timer(device: str | torch.device) -> Iterator[Stopwatch]:
    """Time a block, synchronising the device before reading the clock at both ends."""
    watch = Stopwatch()
    synchronize(device)
    start = time.perf_counter()
    try:
        yield watch
    finally:
        synchronize(device)
        watch.seconds += time.perf_counter() - start


__all__ = ["Stopwatch", "cpu_model", "device_label", "stage_timer", "synchronize"]
