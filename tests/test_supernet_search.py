"""The shared supernet search's switches (issue 15): target-initialised logits, the logits'
own optimizer, and a budget that constrains without dictating (tiny models)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from mpqbench.baselines.two_stage import TwoStageConfig, dnas_stage
from mpqbench.method import Budget, Target, Workload, make_config, run_method
from mpqbench.method.supernet_search import (
    BitBudget,
    SupernetSearchConfig,
    arch_training,
    initial_logits,
    target_init_logits,
)
from mpqbench.quant.accounting import layer_sizes
from mpqbench.quant.allocation import allocation_for
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
                      audio=(0.1 * rng.standard_normal(6000 + 800 * i)).astype(np.float32))
            for i in range(n)]


def workload() -> Workload:
    model = load_model("tiny-ctc")
    data = utterances()
    return Workload(name=model.name, model=model, train=data, dev=data[:2],
                    eligible=list(allocation_for(model, 8).quantized),
                    teacher=build_teacher_cache(model, data, batch_size=4, progress=False))


def supernet(init=None, candidates=(2, 4, 8)):
    """The tiny CTC model's eligible layers as supernet layers: (speech, layers, sizes)."""
    speech = load_model("tiny-ctc")
    eligible = list(allocation_for(speech, 8).quantized)
    sizes = layer_sizes(speech.model, eligible)
    prepare_supernet_(speech.model, eligible, candidates, init_logits=init)
    return speech, {n: speech.model.get_submodule(n) for n in eligible}, sizes


# ---- config -------------------------------------------------------------------------------


@pytest.mark.parametrize(("params", "field"), [
    ({"logit_init": "uniform"}, "logit_init"),
    ({"arch_optimizer": "sgd"}, "arch_optimizer"),
    ({"arch_schedule": "cosine"}, "arch_schedule"),
    ({"arch_warmup_frac": 1.0}, "arch_warmup_frac"),
    ({"arch_min_lr_frac": 0.0}, "arch_min_lr_frac"),
    ({"arch_min_lr_frac": 1.5}, "arch_min_lr_frac"),
    ({"arch_clip": -1.0}, "arch_clip"),
    ({"arch_clip": math.inf}, "arch_clip"),
])
@pytest.mark.parametrize("method", ["one_stage", "two_stage"])
def test_new_fields_are_validated_by_both_methods(method, params, field):
    with pytest.raises(ValueError, match=f"{method}.{field}"):
        make_config(method, params)


def test_defaults_keep_the_search_as_it_was():
    for config in (OneStageConfig(), TwoStageConfig()):
        assert (config.logit_init, config.arch_optimizer) == ("zero", "joint")
        assert initial_logits(config, 4.0) is None
        assert arch_training(config, []) == {"extra_param_groups": [
            {"params": [], "lr": config.arch_lr}]}


def test_arch_schedule_never_decays_to_zero():
    constant = SupernetSearchConfig(arch_optimizer="separate")
    assert [constant.arch_lr_factor(s, 50) for s in (0, 25, 49)] == [1.0, 1.0, 1.0]
    cosine = SupernetSearchConfig(arch_optimizer="separate", arch_schedule="warmup_cosine",
                                  arch_warmup_frac=0.1, arch_min_lr_frac=0.2)
    values = [cosine.arch_lr_factor(s, 50) for s in range(50)]
    assert values[0] == pytest.approx(0.2) and values[4] == pytest.approx(1.0)
    assert min(values[5:]) >= 0.2 and values[-1] == pytest.approx(0.2, abs=2e-3)


# ---- 1. logits initialised at the target ---------------------------------------------------


@pytest.mark.parametrize(("target", "nearest"), [(3.0, {2, 4}), (4.0, {4}), (6.0, {4, 8})])
def test_target_init_puts_expected_bits_and_argmax_at_the_target(target, nearest):
    init = target_init_logits((2, 4, 8), target)
    _, layers, sizes = supernet(init)
    term = BitBudget(layers, sizes, target, mode="lagrangian", weight=0.0, dual_lr=1.0)
    term(0)  # the value at step 0
    assert term.expected[0] == pytest.approx(target, abs=1e-4)
    assert term.expected[0] <= target  # in float32 too: the budget starts satisfied
    assert term.multiplier == 0.0
    for layer in layers.values():
        assert layer.argmax_bits() in nearest
        assert float(layer.probabilities().detach().max()) > 0.5  # a clear argmax, not a near-tie


@pytest.mark.parametrize("candidates", [(2, 4, 8), (2, 3, 4, 6, 8), (1, 2, 4, 8), (2, 8)])
def test_target_init_on_a_grid_of_targets(candidates):
    for target in np.linspace(candidates[0] + 0.01, candidates[-1] - 0.01, 41):
        logits = target_init_logits(candidates, float(target))
        probs = torch.softmax(torch.tensor(logits, dtype=torch.float64), 0)
        expected = float(probs @ torch.tensor(candidates, dtype=torch.float64))
        assert expected == pytest.approx(target, abs=1e-4) and expected <= target
        dist = [abs(b - target) for b in candidates]
        best = candidates[int(torch.argmax(probs))]
        assert abs(best - target) <= min(dist) + 1e-9, (target, probs.tolist())
        assert all(math.isfinite(v) for v in logits) and abs(sum(logits)) < 1e-9


def test_target_init_ends_and_refusals():
    assert target_init_logits((4,), 4.0) == [0.0]
    top = torch.softmax(torch.tensor(target_init_logits((2, 4, 8), 9.0)), 0)
    assert int(torch.argmax(top)) == 2 and float(top @ torch.tensor([2.0, 4, 8])) < 8
    with pytest.raises(ValueError, match="below the smallest candidate"):
        target_init_logits((2, 4, 8), 1.5)


def test_one_stage_and_dnas_start_at_the_target():
    budget = Budget(train_steps=2, batch_size=2, search_budget=2, seed=0)
    config = OneStageConfig(pass2_frac=0.0, logit_init="target", arch_optimizer="separate",
                            budget_mode="lagrangian")
    result = run_method("one_stage", workload(), Target(avg_bits=3.0), budget, config)
    assert result.info["expected_avg_bits"]["first"] == pytest.approx(3.0, abs=1e-4)
    stage = dnas_stage(workload(), budget,
                       TwoStageConfig(logit_init="target", arch_optimizer="separate"), 6.0)
    assert stage.steps == 2
    assert stage.info["expected_avg_bits_first"] == pytest.approx(6.0, abs=1e-4)
    assert "arch_grad_norm" in stage.info["final_loss"]  # the logits' own clip


# ---- 2. the logits' own optimizer ---------------------------------------------------------


def logits_after(mode: str, weight_scale: float, steps: int = 4) -> list[torch.Tensor]:
    """Logits after ``steps`` of the shared loop with frozen model weights and one trained
    'weight' that only an extra loss of ``weight_scale * 10**step`` reaches."""
    speech, _, _ = supernet()
    module = speech.model
    for p in module.parameters():
        p.requires_grad_(False)
    alphas = [m.alpha for m in supernet_modules(module).values()]
    for a in alphas:
        a.requires_grad_(True)
    module.register_parameter("dummy", nn.Parameter(torch.ones(8)))
    config = SupernetSearchConfig(arch_optimizer=mode, arch_lr=0.05, arch_clip=0.5)

    def weight_loss(step: int) -> torch.Tensor:
        return weight_scale * 10.0 ** step * module.dummy.sum()

    result = train(speech, utterances(), steps=steps, batch_size=2, seed=0,
                   config=TrainConfig(lr=1e-2, grad_clip=1.0, eta=0.0),
                   **arch_training(config, alphas), extra_loss=weight_loss, progress=False)
    assert (mode == "separate") == all("arch_grad_norm" in h for h in result.history)
    assert all(not torch.equal(a, torch.zeros(3)) for a in alphas)  # the logits learned
    return [a.detach().clone() for a in alphas]


def test_separate_logit_steps_do_not_depend_on_the_weight_gradient_norm():
    quiet, loud = logits_after("separate", 0.0), logits_after("separate", 1.0)
    assert all(torch.equal(a, b) for a, b in zip(quiet, loud, strict=True))


def test_joint_logit_steps_do_depend_on_the_weight_gradient_norm():
    quiet, loud = logits_after("joint", 0.0), logits_after("joint", 1.0)
    assert max(float((a - b).abs().max()) for a, b in zip(quiet, loud, strict=True)) > 1e-3


# ---- 3. a budget that constrains without dictating ------------------------------------------


def test_expected_bits_are_size_weighted():
    g = torch.Generator().manual_seed(0)
    _, layers, sizes = supernet()
    with torch.no_grad():
        for m in layers.values():
            m.alpha.copy_(torch.randn(3, generator=g) * 2)
    per_layer = {n: float(m.expected_bits().detach()) for n, m in layers.items()}
    weighted = sum(per_layer[n] * sizes[n] for n in layers) / sum(sizes.values())
    assert len(set(sizes.values())) > 1  # the weighting matters
    term = BitBudget(layers, sizes, 8.0, mode="penalty", weight=1.0, dual_lr=0.0)
    assert float(term.expected_bits().detach()) == pytest.approx(weighted, rel=1e-6)


def replay_budget_only(mode: str, init, target: float = 4.0, steps: int = 50):
    """Adam on the budget term alone (no task gradient), as issue 15 replayed it."""
    _, layers, sizes = supernet(init)
    alphas = [m.alpha for m in layers.values()]
    start = [a.detach().clone() for a in alphas]
    term = BitBudget(layers, sizes, target, mode=mode, weight=10.0, dual_lr=0.5)
    opt = torch.optim.Adam(alphas, lr=SupernetSearchConfig().arch_lr)
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        term(step).backward()
        opt.step()
    return layers, start, term


def test_lagrangian_at_a_target_init_leaves_the_logits_alone():
    layers, start, term = replay_budget_only("lagrangian", target_init_logits((2, 4, 8), 4.0))
    assert all(torch.equal(m.alpha, a) for m, a in zip(layers.values(), start, strict=True))
    assert term.multiplier == 0.0
    assert max(term.expected) <= 4.0 and term.expected[0] == pytest.approx(4.0, abs=1e-4)
    assert all(m.argmax_bits() == 4 for m in layers.values())


def test_penalty_from_zero_init_drifts_every_layer_to_the_lowest_bits():
    layers, _, term = replay_budget_only("penalty", None)
    assert term.expected[0] == pytest.approx(14 / 3, rel=1e-6)
    assert term.expected[-1] < 4.0 + 0.05
    assert all(m.argmax_bits() == 2 for m in layers.values())  # the budget dictated
    assert all(float(m.alpha.detach()[0] - m.alpha.detach()[2]) > 0.5
               for m in layers.values())
    # ... and Adam moved every layer alike, whatever its size
    first = next(iter(layers.values())).alpha
    assert all(torch.allclose(m.alpha, first, atol=1e-3) for m in layers.values())
