"""The one-stage method: config, budget term, repair, stages and info (tiny models)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from mpqbench.method import Budget, Target, Workload, make_config, run_method
from mpqbench.method.supernet_search import BitBudget, fill_allocation, repair_allocation
from mpqbench.quant.accounting import account, layer_sizes
from mpqbench.quant.allocation import allocation_for
from mpqbench.quant.layers import fake_quant_modules
from mpqbench.quant.qat import TrainConfig, train
from mpqbench.quant.supernet import prepare_supernet_, supernet_modules
from mpqbench.quant.teacher import build_teacher_cache
from mpqbench.search.one_stage import OneStageConfig
from mpqbench.workloads.data.types import Utterance
from mpqbench.workloads.models.registry import load_model

#: Float results here depend on which CPU kernels torch runs: .ci/run repeats them on AVX2.
pytestmark = pytest.mark.kernels

TEXTS = ["THE CAT SAT", "A DOG RAN HOME", "BIRDS SING", "WE WALK TO TOWN"]


def utterances(n: int = 4) -> list[Utterance]:
    rng = np.random.default_rng(0)
    return [Utterance(id=f"7-1-{i:04d}", text=TEXTS[i % len(TEXTS)],
                      audio=(0.1 * rng.standard_normal(8000 + 800 * i)).astype(np.float32))
            for i in range(n)]


def workload() -> Workload:
    model = load_model("tiny-ctc")
    data = utterances()
    return Workload(name=model.name, model=model, train=data, dev=data[:2],
                    eligible=list(allocation_for(model, 8).quantized),
                    teacher=build_teacher_cache(model, data, batch_size=4, progress=False))


# ---- config -------------------------------------------------------------------------------


def test_config_from_mapping_and_validation():
    config = make_config("one_stage", {"candidates": [8, 2, 3, 4, 6], "train": {"lr": 1e-4}})
    assert config.candidates == (2, 3, 4, 6, 8) and config.train.lr == 1e-4
    bad = [
        ({"candidates": []}, "candidates"),
        ({"candidates": [2, 2]}, "candidates"),
        ({"candidates": [0, 4]}, "candidates"),
        ({"tau_start": 0.0}, "tau_start"),
        ({"arch_lr": -1.0}, "arch_lr"),
        ({"budget_weight": -1.0}, "budget_weight"),
        ({"anneal": "cosine"}, "anneal"),
        ({"budget_mode": "hinge"}, "budget_mode"),
        ({"pass2_frac": 1.0}, "pass2_frac"),
        ({"hard": "yes"}, "hard"),
        ({"quantizer": {"learnable_scale": True}}, "learnable_scale"),
    ]
    for params, field in bad:
        with pytest.raises(ValueError, match=field):
            make_config("one_stage", params)


# ---- the budget term ----------------------------------------------------------------------


def test_penalty_and_lagrangian_values():
    model = load_model("tiny-ctc").model
    eligible = list(allocation_for(load_model("tiny-ctc"), 8).quantized)
    sizes = layer_sizes(model, eligible)
    prepare_supernet_(model, eligible, (2, 4, 8))
    layers = {n: model.get_submodule(n) for n in eligible}  # zeros: E = 14/3 everywhere
    penalty = BitBudget(layers, sizes, 4.0, mode="penalty", weight=3.0, dual_lr=0.0)
    assert penalty(0).item() == pytest.approx(3.0 * (14 / 3 - 4) ** 2, rel=1e-5)
    assert BitBudget(layers, sizes, 5.0, mode="penalty", weight=3.0, dual_lr=0.0)(0).item() == 0
    lag = BitBudget(layers, sizes, 4.0, mode="lagrangian", weight=0.0, dual_lr=0.5)
    assert lag(0).item() == 0.0  # the multiplier starts at 0
    assert lag.multiplier == pytest.approx(0.5 * (14 / 3 - 4), rel=1e-5)
    assert lag(1).item() == pytest.approx((0.5 * 2 / 3) * (2 / 3), rel=1e-4)  # mu_1 (E - T)
    under = BitBudget(layers, sizes, 6.0, mode="lagrangian", weight=0.0, dual_lr=0.5)
    under(0)
    assert under.multiplier == 0.0  # projected: never negative
    assert penalty.expected == [pytest.approx(14 / 3, rel=1e-6)]


@pytest.mark.parametrize("mode", ["penalty", "lagrangian"])
def test_budget_term_pushes_expected_bits_down_in_a_few_steps(mode):
    speech = load_model("tiny-ctc")
    data = utterances()
    eligible = list(allocation_for(speech, 8).quantized)
    sizes = layer_sizes(speech.model, eligible)
    prepare_supernet_(speech.model, eligible, (2, 4, 8))
    layers = supernet_modules(speech.model)
    term = BitBudget(layers, sizes, 2.5, mode=mode, weight=100.0, dual_lr=50.0)
    train(speech, data, steps=6, batch_size=2, seed=0, config=TrainConfig(lr=1e-4),
          extra_param_groups=[{"params": [m.alpha for m in layers.values()], "lr": 0.1}],
          extra_loss=term, progress=False)
    final = term.expected_bits().item()
    assert term.expected[0] == pytest.approx(14 / 3, rel=1e-6)
    assert final < term.expected[0] - 0.3
    assert all(m.probabilities()[0] > 1 / 3 for m in layers.values())  # 2 bits gained mass


# ---- repair -------------------------------------------------------------------------------


def neg_logp(logits, cands, bits):
    """-sum_l log softmax(logits_l)[b_l]: the cost repair and fill minimise."""
    return -sum(torch.log_softmax(torch.tensor(logits[n], dtype=torch.float64), 0)[
        cands[n].index(bits[n])].item() for n in logits)


def brute_force(logits, cands, sizes, hi, lo=-math.inf):
    """Most probable allocation with average bits in [lo, hi]: (bits or None, cost)."""
    names = list(logits)
    best, best_cost = None, math.inf
    total = sum(sizes.values())
    for choice in itertools.product(*(range(len(cands[n])) for n in names)):
        bits = {n: cands[n][k] for n, k in zip(names, choice, strict=True)}
        if not lo <= sum(bits[n] * sizes[n] for n in names) / total <= hi:
            continue
        cost = neg_logp(logits, cands, bits)
        if cost < best_cost - 1e-12:
            best, best_cost = bits, cost
    return best, best_cost


@pytest.mark.parametrize("seed", range(6))
def test_repair_meets_the_target_exactly_with_the_most_probable_allocation(seed):
    g = torch.Generator().manual_seed(seed)
    names = [f"l{i}" for i in range(5)]
    cands = {n: (2, 4, 8) for n in names}
    sizes = {n: int(s) for n, s in zip(names, torch.randint(1, 6, (5,), generator=g) * 16,
                                       strict=True)}
    logits = {n: (torch.randn(3, generator=g) * 2 + torch.tensor([0.0, 0.5, 1.5])).tolist()
              for n in names}
    target = 3.0 + seed * 0.4
    bits, report = repair_allocation(logits, cands, sizes, target)
    total = sum(sizes.values())
    avg = sum(bits[n] * sizes[n] for n in names) / total
    assert avg <= target and report["avg_bits"] == pytest.approx(avg)
    argmax = {n: cands[n][int(np.argmax(logits[n]))] for n in names}
    if report["argmax_avg_bits"] <= target:
        assert bits == argmax and not report["repaired"] and report["changes"] == []
    else:
        _, cost = brute_force(logits, cands, sizes, target)
        got = neg_logp(logits, cands, bits)
        assert got == pytest.approx(cost, abs=1e-9)
        assert report["repaired"]
        assert {c["layer"] for c in report["changes"]} == {n for n in names
                                                           if bits[n] != argmax[n]}


@pytest.mark.parametrize("seed", range(8))
def test_fill_spends_the_budget_within_tolerance(seed):
    g = torch.Generator().manual_seed(100 + seed)
    names = [f"l{i}" for i in range(6)]
    cands = {n: (2, 4, 8) for n in names}
    sizes = {n: int(s) for n, s in zip(names, torch.randint(1, 5, (6,), generator=g) * 16,
                                       strict=True)}
    # Mass leaning to 2 bits, so the argmax undershoots a 4-bit target.
    logits = {n: (torch.randn(3, generator=g) * 0.5 + torch.tensor([1.0, 0.3, 0.0])).tolist()
              for n in names}
    target, tol = 4.0, 0.5
    bits, report = fill_allocation(logits, cands, sizes, target, tol)
    total = sum(sizes.values())
    avg = sum(bits[n] * sizes[n] for n in names) / total
    assert avg <= target and report["avg_bits"] == pytest.approx(avg)
    _, best = brute_force(logits, cands, sizes, target, lo=target - tol)
    assert report["reached"] == (best < math.inf)
    if report["reached"]:
        assert avg >= target - tol
        got = neg_logp(logits, cands, bits)
        # Lagrangian relaxation: optimal for its own bound, never better than the optimum.
        assert got >= best - 1e-9
        assert got <= best + 3.0  # and close to it on these small instances


def test_fill_keeps_an_argmax_that_already_spends_the_budget():
    logits = {"a": [0.0, 0.0, 5.0], "b": [5.0, 0.0, 0.0]}  # argmax 8 and 2 bits
    bits, report = fill_allocation(logits, {"a": (2, 4, 8), "b": (2, 4, 8)},
                                   {"a": 10, "b": 10}, 5.0, 0.25)
    assert bits == {"a": 8, "b": 2} and report["changes"] == [] and report["lambda"] == 0.0


def test_repair_refuses_an_unreachable_target():
    with pytest.raises(ValueError, match="below the all-minimum-bits"):
        repair_allocation({"a": [0.0, 1.0]}, {"a": (2, 4)}, {"a": 10}, 1.5)


# ---- the method ---------------------------------------------------------------------------


def test_run_gives_stages_info_and_an_extracted_model():
    wl = workload()
    budget = Budget(train_steps=5, batch_size=2, seed=1)
    config = OneStageConfig(pass2_frac=0.4, arch_lr=0.05)
    result = run_method("one_stage", wl, Target(avg_bits=3.0), budget, config)
    assert [(s.name, s.kind, s.steps) for s in result.stages] == [
        ("supernet", "qat", 3), ("pass2", "qat", 2)]
    assert result.qat_steps == 5
    assert not supernet_modules(wl.model.model)
    quantized = fake_quant_modules(wl.model.model)
    assert set(quantized) == set(wl.eligible)
    assert all(quantized[n].bits == b for n, b in result.allocation.layers.items())
    assert account(wl.model.model, result.allocation).avg_bits.value <= 3.0
    info = result.info
    assert info["target_avg_bits"] == 3.0 and info["steps"] == {"supernet": 3, "pass2": 2}
    assert set(info["logits"]) == set(wl.eligible)
    assert all(len(v) == 3 and math.isclose(sum(info["probabilities"][n]), 1.0, rel_tol=1e-5)
               for n, v in info["logits"].items())
    assert len(info["expected_avg_bits"]["samples"]) == 3
    assert info["tau"] == {"first": 1.0, "last": pytest.approx(0.1)}
    assert set(info["repair"]) >= {"argmax_avg_bits", "repaired", "changes", "avg_bits"}


def test_no_pass2_is_one_stage_and_a_compression_ratio_target_works():
    wl = workload()
    n_total = sum(p.numel() for p in wl.model.model.parameters())
    n_q = sum(layer_sizes(wl.model.model, wl.eligible).values())
    cr = 32 * n_total / (3.5 * n_q + 32 * (n_total - n_q))  # the CR of 3.5 average bits
    target = Target(compression_ratio=cr)
    result = run_method("one_stage", wl, target, Budget(train_steps=2, batch_size=2),
                        OneStageConfig(pass2_frac=0.0, hard=True, budget_mode="lagrangian"))
    assert [s.name for s in result.stages] == ["supernet"] and result.qat_steps == 2
    assert result.info["target_avg_bits"] == pytest.approx(target.avg_bits_for(n_total, n_q))
    assert result.info["target_avg_bits"] == pytest.approx(3.5)
    assert account(wl.model.model, result.allocation).cr_paper.value >= cr * (1 - 1e-12)


def test_target_below_the_smallest_candidate_is_refused():
    with pytest.raises(ValueError, match="below the smallest candidate"):
        run_method("one_stage", workload(), Target(avg_bits=1.5), Budget(train_steps=1),
                   OneStageConfig())
