"""One-stage mixed-precision quantization (Xu et al., ICASSP 2025, arXiv 2501.03643).

Precision learning and quantized-parameter estimation in ONE training run:

1. every eligible layer becomes a weight-sharing supernet layer
   (:mod:`mpqbench.quant.supernet`): all candidate bit-widths quantize the same latent fp32
   weight, mixed by Gumbel-softmax weights of per-layer logits ``alpha``;
2. the shared QAT loop (:func:`mpqbench.quant.qat.train`) trains weights (``train.lr``) and
   logits (``arch_lr``, their own AdamW group, no weight decay, same warm-up/cosine
   schedule) jointly for ``(1 - pass2_frac) * train_steps`` steps on

       task loss + eta * KL(teacher || student) + budget term,

   with the temperature annealed from ``tau_start`` to ``tau_end`` (:func:`anneal_tau`);
3. each layer takes ``argmax alpha``; if that allocation's average bits exceed the target,
   it is **repaired** to the most probable allocation within the target: the exact
   multiple-choice knapsack (:func:`mpqbench.quant.allocator.allocate_bits`) minimising
   sum_l -log softmax(alpha_l)[b_l] subject to sum_l b_l N_l / sum_l N_l <= target. When the
   argmax already fits, it is kept unchanged (the knapsack's unconstrained optimum is the
   argmax), so the final average bits are always <= the target, exactly;
4. the supernet layers are replaced by plain fake-quantized layers at those bits (same
   weight Parameters) and, when ``pass2_frac > 0``, trained for the remaining steps with
   the bits fixed (:func:`mpqbench.quant.fixed_bits.qat_fixed_bits`).

Both training stages are parameter estimation (``kind="qat"``), so the method spends exactly
``budget.train_steps`` QAT steps and no separate search budget.

Budget term, over the eligible layers, with E = sum_l N_l E_l[bits] / sum_l N_l and
E_l[bits] = sum_i softmax(alpha_l)_i b_i (no noise, no temperature), T the target average
bits (:meth:`Target.avg_bits_for` turns a compression-ratio target into T):

- ``"penalty"`` (default): ``budget_weight * relu(E - T)^2``. One-sided: below the target
  the task loss alone decides (no push to waste bits); squared, so the push fades smoothly
  near the target and the repair absorbs the small excess that remains;
- ``"lagrangian"``: ``mu * (E - T)`` with the multiplier updated by projected dual ascent
  after each step, ``mu <- max(0, mu + dual_lr * (E - T))``: it grows while the budget is
  exceeded, whatever the scale of the task loss.

Checkpoints: pass 2 checkpoints and resumes through
:func:`~mpqbench.quant.fixed_bits.qat_fixed_bits` when the workload has a checkpoint
directory; the supernet stage does not. Its budget term (the lagrangian multiplier, the
expected-bits trace in ``info``) and its tau schedule are Python state that the loop's
checkpoint does not hold, so a resumed supernet would not end as an uninterrupted one
does; a killed cell reruns the supernet from its start.

Defaults and why: candidates {2, 4, 8} (DESIGN.md); soft mixing (the paper's
Gumbel-softmax; ``hard=True`` gives the straight-through variant); tau 1.0 -> 0.1
exponential (the paper's example); logits start at zero (every candidate equally likely,
no prior on precision); ``arch_lr`` 0.02 -- Adam moves each logit by at most about arch_lr
per step, so a few hundred steps can separate the candidates by several nats;
``budget_weight`` 10 (a 0.1-bit excess costs 0.1 loss units, against a per-bit task-loss
sensitivity well below that for most layers); ``pass2_frac`` 0.1 (a short fine-tune of the
extracted sub-network, which the soft mixture never trained alone, and of layers the repair
moved).

Measured step-budget dependence (whisper-tiny.en, embedded corpus, 20 s window, 4-bit
target, these defaults; dev split, 100 utterances): with ``train_steps`` 40 (36 supernet
steps) the logits of a layer end at most 0.65 nats apart (Adam moves a logit by about
``arch_lr`` per step), the argmax averages 2.70 bits with 27 layers at 2 bits and dev WER is
185%; with ``train_steps`` 200 they end up to 2.25 nats apart, the argmax keeps 59 layers at
4 bits and 5 at 2 (3.91 bits, no fill) and dev WER is 12.10%, against 11.46% for uniform
4-bit QAT at the same 200 steps. On this model the method needs a step budget in the
hundreds; raising ``arch_lr`` instead (0.1-0.2 at 40 steps) made it worse (348-430%).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from mpqbench.method import (
    Budget,
    MethodResult,
    StageTiming,
    Target,
    Workload,
    register_method,
)
from mpqbench.quant.accounting import layer_sizes
from mpqbench.quant.allocation import Allocation
from mpqbench.quant.allocator import allocate_bits
from mpqbench.quant.fixed_bits import qat_fixed_bits
from mpqbench.quant.formats import QuantSpec
from mpqbench.quant.qat import TrainConfig, train
from mpqbench.quant.supernet import (
    ANNEAL_KINDS,
    DEFAULT_CANDIDATES,
    ExpectedBits,
    anneal_tau,
    check_candidates,
    extract_,
    prepare_supernet_,
    sample_mixing_,
    supernet_modules,
)
from mpqbench.timing import device_label, stage_timer

log = logging.getLogger(__name__)

BUDGET_MODES: tuple[str, ...] = ("penalty", "lagrangian")


@dataclass(frozen=True, kw_only=True)
class OneStageConfig:
    """Settings of the one-stage method (defaults and reasons in the module docstring)."""

    candidates: tuple[int, ...] = field(
        default=DEFAULT_CANDIDATES, metadata={"help": "candidate bit-widths of every layer"}
    )
    hard: bool = field(default=False, metadata={"help": "straight-through hard Gumbel-softmax"})
    tau_start: float = field(default=1.0, metadata={"help": "Gumbel-softmax temperature, start"})
    tau_end: float = field(default=0.1, metadata={"help": "Gumbel-softmax temperature, end"})
    anneal: str = field(default="exponential", metadata={"help": "exponential or linear"})
    arch_lr: float = field(default=2e-2, metadata={"help": "peak learning rate of the logits"})
    budget_mode: str = field(default="penalty", metadata={"help": "penalty or lagrangian"})
    budget_weight: float = field(
        default=10.0, metadata={"help": "penalty: lambda in lambda*relu(E[bits]-target)^2"}
    )
    dual_lr: float = field(
        default=0.5, metadata={"help": "lagrangian: multiplier step per bit of excess"}
    )
    pass2_frac: float = field(
        default=0.1, metadata={"help": "share of train_steps fine-tuning with bits fixed"}
    )
    fill_tolerance: float | None = field(
        default=0.25,
        metadata={"help": "fill an argmax more than this many bits under the target (None: off)"},
    )
    quantizer: QuantSpec = field(
        default_factory=QuantSpec, metadata={"help": "granularity / scale method (no LSQ)"}
    )
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "candidates", check_candidates(self.candidates, what="one_stage.candidates")
        )
        for name in ("tau_start", "tau_end", "arch_lr"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                raise ValueError(f"one_stage.{name} must be a positive number, got {value!r}")
        for name in ("budget_weight", "dual_lr"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value >= 0 and math.isfinite(value)):
                raise ValueError(f"one_stage.{name} must be >= 0, got {value!r}")
        if self.anneal not in ANNEAL_KINDS:
            raise ValueError(f"one_stage.anneal must be one of {ANNEAL_KINDS}, got {self.anneal!r}")
        if self.budget_mode not in BUDGET_MODES:
            raise ValueError(
                f"one_stage.budget_mode must be one of {BUDGET_MODES}, got {self.budget_mode!r}"
            )
        if not isinstance(self.hard, bool):
            raise ValueError(f"one_stage.hard must be a bool, got {self.hard!r}")
        check_fill_tolerance(self.fill_tolerance, what="one_stage.fill_tolerance")
        if not (isinstance(self.pass2_frac, (int, float)) and 0.0 <= self.pass2_frac < 1.0):
            raise ValueError(f"one_stage.pass2_frac must be in [0, 1), got {self.pass2_frac!r}")
        if self.quantizer.learnable_scale:
            raise ValueError(
                "one_stage.quantizer.learnable_scale is not supported: supernet scales are "
                "derived from the weight on every forward"
            )


class BitBudget:
    """The budget term ``f(step) -> loss`` for the shared loop, and its trajectory.

    Args:
        layers: name -> supernet layer.
        sizes: name -> N_l.
        target: T, the target average bits over ``layers``.
        mode: ``"penalty"`` or ``"lagrangian"`` (see the module docstring).
        weight: the penalty's lambda.
        dual_lr: the multiplier's step size (lagrangian).
    """

    def __init__(self, layers: dict[str, Any], sizes: dict[str, int], target: float, *,
                 mode: str, weight: float, dual_lr: float) -> None:
        if mode not in BUDGET_MODES:
            raise ValueError(f"budget mode must be one of {BUDGET_MODES}, got {mode!r}")
        self.layers, self.sizes, self.target = layers, sizes, float(target)
        self.mode, self.weight, self.dual_lr = mode, float(weight), float(dual_lr)
        self.multiplier = 0.0
        self.expected: list[float] = []
        #: E[average bits] under softmax(alpha): call it for a differentiable 0-d tensor.
        self.expected_bits = ExpectedBits(layers, sizes)

    def __call__(self, step: int) -> torch.Tensor:
        e = self.expected_bits()
        excess = e - self.target
        value = float(e.detach())
        self.expected.append(value)
        if self.mode == "penalty":
            return self.weight * torch.relu(excess).square()
        term = self.multiplier * excess
        self.multiplier = max(0.0, self.multiplier + self.dual_lr * (value - self.target))
        return term


class SupernetSchedule:
    """The loop's ``on_step``: anneal tau, then draw every layer's Gumbel noise (batched).

    Args:
        layers: the supernet layers.
        total: steps of the supernet stage (tau reaches ``end`` at the last one).
        start, end, kind: see :func:`~mpqbench.quant.supernet.anneal_tau`.
    """

    def __init__(self, layers: list[Any], total: int, start: float, end: float,
                 kind: str) -> None:
        self.layers, self.total = layers, total
        self.start, self.end, self.kind = start, end, kind
        self.taus: list[float] = []

    def __call__(self, step: int) -> None:
        tau = anneal_tau(step, self.total, self.start, self.end, self.kind)
        self.taus.append(tau)
        for layer in self.layers:
            layer.tau = tau
        sample_mixing_(self.layers)


def repair_allocation(
    logits: dict[str, list[float]],
    candidates: dict[str, tuple[int, ...]],
    sizes: dict[str, int],
    target_bits: float,
) -> tuple[dict[str, int], dict[str, Any]]:
    """The most probable allocation whose average bits are <= ``target_bits``.

    Exact: minimises sum_l -log softmax(logits_l)[b_l] under the budget with
    :func:`~mpqbench.quant.allocator.allocate_bits`. When the argmax allocation fits it is
    returned unchanged.

    Args:
        logits: layer -> its logits, aligned with ``candidates[layer]`` (ascending bits).
        candidates: layer -> candidate bit-widths.
        sizes: layer -> N_l.
        target_bits: the average-bits budget.

    Returns:
        ``(bits, report)``: layer -> bits, and a JSON-ready report (argmax average bits,
        whether a repair was needed, each changed layer with its from/to bits and the
        log-probability given up, the final average bits, the solver).

    Raises:
        ValueError: the target is below the all-smallest-candidate allocation.
    """
    costs: dict[str, dict[int, float]] = {}
    argmax: dict[str, int] = {}
    for name, row in logits.items():
        logp = torch.log_softmax(torch.tensor(row, dtype=torch.float64), dim=0).tolist()
        costs[name] = {b: -lp for b, lp in zip(candidates[name], logp, strict=True)}
        argmax[name] = candidates[name][int(torch.argmax(torch.tensor(row)))]
    total = sum(sizes[n] for n in logits)
    argmax_avg = sum(argmax[n] * sizes[n] for n in logits) / total
    solved = allocate_bits({n: sizes[n] for n in logits}, costs, target_bits)
    # When the argmax fits it is the unconstrained optimum; take it as is (so that float
    # rounding in the costs can never move a layer that needs no repair).
    bits = argmax if argmax_avg <= target_bits else dict(solved.bits)
    changes = [
        {"layer": n, "from": argmax[n], "to": bits[n],
         "logp_lost": costs[n][bits[n]] - costs[n][argmax[n]]}
        for n in logits if bits[n] != argmax[n]
    ]
    report = {
        "argmax_avg_bits": argmax_avg,
        "repaired": bool(changes),
        "changes": changes,
        "avg_bits": sum(bits[n] * sizes[n] for n in logits) / total,
        "solver": solved.solver if changes else "none",
    }
    return bits, report


def check_fill_tolerance(value: Any, *, what: str) -> None:
    """Refuse a fill tolerance that is not None or a number of bits in [0, 8).

    Raises:
        ValueError: naming ``what`` and the value.
    """
    if value is not None and not (
        isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value < 8.0
    ):
        raise ValueError(f"{what} must be None or in [0, 8), got {value!r}")


def fill_allocation(
    logits: dict[str, list[float]],
    candidates: dict[str, tuple[int, ...]],
    sizes: dict[str, int],
    target_bits: float,
    tolerance: float,
    *,
    iterations: int = 40,
) -> tuple[dict[str, int], dict[str, Any]]:
    """The most probable allocation that spends the budget: average bits in
    ``[target_bits - tolerance, target_bits]`` where some allocation reaches it.

    Lagrangian relaxation of the lower bound: for a reward lambda per bit the knapsack
    (:func:`~mpqbench.quant.allocator.allocate_bits`, always <= the target) minimises
    sum_l [-log p_l(b_l) - lambda * b_l * N_l / N_mean]; the average bits of its solution
    grow with lambda, and bisection finds the smallest lambda that reaches the lower bound.
    lambda = 0 gives the argmax (returned when it already reaches the bound); a lambda
    large enough to dominate every log-probability gives the most bits the target admits
    (returned when no lambda reaches the bound).

    Returns:
        ``(bits, report)``: layer -> bits and a JSON-ready report (lambda, average bits, the
        layers raised with their from/to bits and log-probability given up).
    """
    names = list(logits)
    logp = {n: torch.log_softmax(torch.tensor(logits[n], dtype=torch.float64), 0).tolist()
            for n in names}
    mean_size = sum(sizes[n] for n in names) / len(names)
    total = sum(sizes[n] for n in names)
    low = target_bits - tolerance

    def solve(lam: float) -> tuple[dict[str, int], float]:
        costs = {n: {b: -lp - lam * b * sizes[n] / mean_size
                     for b, lp in zip(candidates[n], logp[n], strict=True)} for n in names}
        bits = dict(allocate_bits({n: sizes[n] for n in names}, costs, target_bits).bits)
        return bits, sum(bits[n] * sizes[n] for n in names) / total

    argmax = {n: candidates[n][max(range(len(logp[n])), key=logp[n].__getitem__)]
              for n in names}
    best, avg = solve(0.0)
    lam_lo, lam_hi, lam_used = 0.0, 1.0, 0.0
    if avg < low:
        # Grow lambda until the bound is reached (or the reward dominates every log-prob).
        cap = 1e6
        hi_bits, hi_avg = solve(lam_hi)
        while hi_avg < low and lam_hi < cap:
            lam_lo, lam_hi = lam_hi, lam_hi * 4
            hi_bits, hi_avg = solve(lam_hi)
        best, avg, lam_used = hi_bits, hi_avg, lam_hi
        if hi_avg >= low:
            for _ in range(iterations):
                mid = 0.5 * (lam_lo + lam_hi)
                mid_bits, mid_avg = solve(mid)
                if mid_avg >= low:
                    lam_hi, best, avg, lam_used = mid, mid_bits, mid_avg, mid
                else:
                    lam_lo = mid
    index = {n: {b: i for i, b in enumerate(candidates[n])} for n in names}
    changes = [
        {"layer": n, "from": argmax[n], "to": best[n],
         "logp_lost": logp[n][index[n][argmax[n]]] - logp[n][index[n][best[n]]]}
        for n in names if best[n] != argmax[n]
    ]
    report = {"lambda": lam_used, "lower_bound": low, "avg_bits": avg,
              "reached": avg >= low, "changes": changes}
    return best, report


def _summary(values: list[float], points: int = 21) -> dict[str, Any]:
    if not values:
        return {"first": None, "last": None, "min": None, "max": None, "samples": []}
    idx = sorted({round(i * (len(values) - 1) / (points - 1)) for i in range(points)})
    return {
        "first": values[0], "last": values[-1], "min": min(values), "max": max(values),
        "samples": [[i, values[i]] for i in idx],
    }


@register_method("one_stage", OneStageConfig)
def run_one_stage(
    workload: Workload, target: Target, budget: Budget, config: OneStageConfig
) -> MethodResult:
    """Joint supernet training, argmax (+ repair) extraction, optional pass 2.

    Raises:
        ValueError: the target average bits are below the smallest candidate, or bad layers.
    """
    speech = workload.model
    module = speech.model
    eligible = list(dict.fromkeys(workload.eligible))
    sizes = layer_sizes(module, eligible)
    n_total = sum(p.numel() for p in module.parameters())
    target_bits = target.avg_bits_for(n_total, sum(sizes.values()))
    if target_bits < config.candidates[0]:
        raise ValueError(
            f"one_stage: target of {target_bits:.3f} average bits is below the smallest "
            f"candidate ({config.candidates[0]} bits); add a smaller candidate"
        )
    steps2 = round(config.pass2_frac * budget.train_steps)
    steps1 = budget.train_steps - steps2
    device = device_label(workload.device)

    prepare_supernet_(module, eligible, config.candidates, config.quantizer, hard=config.hard,
                      tau=config.tau_start)
    layers = supernet_modules(module)  # by first path (a module at several paths once)
    layer_names = {id(m): n for n, m in layers.items()}
    by_name = {n: module.get_submodule(n) for n in eligible}
    budget_term = BitBudget(by_name, sizes, target_bits, mode=config.budget_mode,
                            weight=config.budget_weight, dual_lr=config.dual_lr)
    schedule = SupernetSchedule(list(layers.values()), steps1, config.tau_start,
                                config.tau_end, config.anneal)
    alphas = [m.alpha for m in layers.values()]
    result1 = train(
        speech, workload.train, steps=steps1, batch_size=budget.batch_size, seed=budget.seed,
        config=config.train, teacher=workload.teacher,
        extra_param_groups=[{"params": alphas, "lr": config.arch_lr}],
        extra_loss=budget_term, on_step=schedule, desc="one-stage supernet",
    )
    with stage_timer(workload.device) as watch:
        logits = {n: m.alpha.detach().cpu().tolist() for n, m in by_name.items()}
        probs = {n: m.probabilities().detach().cpu().tolist() for n, m in by_name.items()}
        cands = {n: m.candidates for n, m in by_name.items()}
        final_expected = float(budget_term.expected_bits().detach())
        bits, repair = repair_allocation(logits, cands, sizes, target_bits)
        fill = None
        if (config.fill_tolerance is not None
                and repair["avg_bits"] < target_bits - config.fill_tolerance):
            bits, fill = fill_allocation(logits, cands, sizes, target_bits,
                                         config.fill_tolerance)
            log.info("one_stage: argmax allocation %.3f bits is under target %.3f; filled "
                     "to %.3f bits (%d layers raised)", repair["avg_bits"], target_bits,
                     fill["avg_bits"], len(fill["changes"]))
        by_module = {layer_names[id(by_name[n])]: b for n, b in bits.items()}
        extract_(module, model_name=workload.name, bits=by_module)
        allocation = Allocation(workload.name, {n: bits[n] for n in eligible})
    stages = [StageTiming("supernet", result1.seconds + watch.seconds, device, steps=steps1,
                          kind="qat")]
    if repair["repaired"]:
        log.info("one_stage: argmax allocation %.3f bits > target %.3f; repaired %d layers",
                 repair["argmax_avg_bits"], target_bits, len(repair["changes"]))
    history = list(result1.history)
    if steps2 > 0:
        stage2, result2 = qat_fixed_bits(
            workload, allocation, quantizer=config.quantizer, budget=budget,
            train_config=config.train, desc="one-stage pass 2", stage="pass2", steps=steps2,
            prepare=False,
        )
        stages.append(stage2)
        history += result2.history
    info = {
        "target_avg_bits": target_bits,
        "candidates": list(config.candidates),
        "steps": {"supernet": steps1, "pass2": steps2},
        "logits": logits,
        "probabilities": probs,
        "expected_avg_bits": {**_summary(budget_term.expected), "final": final_expected},
        "tau": {"first": schedule.taus[0] if schedule.taus else None,
                "last": schedule.taus[-1] if schedule.taus else None},
        "multiplier": budget_term.multiplier if config.budget_mode == "lagrangian" else None,
        "repair": repair,
        "fill": fill,
        "final_loss": history[-1] if history else None,
    }
    return MethodResult(model=speech, allocation=allocation, stages=stages, info=info)


__all__ = [
    "BUDGET_MODES",
    "BitBudget",
    "OneStageConfig",
    "SupernetSchedule",
    "check_fill_tolerance",
    "fill_allocation",
    "repair_allocation",
    "run_one_stage",
]
