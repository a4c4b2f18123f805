"""How the token embedding's damage splits over its rows: whisper-tiny.en, PTQ, dev WER.

Only the token embedding (also the output projection) is quantized, post-training, with
per-row max scales; everything else stays 32-bit. The table is split into row groups by
token id (``WhisperSpeechModel.split_embedding_rows_``): ids below ``CUT`` (the frequent
strings of the byte-level BPE: lower id, earlier merge) at ``HI`` bits, ids ``CUT`` to
50255 at ``LO`` bits, and ``<|endoftext|>`` with the special and timestamp tokens (50256
and above) at ``HI``. ``CUT = 0`` quantizes the whole table at ``LO`` bits. Each
configuration is decoded on all 100 dev utterances (20 s window, bf16, 10 tokens/s cap,
the default suite's decoding). It also prints how much of each split's reference tokens
lies below each cut.

    python scripts/embedding_rows_ptq.py [--config CUT:HI:LO ...] [--coverage]
"""

from __future__ import annotations

import argparse
import collections
import json
import time

from mpqbench.bench.workload import open_model
from mpqbench.precision import compute_dtype
from mpqbench.quant.allocation import Allocation
from mpqbench.quant.layers import frozen_quantized_weights, prepare_
from mpqbench.workloads.data.embedded import open_split
from mpqbench.workloads.evaluate import evaluate

MODEL = "whisper-tiny.en"
SPECIALS = 50256  # <|endoftext|>: the first special token of the English vocabulary
DEFAULT_CONFIGS = ["0:3:3", "4096:8:2", "8192:8:2", "8192:4:2", "16384:4:2", "8192:8:3",
                   "16384:6:3"]
CUTS = (2048, 4096, 8192, 16384, 32768)


def parse_config(text: str) -> tuple[int, int, int]:
    try:
        cut, hi, lo = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--config {text!r}: expected CUT:HI:LO") from None
    if not 0 <= cut < SPECIALS:
        raise argparse.ArgumentTypeError(f"--config {text!r}: CUT must be in 0..{SPECIALS - 1}")
    return cut, hi, lo


def coverage() -> None:
    model = open_model(MODEL, device="cpu")
    for split in ("train", "dev", "test-clean", "test-other"):
        counts: collections.Counter[int] = collections.Counter()
        for utt in open_split("embedded", split):
            counts.update(model.text_ids(utt.text))
        total, distinct = sum(counts.values()), len(counts)
        row = {"split": split, "tokens": total, "distinct": distinct}
        for cut in CUTS:
            row[f"mass<{cut}"] = round(sum(v for i, v in counts.items() if i < cut) / total, 3)
        print(json.dumps(row), flush=True)


def run(cut: int, hi: int, lo: int) -> dict:
    cuts = [cut, SPECIALS] if cut > 0 else [SPECIALS]
    model = open_model(MODEL, device="cpu", whisper_window_s=20, embedding_row_groups=cuts)
    rows = model.layer_groups()["embeddings"]
    bits = [hi, lo, hi] if cut > 0 else [lo, hi]
    if cut == 0 and hi != lo:
        raise ValueError("CUT = 0 quantizes the whole table: give HI = LO")
    prepare_(model, Allocation(MODEL, dict(zip(rows, bits, strict=True))))
    emb = model.model.model.decoder.embed_tokens
    sizes = [m.num_embeddings for m in emb.rows]
    avg = sum(s * b for s, b in zip(sizes, bits, strict=True)) / sum(sizes)
    t0 = time.perf_counter()
    with frozen_quantized_weights(model.model, compute_dtype("bf16")):  # as a cell decodes
        result = evaluate(model, open_split("embedded", "dev"), batch_size=16,
                          max_tokens_per_s=10, progress=False, precision="bf16")
    return {"cut": cut, "hi": hi, "lo": lo, "embedding_avg_bits": round(avg, 3),
            "dev_wer": round(100 * result.wer, 2), "errors": result.totals.errors,
            "capped": result.num_capped, "seconds": round(time.perf_counter() - t0, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=parse_config, nargs="+",
                        default=[parse_config(c) for c in DEFAULT_CONFIGS],
                        help=f"CUT:HI:LO (default: {' '.join(DEFAULT_CONFIGS)})")
    parser.add_argument("--coverage", action="store_true",
                        help="only print each split's token mass below each cut")
    args = parser.parse_args()
    if args.coverage:
        coverage()
        return 0
    for cut, hi, lo in args.config:
        print(json.dumps(run(cut, hi, lo)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
