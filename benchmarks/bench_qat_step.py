"""Cost of one QAT step against one 32-bit fine-tuning step on whisper-tiny.en.

Each system runs in its own fresh process (so peak memory is its own), on the same batch of
8 utterances of the embedded corpus' ``train`` split, through the shared loop
(:func:`mpqbench.quant.qat.train`) with the KL-to-teacher term on:

- ``fp32``: plain fine-tuning, no quantizer;
- ``qat``: every transformer-block linear fake-quantized at 4 bits (``prepare_``).

Reported per system: the median step time read inside the loop (device-synchronised;
the first step, which allocates AdamW state, is excluded) and the peak resident memory of
the process (``ru_maxrss``) both in total and above the level reached before training
(model, teacher cache and data loaded). The must-show (issue 3): QAT / fp32 step time
<= 1.15 and peak memory <= 1.3. Systems alternate over rounds so that load drift on a
shared machine hits both alike.

    python benchmarks/bench_qat_step.py [--rounds 2] [--steps 3] [--window 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

import torch
from loop_timing import median_step_seconds, rss_mib

from mpqbench.quant.allocation import allocation_for
from mpqbench.quant.layers import prepare_
from mpqbench.quant.teacher import build_teacher_cache
from mpqbench.workloads.data.embedded import open_split
from mpqbench.workloads.models.registry import load_model

BATCH = 8


def one_system(kind: str, steps: int, window: int, threads: int) -> dict[str, float]:
    """Run ``steps`` steps of ``kind`` in this process; return timings and memory."""
    torch.set_num_threads(threads)
    model = load_model("whisper-tiny.en")
    if window != 30:
        model.set_window_(window)
    data = open_split("embedded", "train")[:BATCH]
    teacher = build_teacher_cache(model, data, batch_size=BATCH, progress=False)
    if kind == "qat":
        prepare_(model.model, allocation_for(model, 4))
    base = rss_mib()
    step_s = median_step_seconds(model, data, teacher, steps, BATCH)
    peak = rss_mib()
    return {"step_s": step_s, "peak_mib": peak, "train_mib": peak - base}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--window", type=int, default=30, help="Whisper encoder window (s)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--child", choices=("fp32", "qat"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(one_system(args.child, args.steps, args.window, args.threads)))
        return
    results: dict[str, list[dict[str, float]]] = {"fp32": [], "qat": []}
    for _ in range(args.rounds):
        for kind in ("fp32", "qat"):
            out = subprocess.run(
                [sys.executable, __file__, "--child", kind, "--steps", str(args.steps),
                 "--window", str(args.window), "--threads", str(args.threads)],
                check=True, capture_output=True, text=True,
            ).stdout.strip().splitlines()[-1]
            results[kind].append(json.loads(out))
            print(kind, results[kind][-1], flush=True)
    med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in results.items()}
    print(f"window {args.window} s, batch {BATCH}, {args.threads} threads, "
          f"{args.rounds} rounds x {args.steps} steps")
    for kind in ("fp32", "qat"):
        m = med[kind]
        print(f"  {kind:5s} step {m['step_s']:.2f} s  peak RSS {m['peak_mib']:.0f} MiB  "
              f"(training adds {m['train_mib']:.0f} MiB)")
    print(f"  ratio qat/fp32: time {med['qat']['step_s'] / med['fp32']['step_s']:.3f}, "
          f"peak memory {med['qat']['peak_mib'] / med['fp32']['peak_mib']:.3f} "
          f"(training increment {med['qat']['train_mib'] / med['fp32']['train_mib']:.3f})")


if __name__ == "__main__":
    main()
