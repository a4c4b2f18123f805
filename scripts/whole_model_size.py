"""Whole-model compression of whisper-tiny.en: accounted against measured packed size.

For each bit-width, every layer of the chosen groups (default ``blocks`` and
``embeddings``: the transformer linears and the token embedding, whose table is also the
output projection) is post-training quantized at that width (per-row/per-channel max
scales), then:

- the accounting's compression ratio by the paper's rule (``cr_paper``) and the blocks-only
  figure of the same bits (``blocks`` alone) are printed;
- the model is exported with ``save_packed`` and the file's size is compared with the
  accounted packed size (``size_packed_bytes``; the file adds its header and persistent
  buffers, reported apart);
- the file is reloaded onto a fresh 32-bit skeleton and a few dev utterances are decoded by
  both: the greedy transcripts must be identical (and the logits of a teacher-forced batch
  equal).

    python scripts/whole_model_size.py [--bits 4 3] [--groups blocks embeddings] [--n 8]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from mpqbench.quant.accounting import account
from mpqbench.quant.allocation import allocation_for
from mpqbench.quant.export import load_packed, save_packed
from mpqbench.quant.layers import prepare_
from mpqbench.workloads.data.embedded import open_split
from mpqbench.workloads.models.registry import load_model

MODEL = "whisper-tiny.en"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, nargs="+", default=[4, 3])
    parser.add_argument("--groups", nargs="+", default=["blocks", "embeddings"])
    parser.add_argument("--n", type=int, default=8, help="dev utterances decoded by both")
    parser.add_argument("--window", type=int, default=20)
    args = parser.parse_args()
    dev = list(open_split("embedded", "dev").subset(args.n, seed=0))
    for bits in args.bits:
        model = load_model(MODEL)
        model.set_window_(args.window)
        blocks_only = account(model, allocation_for(model, bits, groups=["blocks"]))
        allocation = allocation_for(model, bits, groups=args.groups)
        prepare_(model, allocation)
        acc = account(model, allocation)
        with tempfile.TemporaryDirectory() as tmp:
            info = save_packed(model, allocation, Path(tmp) / "model.safetensors")
            skeleton = load_model(MODEL)
            skeleton.set_window_(args.window)
            load_packed(skeleton, Path(tmp) / "model.safetensors")
        with torch.no_grad():
            same_logits = torch.equal(model.forward(model.make_batch(dev)).logits,
                                      skeleton.forward(skeleton.make_batch(dev)).logits)
        texts = model.transcribe([u.audio for u in dev])
        reloaded = skeleton.transcribe([u.audio for u in dev])
        accounted = int(acc.size_packed_bytes.value)
        print(f"{bits}-bit {'+'.join(args.groups)}: CR (paper rule) "
              f"{acc.cr_paper.value:.2f}x (blocks only {blocks_only.cr_paper.value:.2f}x), "
              f"avg {acc.avg_bits.value:.2f} bits over {acc.n_quantized.value:,} of "
              f"{acc.n_total.value:,} parameters")
        print(f"  packed file {info.file_bytes:,} bytes = header {info.header_bytes:,} + "
              f"tensors {info.file_bytes - info.header_bytes:,}; accounted {accounted:,} "
              f"(+ buffers {info.buffer_bytes:,}); file / accounted "
              f"{info.file_bytes / accounted:.4f}")
        print(f"  reload: logits equal {same_logits}; greedy transcripts identical on "
              f"{sum(a == b for a, b in zip(texts, reloaded, strict=True))}/{len(dev)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
