"""``mpqbench quantize``: run one method on one workload and write one cell record.

The 32-bit reference the significance test needs is itself a cell (method ``fp32``): it is
read from ``--reference`` when given, otherwise from the record beside ``--out`` named
``<model>__fp32__<config hash>.json`` (evaluated and written there first if missing), so
cells with the same evaluation settings share it.

Under ``torchrun`` (several processes) every rank joins the process group
(:func:`mpqbench.distributed.init_from_env`: NCCL on GPUs, one GPU per rank, gloo on CPU)
and trains its share of each global batch (``--batch-size`` is the global batch); every rank
evaluates, and only rank 0 writes the record and the fp32 reference and prints the summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from mpqbench import distributed
from mpqbench._atomic import atomic_write_json
from mpqbench._names import safe_name
from mpqbench.bench.cell import FP32, CellSpec, run_cell, summary_line
from mpqbench.cli._shared import add_layer_selection_args, positive_float, resolve_device
from mpqbench.method import Budget, Target, available_methods, field_default, make_config
from mpqbench.precision import AUTO, PRECISIONS, emulated_bf16_warning, resolve_precision
from mpqbench.workloads.data.embedded import EMBEDDED
from mpqbench.workloads.metrics.alignment import ALIGNMENTS, DEFAULT_ALIGNMENT

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``quantize`` subcommand."""
    p = subparsers.add_parser(
        "quantize",
        help="run one compression method on one model and write a JSON cell record",
        description="Compress a model with one method under a target and budget, evaluate it, "
        "test significance against the 32-bit model, and write a record.",
    )
    p.add_argument("--model", default="whisper-tiny.en", help="model name or local directory")
    p.add_argument("--data", default=EMBEDDED, help="'embedded' or a LibriSpeech-layout root")
    p.add_argument("--method", required=True,
                   help=f"one of: {', '.join(available_methods())} ({FP32}: the 32-bit "
                   "reference)")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--avg-bits", type=float, help="target average bits (e.g. 4)")
    target.add_argument("--cr", type=float, help="target compression ratio (paper's rule)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="method config field (TOML value; dotted keys for nested, e.g. "
                   "train.lr=1e-4); repeatable")
    p.add_argument("--train-steps", type=int, default=50, help="QAT steps (50)")
    budget_fields = Budget.__dataclass_fields__
    for name in ("batch_size", "search_budget", "dev_subset", "seed"):
        default = field_default(budget_fields[name])
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=default,
                       help=f"{budget_fields[name].metadata['help']} ({default})")
    splits = ",".join(CellSpec.default("eval_splits"))
    p.add_argument("--eval-splits", default=splits,
                   help=f"comma-separated splits to evaluate ({splits})")
    add_layer_selection_args(p)
    p.add_argument("--eval-limit", type=int, default=None, metavar="N",
                   help="evaluate a fixed seeded subset of N utterances per split")
    p.add_argument("--precision", choices=(*PRECISIONS, AUTO),
                   default=field_default(budget_fields["precision"]),
                   help="training compute precision (fp32; bf16 autocast; fp16 on CUDA; auto: "
                        "bf16 where the device has native bf16, else fp32)")
    p.add_argument("--trim-window", action="store_true",
                   help=budget_fields["trim_window"].metadata["help"])
    p.add_argument("--eval-precision", choices=(*PRECISIONS, AUTO), default="fp32",
                   help="decoding compute precision (fp32; bf16, fp16 on CUDA, auto)")
    p.add_argument("--max-tokens-per-s", type=positive_float, default=None, metavar="RATE",
                   help="stop decoding a clip after ceil(RATE * seconds) tokens (default: "
                        "only the model's token cap)")
    p.add_argument("--alignment", choices=ALIGNMENTS, default=DEFAULT_ALIGNMENT,
                   help="WER alignment costs: unit (default) or sclite (sub 4, ins 3, del 3)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--reference", type=Path, default=None, help="the fp32 cell record")
    p.add_argument("--out", type=Path, required=True, help="record path (JSON)")
    p.add_argument("--export", type=Path, default=None, metavar="PATH",
                   help="keep the packed quantized model at PATH (safetensors; by default "
                        "it is written to a temporary file, measured, reload-checked and "
                        "deleted)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing record")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``["a=1", "train.lr=1e-4"]`` -> ``{"a": 1, "train": {"lr": 0.0001}}`` (TOML values).

    Raises:
        ValueError: an item without ``=`` or with a value TOML cannot read.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text  # bare strings need no quotes
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def run(args: argparse.Namespace) -> int:
    """Execute ``mpqbench quantize`` (once per rank under torchrun)."""
    if args.out.exists() and not args.overwrite:
        raise ValueError(f"record {args.out} already exists; pass --overwrite to replace it")
    device = resolve_device(args.device)
    joined = distributed.init_from_env(device)
    try:
        return _run(args, device)
    finally:
        if joined:
            distributed.shutdown()


def _run(args: argparse.Namespace, device: str) -> int:
    if args.method != FP32 and args.avg_bits is None and args.cr is None:
        raise ValueError("give a target: --avg-bits B or --cr R")
    target = None
    if args.method != FP32:
        target = Target(avg_bits=args.avg_bits, compression_ratio=args.cr)
    spec = CellSpec(
        model=args.model, data=args.data, method=args.method, params=parse_sets(args.set),
        target=target,
        budget=Budget(train_steps=args.train_steps, batch_size=args.batch_size,
                      search_budget=args.search_budget, dev_subset=args.dev_subset,
                      seed=args.seed, precision=resolve_precision(args.precision, device),
                      trim_window=args.trim_window),
        eval_splits=tuple(s for s in args.eval_splits.split(",") if s),
        groups=tuple(g for g in args.groups.split(",") if g),
        rules=tuple(args.rule),
        whisper_window_s=args.whisper_window,
        eval_limit=args.eval_limit,
        alignment=args.alignment,
        eval_precision=resolve_precision(args.eval_precision, device),
        max_tokens_per_s=args.max_tokens_per_s,
    )
    warning = emulated_bf16_warning((spec.budget.precision, spec.eval_precision_name), device)
    if warning:
        log.warning("%s", warning)
    reference = None
    if args.method != FP32:
        make_config(spec.method, spec.params)  # refuse a bad config before any model loads
        default_ref = f"{safe_name(args.model)}__fp32__{spec.reference().config_hash()}.json"
        ref_path = args.reference or args.out.with_name(default_ref)
        reference = _load_or_make_reference(
            spec, ref_path, device, not args.no_progress and distributed.is_rank0()
        )
    progress = not args.no_progress and distributed.is_rank0()
    record = run_cell(spec, reference=reference, device=device, progress=progress,
                      export_path=args.export)
    if distributed.is_rank0():
        atomic_write_json(args.out, record)
        print(summary_line(record))
        print(f"record: {args.out}")
    return 0


def _load_or_make_reference(spec: CellSpec, path: Path, device: str, progress: bool) -> dict:
    ref_spec = spec.reference()
    if path.exists():
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"reference record {path}: not valid JSON ({exc})") from exc
        missing = [s for s in spec.eval_splits if s not in record.get("splits", {})]
        if record.get("config_hash") != ref_spec.config_hash() or missing:
            raise ValueError(
                f"reference record {path} was made for other settings (config hash "
                f"{record.get('config_hash')} vs {ref_spec.config_hash()}); remove it or pass "
                "--reference with a matching fp32 record"
            )
        return record
    log.info("no fp32 reference at %s: evaluating the 32-bit model first", path)
    record = run_cell(ref_spec, device=device, progress=progress)
    if distributed.is_rank0():
        atomic_write_json(path, record)
    return record


__all__ = ["parse_sets", "register", "run"]
