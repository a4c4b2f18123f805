"""Tiny training runs for the multi-process (DDP) test, in one process or under torchrun.

Usage: ``torchrun --standalone --nproc-per-node 2 tests/ddp_worker.py OUT_DIR``. Every rank
joins the gloo group (:func:`mpqbench.distributed.init_from_env`), runs :func:`run_all` and
saves what it trained to ``OUT_DIR/rank<R>.safetensors`` and ``OUT_DIR/rank<R>.json`` (each
rank writes its own files only so that the test can check that the replicas agree).
The test imports :func:`run_all` for the single-process reference on the same global batch.

Two runs on tiny-whisper (2 s window, so a global batch of clips with different numbers of
label tokens is split unevenly: 5 clips over 2 ranks = 3 + 2):

- ``uniform``: 4-bit fake-quantized QAT for 4 steps via :func:`qat_fixed_bits`;
- ``one_stage``: the one-stage method, 4 supernet steps (weights and architecture logits,
  Gumbel noise, bit-budget penalty) then 2 pass-2 steps on the extracted allocation.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from mpqbench import distributed
from mpqbench.method import Budget, Target, Workload, run_method
from mpqbench.method.fixed_bits import qat_fixed_bits
from mpqbench.quant.allocation import allocation_for
from mpqbench.quant.checkpoint import list_checkpoints
from mpqbench.quant.formats import Quantizer
from mpqbench.quant.qat import TrainConfig, train
from mpqbench.quant.teacher import build_teacher_cache
from mpqbench.search.one_stage import OneStageConfig
from mpqbench.workloads.data.types import Utterance
from mpqbench.workloads.models.registry import load_model

TEXTS = ["THE CAT SAT ON THE MAT", "A DOG", "BIRDS SING IN THE TALL TREES TODAY", "WE WALK",
         "IT IS VERY COLD OUTSIDE", "RAIN"]
GLOBAL_BATCH = 5


def utterances() -> list[Utterance]:
    rng = np.random.default_rng(0)
    return [Utterance(id=f"9-1-{i:04d}", text=TEXTS[i % len(TEXTS)],
                      audio=(0.1 * rng.standard_normal(16000 + 3000 * i)).astype(np.float32))
            for i in range(6)]


def workload() -> Workload:
    model = load_model("tiny-whisper")
    model.set_window_(2)
    data = utterances()
    return Workload(name=model.name, model=model, train=data, dev=data[:2],
                    eligible=list(allocation_for(model, 8).quantized),
                    teacher=build_teacher_cache(model, data, batch_size=3, progress=False))


def _weights(work: Workload) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in work.model.model.state_dict().items()}


def run_all() -> dict[str, Any]:
    """Both runs; returns ``{"tensors": name -> tensor, "info": JSON-ready results}``."""
    train = TrainConfig(lr=1e-3, warmup_frac=0.0, grad_clip=1.0)
    tensors: dict[str, torch.Tensor] = {}
    info: dict[str, Any] = {"world_size": distributed.world_size()}

    work = workload()
    budget = Budget(train_steps=4, batch_size=GLOBAL_BATCH, seed=1)
    _, result = qat_fixed_bits(work, allocation_for(work.model, 4), quantizer=Quantizer(),
                               budget=budget, train_config=train, desc="ddp uniform")
    tensors |= {f"uniform/{k}": v for k, v in _weights(work).items()}
    info["uniform"] = {"history": result.history}

    work = workload()
    # A weak penalty (active for the first steps) and a target the argmax meets: a mixed
    # allocation whose top two logits per layer are >= 4.5e-4 apart (ranks agree to 1e-7).
    # No filling of an allocation under the target (when the method offers it): like the
    # repair it is a knapsack over logits, where layers with logits equal to ~1e-8 (q and
    # k projections of one block) could trade places; the logits are compared instead.
    extra = {"fill_tolerance": None} if "fill_tolerance" in {
        f.name for f in dataclasses.fields(OneStageConfig)} else {}
    config = OneStageConfig(train=train, pass2_frac=0.34, arch_lr=0.05, budget_weight=0.5,
                            **extra)
    budget = Budget(train_steps=6, batch_size=GLOBAL_BATCH, seed=2)
    out = run_method("one_stage", work, Target(avg_bits=4.5), budget, config)
    tensors |= {f"one_stage/{k}": v for k, v in _weights(work).items()}
    info["one_stage"] = {
        "allocation": out.allocation.to_dict(),
        "logits": out.info["logits"],
        "expected": out.info["expected_avg_bits"]["samples"],
        "final_loss": out.info["final_loss"],
    }
    return {"tensors": tensors, "info": info}


def gradient_average_check() -> dict[str, Any]:
    """:func:`~mpqbench.distributed.average_gradients_` on hand-set gradients: ``a`` used on
    every rank, ``b`` on rank 0 only, ``c`` on none."""
    rank = distributed.rank()
    a, b, c = (torch.zeros(2, requires_grad=True) for _ in range(3))
    a.grad = torch.tensor([1.0, 2.0]) + 2 * rank
    if rank == 0:
        b.grad = torch.tensor([4.0, 6.0])
    distributed.average_gradients_([a, b, c])
    return {"a": a.grad.tolist(), "b": b.grad.tolist(), "c": c.grad}


def checkpoint_check(out: Path) -> dict[str, Any]:
    """Train 3 steps with a checkpoint every step into a directory of this rank's own: only
    rank 0's fills. Resuming then finds different newest checkpoints on the two ranks."""
    rank = distributed.rank()
    ckpt = out / f"ckpt-rank{rank}"
    work = workload()
    config = TrainConfig(lr=1e-3, checkpoint_every=1, checkpoint_min_interval_s=0)
    kwargs = {"steps": 3, "batch_size": 2, "seed": 0, "config": config, "checkpoint_dir": ckpt,
              "progress": False}
    train(work.model, work.train, **kwargs)
    files = [p.name for p in list_checkpoints(ckpt)]
    try:
        train(work.model, work.train, **kwargs)
        error = None
    except RuntimeError as exc:
        error = str(exc)
    return {"files": files, "resume_error": error}


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    if not distributed.init_from_env("cpu"):
        raise SystemExit("ddp_worker.py: start me with torchrun --nproc-per-node 2")
    try:
        grads = gradient_average_check()
        result = run_all()
        result["info"]["gradient_average"] = grads
        result["info"]["checkpoints"] = checkpoint_check(out)
        rank = distributed.rank()
        save_file(result["tensors"], str(out / f"rank{rank}.safetensors"))
        (out / f"rank{rank}.json").write_text(json.dumps(result["info"]), encoding="utf-8")
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    main()
