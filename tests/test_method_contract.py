"""The contract every compression method passes (STYLE.md 12).

The contract's list is :func:`~mpqbench.method.available_methods` itself, so a new method
cannot skip it: a registered method runs here with its default config, or with the fast
variants :data:`FAST_VARIANTS` gives it on tiny models. Each method must be deterministic
under a seed, spend exactly ``budget.train_steps`` QAT steps (the steps of its
``kind="qat"`` stages; ``kind="search"`` stages are precision learning, outside that
budget), give every eligible layer a bit-width, meet the target average bits within
TOLERANCE_BITS (or, for uniform, hit its nearest integer), and return the common result
shape. The reference method (``fp32``) passes the same contract except that it leaves
every eligible layer 32-bit and has no target to meet.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mpqbench.method import (
    Budget,
    MethodResult,
    Target,
    Workload,
    available_methods,
    compression_methods,
    get_method,
    make_config,
    run_method,
)
from mpqbench.quant.accounting import account
from mpqbench.quant.allocation import allocation_for
from mpqbench.quant.teacher import build_teacher_cache
from mpqbench.workloads.data.types import Utterance
from mpqbench.workloads.models.registry import load_model

#: How far a mixed-precision method's average bits may sit above its target.
TOLERANCE_BITS = 0.25

#: Config variants per method (id -> params) for a fast run on tiny models; a method
#: missing here runs once with its default config.
FAST_VARIANTS: dict[str, dict[str, dict]] = {
    "one_stage": {"one_stage": {"arch_lr": 0.05, "pass2_frac": 0.34}},
    "optuna": {"optuna": {"dev_batch_size": 3, "population_size": 4}},
    "two_stage": {
        "two_stage-hessian": {"stage1": "hessian"},
        "two_stage-kl": {"stage1": "kl"},
        "two_stage-dnas": {"stage1": "dnas", "arch_lr": 0.05},
    },
}

METHODS = [
    pytest.param((name, params), id=variant)
    for name in available_methods()
    for variant, params in FAST_VARIANTS.get(name, {name: {}}).items()
]


COMPRESSING = [p for p in METHODS if not get_method(p.values[0][0]).reference]


def test_variants_name_registered_methods_and_fp32_is_the_only_reference():
    # (METHODS covers every registered method by construction: it is built from the
    # registry.) A variant keyed by a name no method has would silently never run.
    assert set(FAST_VARIANTS) <= set(available_methods()), "a variant of no method"
    assert [n for n in available_methods() if get_method(n).reference] == ["fp32"]
    assert "fp32" not in compression_methods()


TEXTS = ["THE CAT SAT", "A DOG RAN HOME", "BIRDS SING", "WE WALK TO TOWN", "IT IS COLD"]


def utterances(n: int, seed: int) -> list[Utterance]:
    rng = np.random.default_rng(seed)
    return [
        Utterance(id=f"{seed}-1-{i:04d}", text=TEXTS[i % len(TEXTS)],
                  audio=(0.1 * rng.standard_normal(4800 + 400 * i)).astype(np.float32))
        for i in range(n)
    ]


def make_workload() -> Workload:
    model = load_model("tiny-ctc")
    train, dev = utterances(6, 1), utterances(3, 2)
    eligible = list(allocation_for(model, 8).quantized)
    teacher = build_teacher_cache(model, train, batch_size=3, progress=False)
    return Workload(name=model.name, model=model, train=train, dev=dev, eligible=eligible,
                    teacher=teacher)


def run(name: str, params: dict, target: Target, seed: int = 0) -> tuple[Workload, MethodResult]:
    workload = make_workload()
    budget = Budget(train_steps=3, batch_size=2, search_budget=4, dev_subset=3, seed=seed)
    torch.manual_seed(1234)
    result = run_method(name, workload, target, budget, make_config(name, params))
    return workload, result


@pytest.fixture(params=METHODS)
def method(request):
    return request.param


@pytest.fixture(params=COMPRESSING)
def compressing(request):
    return request.param


def test_returns_common_shape_and_covers_every_eligible_layer(method):
    name, params = method
    workload, result = run(name, params, Target(avg_bits=4))
    assert isinstance(result, MethodResult)
    assert result.model is workload.model
    assert set(result.allocation.layers) == set(workload.eligible)
    if get_method(name).reference:
        assert all(b is None for b in result.allocation.layers.values())
    else:
        assert all(b is not None for b in result.allocation.layers.values())
    assert result.stages and all(s.seconds >= 0 for s in result.stages)
    assert result.compression_seconds == pytest.approx(sum(s.seconds for s in result.stages))


def test_spends_exactly_the_training_budget(method):
    name, params = method
    _, result = run(name, params, Target(avg_bits=4))
    assert all(s.kind in ("qat", "search") for s in result.stages)
    assert result.qat_steps == sum(s.steps for s in result.stages if s.kind == "qat") == 3


@pytest.mark.parametrize("target_bits", [3.0, 4.0, 6.0])
def test_meets_the_target_average_bits(compressing, target_bits):
    name, params = compressing
    workload, result = run(name, params, Target(avg_bits=target_bits))
    avg = account(workload.model.model, result.allocation).avg_bits.value
    if name == "uniform":
        assert avg == round(target_bits)
    else:
        assert avg <= target_bits + TOLERANCE_BITS


def test_deterministic_under_a_seed(method):
    name, params = method
    _, a = run(name, params, Target(avg_bits=4), seed=7)
    _, b = run(name, params, Target(avg_bits=4), seed=7)
    assert dict(a.allocation.layers) == dict(b.allocation.layers)
    wa, wb = a.model.model.state_dict(), b.model.model.state_dict()
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
