"""``mpqbench eval``: 32-bit (or any loaded model's) WER on one split, written as a JSON record.

The record is written once, atomically, after the evaluation finishes: an interrupted run
(Ctrl-C, a killed process) leaves no file behind, and an existing record is only replaced
with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

from mpqbench._atomic import atomic_write_json
from mpqbench._names import safe_name
from mpqbench.bench.records import RECORD_SCHEMA, environment_block, split_record
from mpqbench.bench.workload import open_model
from mpqbench.cli._shared import positive_float, positive_int, resolve_device
from mpqbench.precision import AUTO, PRECISIONS, resolve_precision
from mpqbench.workloads.data.embedded import EMBEDDED, embedded_manifest_sha256, open_split
from mpqbench.workloads.evaluate import EvalResult, evaluate
from mpqbench.workloads.metrics.alignment import ALIGNMENTS, DEFAULT_ALIGNMENT
from mpqbench.workloads.models.registry import available_models

#: Version of the eval record layout; bump when a field changes meaning.
DEFAULT_OUT_DIR = Path("results") / "eval"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``eval`` subcommand."""
    p = subparsers.add_parser(
        "eval",
        help="WER of a model on one split (greedy decoding), written as a JSON record",
        description=(
            "Transcribe one split with greedy decoding, score it with the Whisper English "
            "normaliser, print a summary and write a JSON record with per-utterance counts."
        ),
    )
    p.add_argument(
        "--model", required=True,
        help=f"registered model ({', '.join(available_models())}) or a local HF directory",
    )
    p.add_argument(
        "--data", default=EMBEDDED,
        help="'embedded' (the corpus shipped with mpqbench) or a LibriSpeech-layout directory "
        "(the corpus root or the split directory itself); default: embedded",
    )
    p.add_argument("--split", required=True, help="split name, e.g. test-clean, test-other, real")
    p.add_argument("--batch-size", type=positive_int, default=16, help="clips per batch (16)")
    p.add_argument(
        "--limit", type=positive_int, default=None,
        help="evaluate a seeded random subset of N utterances (kept in id order)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the --limit subset (0)")
    p.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto",
        help="where to run; auto = cuda when available, else cpu",
    )
    p.add_argument(
        "--max-new-tokens", type=positive_int, default=None,
        help="token cap per clip for Whisper decoding (default: 128); ignored by CTC models",
    )
    p.add_argument(
        "--max-tokens-per-s", type=positive_float, default=None, metavar="RATE",
        help="also stop a Whisper clip after ceil(RATE * seconds) tokens (default: no "
             "duration cap); ignored by CTC models",
    )
    p.add_argument(
        "--out", type=Path, default=None,
        help=f"record path (default: {DEFAULT_OUT_DIR}/<model>__<data>__<split>.json)",
    )
    p.add_argument("--precision", choices=(*PRECISIONS, AUTO), default="fp32",
                   help="decoding compute precision: fp32 (default), bf16, fp16 (CUDA), auto "
                        "(bf16 where the device has native bf16, else fp32)")
    p.add_argument("--alignment", choices=ALIGNMENTS, default=DEFAULT_ALIGNMENT,
                   help="WER alignment costs: unit (default) or sclite (sub 4, ins 3, del 3)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing record")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``mpqbench eval``; returns the exit code."""
    out = args.out
    if out is None:
        out = default_record_path(args.model, args.data, args.split)
    if out.exists() and not args.overwrite:
        raise ValueError(f"record {out} already exists; pass --overwrite to replace it")
    if out.is_dir():
        raise ValueError(f"--out {out} is a directory; give a file path")
    device = resolve_device(args.device)
    args.precision = resolve_precision(args.precision, device)  # the record states it

    split = open_split(args.data, args.split)  # scan first: cheap, and fails fast
    total_in_split = len(split)
    if args.limit is not None:
        split = split.subset(args.limit, seed=args.seed)
    model = open_model(args.model, device=device)
    result = evaluate(
        model,
        split,
        batch_size=args.batch_size,
        max_new_tokens=_token_cap(model.family, args.max_new_tokens),
        max_tokens_per_s=args.max_tokens_per_s if model.family == "whisper" else None,
        progress=not args.no_progress,
        alignment=args.alignment,
        precision=args.precision,
    )
    record = build_record(
        args=args, model_family=model.family, device=device,
        split_dir=str(split.directory.resolve()), total_in_split=total_in_split, result=result,
    )
    atomic_write_json(out, record)
    _print_summary(args, result, out)
    return 0


def build_record(
    *,
    args: argparse.Namespace,
    model_family: str,
    device: str,
    split_dir: str,
    total_in_split: int,
    result: EvalResult,
) -> dict[str, Any]:
    """The JSON record of one evaluation, in the layout of every record
    (:mod:`mpqbench.bench.records`): config, environment, and the split's raw rows."""
    embedded = args.data == EMBEDDED
    data: dict[str, Any] = {
        "source": EMBEDDED if embedded else str(Path(args.data).expanduser().resolve()),
        "split": args.split,
        "split_dir": split_dir,
        "utterances_in_split": total_in_split,
        "limit": args.limit,
        "seed": args.seed if args.limit is not None else None,
    }
    if args.data == EMBEDDED:
        data["manifest_sha256"] = embedded_manifest_sha256()
    return {
        "schema": RECORD_SCHEMA,
        "kind": "eval",
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "config": {
            "model": args.model,
            "data": data["source"],
            "split": args.split,
            "limit": args.limit,
            "seed": data["seed"],
            "decoding": "greedy",
            "batch_size": result.batch_size,
            "max_new_tokens": result.max_new_tokens,
            "max_tokens_per_s": result.max_tokens_per_s,
            "normalizer": "openai-whisper-english",
            "alignment": result.alignment,
            "precision": args.precision,
        },
        "model_family": model_family,
        "data": data,
        "environment": environment_block(device),
        "splits": {args.split: split_record(result)},
    }


def default_record_path(model: str, data: str, split: str) -> Path:
    """``results/eval/<model>__<data>__<split>.json`` with path-unsafe characters replaced."""
    data_label = EMBEDDED if data == EMBEDDED else Path(data).expanduser().resolve().name
    parts = [safe_name(model.strip("/") or "model"), safe_name(data_label), safe_name(split)]
    return DEFAULT_OUT_DIR / ("__".join(parts) + ".json")


def _token_cap(family: str, requested: int | None) -> int | None:
    """The cap to record and use: the requested one, else Whisper's default; CTC has none."""
    if requested is not None or family != "whisper":
        return requested
    from mpqbench.workloads.models.whisper import DEFAULT_MAX_NEW_TOKENS

    return DEFAULT_MAX_NEW_TOKENS


def _print_summary(args: argparse.Namespace, result: EvalResult, out: Path) -> None:
    t = result.totals
    print(
        f"{args.model} on {args.data}/{args.split}: WER {100 * t.wer:.2f}% "
        f"({t.errors} errors = S {t.s} + D {t.d} + I {t.i} over {t.n} words, "
        f"{len(result.rows)} utterances)\n"
        f"capped outputs: {result.num_capped}; time {result.wall_s:.1f} s "
        f"({result.utterances_per_s:.2f} utt/s, RTF {result.real_time_factor:.3f})\n"
        f"record: {out}"
    )


__all__ = ["build_record", "default_record_path", "register", "run"]
