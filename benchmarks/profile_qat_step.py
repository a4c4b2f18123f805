"""Where one 4-bit QAT step of whisper-tiny.en spends its time (torch.profiler).

Loads whisper-tiny.en at the default suite's 20 s window, fake-quantizes every block
linear at 4 bits, caches the teacher on 8 train utterances, runs one warm-up step, then
profiles ``--steps`` steps of the shared loop and prints the top operators by self CPU
time (and the share of the total). Not a benchmark (no ``bench_`` prefix): run it by hand.

    python benchmarks/profile_qat_step.py [--precision bf16] [--steps 1] [--top 15]
"""

from __future__ import annotations

import argparse

from torch.profiler import ProfilerActivity, profile

from mpqbench.quant.allocation import allocation_for
from mpqbench.quant.layers import prepare_
from mpqbench.quant.qat import TrainConfig, train
from mpqbench.quant.teacher import build_teacher_cache
from mpqbench.workloads.data.embedded import open_split
from mpqbench.workloads.models.registry import load_model

BATCH = 8


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--trim", action="store_true", help="budget trim_window")
    args = parser.parse_args(argv)
    model = load_model("whisper-tiny.en")
    model.set_window_(args.window)
    data = open_split("embedded", "train")[:BATCH]
    teacher = build_teacher_cache(model, data, batch_size=BATCH, progress=False,
                                  precision=args.precision)
    prepare_(model.model, allocation_for(model, 4))
    cfg = TrainConfig(lr=1e-5, warmup_frac=0.0)
    # Warm-up: AdamW state, allocator.
    train(model, data, steps=1, batch_size=BATCH, seed=0, config=cfg, teacher=teacher,
          progress=False, precision=args.precision, trim_window=args.trim)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train(model, data, steps=args.steps, batch_size=BATCH, seed=1, config=cfg,
              teacher=teacher, progress=False, precision=args.precision, trim_window=args.trim)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    print(f"precision {args.precision}, window {args.window} s, batch {BATCH}, "
          f"{args.steps} step(s): {total / 1e6:.2f} s self CPU in total")
    rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[: args.top]
    for e in rows:
        print(f"  {e.key[:48]:<48} {e.self_cpu_time_total / 1e6:7.3f} s "
              f"{100 * e.self_cpu_time_total / total:5.1f}%  calls {e.count}")


if __name__ == "__main__":
    main()
