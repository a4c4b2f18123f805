"""Significance statistics: WER, NIST MAPSSWE and its power, paired bootstrap, lossless
compression ratio.

Pure functions over per-utterance alignment op strings (``C/S/D/I``) or per-utterance
``(errors, ref_words)`` counts; DESIGN.md section 6.
"""

from __future__ import annotations

from mpqbench.bench.stats._ops import counts_from_ops
from mpqbench.bench.stats.bootstrap import BootstrapResult, bootstrap_wer_diff
from mpqbench.bench.stats.lossless import (
    is_lossless,
    lossless_compression_ratio,
    lossless_compression_ratios,
    significantly_worse,
)
from mpqbench.bench.stats.mapsswe import (
    MapssweResult,
    Segment,
    format_p,
    mapsswe,
    mapsswe_segments,
    normal_two_sided_log10_p,
)
from mpqbench.bench.stats.power import MapsswePower, detectable_mean_difference, mapsswe_power
from mpqbench.bench.stats.wer import wer_from_counts

__all__ = [
    "BootstrapResult",
    "MapsswePower",
    "MapssweResult",
    "Segment",
    "bootstrap_wer_diff",
    "counts_from_ops",
    "detectable_mean_difference",
    "format_p",
    "is_lossless",
    "lossless_compression_ratio",
    "lossless_compression_ratios",
    "mapsswe",
    "mapsswe_power",
    "mapsswe_segments",
    "normal_two_sided_log10_p",
    "significantly_worse",
    "wer_from_counts",
]
