"""Two-stage baseline: Hutchinson traces, HAWQ and KL sensitivities, stage-1 hygiene, config."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mpqbench.baselines.sensitivity import (
    hawq_costs,
    hutchinson_traces,
    kl_sensitivities,
    quantization_error,
)
from mpqbench.baselines.two_stage import (
    TwoStageConfig,
    hessian_stage,
    kl_stage,
    run_two_stage,
)
from mpqbench.method import Budget, Target, Workload
from mpqbench.quant.allocation import allocation_for
from mpqbench.quant.formats import Quantizer
from mpqbench.quant.teacher import build_teacher_cache
from mpqbench.workloads.data.types import Utterance
from mpqbench.workloads.models.registry import load_model

#: Float results here depend on which CPU kernels torch runs: .ci/run repeats them on AVX2.
pytestmark = pytest.mark.kernels

# ---- Hutchinson against the exact Hessian ---------------------------------------------------


def mlp_problem():
    """A float64 tanh MLP with a squared loss: two weight blocks, a dense Hessian."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=gen, dtype=torch.float64)
    y = torch.randn(16, 2, generator=gen, dtype=torch.float64)
    w1 = torch.randn(3, 4, generator=gen, dtype=torch.float64).requires_grad_()
    w2 = torch.randn(2, 3, generator=gen, dtype=torch.float64).requires_grad_()

    def loss_of(a, b):
        return ((torch.tanh(x @ a.T) @ b.T - y) ** 2).mean()

    return {"w1": w1, "w2": w2}, loss_of


def exact_traces_and_errors(params, loss_of, n):
    """Exact Tr(H_l) and the standard error of an n-sample joint-probe Hutchinson mean."""
    shapes = [p.shape for p in params.values()]
    sizes = [p.numel() for p in params.values()]
    theta = torch.cat([p.detach().reshape(-1) for p in params.values()])

    def f(t):
        parts = torch.split(t, sizes)
        return loss_of(*(q.view(s) for q, s in zip(parts, shapes, strict=True)))

    hess = torch.autograd.functional.hessian(f, theta)
    out = {}
    start = 0
    for name, size in zip(params, sizes, strict=True):
        block = slice(start, start + size)
        rows = torch.zeros_like(hess)
        rows[block, :] = hess[block, :]
        sym = (rows + rows.T) / 2
        # Rademacher v: Var(v^T S v) = 2 * sum_{i != j} S_ij^2
        var = 2 * ((sym**2).sum() - (torch.diagonal(sym) ** 2).sum())
        out[name] = (float(torch.diagonal(hess)[block].sum()), math.sqrt(float(var) / n))
        start += size
    return out


@pytest.mark.parametrize("method", ["autograd", "finite_difference"])
def test_hutchinson_matches_the_exact_hessian_trace(method):
    params, loss_of = mlp_problem()
    n = 400
    est = hutchinson_traces(lambda i: loss_of(params["w1"], params["w2"]), params, n_hvp=n,
                            probes_per_batch=4, seed=3, method=method)
    assert est.hvps == n and est.batches == 100 and est.method == method
    exact = exact_traces_and_errors(params, loss_of, n)
    for name, (trace, se) in exact.items():
        assert se > 0
        assert abs(est.traces[name] - trace) <= 4 * se, (name, est.traces[name], trace, se)
        assert est.std_errors[name] == pytest.approx(se, rel=0.5)


def test_finite_difference_hvps_agree_with_autograd_probe_for_probe():
    params, loss_of = mlp_problem()
    kw = dict(n_hvp=7, probes_per_batch=3, seed=5)
    ag = hutchinson_traces(lambda i: loss_of(params["w1"], params["w2"]), params,
                           method="autograd", **kw)
    before = {k: v.detach().clone() for k, v in params.items()}
    fd = hutchinson_traces(lambda i: loss_of(params["w1"], params["w2"]), params,
                           method="finite_difference", **kw)
    for name in params:
        assert fd.traces[name] == pytest.approx(ag.traces[name], rel=1e-4)
        assert torch.equal(params[name], before[name])  # restored exactly


def ctc_problem():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(12, 5, generator=gen, dtype=torch.float64)
    w = (0.5 * torch.randn(4, 5, generator=gen, dtype=torch.float64)).requires_grad_()
    targets = torch.tensor([[1, 2, 1]])

    def loss(_):
        logp = torch.log_softmax(x @ w.T, dim=-1).unsqueeze(1)
        return F.ctc_loss(logp, targets, torch.tensor([12]), torch.tensor([3]))

    return {"w": w}, loss


def test_auto_falls_back_to_finite_differences_without_double_backward():
    params, loss = ctc_problem()
    with pytest.raises(RuntimeError, match="not implemented"):
        hutchinson_traces(loss, params, n_hvp=2, method="autograd")
    auto = hutchinson_traces(loss, params, n_hvp=6, probes_per_batch=2, seed=9, method="auto")
    fd = hutchinson_traces(loss, params, n_hvp=6, probes_per_batch=2, seed=9,
                           method="finite_difference")
    assert auto.method == "finite_difference"
    assert auto.traces == fd.traces  # the fallback redraws the same probes


def test_hutchinson_rejects_bad_arguments():
    params, loss_of = mlp_problem()
    fn = lambda i: loss_of(params["w1"], params["w2"])  # noqa: E731
    with pytest.raises(ValueError, match="n_hvp"):
        hutchinson_traces(fn, params, n_hvp=0)
    with pytest.raises(ValueError, match="hvp method"):
        hutchinson_traces(fn, params, n_hvp=1, method="exact")


# ---- HAWQ costs -----------------------------------------------------------------------------


def two_branch_problem(gain: float):
    """out = gain * A x + B x with A = B: A's Hessian is gain^2 times B's."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(32, 6, generator=gen)
    y = torch.randn(32, 4, generator=gen)
    w = torch.randn(4, 6, generator=gen)
    a, b = w.clone().requires_grad_(), w.clone().requires_grad_()

    def loss(_):
        return ((gain * x @ a.T + x @ b.T - y) ** 2).mean()

    return {"a": a, "b": b}, loss


def test_hawq_cost_is_larger_for_the_layer_with_more_curvature():
    params, loss = two_branch_problem(gain=5.0)
    est = hutchinson_traces(loss, params, n_hvp=200, seed=0)
    ratio = est.traces["a"] / est.traces["b"]
    assert 15 < ratio < 40  # exactly 25 in expectation
    costs = hawq_costs(est.traces, params, (2, 4, 8), Quantizer())
    for bits in (2, 4, 8):
        assert costs["a"][bits] > 10 * costs["b"][bits]
    assert costs["a"][2] > costs["a"][4] > costs["a"][8] > 0  # error shrinks with bits


def test_hawq_omega_is_invariant_to_a_function_preserving_rescale():
    """W1 -> W1 / 4, W2 -> 4 W2 leaves a linear chain unchanged; Tr(H)/N * ||dW||^2 too."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(64, 5, generator=gen, dtype=torch.float64)
    y = torch.randn(64, 3, generator=gen, dtype=torch.float64)
    w1 = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    w2 = torch.randn(3, 6, generator=gen, dtype=torch.float64)

    def loss_of(a, b):
        return ((x @ a.T @ b.T - y) ** 2).mean()

    def omegas(scale):
        p = {"w1": (w1 / scale).requires_grad_(), "w2": (w2 * scale).requires_grad_()}
        traces = {n: t for n, (t, _) in exact_traces_and_errors(p, loss_of, 1).items()}
        return traces, hawq_costs(traces, p, (2, 4), Quantizer())

    tr1, om1 = omegas(1.0)
    tr4, om4 = omegas(4.0)
    assert tr4["w1"] == pytest.approx(16 * tr1["w1"], rel=1e-9)  # the trace alone is not
    for name in ("w1", "w2"):
        for bits in (2, 4):
            assert om4[name][bits] == pytest.approx(om1[name][bits], rel=1e-9)


def test_hawq_floors_nonpositive_trace_estimates_at_the_smallest_positive_one():
    w, v, u = torch.randn(4, 4), torch.randn(8, 4), torch.randn(2, 4)
    traces = {"w": -3.0, "v": 2.0, "u": 5.0}
    costs = hawq_costs(traces, {"w": w, "v": v, "u": u}, (2, 8), Quantizer())
    for bits in (2, 8):
        assert costs["w"][bits] == pytest.approx(2.0 / 16 * quantization_error(w, bits,
                                                                                 Quantizer()))
        assert costs["u"][bits] == pytest.approx(5.0 / 8 * quantization_error(u, bits,
                                                                                Quantizer()))
    assert costs["w"][2] > costs["w"][8] > 0
    # with no positive estimate at all there is nothing to floor at: 0
    assert hawq_costs({"w": -3.0}, {"w": w}, (2, 8), Quantizer()) == {"w": {2: 0.0, 8: 0.0}}


# ---- stages on real (tiny) adapters ----------------------------------------------------------

TEXTS = ["THE CAT SAT", "A DOG RAN HOME", "BIRDS SING", "WE WALK TO TOWN", "IT IS COLD"]


def utterances(n, seed):
    rng = np.random.default_rng(seed)
    return [Utterance(id=f"{seed}-1-{i:04d}", text=TEXTS[i % len(TEXTS)],
                      audio=(0.1 * rng.standard_normal(4800 + 400 * i)).astype(np.float32))
            for i in range(n)]


def make_workload(name):
    model = load_model(name)
    if name == "tiny-ctc":  # sharper outputs so that KLs are far above rounding
        with torch.no_grad():
            model.model.lm_head.weight.mul_(20.0)
    train, dev = utterances(4, 1), utterances(4, 2)
    eligible = list(allocation_for(model, 8).quantized)
    teacher = build_teacher_cache(model, train, batch_size=4, progress=False)
    return Workload(name=model.name, model=model, train=train, dev=dev, eligible=eligible,
                    teacher=teacher)


def snapshot(workload):
    module = workload.model.model
    return ({k: v.clone() for k, v in module.state_dict().items()},
            {n: type(m) for n, m in module.named_modules()},
            {n: p.requires_grad for n, p in module.named_parameters()}, module.training)


def assert_unchanged(workload, snap):
    module = workload.model.model
    state, types, flags, training = snap
    now = module.state_dict()
    assert now.keys() == state.keys()
    assert all(torch.equal(now[k], state[k]) for k in state)
    assert {n: type(m) for n, m in module.named_modules()} == types
    assert {n: p.requires_grad for n, p in module.named_parameters()} == flags
    assert module.training == training


@pytest.mark.parametrize(("model", "requested", "hvp"), [
    ("tiny-whisper", "auto", "autograd"),
    ("tiny-ctc", "auto", "finite_difference"),  # CTC loss has no double backward
    ("tiny-whisper", None, "finite_difference"),  # the default
])
def test_hessian_stage_on_real_adapters(model, requested, hvp):
    workload = make_workload(model)
    snap = snapshot(workload)
    budget = Budget(train_steps=1, batch_size=1, search_budget=1, seed=0)
    extra = {} if requested is None else {"hvp": requested}
    stage = hessian_stage(workload, budget, TwoStageConfig(stage1="hessian", **extra))
    assert stage.info["hutchinson"]["method"] == hvp
    assert stage.evaluations == 1
    assert set(stage.costs) == set(workload.eligible)
    for name, costs in stage.costs.items():
        assert all(math.isfinite(c) and c >= 0 for c in costs.values()), name
        if stage.info["hutchinson"]["traces"][name] > 0:
            assert costs[2] > costs[4] > costs[8]
    assert_unchanged(workload, snap)


def test_kl_sensitivity_is_zero_for_a_layer_already_on_the_8_bit_grid():
    workload = make_workload("tiny-ctc")
    name = workload.eligible[0]
    weight = workload.model.model.get_submodule(name).weight
    with torch.no_grad():
        # integer codes with |code| = 127 in every row: Q_8 (max scale 2^-10) is the identity
        codes = torch.randint(-127, 128, weight.shape, generator=torch.Generator().manual_seed(0))
        codes[:, 0] = 127
        weight.copy_(codes.float() * 2.0**-10)
    snap = snapshot(workload)
    batches = [workload.model.make_batch(workload.dev[:2]), workload.model.make_batch(
        workload.dev[2:])]
    costs, evaluations = kl_sensitivities(workload.model, workload.eligible, (2, 4, 8), batches,
                                          Quantizer())
    assert evaluations == len(workload.eligible) * 3 * 2
    assert costs[name][8] == 0.0
    assert costs[name][2] > 0
    assert_unchanged(workload, snap)


def test_kl_sensitivity_decreases_with_bits_on_a_tiny_model():
    workload = make_workload("tiny-ctc")
    budget = Budget(train_steps=1, batch_size=2, search_budget=5, seed=0)
    stage = kl_stage(workload, budget, TwoStageConfig(stage1="kl", candidates=(2, 3, 4, 8)))
    assert stage.info["calibration_batches"] == 2  # capped at one pass over 4 dev utterances
    for name, costs in stage.costs.items():
        assert costs[2] > costs[3] > costs[4] > costs[8] >= 0, (name, costs)


def test_dnas_stage_freezes_weights_and_costs_are_negative_log_probabilities():
    pytest.importorskip("mpqbench.quant.supernet")
    from mpqbench.baselines.two_stage import dnas_stage

    workload = make_workload("tiny-ctc")
    snap = snapshot(workload)
    budget = Budget(train_steps=1, batch_size=2, search_budget=3, seed=0)
    stage = dnas_stage(workload, budget, TwoStageConfig(stage1="dnas", arch_lr=0.5), 4.0)
    assert stage.steps == 3
    assert_unchanged(workload, snap)  # weights frozen, supernet layers swapped back out
    probs = stage.info["probabilities"]
    for name, costs in stage.costs.items():
        assert sum(probs[name]) == pytest.approx(1.0)
        for i, b in enumerate((2, 4, 8)):
            assert costs[b] == pytest.approx(-math.log(probs[name][i]), rel=1e-9)
    assert any(max(p) - min(p) > 1e-3 for p in probs.values())  # the logits learned


# ---- method-level --------------------------------------------------------------------------


@pytest.mark.parametrize("tolerance", [0.25, None])
def test_dnas_allocation_under_the_target_is_filled_within_tolerance(tolerance):
    """A strong penalty drives the logits to 2 bits; the fill spends the budget again."""
    workload = make_workload("tiny-ctc")
    budget = Budget(train_steps=0, batch_size=2, search_budget=4, seed=0)
    config = TwoStageConfig(stage1="dnas", arch_lr=0.5, budget_weight=1e4,
                            fill_tolerance=tolerance)
    out = run_two_stage(workload, Target(avg_bits=5), budget, config)
    sizes = {n: workload.model.model.get_submodule(n).weight.numel() for n in workload.eligible}
    avg = sum(out.allocation.layers[n] * sizes[n] for n in sizes) / sum(sizes.values())
    costs = {n: {int(b): c for b, c in cs.items()} for n, cs in out.info["costs"].items()}
    argmax = {n: min(cs, key=cs.__getitem__) for n, cs in costs.items()}
    argmax_avg = sum(argmax[n] * sizes[n] for n in sizes) / sum(sizes.values())
    assert argmax_avg < 5 - 0.25  # the premise: the learned argmax undershoots
    assert avg <= 5 + 1e-9
    if tolerance is None:
        assert out.info["fill"] is None and avg == pytest.approx(argmax_avg)
    else:
        assert avg >= 5 - tolerance - 1e-9
        assert out.info["fill"]["reached"] and out.info["fill"]["changes"]


def test_a_sensitive_layer_keeps_more_bits():
    """Scaling one layer's weight up makes quantizing it hurt more: it is given more bits."""
    workload = make_workload("tiny-ctc")
    budget = Budget(train_steps=0, batch_size=2, search_budget=2, seed=0)
    first = run_two_stage(workload, Target(avg_bits=4), budget, TwoStageConfig(stage1="kl"))
    costs = {n: {int(b): c for b, c in cs.items()} for n, cs in first.info["costs"].items()}
    low = min(costs, key=lambda n: costs[n][2])  # the least sensitive layer
    workload = make_workload("tiny-ctc")
    with torch.no_grad():
        workload.model.model.get_submodule(low).weight.mul_(30.0)
    second = run_two_stage(workload, Target(avg_bits=4), budget, TwoStageConfig(stage1="kl"))
    new = {n: {int(b): c for b, c in cs.items()} for n, cs in second.info["costs"].items()}
    assert new[low][2] > costs[low][2]
    assert second.allocation.layers[low] > first.allocation.layers[low]


def test_search_budget_zero_is_refused():
    workload = make_workload("tiny-ctc")
    with pytest.raises(ValueError, match="search_budget"):
        run_two_stage(workload, Target(avg_bits=4), Budget(train_steps=1, search_budget=0),
                      TwoStageConfig(stage1="kl"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stage1": "random"}, "stage1"),
        ({"candidates": ()}, "at least one"),
        ({"candidates": (2, 2, 4)}, "duplicate"),
        ({"candidates": (2, 9)}, "bit-width"),
        ({"solver": "greedy"}, "solver"),
        ({"hvp": "exact"}, "hvp"),
        ({"anneal": "cosine"}, "anneal"),
        ({"arch_lr": 0.0}, "arch_lr"),
        ({"budget_weight": -1.0}, "budget_weight"),
        ({"budget_mode": "hinge"}, "budget_mode"),
        ({"dual_lr": float("nan")}, "dual_lr"),
        ({"hard": 1}, "hard"),
        ({"probes_per_batch": 0}, "probes_per_batch"),
        ({"fill_tolerance": -0.5}, "fill_tolerance"),
        ({"fill_tolerance": True}, "fill_tolerance"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TwoStageConfig(**kwargs)


def test_config_sorts_candidates():
    assert TwoStageConfig(candidates=(8, 2, 4)).candidates == (2, 4, 8)


def test_layers_are_plain_modules_between_stages():
    """After stage 1 the eligible layers are plain Linear again; stage 2 prepares them."""
    workload = make_workload("tiny-ctc")
    budget = Budget(train_steps=1, batch_size=2, search_budget=1, seed=0)
    result = run_two_stage(workload, Target(avg_bits=3), budget, TwoStageConfig(stage1="hessian"))
    from mpqbench.quant.layers import FAKE_QUANT_TYPES

    module = workload.model.model
    for name, bits in result.allocation.layers.items():
        layer = module.get_submodule(name)
        assert isinstance(layer, FAKE_QUANT_TYPES) and isinstance(layer, nn.Linear)
        assert layer.bits == bits
    assert [s.name for s in result.stages] == ["precision", "qat"]
    assert [s.kind for s in result.stages] == ["search", "qat"]
    assert result.stages[0].evaluations == 1


def test_hessian_stage_refuses_a_weight_normed_layer():
    workload = make_workload("tiny-ctc")
    workload.eligible = [*workload.eligible, *workload.model.layer_groups()["pos_conv"]]
    budget = Budget(train_steps=1, batch_size=2, search_budget=1, seed=0)
    with pytest.raises(ValueError, match="parametrized weight"):
        hessian_stage(workload, budget, TwoStageConfig(stage1="hessian"))
