"""The one-stage supernet's weight mixture: the block path against the vectorised path.

whisper-tiny.en with the default suite's supernet: every block linear and the tied token
embedding (in its 7 row groups) over candidates {2, 3, 4, 6, 8}, LSQ scales at <= 3 bits,
max scales. One round = every layer's mixed weight (one soft Gumbel draw per layer) forward
and backward with a gradient of ones, the weights, logits and scales all requiring grad:

- ``block``: the layers' own forward, :func:`mpqbench.quant.supernet_mix.block_mix`;
- ``vectorised``: the same mix by the primitives the block path replaced,
  ``mixed_fake_quantize`` over the max candidates (their ``(K, N)`` tensor kept for the
  backward) plus ``y_i * fake_quantize_lsq`` per learnable candidate.

Reported: median seconds of a round per path (paths alternate within each round), their
ratio, and the largest difference between the two mixed weights. ``--ops`` also times single
elementwise ops on one block (``CPU_BLOCK_ELEMENTS`` floats): what the block path's design
avoids (boolean masks, fresh outputs) against what it uses; and max|W| per row of an
embedding-sized table by ``abs().amax`` against ``primitives.absmax``.

``--step-rounds R`` then times the whole one_stage training step with each path, and the
4-bit QAT step of the same layers, each in a fresh process, alternating over R rounds:
``bench_host_heap.step_seconds`` (batch 4 drawn from 96 train utterances, trimmed batches,
KL to the teacher; one_stage with the logits' optimizer and bit-budget term; median of
``--steps`` steps), the vectorised path patched in for its process.

    python benchmarks/bench_supernet_mix.py [--rounds 5] [--threads N] [--ops]
        [--step-rounds 2 --steps 10]

Under pytest-benchmark: ``pytest benchmarks/bench_supernet_mix.py --benchmark-only``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
import torch

from mpqbench.quant.allocation import allocation_for
from mpqbench.quant.formats import Quantizer
from mpqbench.quant.primitives import absmax
from mpqbench.quant.supernet import (
    gumbel_softmax_weights,
    mixed_fake_quantize,
    prepare_supernet_,
    supernet_modules,
)
from mpqbench.quant.supernet_mix import CPU_BLOCK_ELEMENTS
from mpqbench.workloads.models.registry import load_model

CANDIDATES = (2, 3, 4, 6, 8)
ROW_GROUPS = (2048, 4096, 8192, 16384, 32768, 50256)


def supernet_layers() -> dict:
    """whisper-tiny.en's supernet layers as the default suite's one_stage builds them."""
    model = load_model("whisper-tiny.en")
    model.split_embedding_rows_(ROW_GROUPS)
    eligible = list(allocation_for(model, 4, groups=("blocks", "embeddings")).quantized)
    prepare_supernet_(model.model, eligible, CANDIDATES, Quantizer(),
                      learnable_scale_max_bits=3)
    model.model.train()
    return supernet_modules(model.model)


def vectorised_mix(layer, y: torch.Tensor) -> torch.Tensor:
    """The mix by the vectorised primitives (what ``_mix`` ran before the block path)."""
    return _vectorised_rows(layer, layer.weight, y, None)


def round_seconds(layers: dict, path: str) -> tuple[float, list[torch.Tensor]]:
    """One forward + backward of every layer's mix by ``path``; (seconds, mixed weights)."""
    draws = [gumbel_softmax_weights(m.alpha, 1.0, False)[0] for m in layers.values()]
    t0 = time.perf_counter()
    if path == "block":
        outs = [m._mix(m.weight, y) for m, y in zip(layers.values(), draws, strict=True)]
    else:
        outs = [vectorised_mix(m, y) for m, y in zip(layers.values(), draws, strict=True)]
    torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])
    seconds = time.perf_counter() - t0
    for m in layers.values():
        for p in m.parameters():
            p.grad = None
    return seconds, [o.detach() for o in outs]


def op_microseconds(repeats: int = 200) -> dict[str, float]:
    """Mean microseconds of single ops on one block of fp32 values."""
    cols = 384
    rows = CPU_BLOCK_ELEMENTS // cols
    a, b = torch.randn(rows, cols), torch.randn(rows, cols)
    s = torch.rand(rows, 1)
    mask = a.abs() < 1.5
    out = torch.empty_like(a)
    ops: dict[str, Callable[[], object]] = {
        "mul (fresh output)": lambda: a * b,
        "mul (into a buffer)": lambda: torch.mul(a, b, out=out),
        "round_ (in place)": lambda: out.round_(),
        "clamp_ (in place)": lambda: out.clamp_(-3, 3),
        "addcmul_ (row scale)": lambda: out.addcmul_(a, s),
        "sign_ (in place)": lambda: out.sign_(),
        "vdot": lambda: torch.vdot(a.view(-1), b.view(-1)),
        "abs() < t (bool mask)": lambda: a.abs() < 1.5,
        "fp32 * bool mask": lambda: b * mask,
        "where(mask, x, 0)": lambda: torch.where(mask, b, 0.0),
    }
    table = torch.randn(51864, 384)  # the token embedding's shape
    ops["max|W| per row of the embedding: abs().amax"] = (
        lambda: table.abs().amax(dim=1, keepdim=True))
    ops["max|W| per row of the embedding: absmax"] = lambda: absmax(table)
    result = {}
    for name, op in ops.items():
        op()
        n = repeats // 10 if "embedding" in name else repeats
        t0 = time.perf_counter()
        for _ in range(n):
            op()
        result[name] = (time.perf_counter() - t0) / n * 1e6
    return result


def step_child(path: str, steps: int) -> dict[str, float]:
    """Median step seconds and peak memory in this process: the one_stage step by ``path``
    (``block`` or ``vectorised``), or the 4-bit QAT step of the same layers (``uniform``)."""
    import bench_host_heap

    from mpqbench.quant.supernet import _SupernetMixin

    if path == "vectorised":
        _SupernetMixin._block_mix = lambda self, w, y, row_ids: _vectorised_rows(self, w, y,
                                                                                 row_ids)
    system = "uniform" if path == "uniform" else "one_stage"
    return bench_host_heap.step_seconds(system, steps, "fp32", train_utts=96)


def _vectorised_rows(layer, w, y, row_ids):
    """``mixed_fake_quantize`` over the max candidates plus each LSQ candidate, of ``w``
    (the weight, or the rows gathered at ``row_ids``)."""
    fixed = [i for i, b in enumerate(layer.candidates) if b not in layer.learnable_bits]
    out = mixed_fake_quantize(w, y[fixed], [layer.candidates[i] for i in fixed],
                              layer.quantizer.granularity, "max")
    for i, b in enumerate(layer.candidates):
        if b in layer.learnable_bits:
            out = out + y[i] * layer._lsq_candidate(w, b, row_ids)
    return out


def compare_steps(rounds: int, steps: int, threads: int) -> None:
    """Alternate fresh processes of the block and vectorised one_stage steps; print medians."""
    results: dict[str, list[dict[str, float]]] = {"block": [], "vectorised": [], "uniform": []}
    for _ in range(rounds):
        for path in ("vectorised", "block", "uniform"):
            out = subprocess.run(
                [sys.executable, __file__, "--step-child", path, "--steps", str(steps),
                 "--threads", str(threads)],
                check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            results[path].append(json.loads(out))
            print(f"  one_stage step, {path}: {results[path][-1]}", flush=True)
    med = {p: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
           for p, rs in results.items()}
    b, v, u = med["block"], med["vectorised"], med["uniform"]
    print(f"  one_stage step (median of {rounds} processes x {steps} steps): block "
          f"{b['step_s']:.3f} s, vectorised {v['step_s']:.3f} s: {b['step_s'] / v['step_s']:.3f};"
          f" peak memory {v['peak_mib']:.0f} -> {b['peak_mib']:.0f} MiB; the 4-bit QAT step "
          f"{u['step_s']:.3f} s: one_stage / uniform {v['step_s'] / u['step_s']:.2f} -> "
          f"{b['step_s'] / u['step_s']:.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--ops", action="store_true", help="also time single block ops")
    parser.add_argument("--step-rounds", type=int, default=0,
                        help="also time the one_stage step per path over this many rounds")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--step-child", choices=("block", "vectorised", "uniform"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.step_child:
        print(json.dumps(step_child(args.step_child, args.steps)))
        return
    torch.manual_seed(0)
    layers = supernet_layers()
    weights = sum(m.weight.numel() for m in layers.values())
    times: dict[str, list[float]] = {"block": [], "vectorised": []}
    worst = 0.0
    for path in times:  # warm-up
        round_seconds(layers, path)
    for _ in range(args.rounds):
        state = torch.random.get_rng_state()
        outs = {}
        for path in times:
            torch.random.set_rng_state(state)  # the same draws for both paths
            seconds, outs[path] = round_seconds(layers, path)
            times[path].append(seconds)
        worst = max(worst, max(float((a - b).abs().max())
                               for a, b in zip(outs["block"], outs["vectorised"], strict=True)))
    block, vec = (statistics.median(times[p]) for p in ("block", "vectorised"))
    print(f"cpu capability {torch.backends.cpu.get_cpu_capability()}, {args.threads} threads; "
          f"{len(layers)} supernet layers, {weights / 1e6:.1f} M weights, candidates "
          f"{CANDIDATES}, LSQ at <= 3 bits; block {CPU_BLOCK_ELEMENTS} elements")
    print(f"  forward + backward of every mix (median of {args.rounds}): block {block:.3f} s, "
          f"vectorised {vec:.3f} s: block / vectorised {block / vec:.3f}; largest difference "
          f"of the mixed weights {worst:.2e}")
    if args.ops:
        print(f"  single ops on {CPU_BLOCK_ELEMENTS} fp32 values (microseconds):")
        for name, us in op_microseconds().items():
            print(f"    {name:44s} {us:9.1f}")
    if args.step_rounds:
        del layers
        compare_steps(args.step_rounds, args.steps, args.threads)


@pytest.fixture(scope="module")
def layers():
    torch.manual_seed(0)
    return supernet_layers()


@pytest.mark.parametrize("path", ["block", "vectorised"])
def test_supernet_mix(benchmark, layers, path):
    benchmark.pedantic(round_seconds, args=(layers, path), rounds=3, warmup_rounds=1)


if __name__ == "__main__":
    main()
