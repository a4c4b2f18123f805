"""Precision-search methods: the one-stage supernet method and Optuna search.

One-stage (implementation module ``one_stage``): :class:`OneStageConfig`,
:func:`run_one_stage` (registered as ``"one_stage"``). The supernet search it shares with
two_stage-dnas (budget term, schedule, repair and fill) lives one floor down, in
:mod:`mpqbench.method.supernet_search`.

Optuna search (implementation modules ``optuna_search``, ``optuna_storage``, ``ptq_proxy``):
:class:`OptunaConfig`, :func:`run_optuna` (registered as ``"optuna"``),
:func:`search_allocation` (the search stage alone), :class:`PTQProxy` (KL / WER scores of an
allocation by post-training quantization), :func:`open_storage` (storage URL -> Optuna
storage).
"""

from __future__ import annotations

from mpqbench.search.one_stage import OneStageConfig, run_one_stage
from mpqbench.search.optuna_search import OptunaConfig, run_optuna, search_allocation
from mpqbench.search.optuna_storage import open_storage
from mpqbench.search.ptq_proxy import PTQProxy

__all__: list[str] = [
    "OneStageConfig",
    "OptunaConfig",
    "PTQProxy",
    "open_storage",
    "run_one_stage",
    "run_optuna",
    "search_allocation",
]
