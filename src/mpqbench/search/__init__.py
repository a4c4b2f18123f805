"""Precision-search methods: the one-stage supernet method and Optuna search."""

from __future__ import annotations

__all__: list[str] = []
