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
    TRAJECTORY_POINTS,
    BitBudget,
    SupernetSchedule,
    SupernetSearchConfig,
    arch_training,
    initial_logits,
    supernet_schedule,
    target_init_logits,
)
from mpqbench.quant.accounting import layer_sizes
from mpqbench.quant.allocation import allocation_for
from mpqbench.quant.layers import fake_quant_modules
from mpqbench.quant.qat import TrainConfig, lr_factor, train
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
    ({"hard_from_frac": 1.5}, "hard_from_frac"),
    ({"hard_from_frac": -0.1}, "hard_from_frac"),
    ({"hard_from_frac": True}, "hard_from_frac"),
    ({"learnable_scale_max_bits": 0}, "learnable_scale_max_bits"),
    ({"learnable_scale_max_bits": 9}, "learnable_scale_max_bits"),
    ({"learnable_scale_max_bits": 2.5}, "learnable_scale_max_bits"),
    ({"logit_init": "target", "target_init_position": 0.0}, "target_init_position"),
    ({"logit_init": "target", "target_init_position": 1.0}, "target_init_position"),
    ({"target_init_position": 0.9}, "target_init_position"),  # only with logit_init="target"
])
@pytest.mark.parametrize("method", ["one_stage", "two_stage"])
def test_new_fields_are_validated_by_both_methods(method, params, field):
    with pytest.raises(ValueError, match=f"{method}.{field}"):
        make_config(method, params)


def test_defaults_keep_the_search_as_it_was():
    assert OneStageConfig().pass2_warmup_frac is None
    assert OneStageConfig().pass2_train() == OneStageConfig().train
    for config in (OneStageConfig(), TwoStageConfig()):
        assert (config.logit_init, config.arch_optimizer) == ("zero", "joint")
        assert (config.hard_from_frac, config.learnable_scale_max_bits) == (None, None)
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


@pytest.mark.parametrize(("candidates", "target", "position", "interval"), [
    ((2, 4, 8), 4.0, 0.9, (0.5, 1.0)), ((2, 4, 8), 4.0, 0.2, (0.5, 1.0)),
    ((2, 4, 8), 6.0, 0.9, (0.5, 2 / 3)),  # k = 8: the rest (2, 4) must average 0
    ((2, 3, 4, 6, 8), 3.0, 0.9, (0.5, 1.0))])
def test_target_init_position_places_the_nearest_probability_and_keeps_the_mean(
        candidates, target, position, interval):
    probs = torch.softmax(torch.tensor(target_init_logits(candidates, target, position),
                                       dtype=torch.float64), 0)
    lo, hi = interval
    k = int(torch.argmax(probs))
    # the interval is of the slack-lowered target: tolerance 1e-4
    assert float(probs[k]) == pytest.approx(lo + position * (hi - lo), abs=1e-4)
    expected = float(probs @ torch.tensor(candidates, dtype=torch.float64))
    assert expected == pytest.approx(target, abs=1e-4) and expected <= target
    default = torch.softmax(torch.tensor(target_init_logits(candidates, target),
                                         dtype=torch.float64), 0)
    assert float(default[k]) == pytest.approx(0.5 * (lo + hi), abs=1e-4)


def test_target_init_position_outside_zero_one_or_with_two_candidates_is_refused():
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="target_init_position must be in"):
            target_init_logits((2, 4, 8), 4.0, bad)
    with pytest.raises(ValueError, match="three or more candidates"):
        target_init_logits((2, 8), 4.0, 0.9)
    config = OneStageConfig(logit_init="target", target_init_position=0.9)
    probs = torch.softmax(torch.tensor(initial_logits(config, 4.0)), 0)
    assert float(probs[1]) == pytest.approx(0.95, abs=1e-4)
    for target in (4.0, 6.0, 8.0, 3.0):  # the frontier's targets: every one admits it
        assert initial_logits(config, target) is not None


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


# ---- 4. the deployed sub-network trained: hard mixing late, pass 2 with its own warm-up ----


def mixing_per_step(config: SupernetSearchConfig, steps: int = 6) -> list[list[torch.Tensor]]:
    """Every layer's mixing weights y at each step of the shared loop under ``config``'s
    schedule (read after the schedule's batched draw, before the forward)."""
    speech, layers, _ = supernet()
    for m in layers.values():
        m.hard = config.hard  # as prepare_supernet_ sets it from the config
    schedule = supernet_schedule(config, supernet_modules(speech.model).values(), steps)
    seen: list[list[torch.Tensor]] = []

    def on_step(step: int) -> None:
        schedule(step)
        seen.append([m.pending_mixing.detach().clone()
                     for m in supernet_modules(speech.model).values()])

    train(speech, utterances(), steps=steps, batch_size=2, seed=0,
          config=TrainConfig(lr=1e-3, eta=0.0),
          **arch_training(config, [m.alpha for m in layers.values()]), on_step=on_step,
          progress=False)
    return seen


def one_hot(y: torch.Tensor) -> bool:
    return bool(((y == 0) | (y == 1)).all() and y.sum() == 1)


def test_hard_from_half_way_is_soft_before_and_one_hot_after():
    seen = mixing_per_step(SupernetSearchConfig(hard_from_frac=0.5, tau_end=0.5))
    assert [all(one_hot(y) for y in step) for step in seen] == [False] * 3 + [True] * 3
    assert all(not one_hot(y) and float(y.min()) > 0 for step in seen[:3] for y in step)


@pytest.mark.parametrize("frac", [None, 0.5, 1.0])
def test_hard_true_is_hard_throughout_and_one_never_switches(frac):
    seen = mixing_per_step(SupernetSearchConfig(hard=True, hard_from_frac=frac))
    assert all(one_hot(y) for step in seen for y in step)
    soft = mixing_per_step(SupernetSearchConfig(hard_from_frac=1.0, tau_end=0.5))
    assert not any(one_hot(y) for step in soft for y in step)


def test_dnas_switches_to_hard_at_the_step(monkeypatch):
    flags = []
    real = SupernetSchedule.__call__

    def call(self, step):
        real(self, step)
        flags.append({m.hard for m in self.layers})

    monkeypatch.setattr(SupernetSchedule, "__call__", call)
    stage = dnas_stage(workload(), Budget(train_steps=1, batch_size=2, search_budget=4),
                       TwoStageConfig(hard_from_frac=0.5), 4.0)
    assert flags == [{False}, {False}, {True}, {True}]
    assert stage.info["trajectory"]["hard_from_step"] == 2


@pytest.mark.parametrize(("train_steps", "frac"), [(10, 0.5), (7, 0.3), (5, 0.1), (3, 0.0)])
def test_pass2_is_a_share_of_the_step_budget_with_its_own_warm_up(monkeypatch, train_steps,
                                                                    frac):
    """The two stages spend exactly train_steps; pass 2's lr warms up over its share."""
    lrs: list[float] = []
    real_step = torch.optim.AdamW.step

    def step(self, *args, **kwargs):
        lrs.append(self.param_groups[0]["lr"])  # the weights' group
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    train_config = TrainConfig(lr=1e-3, warmup_frac=0.1, min_lr_frac=0.0)
    config = OneStageConfig(pass2_frac=frac, pass2_warmup_frac=0.4, train=train_config)
    result = run_method("one_stage", workload(), Target(avg_bits=4.0),
                        Budget(train_steps=train_steps, batch_size=2, seed=0), config)
    steps1, steps2 = result.info["steps"]["supernet"], result.info["steps"]["pass2"]
    assert steps1 + steps2 == train_steps == result.qat_steps == len(lrs)
    assert steps2 == round(frac * train_steps)
    expected1 = [1e-3 * lr_factor(s, steps1, 0.1, 0.0) for s in range(steps1)]
    expected2 = [1e-3 * lr_factor(s, steps2, 0.4, 0.0) for s in range(steps2)]
    assert lrs == pytest.approx(expected1 + expected2, rel=1e-12)
    if steps2 >= 3:
        assert lrs[steps1] < lrs[steps1 + 1] and round(0.4 * steps2) >= 2  # warming up
    default = OneStageConfig(pass2_frac=frac, train=train_config).pass2_train()
    assert default.warmup_frac == 0.1  # None: the train config's, as before


@pytest.mark.parametrize(("train_steps", "frac"), [(10, 0.5), (7, 0.3), (3, 0.0)])
def test_continued_pass2_is_one_schedule_and_one_batch_stream(monkeypatch, train_steps, frac):
    """pass2_schedule='continue': the weights' lr is one warm-up/cosine over train_steps and
    pass 2 reads the batches after the supernet stage's, never its first ones again."""
    import mpqbench.quant.qat as qat

    lrs: list[float] = []
    positions: list[int] = []
    real_step, real_indices = torch.optim.AdamW.step, qat.batch_indices

    def step(self, *args, **kwargs):
        lrs.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)

    def indices(n, batch_size, at, seed):
        positions.append(at)
        return real_indices(n, batch_size, at, seed)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    monkeypatch.setattr(qat, "batch_indices", indices)
    train_config = TrainConfig(lr=1e-3, warmup_frac=0.1, min_lr_frac=0.0)
    config = OneStageConfig(pass2_frac=frac, pass2_schedule="continue", train=train_config)
    result = run_method("one_stage", workload(), Target(avg_bits=4.0),
                        Budget(train_steps=train_steps, batch_size=2, seed=0), config)
    assert result.info["pass2_schedule"] == "continue"
    assert sum(result.info["steps"].values()) == train_steps == len(lrs)
    assert positions == list(range(train_steps))
    assert lrs == pytest.approx([1e-3 * lr_factor(s, train_steps, 0.1, 0.0)
                                 for s in range(train_steps)], rel=1e-12)


def test_pass2_schedule_is_validated():
    with pytest.raises(ValueError, match=r"one_stage\.pass2_schedule"):
        make_config("one_stage", {"pass2_schedule": "resume"})
    with pytest.raises(ValueError, match=r"one_stage\.pass2_warmup_frac applies"):
        make_config("one_stage", {"pass2_schedule": "continue", "pass2_warmup_frac": 0.2})
    assert OneStageConfig().pass2_schedule == "restart"  # what committed records ran


def test_pass2_warmup_frac_is_validated():
    for bad in (1.0, -0.1, "0.2"):
        with pytest.raises(ValueError, match=r"one_stage\.pass2_warmup_frac"):
            make_config("one_stage", {"pass2_warmup_frac": bad})


# ---- 5. low-bit candidates with learnable scales, through both methods ------------------------


def test_one_stage_extracts_learned_low_bit_scales_and_trains_them_in_pass_2():
    wl = workload()
    config = OneStageConfig(learnable_scale_max_bits=4, pass2_frac=0.5, logit_init="target")
    result = run_method("one_stage", wl, Target(avg_bits=4.0), Budget(train_steps=4,
                                                                      batch_size=2), config)
    quantized = fake_quant_modules(wl.model.model)
    assert set(quantized) == set(wl.eligible)
    for name, b in result.allocation.layers.items():
        layer = quantized[name]
        assert layer.spec.learnable_scale == (b <= 4), (name, b)
        assert (layer.scale is not None) == (b <= 4)
    assert any(b <= 4 for b in result.allocation.layers.values())


def test_two_stage_learns_dnas_scales_with_frozen_weights_and_lsq_in_stage_2():
    wl = workload()
    before = {n: p.detach().clone() for n, p in wl.model.model.named_parameters()}
    stage = dnas_stage(wl, Budget(train_steps=1, batch_size=2, search_budget=2),
                       TwoStageConfig(learnable_scale_max_bits=2), 4.0)
    after = dict(wl.model.model.named_parameters())
    assert set(after) == set(before)  # the scales went with the supernet
    assert all(torch.equal(after[n], before[n]) for n in before)  # weights frozen
    assert stage.steps == 2
    config = TwoStageConfig(learnable_scale_max_bits=3, candidates=(2, 4, 8))
    result = run_method("two_stage", wl, Target(avg_bits=4.0),
                        Budget(train_steps=1, batch_size=2, search_budget=2), config)
    quantized = fake_quant_modules(wl.model.model)
    assert {quantized[n].spec.learnable_scale == (b <= 3)
            for n, b in result.allocation.layers.items()} == {True}


# ---- 6. the trajectory ---------------------------------------------------------------------


def test_trajectory_is_subsampled_to_at_most_the_points_with_first_and_last():
    _, layers, _ = supernet(target_init_logits((2, 4, 8), 4.0))
    schedule = SupernetSchedule(list(layers.values()), 450, 1.0, 0.1, "exponential")
    for step in range(450):
        schedule(step)
    traj = schedule.trajectory([4.0] * 450)
    steps = traj["step"]
    assert len(steps) == TRAJECTORY_POINTS and steps[0] == 0 and steps[-1] == 449
    assert steps == sorted(set(steps))
    assert all(len(traj[k]) == len(steps) for k in (
        "tau", "expected_avg_bits", "logit_spread_max", "logit_spread_mean"))
    init = target_init_logits((2, 4, 8), 4.0)
    assert traj["logit_spread_max"][0] == pytest.approx(max(init) - min(init), rel=1e-6)
    assert traj["tau"][0] == 1.0 and traj["tau"][-1] == pytest.approx(0.1)
    assert traj["hard_from_step"] is None
    short = SupernetSchedule(list(layers.values()), 3, 1.0, 0.1, "linear")
    for step in range(3):
        short(step)
    assert short.trajectory()["step"] == [0, 1, 2]
    assert short.trajectory()["expected_avg_bits"] == [None] * 3


def test_one_stage_and_dnas_info_carry_the_trajectory():
    config = OneStageConfig(pass2_frac=0.0, arch_lr=0.5)
    result = run_method("one_stage", workload(), Target(avg_bits=3.0),
                        Budget(train_steps=4, batch_size=2, seed=0), config)
    traj = result.info["trajectory"]
    assert traj["step"] == [0, 1, 2, 3]
    samples = [v for _, v in result.info["expected_avg_bits"]["samples"]]
    assert traj["expected_avg_bits"] == samples  # the budget term's, at each step
    assert traj["logit_spread_max"][0] == 0.0  # zero init
    assert traj["logit_spread_max"][-1] > 0.0 and all(
        mean <= top for mean, top in zip(traj["logit_spread_mean"], traj["logit_spread_max"],
                                         strict=True))
    stage = dnas_stage(workload(), Budget(train_steps=1, batch_size=2, search_budget=3),
                       TwoStageConfig(), 4.0)
    assert stage.info["trajectory"]["step"] == [0, 1, 2]
    assert stage.info["trajectory"]["expected_avg_bits"][0] == pytest.approx(14 / 3, rel=1e-6)
