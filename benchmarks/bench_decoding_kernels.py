"""The two decoding micro-measurements quoted in ``mpqbench.precision`` and
``workloads/models/whisper_attention.py`` (whisper-tiny.en shapes, bf16 autocast, CPU):

- the 51,864 x 384 output head on 16 rows under autocast, inside ``inference_mode``
  (autocast does not keep its bf16 weight copy there) and inside ``no_grad``;
- one query over 1,000 keys (batch 16, 6 heads, 64 dims): torch's SDPA on bf16 tensors,
  the fp32-matmul path of ``single_query_attention`` converting keys/values per call, and
  the same with them already fp32; with the largest error of each against fp32 SDPA.

    python benchmarks/bench_decoding_kernels.py [--calls 50]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mpqbench.workloads.models.whisper_attention import single_query_attention


def ms_per_call(fn: Callable[[], object], calls: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args()
    head, rows = nn.Linear(384, 51864, bias=False), torch.randn(16, 384)
    for name, mode in (("inference_mode", torch.inference_mode), ("no_grad", torch.no_grad)):
        with mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            ms = ms_per_call(lambda: head(rows), args.calls)
            print(f"head under autocast, {name}: {ms:.2f} ms")
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(16, 6, n, 64, generator=g) * 0.6 for n in (1, 1000, 1000))
    q, k, v = q.bfloat16(), k.bfloat16(), v.bfloat16()
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float()).transpose(1, 2)
    kinds = {
        "sdpa bf16": lambda: F.scaled_dot_product_attention(q, k, v).transpose(1, 2),
        "fp32 matmuls, convert per call": lambda: single_query_attention(None, q, k, v, None)[0],
    }
    memo = nn.Module()
    kinds["fp32 matmuls, converted once"] = lambda: single_query_attention(memo, q, k, v, None)[0]
    for name, fn in kinds.items():
        err = (fn().float() - ref).abs().max().item()
        print(f"one query over 1,000 keys, {name}: {ms_per_call(fn, args.calls):.2f} ms, "
              f"largest error {err:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
