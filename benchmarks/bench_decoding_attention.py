"""Whisper decoding: transformers' SDPA against the single-query attention path, side by side.

Decodes the same dev utterances with the 32-bit whisper-tiny.en at the default suite's 20 s
window, batch 16, bf16 autocast, ``max_tokens_per_s = 10``, alternating the attention
implementation (and its order) over rounds so machine-load drift hits both alike; prints
each round's wall time, the medians and their ratio (single-query / SDPA), and the WER of
each (a change of path may change a token: bf16 rounding differs). ``--parity`` then
decodes the whole split in fp32 and in bf16 with the single-query path and prints the
MAPSSWE test of the two.

    python benchmarks/bench_decoding_attention.py [--n 32] [--rounds 3] [--parity]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence

from mpqbench.bench.stats.mapsswe import mapsswe
from mpqbench.timing import device_label
from mpqbench.workloads.data.embedded import EMBEDDED, open_split
from mpqbench.workloads.evaluate import evaluate
from mpqbench.workloads.models.registry import load_model
from mpqbench.workloads.models.whisper_attention import SINGLE_QUERY_ATTENTION

WINDOW_S = 20
RATE = 10.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="dev")
    parser.add_argument("--n", type=int, default=32, help="utterances per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--parity", action="store_true",
                        help="also decode the whole split in fp32 and bf16 and test them")
    args = parser.parse_args(argv)
    model = load_model("whisper-tiny.en")
    model.set_window_(WINDOW_S)
    split = open_split(EMBEDDED, args.split)
    sample = list(split.subset(min(args.n, len(split)), seed=1))
    evaluate(model, sample[: args.batch_size], batch_size=args.batch_size, progress=False,
             precision="bf16")  # warm-up
    impls = ("sdpa", SINGLE_QUERY_ATTENTION)
    walls: dict[str, list[float]] = {i: [] for i in impls}
    wers: dict[str, float] = {}
    print(f"whisper-tiny.en, {len(sample)} {args.split} utterances, batch {args.batch_size}, "
          f"bf16, {WINDOW_S} s window, {device_label('cpu')}")
    for rnd in range(args.rounds):
        for impl in impls if rnd % 2 == 0 else impls[::-1]:
            model.model.set_attn_implementation(impl)
            result = evaluate(model, sample, batch_size=args.batch_size, progress=False,
                              precision="bf16", max_tokens_per_s=RATE)
            walls[impl].append(result.wall_s)
            wers[impl] = result.wer
            print(f"round {rnd} {impl:<28} {result.wall_s:6.2f} s  WER {100 * result.wer:.2f}%")
    a, b = (statistics.median(walls[i]) for i in impls)
    print(f"median wall: sdpa {a:.2f} s, single-query {b:.2f} s, ratio {b / a:.3f}")
    if args.parity:
        model.model.set_attn_implementation(SINGLE_QUERY_ATTENTION)
        ops = {}
        for precision in ("fp32", "bf16"):
            result = evaluate(model, split, batch_size=args.batch_size, progress=False,
                              precision=precision, max_tokens_per_s=RATE)
            t = result.totals
            print(f"{args.split} {precision}: WER {100 * result.wer:.2f}% "
                  f"({t.s + t.d + t.i} errors / {t.n} words), {result.utterances_per_s:.2f} utt/s")
            ops[precision] = {row.score.id: row.score.ops for row in result.rows}
        test = mapsswe(ops["fp32"], ops["bf16"])
        print(f"MAPSSWE fp32 vs bf16: z = {test.z:.3f}, p = {test.p_value:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
