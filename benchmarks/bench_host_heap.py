"""glibc's default heap against one that keeps freed large blocks: QAT steps and decoding.

glibc serves every block over its mmap threshold (32 MiB at most on 64-bit) by a fresh
``mmap`` and unmaps it on free, so a new tensor that large starts as pages the kernel
faults in and zeroes one by one (whisper-tiny.en's tied token embedding is 76 MiB; a
multiply into a fresh tensor of its size took 45 ms against 12 ms into an existing one on a
2-core AVX2 EPYC). The ``keep`` mode starts its processes with glibc's
``MALLOC_MMAP_MAX_=0`` and ``MALLOC_TRIM_THRESHOLD_`` 2 GiB (large blocks come from the heap
and stay there when freed); ``system`` with glibc's defaults. Measured and not adopted
(docs/FINDINGS.md, "Page faults of large tensors"): with realistic batches the gain was
a few percent at most.

Each (heap mode, system) runs in its own fresh process, alternating over rounds so that load
drift on a shared machine hits both modes alike. Systems, as the default suite runs them
(whisper-tiny.en, 20 s window, batch 4 with batches trimmed to their longest clip, KL to a
teacher cached on the utterances drawn from, ``--precision``):

- ``uniform``: every block linear and the token embedding (in the mixed methods' row
  groups, or as one layer with ``--whole-embedding``, as the uniform cells have it)
  fake-quantized at 4 bits;
- ``one_stage``: the same layers as supernet layers over the default suite's candidates
  {2, 3, 4, 6, 8} with learnable scales at <= 3 bits, the logits in their own group and
  the bit-budget term on (the step one_stage runs);
- ``eval``: greedy decoding of the first ``--eval-utts`` dev utterances by the 32-bit
  model, batch 16.

Reported: the median step time read inside the loop (step 0, which allocates AdamW state,
excluded), decoding throughput, and each process's peak resident memory; then keep /
system ratios. ``--train-utts`` sets how many train utterances batches are drawn from: the
first 8 are short clips, which makes per-step fixed costs look larger than in a cell (which
draws from all 440).

    python benchmarks/bench_host_heap.py [--rounds 2] [--steps 12] [--train-utts 96]
        [--systems uniform,one_stage,eval] [--whole-embedding] [--precision fp32|bf16]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time

import torch
from loop_timing import rss_mib

from mpqbench.method.supernet_search import BitBudget
from mpqbench.quant.accounting import layer_sizes
from mpqbench.quant.allocation import allocation_for
from mpqbench.quant.formats import Quantizer
from mpqbench.quant.layers import prepare_
from mpqbench.quant.qat import TrainConfig, train
from mpqbench.quant.supernet import prepare_supernet_, supernet_modules
from mpqbench.quant.teacher import build_teacher_cache
from mpqbench.workloads.data.embedded import open_split
from mpqbench.workloads.evaluate import evaluate
from mpqbench.workloads.models.registry import load_model

BATCH = 4
WINDOW = 20
ROW_GROUPS = (2048, 4096, 8192, 16384, 32768, 50256)
CANDIDATES = (2, 3, 4, 6, 8)
SYSTEMS = ("uniform", "one_stage", "eval")
#: glibc's environment for each mode (read when a process starts).
MODES = {"system": {}, "keep": {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**31)}}


def _model():
    model = load_model("whisper-tiny.en")
    model.set_window_(WINDOW)
    return model


def step_seconds(system: str, steps: int, precision: str, train_utts: int = 96,
                 row_groups: bool = True) -> dict[str, float]:
    """Median step time of ``system``'s QAT loop, in this process, on seeded batches of the
    first ``train_utts`` train utterances (the teacher cached on them)."""
    model = _model()
    if row_groups:
        model.split_embedding_rows_(ROW_GROUPS)
    data = list(open_split("embedded", "train")[:train_utts])
    teacher = build_teacher_cache(model, data, batch_size=BATCH, progress=False,
                                  precision=precision)
    module = model.model
    allocation = allocation_for(model, 4, groups=("blocks", "embeddings"))
    groups, extra = [], None
    if system == "uniform":
        prepare_(module, allocation)
    else:
        eligible = list(allocation.quantized)
        prepare_supernet_(module, eligible, CANDIDATES, Quantizer(),
                          learnable_scale_max_bits=3)
        layers = supernet_modules(module)
        groups = [{"params": [m.alpha for m in layers.values()], "lr": 0.1}]
        extra = BitBudget({n: module.get_submodule(n) for n in eligible},
                          layer_sizes(module, eligible), 4.0, mode="penalty", weight=10.0,
                          dual_lr=0.0)
    stamps: list[float] = []
    train(model, data, steps=steps + 1, batch_size=BATCH, seed=0,
          config=TrainConfig(lr=1e-5, warmup_frac=0.0), teacher=teacher,
          extra_param_groups=groups, extra_loss=extra,
          on_step=lambda _: stamps.append(time.perf_counter()), progress=False,
          precision=precision, trim_window=True)
    stamps.append(time.perf_counter())
    return {"step_s": statistics.median(b - a for a, b in itertools.pairwise(stamps[1:])),
            "peak_mib": rss_mib()}


def eval_rate(n_utts: int, precision: str) -> dict[str, float]:
    """Decoding throughput of the 32-bit model over ``n_utts`` dev utterances."""
    split = open_split("embedded", "dev")
    utts = [split[i] for i in range(min(n_utts, len(split)))]
    result = evaluate(_model(), utts, batch_size=16, progress=False, precision=precision)
    return {"utt_per_s": result.utterances_per_s, "wer": result.wer, "peak_mib": rss_mib()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--eval-utts", type=int, default=32)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--train-utts", type=int, default=96,
                        help="train utterances the batches are drawn from (teacher cached)")
    parser.add_argument("--whole-embedding", action="store_true",
                        help="the token embedding as one layer (as the uniform cells have it)")
    parser.add_argument("--child", nargs=2, metavar=("SYSTEM", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        system, _mode = args.child
        torch.set_num_threads(args.threads)
        out = (eval_rate(args.eval_utts, args.precision) if system == "eval"
               else step_seconds(system, args.steps, args.precision, args.train_utts,
                                 not args.whole_embedding))
        print(json.dumps(out))
        return
    systems = [s for s in args.systems.split(",") if s]
    results: dict[tuple[str, str], list[dict[str, float]]] = {
        (s, m): [] for s in systems for m in MODES}
    for _ in range(args.rounds):
        for system in systems:
            for mode in MODES:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", system, mode, "--steps",
                     str(args.steps), "--eval-utts", str(args.eval_utts), "--precision",
                     args.precision, "--threads", str(args.threads), "--train-utts",
                     str(args.train_utts), *(["--whole-embedding"] if args.whole_embedding
                                             else [])],
                    check=True, capture_output=True, text=True,
                    env={**os.environ, **MODES[mode]},
                ).stdout.strip().splitlines()[-1]
                results[(system, mode)].append(json.loads(out))
                print(system, mode, results[(system, mode)][-1], flush=True)
    print(f"cpu capability {torch.backends.cpu.get_cpu_capability()}, {args.threads} threads, "
          f"precision {args.precision}, {args.rounds} rounds of {args.steps} steps, batches "
          f"from {args.train_utts} train utterances, embedding "
          f"{'as one layer' if args.whole_embedding else 'in row groups'} (medians; "
          "keep / system)")
    for system in systems:
        med = {m: {k: statistics.median(r[k] for r in results[(system, m)])
                   for k in results[(system, m)][0]} for m in MODES}
        sys_, keep = med["system"], med["keep"]
        mem = keep["peak_mib"] / sys_["peak_mib"]
        if system == "eval":
            print(f"  eval ({args.eval_utts} dev utterances): system {sys_['utt_per_s']:.2f} "
                  f"utt/s, keep {keep['utt_per_s']:.2f} utt/s: throughput "
                  f"{keep['utt_per_s'] / sys_['utt_per_s']:.3f}x; WER "
                  f"{100 * sys_['wer']:.2f}% / {100 * keep['wer']:.2f}%; peak memory {mem:.3f}")
        else:
            print(f"  {system} step: system {sys_['step_s']:.3f} s, keep {keep['step_s']:.3f} s:"
                  f" time {keep['step_s'] / sys_['step_s']:.3f}; peak memory "
                  f"{sys_['peak_mib']:.0f} -> {keep['peak_mib']:.0f} MiB ({mem:.3f})")


if __name__ == "__main__":
    main()
