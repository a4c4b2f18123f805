"""torch.distributed for the shared QAT loop: process group, rank checks, sharding, gradients.

Multi-process training runs under ``torchrun`` (one process per GPU, or several CPU
processes). :func:`init_from_env` joins the default process group from torchrun's
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``):
NCCL when the run uses CUDA, gloo on CPU. :func:`mpqbench.quant.qat.train` detects an
initialised group by itself, so methods need no change.

Data-parallel semantics (those of ``DistributedDataParallel``, done explicitly because the
model's forward runs through the :class:`~mpqbench.workloads.adapter.SpeechModel`
adapter, not through the wrapped ``nn.Module``): every rank takes a contiguous slice of the
same seeded global batch (:func:`shard_bounds`); after ``backward`` the gradients of every
trained parameter -- weights and any extra groups such as a supernet's architecture logits
-- are averaged over ranks (:func:`average_gradients_`), so every rank applies the same
optimizer step and all replicas stay identical. The loop weights each rank's mean losses by
its share of the global batch's loss units (:func:`task_loss_count`: label tokens for
Whisper's cross-entropy, clips for CTC's "mean" reduction, valid positions for the KL
term), which makes the averaged gradient the single-process gradient of the same global
batch, also when ranks hold different numbers of tokens.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

#: Elements per flattened all-reduce / broadcast (16M float32 = 64 MiB).
BUCKET_NUMEL = 16 * 1024 * 1024


def is_distributed() -> bool:
    """True when a default process group with more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Ranks in the default process group (1 when none is initialised)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank in the default process group (0 when none is initialised)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_rank0() -> bool:
    """True in the process that writes records, checkpoints and progress bars."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    """True when torchrun's environment variables say this process is one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_from_env(device: str = "auto") -> bool:
    """Join the default process group when torchrun started this process.

    Does nothing when a group is already initialised or when ``WORLD_SIZE`` is unset or 1.
    On CUDA it selects the GPU ``LOCAL_RANK`` first (so ``"cuda"`` means this rank's GPU).

    Args:
        device: ``"cuda"`` (NCCL backend), ``"cpu"`` (gloo), or ``"auto"`` (NCCL when CUDA
            is available, else gloo).

    Returns:
        True when a process group with more than one rank is initialised on return.

    Raises:
        ValueError: ``device`` is ``"cuda"`` and CUDA is unavailable, or there are fewer
            GPUs than local ranks.
    """
    if dist.is_available() and dist.is_initialized():
        return is_distributed()
    if not launched_by_torchrun():
        return False
    if not dist.is_available():
        raise ValueError("torchrun started several processes but torch.distributed is missing")
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda:
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' under torchrun, but CUDA is not available")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK {local} has no GPU ({torch.cuda.device_count()} visible); start "
                "torchrun with --nproc-per-node at most the number of GPUs"
            )
        torch.cuda.set_device(local)
    backend = "nccl" if use_cuda else "gloo"
    dist.init_process_group(backend=backend)
    log.info("joined process group: rank %d of %d (%s)", rank(), world_size(), backend)
    return is_distributed()


def shutdown() -> None:
    """Leave the default process group (no-op when none is initialised)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard_bounds(n: int, world: int, index: int) -> tuple[int, int]:
    """``[start, end)`` of rank ``index``'s contiguous share of ``n`` items.

    The first ``n % world`` ranks take one item more; the shares tile ``range(n)`` in rank
    order.

    Raises:
        ValueError: ``n < world`` (a rank would get no data) or a bad rank index.
    """
    if world < 1 or not 0 <= index < world:
        raise ValueError(f"rank {index} is outside a world of size {world}")
    if n < world:
        raise ValueError(
            f"a global batch of {n} cannot be split over {world} ranks; use a batch size of "
            f"at least {world}"
        )
    base, extra = divmod(n, world)
    start = index * base + min(index, extra)
    return start, start + base + (1 if index < extra else 0)


def comm_device(device: torch.device) -> torch.device:
    """Where collective tensors must live: the GPU for NCCL, the CPU otherwise."""
    if dist.get_backend() == "nccl":
        if device.type == "cuda":
            return device
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def task_loss_count(model: Any, loss_mask: torch.Tensor, batch_len: int) -> float | None:
    """Units the adapter's task loss is a mean over, for count-weighting across ranks.

    An adapter may define ``loss_count(mask, batch_len) -> float | None`` to say it itself;
    otherwise Whisper's loss is the mean cross-entropy over label tokens (``mask.sum()``)
    and CTC's is, with ``ctc_loss_reduction="mean"``, the mean over clips (``batch_len``),
    with ``"sum"`` a sum (None: no normalisation, every rank's loss counts in full).

    Raises:
        ValueError: a model family whose loss reduction is unknown.
    """
    custom = getattr(model, "loss_count", None)
    if callable(custom):
        return custom(loss_mask, batch_len)
    family = getattr(model, "family", None)
    if family == "whisper":
        return float(loss_mask.sum())
    if family == "ctc":
        return None if getattr(model, "ctc_loss_reduction", "mean") == "sum" else float(batch_len)
    raise ValueError(
        f"multi-process training: the loss reduction of model family {family!r} is unknown; "
        "give its adapter a loss_count(mask, batch_len) method"
    )


def _buckets(tensors: Sequence[torch.Tensor]) -> Iterable[list[torch.Tensor]]:
    """Consecutive runs of same-device, same-dtype tensors of at most BUCKET_NUMEL elements."""
    bucket: list[torch.Tensor] = []
    size = 0
    for t in tensors:
        if bucket and (
            t.device != bucket[0].device or t.dtype != bucket[0].dtype
            or size + t.numel() > BUCKET_NUMEL
        ):
            yield bucket
            bucket, size = [], 0
        bucket.append(t)
        size += t.numel()
    if bucket:
        yield bucket


def _flat_collective_(tensors: Sequence[torch.Tensor], op: str) -> None:
    """All-reduce (``"mean"``) or broadcast from rank 0 (``"broadcast"``) in place, bucketed."""
    world = world_size()
    for bucket in _buckets(tensors):
        flat = torch.cat([t.detach().reshape(-1) for t in bucket])
        target = comm_device(flat.device)
        moved = flat.to(target, dtype=torch.uint8 if flat.dtype == torch.bool else flat.dtype)
        if op == "mean":
            dist.all_reduce(moved)
            moved.div_(world)
        else:
            dist.broadcast(moved, src=0)
        flat = moved.to(flat.device, dtype=flat.dtype)
        offset = 0
        with torch.no_grad():
            for t in bucket:
                t.copy_(flat[offset : offset + t.numel()].view_as(t))
                offset += t.numel()


def average_gradients_(params: Sequence[torch.Tensor]) -> None:
    """Replace every parameter's gradient by its mean over ranks (DDP's semantics).

    A parameter unused on some ranks counts as a zero gradient there; one that no rank used
    keeps ``grad = None`` (so the optimizer skips it, as it would in one process). No-op
    outside a multi-rank group. Call on every rank with the parameters in the same order.
    """
    if not is_distributed() or not params:
        return
    device = comm_device(params[0].device)
    used = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
    dist.all_reduce(used)
    grads = []
    for p, count in zip(params, used.tolist(), strict=True):
        if count == 0:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    _flat_collective_(grads, "mean")


def broadcast_tensors_(tensors: Sequence[torch.Tensor]) -> None:
    """Overwrite ``tensors`` (parameters, buffers) with rank 0's values; no-op in one process."""
    if is_distributed() and tensors:
        _flat_collective_(list(tensors), "broadcast")


def broadcast_rng_state_(device: torch.device) -> None:
    """Give every rank rank 0's torch RNG state (CPU, and ``device``'s when it is CUDA).

    Draws shared by the whole global batch (e.g. a supernet's Gumbel noise, drawn once per
    step) then agree across ranks even when forwards consumed different amounts of
    randomness (batch-shape-dependent dropout or SpecAugment).
    """
    if not is_distributed():
        return
    target = comm_device(device)
    cpu = torch.get_rng_state().to(target)
    dist.broadcast(cpu, src=0)
    torch.set_rng_state(cpu.cpu())
    if device.type == "cuda":
        gpu = torch.cuda.get_rng_state(device).to(target)
        dist.broadcast(gpu, src=0)
        torch.cuda.set_rng_state(gpu.cpu(), device)


def all_reduce_sum(values: Sequence[float], device: torch.device) -> list[float]:
    """The element-wise sum over ranks of a few floats (float64); identity in one process."""
    if not is_distributed():
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64, device=comm_device(device))
    dist.all_reduce(t)
    return t.tolist()


def check_same_on_all_ranks(value: int, what: str, device: torch.device) -> None:
    """Raise on every rank when ranks disagree on an integer (e.g. the resumed step).

    Raises:
        RuntimeError: the ranks' values differ.
    """
    if not is_distributed():
        return
    t = torch.tensor([value, -value], dtype=torch.int64, device=comm_device(device))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    high, low = int(t[0]), -int(t[1])
    if high != low:
        raise RuntimeError(
            f"ranks disagree on {what} (from {low} to {high}); every rank must see the same "
            "files (a shared checkpoint directory)"
        )


__all__ = [
    "BUCKET_NUMEL",
    "all_reduce_sum",
    "average_gradients_",
    "broadcast_rng_state_",
    "broadcast_tensors_",
    "check_same_on_all_ranks",
    "comm_device",
    "init_from_env",
    "is_distributed",
    "is_rank0",
    "launched_by_torchrun",
    "rank",
    "shard_bounds",
    "shutdown",
    "task_loss_count",
    "world_size",
]
