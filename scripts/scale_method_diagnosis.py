"""Why the ``mse`` weight scale can lose to ``max``: weight error against output error.

For every transformer-block linear of whisper-tiny.en, the inputs it sees on a few
teacher-forced dev utterances are captured (at most ``--rows`` rows per layer, sampled),
then the layer's weight is fake-quantized per output channel with the ``max`` and the
``mse`` scale (``mpqbench.quant.primitives.choose_scale``) and compared:

- weight error: ||Q(W) - W||^2 / ||W||^2 (what ``mse`` minimises, per channel);
- output error: ||X (Q(W) - W)^T||^2 / ||X W^T||^2 on the captured inputs X (what the
  model feels);
- salience of the clipped weights: ``mse`` clips the weights above r* max|W_i| in each row
  i; their input columns' activation RMS over the mean column RMS (> 1: the clipped weights
  sit on the inputs with the largest activations, the "salient" weights of AWQ, Lin et al.
  2024).

    python scripts/scale_method_diagnosis.py [--bits 4] [--n 8] [--rows 4096]
"""

from __future__ import annotations

import argparse

import torch

from mpqbench.bench.layer_names import short_names
from mpqbench.quant.primitives import choose_scale, fake_quantize
from mpqbench.workloads.data.embedded import open_split
from mpqbench.workloads.models.registry import load_model

MODEL = "whisper-tiny.en"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, nargs="+", default=[4])
    parser.add_argument("--n", type=int, default=8, help="dev utterances")
    parser.add_argument("--rows", type=int, default=4096, help="input rows kept per layer")
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--top", type=int, default=10, help="layers listed")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_model(MODEL)
    model.set_window_(args.window)
    names = model.layer_groups()["blocks"]
    short = short_names(names)
    inputs: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def capture(module, args_, output):
            x = args_[0].detach().reshape(-1, args_[0].shape[-1]).float()
            keep = torch.randperm(x.shape[0])[: args.rows]
            inputs[name] = x[keep]
        return capture

    handles = [model.model.get_submodule(n).register_forward_hook(hook(n)) for n in names]
    dev = list(open_split("embedded", "dev").subset(args.n, seed=0))
    with torch.no_grad():
        model.forward(model.make_batch(dev, trim=True))
    for h in handles:
        h.remove()
    for bits in args.bits:
        rows = []
        for name in names:
            w = model.model.get_submodule(name).weight.detach().float()
            x = inputs[name]
            ref = x @ w.T
            out = {}
            for method in ("max", "mse"):
                s = choose_scale(w, bits, "per_channel", method)
                q = fake_quantize(w, s, bits)
                out[method] = (float((q - w).square().sum() / w.square().sum()),
                               float((x @ (q - w).T).square().sum() / ref.square().sum()), s)
            s_max, s_mse = out["max"][2], out["mse"][2]
            ratio = s_mse / s_max  # r* per row
            clipped = w.abs() > (ratio * w.abs().amax(dim=1, keepdim=True)) + 1e-12
            col_rms = x.square().mean(dim=0).sqrt()
            sal = (float((clipped * col_rms).sum() / clipped.sum() / col_rms.mean())
                   if clipped.any() else float("nan"))
            rows.append((name, out["max"][0], out["mse"][0], out["max"][1], out["mse"][1],
                         float(clipped.float().mean()), sal))
        worse = [r for r in rows if r[4] > r[3]]
        print(f"{bits} bits, per-channel, {len(rows)} block linears, {args.n} dev utterances:")
        print(f"  weight error mse < max in {sum(r[2] < r[1] for r in rows)} layers; output "
              f"error mse > max in {len(worse)} layers")
        tot_max = sum(r[3] for r in rows)
        tot_mse = sum(r[4] for r in rows)
        print(f"  summed relative output error: max {tot_max:.4f}, mse {tot_mse:.4f}")
        clipped_sal = [r[6] for r in rows if r[5] > 0]
        print(f"  clipped weights' input-column RMS / mean column RMS: median "
              f"{sorted(clipped_sal)[len(clipped_sal) // 2]:.2f} over {len(clipped_sal)} "
              "layers with clipping")
        print("  layers with the largest output-error increase (mse - max):")
        print("  layer | weight err max | mse | output err max | mse | clipped | salience")
        for r in sorted(rows, key=lambda r: r[3] - r[4])[: args.top]:
            print(f"  {short[r[0]]} | {r[1]:.5f} | {r[2]:.5f} | {r[3]:.5f} | {r[4]:.5f} | "
                  f"{100 * r[5]:.2f}% | {r[6]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
