"""Cost of fake-quantizing whisper-tiny.en-sized linear weights against the matmuls using them.

Random weights of the real shapes (d_model 384, ffn 1536; 4 encoder layers with q/k/v/out,
fc1, fc2; 4 decoder layers with self- and cross-attention q/k/v/out, fc1, fc2: 16.5M
weights; ``--head`` adds the 51,864 x 384 output projection, 36.4M in all). Timed, median of
``--repeats``:

- ``fq_max``: scale (max|W| per channel) + fake_quantize of every weight, forward only;
- ``fq_max_fwd_bwd``: the same plus the STE backward (what a QAT step adds);
- ``fq_lsq_fwd_bwd``: learnable scale (LSQ) forward + backward;
- ``layer_max_fwd_bwd``: ``QuantLinear.quantized_weight()`` forward + backward (the path
  a QAT step takes: max scale, so no clamp and no STE mask);
- ``fq_mse``: the MSE scale search (25 clipping ratios) + fake_quantize;
- ``torch_fused``: ``torch.fake_quantize_per_channel_affine`` with the same scales (reference);
- ``matmul_fwd``: ``F.linear`` through every weight with realistic token counts: encoder
  layers see batch x 1500 frames, decoder layers batch x 40 tokens.

As a script::

    python benchmarks/bench_fake_quant.py [--batch 1] [--repeats 5] [--head] [--threads N]
        [--device cuda]

Under pytest-benchmark: ``pytest benchmarks/bench_fake_quant.py --benchmark-only``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from mpqbench.quant.formats import QuantSpec
from mpqbench.quant.layers import QuantLinear
from mpqbench.quant.primitives import (
    choose_scale,
    fake_quantize,
    fake_quantize_lsq,
    qrange,
)

D, FFN, ENC, DEC, VOCAB = 384, 1536, 4, 4, 51864
ENC_FRAMES, DEC_TOKENS = 1500, 40


def whisper_tiny_linear_shapes(head: bool = False) -> list[tuple[str, tuple[int, int]]]:
    """(part, [out, in]) of every transformer-block linear of whisper-tiny.en."""
    attn = [(D, D)] * 4
    ffn = [(FFN, D), (D, FFN)]
    shapes = [("enc", s) for _ in range(ENC) for s in attn + ffn]
    shapes += [("dec", s) for _ in range(DEC) for s in attn + attn + ffn]
    if head:
        shapes.append(("dec", (VOCAB, D)))
    return shapes


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def build(head: bool, batch: int, seed: int = 0, device: str = "cpu"):
    g = torch.Generator().manual_seed(seed)
    shapes = whisper_tiny_linear_shapes(head)
    weights = [(part, (torch.randn(s, generator=g) * 0.02).to(device)) for part, s in shapes]
    inputs = {
        "enc": torch.randn(batch * ENC_FRAMES, D, generator=g).to(device),
        "dec": torch.randn(batch * DEC_TOKENS, D, generator=g).to(device),
        "enc_ffn": torch.randn(batch * ENC_FRAMES, FFN, generator=g).to(device),
        "dec_ffn": torch.randn(batch * DEC_TOKENS, FFN, generator=g).to(device),
    }
    return weights, inputs


def cases(weights, inputs, bits: int = 4) -> dict[str, Callable[[], object]]:
    leaf = [w.clone().requires_grad_() for _, w in weights]
    scales = [choose_scale(w, bits).requires_grad_() for _, w in weights]
    qmin, qmax = qrange(bits)

    def fq_max():
        with torch.no_grad():
            for w in leaf:
                fake_quantize(w, choose_scale(w, bits), bits)

    # one backward pass over all weights, as in a training step
    def fq_max_fwd_bwd():
        outs = [fake_quantize(w, choose_scale(w, bits), bits) for w in leaf]
        torch.autograd.backward(outs, outs)

    def fq_lsq_fwd_bwd():
        outs = [fake_quantize_lsq(w, s, bits) for w, s in zip(leaf, scales, strict=True)]
        torch.autograd.backward(outs, outs)

    layers = []
    for w in leaf:
        lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False, device="meta")
        lin.weight = torch.nn.Parameter(w.detach().clone())
        layers.append(QuantLinear.from_float(lin, QuantSpec(bits=bits)))

    def layer_max_fwd_bwd():
        outs = [layer.quantized_weight() for layer in layers]
        torch.autograd.backward(outs, outs)

    def fq_mse():
        with torch.no_grad():
            for w in leaf:
                fake_quantize(w, choose_scale(w, bits, method="mse"), bits)

    zps = [torch.zeros(w.shape[0], dtype=torch.int32, device=w.device) for w in leaf]

    def torch_fused():
        with torch.no_grad():
            for w, z in zip(leaf, zps, strict=True):
                s = choose_scale(w, bits).flatten()
                torch.fake_quantize_per_channel_affine(w, s, z, 0, qmin, qmax)

    def matmul_fwd():
        with torch.no_grad():
            for (part, _), w in zip(weights, leaf, strict=True):
                key = part if w.shape[1] == D else f"{part}_ffn"
                F.linear(inputs[key], w)

    timed = {
        "fq_max": fq_max,
        "fq_max_fwd_bwd": fq_max_fwd_bwd,
        "fq_lsq_fwd_bwd": fq_lsq_fwd_bwd,
        "layer_max_fwd_bwd": layer_max_fwd_bwd,
        "fq_mse": fq_mse,
        "torch_fused": torch_fused,
        "matmul_fwd": matmul_fwd,
    }
    return timed


@pytest.mark.parametrize(
    "name", ["fq_max", "fq_max_fwd_bwd", "layer_max_fwd_bwd", "torch_fused", "matmul_fwd"]
)
def test_fake_quant_cost(benchmark, name):
    weights, inputs = build(head=False, batch=1)
    benchmark.pedantic(cases(weights, inputs)[name], rounds=3, warmup_rounds=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--head", action="store_true", help="include the 51864x384 head")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    weights, inputs = build(args.head, args.batch, device=args.device)
    n = sum(w.numel() for _, w in weights)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"cpu, {torch.get_num_threads()} threads"
    )
    print(f"{len(weights)} weights, {n / 1e6:.1f}M elements, batch {args.batch}, {where}, "
          f"{args.bits} bits, fp32")
    timed = cases(weights, inputs, args.bits)
    results = {k: _median_seconds(fn, args.repeats, device) for k, fn in timed.items()}
    base = results["matmul_fwd"]
    for k, t in results.items():
        print(f"{k:16s} {t * 1e3:9.1f} ms   {t / base:6.3f} x matmul_fwd")


if __name__ == "__main__":
    main()
