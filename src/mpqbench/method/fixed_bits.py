"""QAT with a fixed allocation: the parameter-estimation stage every method ends with."""

from __future__ import annotations

import dataclasses

from torch import nn

from mpqbench.method.interface import Budget, StageTiming, Workload
from mpqbench.quant.allocation import Allocation
from mpqbench.quant.formats import Quantizer
from mpqbench.quant.layers import fake_quant_twins, prepare_, replace_modules_
from mpqbench.quant.qat import TrainConfig, TrainResult, train
from mpqbench.timing import device_label


def prepare_low_bit_lsq_(
    module: nn.Module, allocation: Allocation, quantizer: Quantizer,
    learnable_scale_max_bits: int | None = None,
) -> nn.Module:
    """``prepare_`` with learnable (LSQ) scales on the layers at <= ``learnable_scale_max_bits``.

    Every layer the allocation quantizes gets ``quantizer`` at its bits; with
    ``learnable_scale_max_bits`` set, a layer at b <= it gets ``learnable_scale=True`` too
    (its scale initialised by ``quantizer.scale_method``; the others keep
    ``quantizer.learnable_scale``). None: exactly ``prepare_(module, allocation,
    quantizer)``.

    Raises:
        ValueError: what ``prepare_`` refuses.
    """
    if learnable_scale_max_bits is None:
        return prepare_(module, allocation, quantizer)
    allocation.check_model(module)
    specs = {name: dataclasses.replace(
                 quantizer.at(b),
                 learnable_scale=quantizer.learnable_scale or b <= learnable_scale_max_bits)
             for name, b in allocation.quantized.items()}
    replace_modules_(module, fake_quant_twins(module, specs))
    return module


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
    learnable_scale_max_bits: int | None = None,
    stream_offset: int = 0,
    schedule_steps: int | None = None,
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
        learnable_scale_max_bits: layers at b <= this get learnable (LSQ) scales
            (:func:`prepare_low_bit_lsq_`); None (default): ``quantizer`` alone decides.
        stream_offset, schedule_steps: this stage's place in a longer run (batches and lr
            schedule continue it; :func:`~mpqbench.quant.qat.train`); 0 and None (default):
            the stage is a run of its own.

    With ``workload.checkpoint_dir`` set, the loop checkpoints to ``checkpoint_dir / stage``
    every ``train_config.checkpoint_every`` steps (none when it is 0; at most one per
    ``train_config.checkpoint_min_interval_s``) and resumes from the
    newest checkpoint that passes its checksum; a resumed stage ends with the same weights,
    history and step count as an uninterrupted one.

    Returns:
        The stage timing (``kind="qat"``; ``steps`` counts the steps run before a resume
        too) and the loop's result.
    """
    if prepare:
        prepare_low_bit_lsq_(workload.model.model, allocation, quantizer,
                             learnable_scale_max_bits)
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
        stream_offset=stream_offset, schedule_steps=schedule_steps,
    )
    timing = StageTiming(stage, result.seconds, device_label(workload.device),
                         steps=result.resumed_from + result.steps, kind="qat")
    return timing, result


__all__ = ["prepare_low_bit_lsq_", "qat_fixed_bits"]
