"""Lossless and lossless compression ratio (DESIGN.md section 6).

A compressed system is lossless when, on every evaluated split, it is not significantly
worse than the 32-bit run under MAPSSWE (two-sided test at alpha = 0.05; being significantly
*better* still counts as lossless, so the rule is one-sided in effect). The lossless
compression ratio of a method is the largest CR among its lossless systems.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Literal

from mpqbench.bench.stats.mapsswe import MapssweResult

__all__ = [
    "is_lossless",
    "lossless_compression_ratio",
    "lossless_compression_ratios",
    "significantly_worse",
]


def significantly_worse(result: MapssweResult, system: Literal["a", "b"] = "b") -> bool:
    """True when ``system`` is significantly worse than the other one in ``result``.

    Args:
        result: a MAPSSWE comparison.
        system: which side of ``result`` is the candidate; the default ``"b"`` matches
            ``mapsswe(baseline_ops, candidate_ops)``.

    Raises:
        ValueError: ``system`` is neither ``"a"`` nor ``"b"``.
    """
    if system not in ("a", "b"):
        raise ValueError(f"system must be 'a' or 'b', got {system!r}")
    other = "a" if system == "b" else "b"
    return result.significant and result.better == other


def is_lossless(per_split: Mapping[str, MapssweResult], system: Literal["a", "b"] = "b") -> bool:
    """Whether a system is lossless: not significantly worse than 32-bit on any split.

    Args:
        per_split: split name -> ``mapsswe(ops_32bit, ops_system)`` on that split.
        system: which side of each comparison is the compressed system (default ``"b"``).

    Returns:
        True when no split shows the system significantly worse.

    Raises:
        ValueError: no splits, a value that is not a :class:`MapssweResult`, or a bad
            ``system``.
    """
    if not per_split:
        raise ValueError("is_lossless: no evaluated splits")
    for split, result in per_split.items():
        if not isinstance(result, MapssweResult):
            raise ValueError(
                f"is_lossless: split {split!r} holds {type(result).__name__}, "
                "expected a MapssweResult"
            )
    return not any(significantly_worse(r, system) for r in per_split.values())


def _check_cr(where: str, cr: object) -> float:
    if isinstance(cr, bool) or not isinstance(cr, (int, float)) or not math.isfinite(cr):
        raise ValueError(f"{where}: compression ratio must be a finite number, got {cr!r}")
    if cr <= 0:
        raise ValueError(f"{where}: compression ratio must be > 0, got {cr!r}")
    return float(cr)


def lossless_compression_ratio(systems: Iterable[tuple[float, bool]]) -> float | None:
    """Largest compression ratio among a method's lossless systems.

    Args:
        systems: ``(compression_ratio, lossless)`` for each system of one method (each
            target, seed, ...).

    Returns:
        The largest CR whose system is lossless, or ``None`` when none is.

    Raises:
        ValueError: a CR that is not a finite positive number, or a flag that is not a bool.
    """
    best: float | None = None
    for i, item in enumerate(systems):
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise ValueError(f"system {i}: expected (compression_ratio, lossless), got {item!r}")
        cr, lossless = item
        cr = _check_cr(f"system {i}", cr)
        if not isinstance(lossless, bool):
            raise ValueError(f"system {i}: lossless must be a bool, got {lossless!r}")
        if lossless and (best is None or cr > best):
            best = cr
    return best


def lossless_compression_ratios(
    rows: Iterable[tuple[str, float, bool]],
) -> dict[str, float | None]:
    """Lossless CR per method from ``(method, compression_ratio, lossless)`` rows.

    Returns:
        method -> largest lossless CR (``None`` when the method has no lossless system), in
        the order methods first appear.

    Raises:
        ValueError: a malformed row (see :func:`lossless_compression_ratio`).
    """
    grouped: dict[str, list[tuple[float, bool]]] = {}
    for i, row in enumerate(rows):
        if not (isinstance(row, (tuple, list)) and len(row) == 3):
            raise ValueError(
                f"row {i}: expected (method, compression_ratio, lossless), got {row!r}"
            )
        method, cr, lossless = row
        grouped.setdefault(str(method), []).append((cr, lossless))
    return {m: lossless_compression_ratio(v) for m, v in grouped.items()}
