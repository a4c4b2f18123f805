"""Two-stage mixed precision: learn per-layer precision first, then QAT with bits fixed.

Stage 1, ``"precision"`` (``kind="search"``: precision learning, spending
``budget.search_budget``, reported beside the QAT budget), gives every eligible layer l a
cost c_l(b) for each candidate b; the exact allocator (:func:`mpqbench.quant.allocator.
allocate_bits`, multiple-choice knapsack DP or ILP) then picks the minimum-cost allocation
whose average bits (weighted by layer size) meet the target. Three stage-1 choices:

- ``"dnas"`` -- the one-stage method's weight-sharing supernet
  (:mod:`mpqbench.quant.supernet`) with the model's weights **frozen**: only the
  architecture logits alpha_l learn, for ``search_budget`` optimizer steps of the shared
  loop on the one-stage method's loss (task loss + eta * KL to the 32-bit teacher + its
  bit-budget term, :class:`mpqbench.method.supernet_search.BitBudget`: penalty
  ``budget_weight * relu(E[avg bits] - target)^2`` or a Lagrangian), with the Gumbel-softmax
  temperature annealed from ``tau_start`` to ``tau_end`` (and the shared search's
  switches: ``logit_init``, ``arch_optimizer``, ``hard_from_frac``,
  ``learnable_scale_max_bits``, see :mod:`mpqbench.method.supernet_search`; with the
  last, the low-bit candidates' scales learn while the weights stay frozen, and are
  dropped with the supernet). The DNAS defaults are the
  one-stage defaults, so the two searches differ only in the frozen weights (and in
  ``search_budget`` steps instead of ``train_steps``). Cost c_l(b) = -log softmax(alpha_l)_b. With
  independent per-layer categoricals, sum_l c_l(b_l) is the negative log-probability of the
  whole allocation, so the allocator returns the *most probable* allocation the learned
  distribution gives within the target -- the argmax when that already meets it (the same
  rule as the one-stage method's repair). When that allocation falls more than
  ``fill_tolerance`` bits under the target it is filled to within the tolerance by the
  one-stage method's rule (:func:`mpqbench.method.supernet_search.fill_allocation`: the most
  probable allocation that spends the budget). Why: at a 4-bit target on whisper-tiny.en the
  penalty's early push toward 2 bits left the unfilled knapsack at 2.30 average bits.
- ``"hessian"`` -- HAWQ-V2: Omega_l(b) = Tr(H_l) / N_l * ||Q_b(W_l) - W_l||^2 with Tr(H_l)
  from Hutchinson's estimator on train batches through the 32-bit model;
  ``search_budget`` = Hessian-vector products (one Rademacher probe each, ``probes_per_batch``
  per batch). See :mod:`mpqbench.baselines.sensitivity`.
- ``"kl"`` -- per-layer output KL: quantize one layer at a time to each candidate (others
  32-bit) and measure KL(p_fp32 || p_quantized) on dev-subset batches; ``search_budget`` =
  calibration batches of ``budget.batch_size`` dev utterances, capped at one pass over the
  dev subset (the probe is deterministic, so repeating an utterance adds nothing).

Stage 2, ``"qat"``: :func:`mpqbench.method.fixed_bits.qat_fixed_bits` for
``budget.train_steps`` steps with the allocation fixed -- exactly the uniform baseline's
loop, so the methods differ only in their allocation (with ``learnable_scale_max_bits``
set, whatever ``stage1``, the layers at b <= it learn LSQ scales, initialised by the
quantizer's scale method, as one_stage's extracted low-bit layers do).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch.nn.utils import parametrize

from mpqbench.baselines.sensitivity import (
    HVP_METHODS,
    hawq_costs,
    hutchinson_traces,
    kl_sensitivities,
)
from mpqbench.method import Budget, MethodResult, StageTiming, Target, Workload, register_method
from mpqbench.method.fixed_bits import qat_fixed_bits
from mpqbench.method.supernet_search import (
    BitBudget,
    SupernetSearchConfig,
    arch_training,
    fill_allocation,
    initial_logits,
    supernet_schedule,
)
from mpqbench.quant.accounting import layer_sizes
from mpqbench.quant.allocation import Allocation
from mpqbench.quant.allocator import SOLVERS, allocate_bits
from mpqbench.quant.formats import Quantizer
from mpqbench.quant.layers import replace_modules_
from mpqbench.quant.qat import TrainConfig, batch_indices, train
from mpqbench.quant.supernet import (
    expected_average_bits,
    prepare_supernet_,
    supernet_modules,
)
from mpqbench.timing import device_label, stage_timer

logger = logging.getLogger(__name__)

STAGE1_CHOICES: tuple[str, ...] = ("dnas", "hessian", "kl")


@dataclass(frozen=True, kw_only=True)
class TwoStageConfig(SupernetSearchConfig):
    """Settings of the two-stage baseline (see the module docstring for each stage).

    Defaults: stage 1 is ``"dnas"``, the same supernet precision learning as the one-stage
    method with the weights frozen -- the two-stage system of the paper (DESIGN.md
    section 1). The DNAS fields, their defaults and validation are inherited from
    :class:`mpqbench.method.supernet_search.SupernetSearchConfig`, which
    :class:`mpqbench.search.one_stage.OneStageConfig` extends too (candidates {2, 4, 8},
    soft mixing, tau 1.0 -> 0.1 exponential, arch_lr 0.02, penalty budget with weight 10),
    so a comparison changes only what it means to change. Hessian: one probe per batch (more
    distinct batches per HVP spent) and finite-difference HVPs (about 2 gradients each;
    why they are the default: docs/FINDINGS.md, "two_stage hessian").
    """

    config_name: ClassVar[str] = "two_stage"

    stage1: Literal["dnas", "hessian", "kl"] = field(
        default="dnas", metadata={"help": "precision learning: dnas, hessian or kl"})
    solver: str = field(
        default="auto", metadata={"help": "allocator: auto, dp (knapsack DP) or ilp"})
    # hessian
    probes_per_batch: int = field(
        default=1, metadata={"help": "hessian: Rademacher probes per data batch"})
    hvp: str = field(default="finite_difference", metadata={
        "help": "hessian: Hessian-vector products by autograd, finite_difference or auto"})
    fd_step: float = field(default=1e-3, metadata={
        "help": "hessian: finite-difference step relative to the weights' rms"})
    # both stages
    quantizer: Quantizer = field(default_factory=Quantizer)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stage1 not in STAGE1_CHOICES:
            raise ValueError(
                f"two_stage.stage1 must be one of {STAGE1_CHOICES}, got {self.stage1!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"two_stage.solver must be one of {SOLVERS}, got {self.solver!r}")
        if self.hvp not in HVP_METHODS:
            raise ValueError(f"two_stage.hvp must be one of {HVP_METHODS}, got {self.hvp!r}")
        if not (self.fd_step > 0 and math.isfinite(self.fd_step)):
            raise ValueError(f"two_stage.fd_step must be a positive number, got {self.fd_step!r}")
        if self.probes_per_batch < 1:
            raise ValueError(
                f"two_stage.probes_per_batch must be >= 1, got {self.probes_per_batch}")


@dataclass
class Stage1:
    """What stage 1 produced: costs per layer and candidate, and what it spent."""

    costs: dict[str, dict[int, float]]
    steps: int = 0
    evaluations: int = 0
    info: dict[str, Any] = field(default_factory=dict)


def target_bits_for(workload: Workload, target: Target) -> float:
    """The average bits over the eligible layers that ``target`` asks for."""
    sizes = layer_sizes(workload.model.model, workload.eligible)
    n_total = sum(p.numel() for p in workload.model.model.parameters())
    return target.avg_bits_for(n_total, sum(sizes.values()))


def _train_batch(workload: Workload, budget: Budget, index: int) -> Any:
    idx = batch_indices(len(workload.train), budget.batch_size, index, budget.seed)
    return workload.model.make_batch([workload.train[i] for i in idx], trim=budget.trim_window)


def hessian_stage(workload: Workload, budget: Budget, config: TwoStageConfig) -> Stage1:
    """HAWQ-V2 costs from ``budget.search_budget`` Hutchinson HVPs on train batches."""
    module = workload.model.model
    for name in workload.eligible:
        if parametrize.is_parametrized(module.get_submodule(name)):
            raise ValueError(
                f"two_stage stage1 'hessian': layer {name!r} has a parametrized weight "
                "(weight norm); Hutchinson traces need a plain weight Parameter")
    weights = {n: module.get_submodule(n).weight for n in workload.eligible}
    flags = {p: p.requires_grad for p in module.parameters()}
    was_training = module.training
    try:
        for p in module.parameters():
            p.requires_grad_(False)
        for w in weights.values():
            w.requires_grad_(True)
        module.eval()

        # Always fp32, whatever budget.precision: a finite-difference HVP subtracts two
        # gradients a step h apart, and bf16 rounding (2^-8 relative) would swamp it.
        def loss_fn(index: int) -> torch.Tensor:
            return workload.model.forward(_train_batch(workload, budget, index)).loss

        est = hutchinson_traces(
            loss_fn, weights, n_hvp=budget.search_budget,
            probes_per_batch=config.probes_per_batch, seed=budget.seed, method=config.hvp,
            fd_step=config.fd_step, progress=workload.progress,
        )
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
        module.train(was_training)
    costs = hawq_costs(est.traces, weights, config.candidates, config.quantizer)
    return Stage1(costs, evaluations=est.hvps, info={"hutchinson": est.to_dict()})


def kl_stage(workload: Workload, budget: Budget, config: TwoStageConfig) -> Stage1:
    """Per-layer KL costs on up to ``budget.search_budget`` dev batches (one dev pass)."""
    n_dev = len(workload.dev)
    if n_dev == 0:
        raise ValueError("two_stage stage1 'kl' needs dev utterances (workload.dev is empty)")
    per_pass = math.ceil(n_dev / budget.batch_size)
    n_batches = min(budget.search_budget, per_pass)
    if n_batches < budget.search_budget:
        logger.info("two_stage kl: search_budget %d capped at %d batches (one pass over %d "
                    "dev utterances)", budget.search_budget, n_batches, n_dev)
    order = batch_indices(n_dev, n_dev, 0, budget.seed)
    batches = [
        workload.model.make_batch(
            [workload.dev[i] for i in order[k * budget.batch_size:(k + 1) * budget.batch_size]])
        for k in range(n_batches)
    ]
    costs, evaluations = kl_sensitivities(
        workload.model, workload.eligible, config.candidates, batches, config.quantizer,
        progress=workload.progress, precision=budget.precision,
    )
    return Stage1(costs, evaluations=evaluations, info={"calibration_batches": n_batches})


def dnas_stage(
    workload: Workload, budget: Budget, config: TwoStageConfig, target_bits: float
) -> Stage1:
    """Frozen-weight supernet search: train only the logits for ``search_budget`` steps."""
    module = workload.model.model
    names = list(workload.eligible)
    sizes = layer_sizes(module, names)
    # every module by path, to put back whatever prepare_supernet_ swaps: the eligible
    # layers and any linear tied to an eligible embedding (Whisper's proj_out)
    originals = dict(module.named_modules())
    flags = {p: p.requires_grad for p in module.parameters()}
    was_training = module.training
    steps = budget.search_budget
    spec = dataclasses.replace(config.quantizer, learnable_scale=False)
    try:
        for p in module.parameters():
            p.requires_grad_(False)
        prepare_supernet_(module, names, config.candidates, spec, hard=config.hard,
                          tau=config.tau_start,
                          init_logits=initial_logits(config, target_bits),
                          learnable_scale_max_bits=config.learnable_scale_max_bits)
        layers = {n: module.get_submodule(n) for n in names}
        alphas = list({id(m.alpha): m.alpha for m in layers.values()}.values())
        budget_term = BitBudget(layers, sizes, target_bits, mode=config.budget_mode,
                                weight=config.budget_weight, dual_lr=config.dual_lr)

        # tau (and hard_from_frac) for every supernet layer; each draws at its forward
        on_step = supernet_schedule(config, supernet_modules(module).values(), steps,
                                    sample=False)
        result = train(
            workload.model, workload.train, steps=steps, batch_size=budget.batch_size,
            seed=budget.seed, config=config.train, teacher=workload.teacher,
            **arch_training(config, alphas),
            extra_loss=budget_term, on_step=on_step, desc="two-stage DNAS (frozen weights)",
            progress=workload.progress,
            precision=budget.precision, trim_window=budget.trim_window,
        )
        with torch.no_grad():
            logp = {n: torch.log_softmax(m.alpha.detach().double(), -1).cpu()
                    for n, m in layers.items()}
            expected = float(expected_average_bits(layers, sizes))
    finally:
        swapped = {n: m for n, m in module.named_modules()
                   if n in originals and originals[n] is not m}
        replace_modules_(module, {n: originals[n] for n in swapped})
        for p, flag in flags.items():
            p.requires_grad_(flag)
        module.train(was_training)
    cands = config.candidates
    costs = {n: {b: -float(lp[i]) for i, b in enumerate(cands)} for n, lp in logp.items()}
    info = {
        "probabilities": {n: [float(x) for x in lp.exp()] for n, lp in logp.items()},
        "expected_avg_bits": expected,
        "expected_avg_bits_first": budget_term.expected[0] if budget_term.expected else None,
        "trajectory": on_step.trajectory(budget_term.expected),
        "final_loss": result.history[-1] if result.history else None,
    }
    return Stage1(costs, steps=result.steps, info=info)


@register_method("two_stage", TwoStageConfig)
def run_two_stage(
    workload: Workload, target: Target, budget: Budget, config: TwoStageConfig
) -> MethodResult:
    """Stage 1 (precision, ``search_budget``), exact allocation, stage 2 QAT (``train_steps``).

    Raises:
        ValueError: ``budget.search_budget`` is 0 (stage 1 has nothing to spend), the target
            is below the all-smallest-candidate allocation, or a stage-specific input is
            missing.
    """
    if budget.search_budget < 1:
        raise ValueError(
            f"two_stage (stage1={config.stage1!r}) needs budget.search_budget >= 1: "
            f"{'optimizer steps' if config.stage1 == 'dnas' else 'calibration work'} of "
            "stage 1"
        )
    target_bits = target_bits_for(workload, target)
    sizes = layer_sizes(workload.model.model, workload.eligible)
    with stage_timer(workload.device) as watch:
        if config.stage1 == "dnas":
            stage1 = dnas_stage(workload, budget, config, target_bits)
        elif config.stage1 == "hessian":
            stage1 = hessian_stage(workload, budget, config)
        else:
            stage1 = kl_stage(workload, budget, config)
        solution = allocate_bits(sizes, stage1.costs, target_bits, solver=config.solver)
        bits = dict(solution.bits)
        fill = None
        if (config.stage1 == "dnas" and config.fill_tolerance is not None
                and solution.avg_bits < target_bits - config.fill_tolerance):
            logits = {n: [-stage1.costs[n][b] for b in config.candidates] for n in sizes}
            cands = {n: config.candidates for n in sizes}
            bits, fill = fill_allocation(logits, cands, sizes, target_bits,
                                         config.fill_tolerance)
            logger.info("two_stage dnas: allocation %.3f bits is under target %.3f; filled "
                        "to %.3f bits (%d layers raised)", solution.avg_bits, target_bits,
                        fill["avg_bits"], len(fill["changes"]))
    allocation = Allocation(workload.name, {n: bits[n] for n in workload.eligible})
    precision = StageTiming(
        "precision", watch.seconds, device_label(workload.device),
        steps=stage1.steps, evaluations=stage1.evaluations, kind="search",
    )
    qat, result = qat_fixed_bits(
        workload, allocation, quantizer=config.quantizer, budget=budget,
        train_config=config.train, desc=f"two-stage ({config.stage1}) QAT",
        learnable_scale_max_bits=config.learnable_scale_max_bits,
    )
    info = {
        "stage1": config.stage1,
        "target_avg_bits": target_bits,
        "costs": {n: {str(b): c for b, c in cs.items()} for n, cs in stage1.costs.items()},
        "allocator": {k: v for k, v in solution.to_dict().items() if k != "bits"},
        "fill": fill,
        "stage1_info": stage1.info,
        "final_loss": result.history[-1] if result.history else None,
    }
    return MethodResult(model=workload.model, allocation=allocation,
                        stages=[precision, qat], info=info)


__all__ = [
    "STAGE1_CHOICES",
    "Stage1",
    "TwoStageConfig",
    "dnas_stage",
    "hessian_stage",
    "kl_stage",
    "run_two_stage",
    "target_bits_for",
]
