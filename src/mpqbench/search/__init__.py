"""Precision-search methods: the one-stage supernet method and Optuna search.

One-stage (implementation module ``one_stage``): :class:`OneStageConfig`,
:func:`run_one_stage` (registered as ``"one_stage"``), :class:`BitBudget` (the bit-budget
term), :class:`SupernetSchedule` (temperature annealing + batched Gumbel draws per step),
:func:`repair_allocation` (the most probable allocation within a target).

Optuna search (implementation modules ``optuna_search``, ``optuna_storage``, ``ptq_proxy``):
:class:`OptunaConfig`, :func:`run_optuna` (registered as ``"optuna"``),
:func:`search_allocation` (the search stage alone), :class:`PTQProxy` (KL / WER scores of an
allocation by post-training quantization), :func:`open_storage` (storage URL -> Optuna
storage).
"""

from __future__ import annotations

from mpqbench.search.one_stage import (
    BitBudget,
    OneStageConfig,
    SupernetSchedule,
    repair_allocation,
    run_one_stage,
)
from mpqbench.search.optuna_search import OptunaConfig, run_optuna, search_allocation
from mpqbench.search.optuna_storage import open_storage
from mpqbench.search.ptq_proxy import PTQProxy

__all__: list[str] = [
    "BitBudget",
    "OneStageConfig",
    "OptunaConfig",
    "PTQProxy",
    "SupernetSchedule",
    "open_storage",
    "repair_allocation",
    "run_one_stage",
    "run_optuna",
    "search_allocation",
]
