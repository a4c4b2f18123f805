"""The supernet precision search that one_stage and two_stage-dnas share.

:class:`SupernetSearchConfig` holds the search's settings (candidates, Gumbel-softmax
temperature schedule, logit learning rate, the bit-budget term, the fill rule) with their
validation, once: :class:`mpqbench.search.one_stage.OneStageConfig` and
:class:`mpqbench.baselines.two_stage.TwoStageConfig` extend it, so a comparison of the two
methods changes only what it means to change. The pieces of the search run by both:

- :class:`BitBudget`, the budget term ``f(step) -> loss``: ``"penalty"``
  ``budget_weight * relu(E - T)^2`` or ``"lagrangian"`` ``mu * (E - T)`` with projected dual
  ascent on mu, where E is the size-weighted expected average bits under softmax(alpha);
- :class:`SupernetSchedule`, the loop's ``on_step``: anneal tau, draw the Gumbel noise;
- :func:`repair_allocation`, the most probable allocation within the target (exact
  knapsack), and :func:`fill_allocation`, the most probable one that spends the budget to
  within ``fill_tolerance`` bits;
- :func:`initial_logits` (``logit_init``) and :func:`arch_training` (``arch_optimizer``),
  how the logits start and how the shared loop steps them.

Switches (issue 15; each default keeps the search as it was before the switch existed):

- ``logit_init``: ``"zero"`` (every candidate equally likely: for {2, 4, 8} E[bits] starts
  at 4.67 whatever the target) or ``"target"`` (:func:`target_init_logits`: the most
  likely candidate is the one nearest the target and E[bits] equals the target, so a
  budget at the target starts satisfied and the task decides which layers move);
  ``target_init_position`` f places that candidate's probability in the interval (lo, hi)
  that keeps E[bits] at the target and it the argmax: lo + f (hi - lo) (default 0.5: 0.75
  for {2, 4, 8} at 4 bits; f = 0.9 gives 0.95), so a larger f starts the mixture nearer a
  one-hot network at whatever target;
- ``arch_optimizer``: ``"joint"`` (the logits are an extra AdamW group of the weights'
  optimizer: the weights' warm-up/cosine schedule, which decays to zero as tau is lowest,
  and one gradient-norm clip over weights and logits together, so the logits' step depends
  on the weights' gradient norm) or ``"separate"`` (their own Adam at ``arch_lr``, clipped
  to ``arch_clip`` alone, on ``arch_schedule``: ``"constant"`` or ``"warmup_cosine"``
  from 0 to ``arch_lr`` over ``arch_warmup_frac`` of the steps, then down to
  ``arch_min_lr_frac * arch_lr``, never to zero);
- ``hard_from_frac``: None (the mixing is soft, or hard throughout with ``hard=True``) or
  a share f in [0, 1] of the supernet stage's steps: from step ``round(f * steps)`` on the
  Gumbel-softmax mixing is hard straight-through (the forward uses exactly one candidate,
  the deployed kind of sub-network, with the soft gradient to the logits), soft before;
  f = 1 never switches, f = 0 is hard throughout. ``hard=True`` stays hard throughout
  whatever f (:class:`SupernetSchedule` switches the layers' ``hard`` at that step);
- ``learnable_scale_max_bits``: None (every candidate's scale derived from the weight on
  every forward) or m: candidates with b <= m learn an LSQ scale (per output channel under
  ``per_channel``), initialised by the quantizer's scale method; an extracted layer at
  such bits keeps the learned scale (:mod:`mpqbench.quant.supernet`). In two_stage the
  DNAS candidates learn their scales while the weights stay frozen, and stage 2 trains
  layers at b <= m with learnable scales too.

The supernet stage's trajectory (:meth:`SupernetSchedule.trajectory`, in each method's
info): at most :data:`TRAJECTORY_POINTS` steps, first and last included, with tau,
E[average bits] (the budget term's, at that step) and the logit spread (max - min of a
layer's logits: the largest over layers and the mean), for plots of the search over steps.

The budget term is size-weighted (E weighs each layer by its N_l). ``"lagrangian"`` is
a constraint that does not dictate: the multiplier is projected onto mu >= 0 after every
dual step, so while E <= T it stays at 0 and the term, mu * (E - T), has zero gradient --
the logits move only for the task; above T, mu grows until the task's gain from more bits
no longer pays for them. ``"penalty"`` is zero below T too, but any excess is pushed back
by a gradient that Adam turns into a near-full step of every layer, whatever its size or
task gain (issue 15's diagnosis with ``logit_init="zero"``). The temperature schedule is
relative to the step budget: tau goes from ``tau_start`` at the first step to ``tau_end``
at the last, whatever their number.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from mpqbench.quant.allocator import allocate_bits
from mpqbench.quant.qat import SeparateGroup, lr_factor
from mpqbench.quant.supernet import (
    ANNEAL_KINDS,
    DEFAULT_CANDIDATES,
    ExpectedBits,
    anneal_tau,
    check_candidates,
    check_learnable_scale_max_bits,
    sample_mixing_,
)

log = logging.getLogger(__name__)

BUDGET_MODES: tuple[str, ...] = ("penalty", "lagrangian")
#: How the logits start (:func:`initial_logits`).
LOGIT_INITS: tuple[str, ...] = ("zero", "target")
#: How the shared loop steps the logits (:func:`arch_training`).
ARCH_OPTIMIZERS: tuple[str, ...] = ("joint", "separate")
#: The logits' learning-rate schedules under ``arch_optimizer="separate"``.
ARCH_SCHEDULES: tuple[str, ...] = ("constant", "warmup_cosine")
#: Most steps :meth:`SupernetSchedule.trajectory` records (first and last included).
TRAJECTORY_POINTS = 200


@dataclass(frozen=True, kw_only=True)
class SupernetSearchConfig:
    """Settings of the supernet precision search (shared by one_stage and two_stage-dnas).

    Subclasses set :attr:`config_name`, the prefix of their validation messages.
    """

    config_name: ClassVar[str] = "supernet"

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
    fill_tolerance: float | None = field(
        default=0.25,
        metadata={"help": "fill an allocation more than this many bits under the target "
                          "(None: off)"},
    )
    logit_init: str = field(
        default="zero",
        metadata={"help": "zero (uniform) or target (argmax nearest the target, "
                          "E[bits] = target)"},
    )
    target_init_position: float | None = field(
        default=None,
        metadata={"help": "logit_init=target: where in its feasible interval (lo, hi) the "
                          "nearest candidate's probability lies, lo + f*(hi - lo), f in "
                          "(0, 1) (None: 0.5, the middle)"},
    )
    arch_optimizer: str = field(
        default="joint",
        metadata={"help": "joint (an AdamW group of the weights' optimizer, their schedule "
                          "and clip) or separate (own Adam, schedule and clip)"},
    )
    arch_schedule: str = field(
        default="constant",
        metadata={"help": "separate: the logits' lr schedule, constant or warmup_cosine"},
    )
    arch_warmup_frac: float = field(
        default=0.1, metadata={"help": "separate, warmup_cosine: share of steps warming up"}
    )
    arch_min_lr_frac: float = field(
        default=0.1,
        metadata={"help": "separate, warmup_cosine: final lr as a share of arch_lr (> 0)"},
    )
    arch_clip: float = field(
        default=1.0, metadata={"help": "separate: max gradient norm of the logits (0: off)"}
    )
    hard_from_frac: float | None = field(
        default=None,
        metadata={"help": "hard straight-through mixing from this share of the supernet "
                          "steps on (None: never; hard=True: throughout)"},
    )
    learnable_scale_max_bits: int | None = field(
        default=None,
        metadata={"help": "candidates with at most this many bits learn an LSQ scale "
                          "(None: off)"},
    )

    def __post_init__(self) -> None:
        what = self.config_name
        object.__setattr__(
            self, "candidates", check_candidates(self.candidates, what=f"{what}.candidates")
        )
        for name in ("tau_start", "tau_end", "arch_lr"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                raise ValueError(f"{what}.{name} must be a positive number, got {value!r}")
        for name in ("budget_weight", "dual_lr"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value >= 0 and math.isfinite(value)):
                raise ValueError(f"{what}.{name} must be >= 0, got {value!r}")
        if self.anneal not in ANNEAL_KINDS:
            raise ValueError(f"{what}.anneal must be one of {ANNEAL_KINDS}, got {self.anneal!r}")
        if self.budget_mode not in BUDGET_MODES:
            raise ValueError(
                f"{what}.budget_mode must be one of {BUDGET_MODES}, got {self.budget_mode!r}"
            )
        if not isinstance(self.hard, bool):
            raise ValueError(f"{what}.hard must be a bool, got {self.hard!r}")
        check_fill_tolerance(self.fill_tolerance, what=f"{what}.fill_tolerance")
        for name, choices in (("logit_init", LOGIT_INITS), ("arch_optimizer", ARCH_OPTIMIZERS),
                              ("arch_schedule", ARCH_SCHEDULES)):
            if getattr(self, name) not in choices:
                raise ValueError(
                    f"{what}.{name} must be one of {choices}, got {getattr(self, name)!r}")
        if not _number_in(self.arch_warmup_frac, 0.0, 1.0, upper_open=True):
            raise ValueError(
                f"{what}.arch_warmup_frac must be in [0, 1), got {self.arch_warmup_frac!r}")
        if not (_number_in(self.arch_min_lr_frac, 0.0, 1.0) and self.arch_min_lr_frac > 0):
            raise ValueError(
                f"{what}.arch_min_lr_frac must be in (0, 1] (the logits' lr must not decay "
                f"to zero), got {self.arch_min_lr_frac!r}")
        if not _number_in(self.arch_clip, 0.0, math.inf, upper_open=True):
            raise ValueError(f"{what}.arch_clip must be >= 0 (0: off), got {self.arch_clip!r}")
        if self.hard_from_frac is not None and not _number_in(self.hard_from_frac, 0.0, 1.0):
            raise ValueError(f"{what}.hard_from_frac must be None or in [0, 1], got "
                             f"{self.hard_from_frac!r}")
        check_learnable_scale_max_bits(self.learnable_scale_max_bits,
                                       what=f"{what}.learnable_scale_max_bits")
        if self.target_init_position is not None:
            if self.logit_init != "target":
                raise ValueError(f"{what}.target_init_position is a setting of "
                                 f"logit_init='target' (logit_init is {self.logit_init!r})")
            check_target_init_position(self.target_init_position,
                                       what=f"{what}.target_init_position")

    def arch_lr_factor(self, step: int, total: int) -> float:
        """The logits' learning rate at ``step`` of ``total`` as a share of ``arch_lr``
        under ``arch_optimizer="separate"``: 1 (constant), or linear warm-up then cosine
        decay to ``arch_min_lr_frac`` (:func:`~mpqbench.quant.qat.lr_factor`)."""
        if self.arch_schedule == "constant":
            return 1.0
        return lr_factor(step, total, self.arch_warmup_frac, self.arch_min_lr_frac)


def _number_in(value: Any, low: float, high: float, *, upper_open: bool = False) -> bool:
    """A real number (not a bool) in [low, high] (or [low, high) with ``upper_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return False
    return low <= value < high if upper_open else low <= value <= high


#: Bits by which :func:`target_init_logits` aims under the target, so that E[bits]
#: evaluated in float32 is not above it (a lagrangian multiplier then starts at rest).
TARGET_INIT_SLACK = 5e-5
#: Share of the end gap by which a target at or past an end candidate is moved inside.
TARGET_INIT_END_INSET = 0.05


def check_target_init_position(value: Any, *, what: str) -> float:
    """``value`` if it is a real number strictly inside (0, 1) (not a bool).

    Raises:
        ValueError: anything else, naming ``what``.
    """
    if not (_number_in(value, 0.0, 1.0, upper_open=True) and value > 0.0):
        raise ValueError(f"{what} must be in (0, 1), got {value!r}")
    return float(value)


def _mass_interval(bits: Sequence[float], k: int, t: float) -> tuple[float, float]:
    """The open interval of q = p_k for which the rest can average to (t - q b_k)/(1 - q)
    with finite logits (strictly inside the rest's range) and q > 1/2; empty: lo >= hi."""
    b = bits[k]
    rest = [x for i, x in enumerate(bits) if i != k]
    lo_r, hi_r = min(rest), max(rest)
    d = t - b
    lo, hi = 0.5, 1.0
    if d > 0:
        if hi_r <= b:
            return 1.0, 0.0
        hi = min(hi, 1 - d / (hi_r - b))
        if lo_r > b:
            lo = max(lo, 1 - d / (lo_r - b))
    elif d < 0:
        if lo_r >= b:
            return 1.0, 0.0
        hi = min(hi, 1 + d / (b - lo_r))
        if hi_r < b:
            lo = max(lo, 1 + d / (b - hi_r))
    elif not lo_r < b < hi_r:
        return 1.0, 0.0
    return lo, hi


def _tilted(bits: Sequence[float], mean: float) -> list[float]:
    """p_i proportional to exp(lam * b_i) with sum_i p_i b_i = ``mean`` (strictly inside the
    range of ``bits``): the maximum-entropy distribution with that mean, lam by bisection."""
    x = torch.tensor([b - mean for b in bits], dtype=torch.float64)

    def excess(lam: float) -> float:  # sign of E_lam[b] - mean
        return float(torch.softmax(lam * x, 0) @ x)

    lo, hi = -1.0, 1.0
    while excess(lo) > 0:
        lo *= 2
    while excess(hi) < 0:
        hi *= 2
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if excess(mid) < 0:
            lo = mid
        else:
            hi = mid
    return torch.softmax(0.5 * (lo + hi) * x, 0).tolist()


def target_init_logits(candidates: Sequence[int], target: float,
                       position: float | None = None) -> list[float]:
    """Logits whose most likely candidate is the one nearest ``target`` and whose expected
    bits are ``target``: the ``logit_init="target"`` start of every layer.

    Construction, for ascending candidates b_1 < ... < b_K and t the target (moved
    ``TARGET_INIT_END_INSET`` of the end gap inside the range when at or past an end, where
    an exact mean needs a one-hot -- so a target of exactly b_1 starts slightly above it;
    then ``TARGET_INIT_SLACK`` bits lower):

    1. k = the candidate nearest t; on a tie (t halfway between two), the one that step 2
       allows with the widest interval (the smaller on a further tie);
    2. p_k = q with q > 1/2, so k is the argmax whatever the rest; the rest, mass 1 - q,
       must average mu(q) = (t - q b_k) / (1 - q) for E = t, which finite logits reach only
       strictly inside the range of the other candidates: with (lo, hi) that interval of q
       in (1/2, 1), q = lo + f * (hi - lo), f = ``position`` (default 0.5, the midpoint;
       near 1 the mixture starts near a one-hot on candidate k, whatever the target);
    3. the rest is spread as the maximum-entropy distribution with mean mu(q),
       p_i proportional to exp(lam * b_i) (lam by bisection: the one-dimensional problem).

    Two candidates: p_k = (t - b_other) / (b_k - b_other) (no freedom). One: ``[0.0]``.
    Every layer gets the same logits, so the size-weighted E[average bits] is t too.

    Args:
        candidates: the candidate bit-widths (any order; logits follow ascending bits).
        target: the target average bits.
        position: f in (0, 1), where p_k lies in its feasible interval (three or more
            candidates); None: 0.5.

    Returns:
        Logits (mean zero), aligned with the ascending candidates.

    Raises:
        ValueError: a target below the smallest candidate, or not a finite number; a
            ``position`` outside (0, 1), or given for fewer than three candidates.
    """
    bits = sorted(float(b) for b in candidates)
    if not (isinstance(target, (int, float)) and math.isfinite(target)):
        raise ValueError(f"logit_init='target': the target must be a finite number, got "
                         f"{target!r}")
    if target < bits[0]:
        raise ValueError(f"logit_init='target': target {target} bits is below the smallest "
                         f"candidate ({bits[0]:g})")
    if position is not None and len(bits) < 3:
        raise ValueError(f"logit_init='target': target_init_position needs three or more "
                         f"candidates (with {len(bits)} the target fixes every probability)")
    if position is not None:
        check_target_init_position(position,
                                   what="logit_init='target': target_init_position")
    if len(bits) == 1:
        return [0.0]
    t0 = float(target)
    if t0 <= bits[0]:
        t0 = bits[0] + TARGET_INIT_END_INSET * (bits[1] - bits[0])
    elif t0 >= bits[-1]:
        t0 = bits[-1] - TARGET_INIT_END_INSET * (bits[-1] - bits[-2])
    t = t0 - min(TARGET_INIT_SLACK, 0.5 * (t0 - bits[0]))
    if len(bits) == 2:
        k = 0 if t0 - bits[0] <= bits[1] - t0 else 1
        q = (t - bits[1 - k]) / (bits[k] - bits[1 - k])
        probs = [q, 1 - q] if k == 0 else [1 - q, q]
    else:
        dist = [abs(b - t0) for b in bits]
        nearest = [i for i, d in enumerate(dist) if d <= min(dist) + 1e-9]
        intervals = {i: _mass_interval(bits, i, t) for i in nearest}
        k = max(nearest, key=lambda i: (intervals[i][1] - intervals[i][0], -i))
        lo, hi = intervals[k]
        if hi <= lo:  # not reached for K >= 3 and t inside the range
            raise RuntimeError(f"target_init_logits: no construction for {bits} at {t}")
        q = lo + (0.5 if position is None else float(position)) * (hi - lo)
        rest = [b for i, b in enumerate(bits) if i != k]
        spread = iter(_tilted(rest, (t - q * bits[k]) / (1 - q)))
        probs = [q if i == k else (1 - q) * next(spread) for i in range(len(bits))]
    logits = [math.log(p) for p in probs]
    mean = sum(logits) / len(logits)
    return [v - mean for v in logits]


def initial_logits(config: SupernetSearchConfig, target_bits: float) -> list[float] | None:
    """Every layer's initial logits as ``config.logit_init`` says: None (zeros, the
    supernet's default) for ``"zero"``, :func:`target_init_logits` for ``"target"``."""
    if config.logit_init == "zero":
        return None
    logits = target_init_logits(config.candidates, target_bits, config.target_init_position)
    log.info("%s: logits start at %s (E[bits] %.4f, target %.4f)", config.config_name,
             [round(v, 4) for v in logits],
             sum(b * p for b, p in zip(config.candidates,
                                       torch.softmax(torch.tensor(logits), 0).tolist(),
                                       strict=True)), target_bits)
    return logits


def arch_training(config: SupernetSearchConfig,
                  alphas: Sequence[torch.nn.Parameter]) -> dict[str, Any]:
    """Keyword arguments of :func:`~mpqbench.quant.qat.train` that step the logits as
    ``config.arch_optimizer`` says: ``extra_param_groups`` (``"joint"``: an AdamW group at
    ``arch_lr`` on the weights' schedule and clip) or ``separate_groups`` (``"separate"``:
    their own Adam, :meth:`SupernetSearchConfig.arch_lr_factor`, ``arch_clip``)."""
    params = list(alphas)
    if config.arch_optimizer == "joint":
        return {"extra_param_groups": [{"params": params, "lr": config.arch_lr}]}
    return {"separate_groups": [SeparateGroup(params=params, lr=config.arch_lr,
                                              clip=config.arch_clip,
                                              lr_factor=config.arch_lr_factor, name="arch")]}


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
    """The loop's ``on_step``: anneal tau, switch to hard mixing, draw every layer's Gumbel
    noise (batched), and record the trajectory.

    Args:
        layers: the supernet layers (each once).
        total: steps of the supernet stage (tau reaches ``end`` at the last one).
        start, end, kind: see :func:`~mpqbench.quant.supernet.anneal_tau`.
        hard: the layers' mixing before ``hard_from_frac`` (``True``: hard throughout).
        hard_from_frac: None (the layers' ``hard`` is left as it is) or the share of
            ``total`` from which on the mixing is hard: step ``round(frac * total)``.
        sample: draw the Gumbel noise of every layer once per step (one_stage); False
            leaves each layer to draw at its forward (two_stage DNAS).
        points: most steps recorded for :meth:`trajectory`.
    """

    def __init__(self, layers: list[Any], total: int, start: float, end: float,
                 kind: str, *, hard: bool = False, hard_from_frac: float | None = None,
                 sample: bool = True, points: int = TRAJECTORY_POINTS) -> None:
        self.layers, self.total = layers, total
        self.start, self.end, self.kind = start, end, kind
        self.hard, self.sample = bool(hard), bool(sample)
        #: first hard step under ``hard_from_frac`` (None: the switch is off)
        self.hard_from_step = (None if hard_from_frac is None
                               else round(hard_from_frac * total))
        self.taus: list[float] = []
        n = min(points, total)
        self._record = ({round(i * (total - 1) / (n - 1)) for i in range(n)} if n > 1
                        else set(range(n)))
        self.recorded: list[dict[str, float]] = []

    def hard_at(self, step: int) -> bool:
        """Whether the mixing of ``step`` is hard straight-through."""
        if self.hard or self.hard_from_step is None:
            return self.hard
        return step >= self.hard_from_step

    def __call__(self, step: int) -> None:
        tau = anneal_tau(step, self.total, self.start, self.end, self.kind)
        self.taus.append(tau)
        switch = self.hard_from_step is not None
        hard = self.hard_at(step)
        for layer in self.layers:
            layer.tau = tau
            if switch:
                layer.hard = hard
        if step in self._record:
            self.recorded.append({"step": step, "tau": tau, **logit_spread(self.layers)})
        if self.sample:
            sample_mixing_(self.layers)

    def trajectory(self, expected: Sequence[float] = ()) -> dict[str, Any]:
        """The recorded steps as columns: ``step``, ``tau``, ``expected_avg_bits`` (from
        ``expected``, the budget term's per-step values; None where it has none),
        ``logit_spread_max`` and ``logit_spread_mean``, and ``hard_from_step``."""
        rows = self.recorded
        return {
            "step": [r["step"] for r in rows],
            "tau": [r["tau"] for r in rows],
            "expected_avg_bits": [expected[r["step"]] if r["step"] < len(expected) else None
                                  for r in rows],
            "logit_spread_max": [r["max"] for r in rows],
            "logit_spread_mean": [r["mean"] for r in rows],
            "hard_from_step": self.hard_from_step,
        }


def logit_spread(layers: Sequence[Any]) -> dict[str, float]:
    """max - min of each layer's logits: ``{"max": largest over layers, "mean": mean}``
    (both 0 for a layer with one candidate or equal logits)."""
    with torch.no_grad():
        alphas = [m.alpha.detach() for m in layers]
        if not alphas:
            return {"max": 0.0, "mean": 0.0}
        if len({a.shape for a in alphas}) == 1:
            stacked = torch.stack(alphas)
            spread = stacked.amax(dim=-1) - stacked.amin(dim=-1)
        else:
            spread = torch.stack([a.amax() - a.amin() for a in alphas])
        values = torch.stack([spread.max(), spread.mean()]).tolist()
    return {"max": values[0], "mean": values[1]}


def supernet_schedule(config: SupernetSearchConfig, layers: Sequence[Any], total: int, *,
                      sample: bool = True) -> SupernetSchedule:
    """The :class:`SupernetSchedule` of ``config`` over ``total`` steps of ``layers``."""
    return SupernetSchedule(list(layers), total, config.tau_start, config.tau_end,
                            config.anneal, hard=config.hard,
                            hard_from_frac=config.hard_from_frac, sample=sample)


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


__all__ = [
    "ARCH_OPTIMIZERS",
    "ARCH_SCHEDULES",
    "BUDGET_MODES",
    "LOGIT_INITS",
    "TARGET_INIT_END_INSET",
    "TARGET_INIT_SLACK",
    "TRAJECTORY_POINTS",
    "BitBudget",
    "SupernetSchedule",
    "SupernetSearchConfig",
    "arch_training",
    "check_fill_tolerance",
    "fill_allocation",
    "initial_logits",
    "logit_spread",
    "repair_allocation",
    "supernet_schedule",
    "target_init_logits",
]
