"""Quantization primitives, quantized layers, allocation, accounting, export, QAT loop."""

from __future__ import annotations

__all__: list[str] = []
