"""QAT with a fixed allocation: the parameter-estimation stage every method ends with."""

from __future__ import annotations

from mpqbench.method.interface import Budget, StageTiming, Workload
from mpqbench.quant.allocation import Allocation
from mpqbench.quant.formats import Quantizer
from mpqbench.quant.layers import prepare_
from mpqbench.quant.qat import TrainConfig, TrainResult, train
from mpqbench.timing import device_label


def qat_fixed_bits(
    workload: Workload,
    allocation: Allocation,
    *,
    quantizer: Quantizer,
    budget: Budget,
    train_config: TrainConfig,
    desc: str,
    stage: str = "qat",
    steps: int | None = None,
    prepare: bool = True,
) -> tuple[StageTiming, TrainResult]:
    """Fake-quantize ``workload.model`` per ``allocation`` and train it for the budget's steps.

    Args:
        workload: the model is modified in place (``prepare_``, then trained).
        allocation: layer -> bits (None keeps a layer 32-bit).
        quantizer: granularity / scale method / learnable scale of every layer.
        budget: ``train_steps``, ``batch_size``, ``seed`` and ``precision`` are used.
        train_config: the shared loop's settings.
        desc: progress-bar label.
        stage: the stage name in the timing.
        steps: optimizer steps when a method splits ``budget.train_steps`` over several
            stages (default: all of them).
        prepare: False when the model already holds the allocation's fake-quantized layers
            (e.g. extracted from a supernet); then ``quantizer`` is not used.

    With ``workload.checkpoint_dir`` set, the loop checkpoints to ``checkpoint_dir / stage``
    every ``train_config.checkpoint_every`` steps (none when it is 0) and resumes from the
    newest checkpoint that passes its checksum; a resumed stage ends with the same weights,
    history and step count as an uninterrupted one.

    Returns:
        The stage timing (``kind="qat"``; ``steps`` counts the steps run before a resume
        too) and the loop's result.
    """
    if prepare:
        prepare_(workload.model.model, allocation, quantizer)
    checkpoint_dir = None
    if workload.checkpoint_dir is not None:
        checkpoint_dir = workload.checkpoint_dir / stage
    result = train(
        workload.model,
        workload.train,
        steps=budget.train_steps if steps is None else steps,
        batch_size=budget.batch_size,
        seed=budget.seed,
        config=train_config,
        teacher=workload.teacher,
        checkpoint_dir=checkpoint_dir,
        desc=desc, progress=workload.progress,
        precision=budget.precision, trim_window=budget.trim_window,
    )
    timing = StageTiming(stage, result.seconds, device_label(workload.device),
                         steps=result.resumed_from + result.steps, kind="qat")
    return timing, result


__all__ = ["qat_fixed_bits"]
