"""Baselines: uniform-precision QAT and two-stage mixed precision.

Public API (implementation modules ``uniform``, ``two_stage``, ``sensitivity``):
:class:`UniformConfig` / :func:`run_uniform` (registered as ``"uniform"``),
:class:`TwoStageConfig` / :func:`run_two_stage` (registered as ``"two_stage"``), and the
stage-1 sensitivity measures :func:`hutchinson_traces`, :func:`hawq_costs`,
:func:`kl_sensitivities`.
"""

from __future__ import annotations

from mpqbench.baselines.sensitivity import hawq_costs, hutchinson_traces, kl_sensitivities
from mpqbench.baselines.two_stage import TwoStageConfig, run_two_stage
from mpqbench.baselines.uniform import UniformConfig, run_uniform

__all__: list[str] = [
    "TwoStageConfig",
    "UniformConfig",
    "hawq_costs",
    "hutchinson_traces",
    "kl_sensitivities",
    "run_two_stage",
    "run_uniform",
]
