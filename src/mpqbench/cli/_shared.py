"""Command-line options shared by several subcommands."""

from __future__ import annotations

import argparse


def add_layer_selection_args(p: argparse.ArgumentParser) -> None:
    """``--groups``, ``--rule`` and ``--whisper-window``: which layers a run quantizes and
    the Whisper encoder window (as ``quantize`` and ``search`` take them)."""
    p.add_argument("--groups", default="blocks",
                   help="comma-separated layer groups to quantize (blocks)")
    p.add_argument("--rule", action="append", default=[], metavar="PATTERN=BITS",
                   help="per-layer override, e.g. '*.fc2=8' or 'proj_out=none'; repeatable")
    p.add_argument("--whisper-window", type=int, default=None, metavar="SECONDS",
                   help="shrink a Whisper model's encoder window (default: 30 s)")
