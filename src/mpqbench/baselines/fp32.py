"""The 32-bit reference system every compressed system is tested against.

Registered as the reference method ``fp32``: with ``budget.train_steps == 0`` it is the
model as loaded; otherwise the model fine-tuned in 32 bits by the shared loop for the
budget's steps (same train split, batch size, seed, task loss + KL to the teacher as every
method), the fair reference when the QAT data is closer to the test data than the model's
own training data (see :mod:`mpqbench.bench.cell`). No layer is quantized.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mpqbench.method import Budget, MethodResult, Target, Workload, register_method
from mpqbench.method.fixed_bits import qat_fixed_bits
from mpqbench.quant.allocation import Allocation
from mpqbench.quant.formats import Quantizer
from mpqbench.quant.qat import TrainConfig


@dataclass(frozen=True, kw_only=True)
class Fp32Config:
    """Settings of the 32-bit reference (only used when it is fine-tuned)."""

    train: TrainConfig = field(default_factory=TrainConfig)


@register_method("fp32", Fp32Config, reference=True)
def run_fp32(
    workload: Workload, target: Target | None, budget: Budget, config: Fp32Config
) -> MethodResult:
    """The model as loaded (``train_steps == 0``) or fine-tuned in 32 bits; ``target`` is
    ignored (the reference has none)."""
    allocation = Allocation(workload.name, dict.fromkeys(workload.eligible))
    if budget.train_steps == 0:
        return MethodResult(model=workload.model, allocation=allocation, stages=[])
    stage, result = qat_fixed_bits(
        workload, allocation, quantizer=Quantizer(), budget=budget, train_config=config.train,
        desc="32-bit fine-tune", stage="finetune", prepare=False,
    )
    return MethodResult(
        model=workload.model, allocation=allocation, stages=[stage],
        info={"final_loss": result.history[-1] if result.history else None},
    )


__all__ = ["Fp32Config", "run_fp32"]
