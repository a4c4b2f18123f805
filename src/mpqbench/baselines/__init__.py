"""Baselines: uniform-precision QAT and two-stage mixed precision."""

from __future__ import annotations

__all__: list[str] = []
