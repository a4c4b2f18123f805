"""The method floor: the one interface every compression method implements, the method
registry, and the helpers several methods share (fixed-bit QAT, the bit budget). It sits
above ``quant/`` and below the methods (``search/``, ``baselines/``), which import it and
never each other."""

from __future__ import annotations

from mpqbench.method.interface import (
    METHOD_MODULES,
    STAGE_KINDS,
    Budget,
    MethodEntry,
    MethodResult,
    StageTiming,
    Target,
    TeacherSource,
    Workload,
    available_methods,
    compression_methods,
    field_default,
    get_method,
    make_config,
    register_method,
    run_method,
)

__all__ = [
    "METHOD_MODULES",
    "STAGE_KINDS",
    "Budget",
    "MethodEntry",
    "MethodResult",
    "StageTiming",
    "Target",
    "TeacherSource",
    "Workload",
    "available_methods",
    "compression_methods",
    "field_default",
    "get_method",
    "make_config",
    "register_method",
    "run_method",
]
