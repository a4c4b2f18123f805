"""Uniform-precision QAT: every eligible layer at one bit-width, trained by the shared loop."""

from __future__ import annotations

from dataclasses import dataclass, field

from mpqbench.method import (
    Budget,
    MethodResult,
    Target,
    Workload,
    register_method,
)
from mpqbench.method.fixed_bits import qat_fixed_bits
from mpqbench.quant.accounting import layer_sizes
from mpqbench.quant.allocation import Allocation
from mpqbench.quant.formats import Quantizer, check_bits
from mpqbench.quant.qat import TrainConfig


@dataclass(frozen=True, kw_only=True)
class UniformConfig:
    """Settings of the uniform baseline.

    Attributes:
        bits: the bit-width of every eligible layer; None takes the target's average bits
            rounded to the nearest integer (the "nearest bits" uniform system).
        quantizer: granularity / scale method / learnable scale.
        train: settings of the shared QAT loop.
    """

    bits: int | None = field(default=None, metadata={"help": "bits everywhere (None: target)"})
    quantizer: Quantizer = field(default_factory=Quantizer)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.bits is not None:
            check_bits(self.bits, what="uniform.bits")


def uniform_bits(workload: Workload, target: Target, config: UniformConfig) -> int:
    """The bit-width the uniform system uses for ``target``."""
    if config.bits is not None:
        return config.bits
    sizes = layer_sizes(workload.model.model, workload.eligible)
    n_total = sum(p.numel() for p in workload.model.model.parameters())
    bits = round(target.avg_bits_for(n_total, sum(sizes.values())))
    return check_bits(min(max(bits, 1), 8), what="uniform bits from the target")


@register_method("uniform", UniformConfig)
def run_uniform(
    workload: Workload, target: Target, budget: Budget, config: UniformConfig
) -> MethodResult:
    """QAT at one bit-width on all eligible layers for ``budget.train_steps`` steps."""
    bits = uniform_bits(workload, target, config)
    allocation = Allocation(workload.name, dict.fromkeys(workload.eligible, bits))
    stage, result = qat_fixed_bits(
        workload, allocation, quantizer=config.quantizer, budget=budget,
        train_config=config.train, desc=f"uniform {bits}-bit QAT",
    )
    return MethodResult(
        model=workload.model,
        allocation=allocation,
        stages=[stage],
        info={"bits": bits, "final_loss": result.history[-1] if result.history else None},
    )


__all__ = ["UniformConfig", "run_uniform", "uniform_bits"]
