"""fp32 against bf16: a 4-bit QAT step and decoding throughput on whisper-tiny.en.

Each system runs in its own fresh process (so peak memory is its own), alternating over
rounds so that load drift on a shared machine hits both alike:

- ``step``: the shared loop (:func:`mpqbench.quant.qat.train`, KL to the teacher on) on
  the same 8 utterances of the embedded ``train`` split, every layer of ``--groups`` (the
  suites' default: transformer-block linears and the tied token embedding) fake-quantized
  at 4 bits, ``precision`` fp32 or bf16 (matmuls under CPU/CUDA autocast,
  quantizers and weights fp32). Reported: the median step time read inside the loop
  (device-synchronised; step 0, which allocates AdamW state, excluded) and the process's
  peak resident memory.
- ``eval``: :func:`mpqbench.workloads.evaluate.evaluate` of the 32-bit model over the first
  ``--eval-utts`` utterances of ``dev`` in fp32 or bf16: utterances per second.

The issue-13 target: bf16 / fp32 step time <= 0.5 with peak memory not higher. bf16 is fast
only where the CPU has bf16 instructions (``avx512_bf16`` / AMX); elsewhere it can be
slower than fp32. The default window is the default suite's 20 s. ``--device cuda`` runs
both on the GPU (CUDA autocast; peak memory is then ``torch.cuda.max_memory_allocated``,
and fp32 matmuls use TF32 only if ``--tf32`` is given: it is off by default, as in the
suites).

    python benchmarks/bench_precision_step.py [--rounds 2] [--steps 3] [--window 20]
        [--groups blocks,embeddings] [--device cpu|cuda] [--tf32]
    pytest benchmarks/bench_precision_step.py --benchmark-only
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

import pytest
import torch
from loop_timing import median_step_seconds, rss_mib

from mpqbench.bench.cell import CellSpec
from mpqbench.quant.allocation import allocation_for
from mpqbench.quant.layers import prepare_
from mpqbench.quant.teacher import build_teacher_cache
from mpqbench.workloads.data.embedded import open_split
from mpqbench.workloads.evaluate import evaluate
from mpqbench.workloads.models.registry import load_model

BATCH = 8
PRECISIONS = ("fp32", "bf16")
GROUPS = tuple(CellSpec.default("groups"))


def _model(window: int, threads: int, device: str = "cpu"):
    torch.set_num_threads(threads)
    model = load_model("whisper-tiny.en", device=device)
    if window != 30:
        model.set_window_(window)
    return model


def _peak_mib(device: str) -> float:
    """This process's peak memory so far: resident set on CPU, allocated on CUDA (MiB)."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return rss_mib()


def step_cost(precision: str, steps: int, window: int, threads: int,
              trim: bool = False, groups: tuple[str, ...] = GROUPS,
              device: str = "cpu") -> dict[str, float]:
    """Median time of a 4-bit QAT step in ``precision`` and the peak memory, in this process
    (``trim``: batches trimmed to their longest clip, budget ``trim_window``)."""
    model = _model(window, threads, device)
    data = open_split("embedded", "train")[:BATCH]
    teacher = build_teacher_cache(model, data, batch_size=BATCH, progress=False,
                                  precision=precision)
    prepare_(model.model, allocation_for(model, 4, groups=groups))
    step_s = median_step_seconds(model, data, teacher, steps, BATCH, precision, trim)
    return {"step_s": step_s, "peak_mib": _peak_mib(device)}


def eval_cost(precision: str, n_utts: int, window: int, threads: int,
              device: str = "cpu") -> dict[str, float]:
    """Utterances per second of greedy decoding over ``n_utts`` dev utterances."""
    model = _model(window, threads, device)
    split = open_split("embedded", "dev")
    utts = [split[i] for i in range(min(n_utts, len(split)))]
    result = evaluate(model, utts, batch_size=16, progress=False, precision=precision)
    return {"utt_per_s": result.utterances_per_s, "wer": result.wer,
            "peak_mib": _peak_mib(device)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--eval-utts", type=int, default=32)
    parser.add_argument("--window", type=int, default=20, help="Whisper encoder window (s)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("--trim", action="store_true",
                        help="trim training batches to their longest clip (trim_window)")
    parser.add_argument("--groups", default=",".join(GROUPS),
                        help=f"layer groups quantized in the step ({','.join(GROUPS)})")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--tf32", action="store_true",
                        help="on CUDA, let fp32 matmuls use TF32 (default: off, as the suites)")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "PRECISION"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, precision = args.child
        groups = tuple(g for g in args.groups.split(",") if g)
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        out = (step_cost(precision, args.steps, args.window, args.threads, args.trim, groups,
                         args.device)
               if kind == "step"
               else eval_cost(precision, args.eval_utts, args.window, args.threads,
                              args.device))
        print(json.dumps(out))
        return
    kinds = ("step",) if args.skip_eval else ("step", "eval")
    results: dict[tuple[str, str], list[dict[str, float]]] = {
        (k, p): [] for k in kinds for p in PRECISIONS}
    for _ in range(args.rounds):
        for kind in kinds:
            for precision in PRECISIONS:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", kind, precision,
                     "--steps", str(args.steps), "--eval-utts", str(args.eval_utts),
                     "--window", str(args.window), "--threads", str(args.threads),
                     "--groups", args.groups, "--device", args.device,
                     *(["--trim"] if args.trim else []), *(["--tf32"] if args.tf32 else [])],
                    check=True, capture_output=True, text=True,
                ).stdout.strip().splitlines()[-1]
                results[(kind, precision)].append(json.loads(out))
                print(kind, precision, results[(kind, precision)][-1], flush=True)
    med = {key: {m: statistics.median(r[m] for r in v) for m in v[0]}
           for key, v in results.items()}
    where = (f"cuda {torch.cuda.get_device_name()} (TF32 {'on' if args.tf32 else 'off'})"
             if args.device == "cuda" else
             f"cpu capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"{where}, window {args.window} s"
          f"{' (training batches trimmed)' if args.trim else ''}, batch {BATCH}, "
          f"groups {args.groups}, "
          f"{args.threads} threads, {args.rounds} rounds")
    s32, s16 = med[("step", "fp32")], med[("step", "bf16")]
    print(f"  4-bit QAT step: fp32 {s32['step_s']:.2f} s, bf16 {s16['step_s']:.2f} s; "
          f"ratio bf16/fp32 time {s16['step_s'] / s32['step_s']:.3f}, "
          f"peak memory {s16['peak_mib'] / s32['peak_mib']:.3f}")
    if "eval" in kinds:
        e32, e16 = med[("eval", "fp32")], med[("eval", "bf16")]
        print(f"  eval ({args.eval_utts} dev utterances): fp32 {e32['utt_per_s']:.2f} utt/s "
              f"(WER {100 * e32['wer']:.2f}%), bf16 {e16['utt_per_s']:.2f} utt/s "
              f"(WER {100 * e16['wer']:.2f}%); throughput ratio bf16/fp32 "
              f"{e16['utt_per_s'] / e32['utt_per_s']:.3f}")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_qat_step_precision(benchmark, precision):
    # In-process: one 4-bit QAT step of whisper-tiny.en (batch 8, 20 s window) per round.
    benchmark.pedantic(step_cost, args=(precision, 1, 20, torch.get_num_threads()),
                       rounds=2, iterations=1)


if __name__ == "__main__":
    main()
