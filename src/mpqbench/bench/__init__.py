"""Benchmark harness: workloads (models, data, decoding), metrics, statistics, records, CLI."""

from __future__ import annotations

__all__: list[str] = []
