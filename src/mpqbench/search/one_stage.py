"""One-stage mixed-precision quantization (Xu et al., ICASSP 2025, arXiv 2501.03643).

Precision learning and quantized-parameter estimation in ONE training run:

1. every eligible layer becomes a weight-sharing supernet layer
   (:mod:`mpqbench.quant.supernet`): all candidate bit-widths quantize the same latent fp32
   weight, mixed by Gumbel-softmax weights of per-layer logits ``alpha``;
2. the shared QAT loop (:func:`mpqbench.quant.qat.train`) trains weights (``train.lr``) and
   logits (``arch_lr``; by default their own AdamW group, no weight decay, same
   warm-up/cosine schedule and gradient clip as the weights; ``arch_optimizer="separate"``
   gives them their own Adam, schedule and clip, see
   :mod:`mpqbench.method.supernet_search`) jointly for ``(1 - pass2_frac) * train_steps``
   steps on

       task loss + eta * KL(teacher || student) + budget term,

   with the temperature annealed from ``tau_start`` to ``tau_end`` (:func:`anneal_tau`);
3. each layer takes ``argmax alpha``; if that allocation's average bits exceed the target,
   it is **repaired** to the most probable allocation within the target: the exact
   multiple-choice knapsack (:func:`mpqbench.quant.allocator.allocate_bits`) minimising
   sum_l -log softmax(alpha_l)[b_l] subject to sum_l b_l N_l / sum_l N_l <= target. When the
   argmax already fits, it is kept unchanged (the knapsack's unconstrained optimum is the
   argmax), so the final average bits are always <= the target, exactly;
4. the supernet layers are replaced by plain fake-quantized layers at those bits (same
   weight Parameters, and the learned scale of a learnable-scale candidate, see
   ``learnable_scale_max_bits``) and, when ``pass2_frac > 0``, trained for the remaining
   steps with the bits fixed (:func:`mpqbench.method.fixed_bits.qat_fixed_bits`).

Pass 2 is a share of the same step budget: ``round(pass2_frac * train_steps)`` steps, the
supernet stage the rest, so the two always add up to ``train_steps``. How it is scheduled is
``pass2_schedule``:

- ``"restart"`` (the default, the behaviour before the switch existed, so that committed
  records keep their meaning): the supernet stage runs the loop's warm-up/cosine schedule
  over its own steps, down to ``train.min_lr_frac``; pass 2 then starts a fresh AdamW with
  a schedule of its own (a linear warm-up over ``pass2_warmup_frac`` of its steps -- None:
  ``train.warmup_frac`` -- back up to the peak lr, then cosine decay) on the seeded batch
  stream from its start, i.e. the supernet stage's first batches again;
- ``"continue"``: the two stages are one run: one warm-up/cosine schedule over all
  ``train_steps`` (the supernet stage takes its first part, pass 2 the tail, where the lr
  is low) and one batch stream (pass 2 reads the batches after the supernet stage's). The
  weights' optimizer is still a fresh AdamW at the switch (the extracted layers keep the
  same weight Parameters; their moment estimates restart). Measured: the restart costs the
  8-bit system 3.5-4 dev points that the same system without pass 2 does not lose
  (docs/FINDINGS.md, "The main job in one search space").

``hard_from_frac`` (shared search switch) trains the deployed kind of sub-network late in
the supernet stage itself: one candidate per layer in the forward.

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
  exceeded, whatever the scale of the task loss, and stays at 0 -- no gradient at all --
  while E <= T, so with ``logit_init="target"`` the budget constrains without dictating.

Checkpoints: pass 2 checkpoints and resumes through
:func:`~mpqbench.method.fixed_bits.qat_fixed_bits` when the workload has a checkpoint
directory; the supernet stage does not. Its budget term (the lagrangian multiplier, the
expected-bits trace in ``info``) and its tau schedule are Python state that the loop's
checkpoint does not hold, so a resumed supernet would not end as an uninterrupted one
does; a killed cell reruns the supernet from its start.

Defaults and why: candidates {2, 4, 8} (DESIGN.md); soft mixing (the paper's
Gumbel-softmax; ``hard=True`` gives the straight-through variant); tau 1.0 -> 0.1
exponential (the paper's example); logits start at zero (every candidate equally likely,
no prior on precision; ``logit_init="target"`` starts every layer with its argmax nearest
the target and E[bits] at the target); ``arch_lr`` 0.02 -- Adam moves each logit by at
most about arch_lr per step, so a few hundred steps can separate the candidates by several
nats; ``budget_weight`` 10 (a 0.1-bit excess costs 0.1 loss units, against a per-bit
task-loss sensitivity well below that for most layers); ``pass2_frac`` 0.1 (a short
fine-tune of the extracted sub-network, which the soft mixture never trained alone, and of
layers the repair moved).

Measured: the method needs a step budget in the hundreds on whisper-tiny.en to move its
logits at all (docs/FINDINGS.md, "one_stage: the step budget decides").
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from mpqbench.method import (
    Budget,
    MethodResult,
    StageTiming,
    Target,
    Workload,
    register_method,
)
from mpqbench.method.fixed_bits import qat_fixed_bits
from mpqbench.method.supernet_search import (
    BitBudget,
    SupernetSearchConfig,
    arch_training,
    fill_allocation,
    initial_logits,
    repair_allocation,
    supernet_schedule,
)
from mpqbench.quant.accounting import layer_sizes
from mpqbench.quant.allocation import Allocation
from mpqbench.quant.formats import Quantizer
from mpqbench.quant.qat import TrainConfig, train
from mpqbench.quant.supernet import extract_, prepare_supernet_, supernet_modules
from mpqbench.timing import device_label, stage_timer

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class OneStageConfig(SupernetSearchConfig):
    """Settings of the one-stage method: the shared supernet search's fields
    (:class:`~mpqbench.method.supernet_search.SupernetSearchConfig`) plus pass 2, the
    quantizer and the training loop (defaults and reasons in the module docstring)."""

    config_name: ClassVar[str] = "one_stage"

    pass2_frac: float = field(
        default=0.1, metadata={"help": "share of train_steps fine-tuning with bits fixed"}
    )
    pass2_warmup_frac: float | None = field(
        default=None,
        metadata={"help": "share of pass 2's steps warming its lr up (None: "
                          "train.warmup_frac); restart schedule only"},
    )
    pass2_schedule: Literal["restart", "continue"] = field(
        default="restart",
        metadata={"help": "restart: pass 2 re-warms its own schedule on the stream's first "
                          "batches; continue: one schedule and batch stream over both stages"},
    )
    quantizer: Quantizer = field(
        default_factory=Quantizer,
        metadata={"help": "granularity / scale method (no LSQ: see learnable_scale_max_bits)"},
    )
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (isinstance(self.pass2_frac, (int, float)) and 0.0 <= self.pass2_frac < 1.0):
            raise ValueError(f"one_stage.pass2_frac must be in [0, 1), got {self.pass2_frac!r}")
        warmup = self.pass2_warmup_frac
        if warmup is not None and not (isinstance(warmup, (int, float))
                                       and not isinstance(warmup, bool)
                                       and 0.0 <= warmup < 1.0):
            raise ValueError(
                f"one_stage.pass2_warmup_frac must be None or in [0, 1), got {warmup!r}")
        if self.pass2_schedule not in ("restart", "continue"):
            raise ValueError("one_stage.pass2_schedule must be 'restart' or 'continue', got "
                             f"{self.pass2_schedule!r}")
        if self.pass2_schedule == "continue" and warmup is not None:
            raise ValueError(
                "one_stage.pass2_warmup_frac applies to pass2_schedule='restart' only: "
                "with 'continue' pass 2 takes the tail of the one schedule")
        if self.quantizer.learnable_scale:
            raise ValueError(
                "one_stage.quantizer.learnable_scale is not supported: supernet scales are "
                "derived from the weight on every forward; learnable_scale_max_bits gives "
                "the low-bit candidates learnable scales"
            )

    def pass2_train(self) -> TrainConfig:
        """The loop's settings for pass 2: ``train`` with ``pass2_warmup_frac`` (when set)
        as its warm-up share; pass 2 runs its own warm-up/cosine schedule over its steps."""
        if self.pass2_warmup_frac is None:
            return self.train
        return dataclasses.replace(self.train, warmup_frac=float(self.pass2_warmup_frac))


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
    continued = config.pass2_schedule == "continue"
    span = budget.train_steps if continued else None
    device = device_label(workload.device)

    prepare_supernet_(module, eligible, config.candidates, config.quantizer, hard=config.hard,
                      tau=config.tau_start, init_logits=initial_logits(config, target_bits),
                      learnable_scale_max_bits=config.learnable_scale_max_bits)
    layers = supernet_modules(module)  # by first path (a module at several paths once)
    layer_names = {id(m): n for n, m in layers.items()}
    by_name = {n: module.get_submodule(n) for n in eligible}
    budget_term = BitBudget(by_name, sizes, target_bits, mode=config.budget_mode,
                            weight=config.budget_weight, dual_lr=config.dual_lr)
    schedule = supernet_schedule(config, layers.values(), steps1)
    alphas = [m.alpha for m in layers.values()]
    result1 = train(
        speech, workload.train, steps=steps1, batch_size=budget.batch_size, seed=budget.seed,
        config=config.train, teacher=workload.teacher,
        **arch_training(config, alphas),
        extra_loss=budget_term, on_step=schedule, desc="one-stage supernet",
        progress=workload.progress,
        precision=budget.precision, trim_window=budget.trim_window,
        schedule_steps=span,
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
            train_config=config.pass2_train(), desc="one-stage pass 2", stage="pass2",
            steps=steps2, prepare=False,
            stream_offset=steps1 if continued else 0, schedule_steps=span,
        )
        stages.append(stage2)
        history += result2.history
    info = {
        "target_avg_bits": target_bits,
        "candidates": list(config.candidates),
        "steps": {"supernet": steps1, "pass2": steps2},
        "pass2_schedule": config.pass2_schedule,
        "logits": logits,
        "probabilities": probs,
        "expected_avg_bits": {**_summary(budget_term.expected), "final": final_expected},
        "tau": {"first": schedule.taus[0] if schedule.taus else None,
                "last": schedule.taus[-1] if schedule.taus else None},
        "trajectory": schedule.trajectory(budget_term.expected),
        "multiplier": budget_term.multiplier if config.budget_mode == "lagrangian" else None,
        "repair": repair,
        "fill": fill,
        "final_loss": history[-1] if history else None,
    }
    return MethodResult(model=speech, allocation=allocation, stages=stages, info=info)


__all__ = ["OneStageConfig", "run_one_stage"]
