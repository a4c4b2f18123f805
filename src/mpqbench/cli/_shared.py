"""Command-line options shared by several subcommands."""

from __future__ import annotations

import argparse
import math

import torch

from mpqbench.bench.cell import CellSpec


def add_layer_selection_args(p: argparse.ArgumentParser) -> None:
    """``--groups``, ``--rule`` and ``--whisper-window``: which layers a run quantizes and
    the Whisper encoder window (as ``quantize`` and ``search`` take them)."""
    groups = ",".join(CellSpec.default("groups"))
    p.add_argument("--groups", default=groups,
                   help=f"comma-separated layer groups to quantize ({groups})")
    p.add_argument("--rule", action="append", default=[], metavar="PATTERN=BITS",
                   help="per-layer override, e.g. '*.fc2=8' or 'proj_out=none'; repeatable")
    p.add_argument("--whisper-window", type=int, default=None, metavar="SECONDS",
                   help="shrink a Whisper model's encoder window (default: 30 s)")


def resolve_device(choice: str) -> str:
    """``--device`` value -> ``"cpu"`` or ``"cuda"`` (``auto``: cuda when torch sees one).

    Raises:
        ValueError: ``cuda`` asked for where torch sees no CUDA device.
    """
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but torch sees no CUDA device")
    return choice


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value
