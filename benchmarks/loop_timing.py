"""Helpers the step benchmarks share (not a benchmark: no ``bench_`` prefix)."""

from __future__ import annotations

import itertools
import resource
import statistics
import time
from collections.abc import Sequence
from typing import Any

from mpqbench.quant.qat import TrainConfig, train
from mpqbench.timing import synchronize


def rss_mib() -> float:
    """Peak resident memory of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def median_step_seconds(model: Any, data: Sequence[Any], teacher: Any, steps: int,
                        batch: int, precision: str = "fp32", trim: bool = False) -> float:
    """Median wall time of ``steps`` steps of the shared loop, read inside the loop
    (device-synchronised); step 0, which allocates the AdamW state, is run but excluded."""
    stamps: list[float] = []

    def stamp(step: int) -> None:
        synchronize(model.device)
        stamps.append(time.perf_counter())

    train(model, data, steps=steps + 1, batch_size=batch, seed=0,
          config=TrainConfig(lr=1e-5, warmup_frac=0.0), teacher=teacher, on_step=stamp,
          progress=False, precision=precision, trim_window=trim)
    synchronize(model.device)
    stamps.append(time.perf_counter())
    return statistics.median(b - a for a, b in itertools.pairwise(stamps[1:]))
