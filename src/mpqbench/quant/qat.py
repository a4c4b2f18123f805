"""The shared QAT training loop that every method uses for parameter estimation.

Loss = task loss (CTC or teacher-forced cross-entropy, from the model adapter)
     + eta * KL(teacher || student)  (cached 32-bit outputs, see :mod:`mpqbench.quant.teacher`)
     + an optional method-supplied term (e.g. the one-stage bit-budget penalty).

AdamW with linear warm-up then cosine decay to zero, gradient-norm clipping, a data order
that is a pure function of (seed, step) so that a resumed run sees exactly the batches an
uninterrupted one would, checkpoints every N steps but at most one per
``checkpoint_min_interval_s`` of wall time (atomic, checksummed) with exact
resume of model, optimizer, schedule and RNG state, a progress bar, and a
device-synchronised wall-clock reading.

Separate groups (:class:`SeparateGroup`, e.g. a supernet's architecture logits): parameters
stepped by an Adam of their own, with their own learning-rate schedule and their own
gradient-norm clipping, so that their step does not depend on the weights' gradient norm or
follow the weights' schedule. Without them the loop is exactly the one above.

Multi-process (``torchrun``, see :mod:`mpqbench.distributed`): when a process group with
several ranks is initialised, every rank takes its contiguous slice of the same seeded
global batch, weights its mean losses by its share of the global batch's loss units, and
averages all trained gradients (weights and extra groups such as architecture logits) over
ranks before clipping and the optimizer step -- so the global batch, the gradient, the
clipping, the step and the recorded losses are those of one process on the same batch, and
every replica stays identical. Rank 0's parameters and buffers are broadcast at the start
and its RNG state before each step (so per-step draws such as Gumbel noise agree). Only
rank 0 writes checkpoints and shows the progress bar; every rank reads the newest
checkpoint of the (shared) checkpoint directory when resuming.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from mpqbench import distributed as ddp
from mpqbench.determinism import deterministic_kernels
from mpqbench.errors import TrainingDiverged
from mpqbench.precision import autocast, check_precision
from mpqbench.quant.checkpoint import load_latest_checkpoint, save_checkpoint
from mpqbench.timing import stage_timer, synchronize
from mpqbench.workloads.adapter import SpeechModel
from mpqbench.workloads.data.types import Utterance

log = logging.getLogger(__name__)


#: Steps between checkpoints by default (a cell checkpoints only with a checkpoint dir).
DEFAULT_CHECKPOINT_EVERY = 10
#: Least wall time between two checkpoints of one run (s). A whisper-tiny.en checkpoint
#: (weights + AdamW state) is 453 MB and took 1.7 s to write and checksum on the 2-core
#: CPU; every 10 steps that was 19 writes (~32 s) in each 200-step cell. On an H200 a
#: 200-step uniform cell took 56.6 s where its steps alone are at most ~17 s
#: (0.085 s a step at batch 8, benchmarked; docs/FINDINGS.md).
DEFAULT_CHECKPOINT_MIN_INTERVAL_S = 60.0


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Optimisation settings of the shared loop (the same for every method by default)."""

    lr: float = field(default=2e-5, metadata={"help": "peak learning rate of model weights"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    warmup_frac: float = field(default=0.1, metadata={"help": "fraction of steps warming up"})
    min_lr_frac: float = field(default=0.0, metadata={"help": "final lr as a fraction of peak"})
    eta: float = field(default=1.0, metadata={"help": "weight of the KL-to-teacher term"})
    grad_clip: float = field(default=1.0, metadata={"help": "max gradient norm (0: off)"})
    checkpoint_every: int = field(default=DEFAULT_CHECKPOINT_EVERY, metadata={
        "help": "steps between checkpoints when the run has a checkpoint directory (0: none)"})
    checkpoint_min_interval_s: float = field(
        default=DEFAULT_CHECKPOINT_MIN_INTERVAL_S, metadata={
            "help": "least wall time between checkpoints (s): a multiple of checkpoint_every "
                    "is skipped until this much has passed since the last one (or the start)"})

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"train.lr must be > 0, got {self.lr}")
        if not 0.0 <= self.warmup_frac < 1.0:
            raise ValueError(f"train.warmup_frac must be in [0, 1), got {self.warmup_frac}")
        if not 0.0 <= self.min_lr_frac <= 1.0:
            raise ValueError(f"train.min_lr_frac must be in [0, 1], got {self.min_lr_frac}")
        if self.eta < 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("train.eta, weight_decay and grad_clip must be >= 0")
        if self.checkpoint_every < 0:
            raise ValueError(f"train.checkpoint_every must be >= 0, got {self.checkpoint_every}")
        if not self.checkpoint_min_interval_s >= 0:
            raise ValueError("train.checkpoint_min_interval_s must be >= 0, got "
                             f"{self.checkpoint_min_interval_s}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SeparateGroup:
    """Parameters the loop steps with an optimizer of their own (e.g. supernet logits).

    Adam (no weight decay) at ``lr * lr_factor(step, steps)``, gradients clipped to norm
    ``clip`` over this group alone (0: off), after the weights are clipped over theirs; the
    weights' clipping and schedule never see these parameters.

    Args:
        params: the parameters (not also in ``extra_param_groups`` nor trained as weights).
        lr: peak learning rate.
        clip: max gradient norm of this group (0: off).
        lr_factor: ``(step, steps) -> factor`` of ``lr``; None: constant.
        name: the history's key prefix (``f"{name}_grad_norm"``).
    """

    params: Sequence[torch.nn.Parameter]
    lr: float
    clip: float = 0.0
    lr_factor: Callable[[int, int], float] | None = None
    name: str = "separate"

    def __post_init__(self) -> None:
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"separate group {self.name!r}: lr must be > 0, got {self.lr}")
        if not (self.clip >= 0 and math.isfinite(self.clip)):
            raise ValueError(
                f"separate group {self.name!r}: clip must be >= 0, got {self.clip}")


@dataclass
class TrainResult:
    """What a loop run did: steps run in this call, resumed-from step, losses, seconds.

    ``seconds`` is the loop's device-synchronised wall time less its checkpoint writes
    (``checkpoint_seconds``): those are the harness's crash safety, not the method's work,
    and a method whose stage does not checkpoint (the one-stage supernet) would otherwise
    look faster by them.
    """

    steps: int
    resumed_from: int
    seconds: float
    history: list[dict[str, float]]
    checkpoint_seconds: float = 0.0


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Indices of the utterances of ``step``: a pure function of (n, batch_size, step, seed).

    The stream is epoch after epoch of seeded permutations; step s takes items
    ``[s * batch_size, (s + 1) * batch_size)`` of it.
    """
    out: list[int] = []
    pos = step * batch_size
    while len(out) < batch_size:
        epoch, offset = divmod(pos, n)
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        perm = torch.randperm(n, generator=gen)
        take = min(batch_size - len(out), n - offset)
        out.extend(perm[offset : offset + take].tolist())
        pos += take
    return out


def lr_factor(step: int, total: int, warmup_frac: float, min_lr_frac: float) -> float:
    """Linear warm-up for ``warmup_frac * total`` steps, then cosine decay to min_lr_frac."""
    warmup = round(warmup_frac * total)
    if step < warmup:
        return (step + 1) / warmup
    span = max(total - warmup, 1)
    progress = min((step - warmup) / span, 1.0)
    return min_lr_frac + (1.0 - min_lr_frac) * 0.5 * (1.0 + math.cos(math.pi * progress))


def train(
    model: SpeechModel,
    data: Sequence[Utterance],
    *,
    steps: int,
    batch_size: int,
    seed: int,
    config: TrainConfig,
    teacher: Any = None,
    extra_param_groups: Sequence[dict[str, Any]] = (),
    separate_groups: Sequence[SeparateGroup] = (),
    extra_loss: Callable[[int], torch.Tensor | None] | None = None,
    on_step: Callable[[int], None] | None = None,
    checkpoint_dir: Path | None = None,
    desc: str = "QAT",
    progress: bool = True,
    precision: str = "fp32",
    trim_window: bool = False,
    stream_offset: int = 0,
    schedule_steps: int | None = None,
) -> TrainResult:
    """Train ``model`` in place for ``steps`` optimizer steps.

    Args:
        model: the (fake-quantized) student; every parameter with ``requires_grad`` is
            trained with ``config.lr`` unless it is listed in ``extra_param_groups``.
        data: training utterances.
        steps: optimizer steps; ``0`` returns at once.
        batch_size: utterances per step.
        seed: seeds the data order (and the global torch RNG at the start of a fresh run).
        config: optimisation settings.
        teacher: a :class:`~mpqbench.quant.teacher.TeacherCache` covering ``data``; None (or
            ``config.eta == 0``) disables the KL term.
        extra_param_groups: AdamW groups with their own ``lr`` (e.g. architecture logits);
            their learning rates follow the same schedule, and they are clipped jointly
            with the weights.
        separate_groups: parameters with their own Adam, schedule and clipping
            (:class:`SeparateGroup`); checkpointed and resumed with the rest.
        extra_loss: ``f(step) -> scalar`` added to the loss (e.g. a bit-budget penalty).
        on_step: called with the step index before each step's forward (e.g. annealing).
        checkpoint_dir: where to checkpoint every ``config.checkpoint_every`` steps (at
            most once per ``config.checkpoint_min_interval_s``) and whence to resume; None
            disables checkpointing.
        desc: progress-bar label.
        progress: show a progress bar.
        precision: compute precision of the forward and loss (:mod:`mpqbench.precision`):
            ``fp32``, ``bf16`` (autocast), or ``fp16`` on CUDA. Weights, optimizer state,
            the quantizers and the backward's accumulation stay fp32; ``extra_loss`` runs
            outside autocast.
        trim_window: collate each batch with ``make_batch(..., trim=True)`` (padding only to
            its longest clip, for fixed-window models); the teacher's outputs do not depend
            on it, so the KL target stays the full-window teacher.
        stream_offset: the position of this call's first step in a longer run: step ``s``
            draws the batch of step ``s + stream_offset`` of the seeded stream and takes
            the lr of that position of the schedule, so a run split into stages (e.g. a
            supernet stage, then a fine-tune of the extracted network) reads fresh batches
            and one warm-up/cosine schedule across the stages.
        schedule_steps: the length of the lr schedule (warm-up and cosine) of the weights'
            groups; None: ``stream_offset + steps``. Separate groups keep their own
            schedule over this call's ``steps``.

    Under a multi-rank process group (:mod:`mpqbench.distributed`) every rank must call
    this with the same arguments; ``batch_size`` is the global batch, shared out over ranks.
    ``history`` then holds the global batch's losses, the same on every rank.

    Returns:
        A :class:`TrainResult`. ``history`` has per step ``task``, ``kl`` (with a teacher),
        ``extra`` (with an extra term), ``loss`` and ``grad_norm`` (the gradient norm before
        clipping, when ``config.grad_clip > 0``; of the weights and extra groups only when
        there are separate groups), and ``f"{name}_grad_norm"`` for each separate group
        that clips.

    Raises:
        TrainingDiverged: the loss became NaN or infinite (nothing is written at that step).
        ValueError: bad arguments, or a global batch smaller than the number of ranks.
        RuntimeError: ranks resumed from different checkpoints.
    """
    if steps < 0 or batch_size < 1:
        raise ValueError(f"steps must be >= 0 and batch_size >= 1, got {steps}, {batch_size}")
    if stream_offset < 0:
        raise ValueError(f"stream_offset must be >= 0, got {stream_offset}")
    span = stream_offset + steps if schedule_steps is None else schedule_steps
    if span < stream_offset + steps:
        raise ValueError(f"schedule_steps ({schedule_steps}) must cover stream_offset + steps "
                         f"({stream_offset} + {steps})")
    if len(data) == 0:
        raise ValueError("training data is empty")
    check_precision(precision, model.device)
    ranks = _Ranks(batch_size, model.device)
    module = model.model
    separate = list(separate_groups)
    optimizer = _optimizer(module, config, extra_param_groups,
                           exclude=[p for g in separate for p in g.params])
    own = _separate_optimizers(separate, extra_param_groups)
    peak = [g["lr"] for g in optimizer.param_groups]
    clipped = [p for g in optimizer.param_groups for p in g["params"]]
    all_params = clipped + [p for g in separate for p in g.params]
    if config.checkpoint_every == 0:
        checkpoint_dir = None  # checkpointing off
    start, history = _resume_or_seed(model, optimizer, checkpoint_dir, seed, desc, own)
    ranks.start_together(start, desc, module, all_params)

    use_kl = teacher is not None and config.eta > 0
    module.train()
    last_save = time.perf_counter()
    saving = 0.0  # seconds spent writing checkpoints, left out of the stage's time
    # deterministic_kernels: on a CPU, two runs of a cell train to the same bits
    with stage_timer(model.device) as watch, deterministic_kernels(model.device):
        bar = tqdm(total=steps, initial=start, desc=desc, unit="step",
                   disable=not (progress and ddp.is_rank0()))
        for step in range(start, steps):
            at = step + stream_offset
            factor = lr_factor(at, span, config.warmup_frac, config.min_lr_frac)
            for g, base in zip(optimizer.param_groups, peak, strict=True):
                g["lr"] = base * factor
            for group, opt in zip(separate, own, strict=True):
                own_factor = 1.0 if group.lr_factor is None else group.lr_factor(step, steps)
                opt.param_groups[0]["lr"] = group.lr * own_factor
            ranks.share_rng()
            if on_step is not None:
                on_step(step)
            idx = ranks.my_share(batch_indices(len(data), batch_size, at, seed))
            batch = model.make_batch([data[i] for i in idx], trim=trim_window)
            with autocast(precision, model.device):
                out = model.forward(batch)
                kl = teacher.kl(batch, out.logits, out.mask) if use_kl else None
            loss, parts = ranks.loss(model, out, kl, len(idx), config.eta)
            if extra_loss is not None:
                extra = extra_loss(step)
                if extra is not None:
                    loss = loss + extra
                    parts["extra"] = float(extra.detach())
            total = ranks.total(loss, parts, config.eta)
            if not math.isfinite(total):
                raise TrainingDiverged(
                    f"{desc}: loss is {total} at step {step} ({parts}); lower the "
                    "learning rate or check the data. Nothing was written for this step."
                )
            optimizer.zero_grad(set_to_none=True)
            for opt in own:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            ddp.average_gradients_(all_params)
            if config.grad_clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(clipped, config.grad_clip)
                parts["grad_norm"] = float(norm)
            for group in separate:
                if group.clip > 0:
                    norm = torch.nn.utils.clip_grad_norm_(list(group.params), group.clip)
                    parts[f"{group.name}_grad_norm"] = float(norm)
            optimizer.step()
            for opt in own:
                opt.step()
            parts["loss"] = total
            history.append(parts)
            bar.update(1)
            bar.set_postfix(loss=f"{parts['loss']:.3f}")
            done = step + 1
            if (checkpoint_dir is not None
                    and done % config.checkpoint_every == 0 and done < steps
                    and time.perf_counter() - last_save >= config.checkpoint_min_interval_s):
                synchronize(model.device)  # the step's queued kernels stay in the stage time
                began = time.perf_counter()
                _checkpoint(checkpoint_dir, done, model, optimizer, history, own)
                last_save = time.perf_counter()
                saving += last_save - began
        bar.close()
    return TrainResult(steps=steps - start, resumed_from=start, seconds=watch.seconds - saving,
                       history=history, checkpoint_seconds=saving)


def _fused(params: Sequence[torch.nn.Parameter]) -> bool | None:
    """True where every parameter is on the CPU or a CUDA device (None: torch's default)."""
    return (bool(params) and all(p.device.type in ("cpu", "cuda") for p in params)) or None


def _optimizer(module: torch.nn.Module, config: TrainConfig,
               extra_param_groups: Sequence[dict[str, Any]],
               exclude: Sequence[torch.nn.Parameter] = ()) -> torch.optim.AdamW:
    """AdamW over the trainable weights (``config.lr``) and the extra groups (own lr);
    parameters in ``exclude`` (separate groups) are left out.

    The fused implementation (one kernel per parameter instead of a pass per arithmetic
    op) runs wherever every parameter is on the CPU or a CUDA device: on whisper-tiny.en
    it cut the optimizer step from 116 ms to 14 ms on a 2-core CPU (docs/FINDINGS.md).
    """
    special = {id(p) for g in extra_param_groups for p in g["params"]}
    special |= {id(p) for p in exclude}
    weights = [p for p in module.parameters() if p.requires_grad and id(p) not in special]
    groups = [{"params": weights, "lr": config.lr, "weight_decay": config.weight_decay}]
    groups += [{"weight_decay": 0.0, **g, "params": list(g["params"])} for g in extra_param_groups]
    params = [p for g in groups for p in g["params"]]
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay,
                             fused=_fused(params))


def _separate_optimizers(groups: Sequence[SeparateGroup],
                         extra_param_groups: Sequence[dict[str, Any]]) -> list[torch.optim.Adam]:
    """One Adam per separate group.

    Raises:
        ValueError: a group without parameters, or a parameter in two groups (separate or
            extra).
    """
    seen = {id(p) for g in extra_param_groups for p in g["params"]}
    out = []
    for group in groups:
        params = list(group.params)
        if not params:
            raise ValueError(f"separate group {group.name!r} has no parameters")
        ids = {id(p) for p in params}
        if ids & seen or len(ids) != len(params):
            raise ValueError(
                f"separate group {group.name!r} shares a parameter with another group")
        seen |= ids
        out.append(torch.optim.Adam(params, lr=group.lr, fused=_fused(params)))
    return out


def _resume_or_seed(model: SpeechModel, optimizer: torch.optim.Optimizer,
                    checkpoint_dir: Path | None, seed: int, desc: str,
                    own: Sequence[torch.optim.Optimizer] = ()
                    ) -> tuple[int, list[dict[str, float]]]:
    """Load the newest valid checkpoint (model, optimizers, RNG, history) or seed the RNG.

    ``own``: the separate groups' optimizers, restored from the checkpoint's
    ``"separate_optimizers"``.

    Returns:
        ``(first step to run, history so far)``.

    Raises:
        ValueError: the checkpoint holds another number of separate optimizers than the
            run has (e.g. made with separate groups, resumed without).
    """
    state = load_latest_checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
    if state is None:
        torch.manual_seed(seed)
        return 0, []
    start, ckpt = state
    states = ckpt.get("separate_optimizers", [])
    if len(states) != len(own):
        raise ValueError(
            f"{desc}: the checkpoint at step {start} holds {len(states)} separate "
            f"optimizers, the run has {len(own)}; resume with the settings it was made "
            "with or use a fresh checkpoint directory")
    model.model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    for opt, opt_state in zip(own, states, strict=True):
        opt.load_state_dict(opt_state)
    torch.set_rng_state(ckpt["rng_cpu"])
    if model.device.type == "cuda" and "rng_cuda" in ckpt:
        torch.cuda.set_rng_state(ckpt["rng_cuda"], model.device)
    log.info("%s: resumed from checkpoint at step %d", desc, start)
    return start, list(ckpt["history"])


def _checkpoint(checkpoint_dir: Path, done: int, model: SpeechModel,
                optimizer: torch.optim.Optimizer, history: list[dict[str, float]],
                own: Sequence[torch.optim.Optimizer] = ()) -> None:
    """Rank 0 writes the state after ``done`` steps (other ranks hold the same state);
    ``own``, the separate groups' optimizers, under ``"separate_optimizers"`` when any."""
    if not ddp.is_rank0():
        return
    ckpt = {
        "model": model.model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "history": history,
    }
    if own:
        ckpt["separate_optimizers"] = [opt.state_dict() for opt in own]
    if model.device.type == "cuda":
        ckpt["rng_cuda"] = torch.cuda.get_rng_state(model.device)
    save_checkpoint(checkpoint_dir, done, ckpt)


class _Ranks:
    """What the loop does differently under a multi-rank process group, in one place.

    Single process: every method is the identity or a no-op. Several ranks: each takes its
    slice of the seeded global batch, the ranks start from the same state and share the
    RNG each step, and the loss is weighted so that averaging gradients over ranks gives
    the global batch's gradient (:func:`_rank_loss`).
    """

    def __init__(self, batch_size: int, device: torch.device) -> None:
        self.world, self.rank = ddp.world_size(), ddp.rank()
        self.multi = ddp.is_distributed()
        self.device = device
        if self.multi:
            ddp.shard_bounds(batch_size, self.world, self.rank)  # refuse a too-small batch

    def start_together(self, start: int, desc: str, module: torch.nn.Module,
                       params: list[torch.nn.Parameter]) -> None:
        """Check every rank resumed at ``start``; give every rank rank 0's tensors."""
        if not self.multi:
            return
        ddp.check_same_on_all_ranks(start, f"{desc}: the resumed step", self.device)
        seen = {id(p) for p in params}
        shared = params + [p for p in module.parameters() if id(p) not in seen]
        ddp.broadcast_tensors_(shared + list(module.buffers()))

    def share_rng(self) -> None:
        """Every rank draws the same random numbers this step (e.g. Gumbel noise)."""
        if self.multi:
            ddp.broadcast_rng_state_(self.device)

    def my_share(self, idx: list[int]) -> list[int]:
        """This rank's slice of the global batch's indices."""
        if not self.multi:
            return idx
        lo, hi = ddp.shard_bounds(len(idx), self.world, self.rank)
        return idx[lo:hi]

    def total(self, loss: torch.Tensor, parts: dict[str, float], eta: float) -> float:
        """The global batch's loss: this process's loss, or the ranks' parts combined."""
        if not self.multi:
            return float(loss.detach())
        return parts["task"] + eta * parts.get("kl", 0.0) + parts.get("extra", 0.0)

    def loss(self, model: SpeechModel, out: Any, kl: torch.Tensor | None, n_items: int,
             eta: float) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss to back-propagate on this rank and the global batch's loss parts."""
        if self.multi:
            return _rank_loss(model, out, kl, n_items, self.world, eta)
        loss = out.loss if kl is None else out.loss + eta * kl
        parts = {"task": float(out.loss.detach())}
        if kl is not None:
            parts["kl"] = float(kl.detach())
        return loss, parts


def _rank_loss(
    model: SpeechModel,
    out: Any,
    kl: torch.Tensor | None,
    n_items: int,
    world: int,
    eta: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """This rank's share of the global loss, scaled for gradient averaging, and the global
    batch's loss parts (the same on every rank).

    A mean loss over c_r units (tokens, clips, positions) enters as
    ``world * (c_r / sum_r c_r) * loss_r``: averaging the ranks' gradients then gives the
    gradient of the global batch's mean. A summed loss (count None) enters as
    ``world * loss_r``.
    """
    counts = [ddp.task_loss_count(model, out.mask, n_items)]
    losses = [out.loss]
    if kl is not None:
        counts.append(float(out.mask.sum()))
        losses.append(kl)
    local = []
    for c, value in zip(counts, losses, strict=True):
        v = float(value.detach())
        local += [1.0, v] if c is None else [c, c * v]
    glob = ddp.all_reduce_sum(local, model.device)
    loss = out.loss.new_zeros(())
    parts: dict[str, float] = {}
    for i, (name, c, value) in enumerate(zip(("task", "kl"), counts, losses, strict=False)):
        total_c, total_v = glob[2 * i], glob[2 * i + 1]
        if c is None:
            weight, parts[name] = float(world), total_v
        else:
            weight = world * c / total_c if total_c > 0 else 0.0
            parts[name] = total_v / total_c if total_c > 0 else 0.0
        loss = loss + (eta if name == "kl" else 1.0) * weight * value
    return loss, parts


__all__ = [
    "DEFAULT_CHECKPOINT_EVERY",
    "SeparateGroup",
    "TrainConfig",
    "TrainResult",
    "batch_indices",
    "lr_factor",
    "train",
]
