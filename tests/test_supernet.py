"""Supernet layers: shared weights, exact eval/extraction, gradients, Gumbel sampling, tau."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from mpqbench.quant.allocation import Allocation
from mpqbench.quant.formats import Quantizer
from mpqbench.quant.layers import QuantConv1d, QuantLinear, fake_quant_modules, prepare_
from mpqbench.quant.primitives import choose_scale, fake_quantize
from mpqbench.quant.supernet import (
    SupernetConv1d,
    SupernetLinear,
    anneal_tau,
    architecture_parameters,
    candidate_scales,
    expected_average_bits,
    extract_,
    gumbel_softmax_weights,
    mixed_fake_quantize,
    prepare_supernet_,
    sample_mixing_,
    set_tau_,
    supernet_modules,
)
from quant_toys import STACK_LAYERS, stack, stack_input

#: Float results here depend on which CPU kernels torch runs: .ci/run repeats them on AVX2.
pytestmark = pytest.mark.kernels

SPECS = {
    "max-channel": Quantizer(),
    "mse-tensor": Quantizer(granularity="per_tensor", scale_method="mse"),
    "max-tensor": Quantizer(granularity="per_tensor"),
}
CANDIDATE_SETS = [(2, 4, 8), (1, 3, 8), (2, 3, 4, 6, 8)]


def reference_mix(w, y, bits, spec):
    """sum_i y_i fake_quantize(w, choose_scale(w, b_i)): the primitives, one at a time."""
    return sum(
        y[i] * fake_quantize(w, choose_scale(w.detach(), b, spec.granularity,
                                             spec.scale_method), b)
        for i, b in enumerate(bits)
    )


@pytest.mark.parametrize("bits", CANDIDATE_SETS, ids=lambda b: "-".join(map(str, b)))
@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
def test_candidate_scales_equal_choose_scale_bitwise(bits, spec):
    w = torch.randn(12, 5, 3) * 0.1
    scales = candidate_scales(w, bits, spec.granularity, spec.scale_method)
    for i, b in enumerate(bits):
        assert torch.equal(scales[i], choose_scale(w, b, spec.granularity, spec.scale_method))


@pytest.mark.parametrize("keep", [True, False], ids=["keep", "recompute"])
@pytest.mark.parametrize("bits", CANDIDATE_SETS, ids=lambda b: "-".join(map(str, b)))
@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
def test_mixed_fake_quantize_matches_the_primitives_values_and_gradients(bits, spec, keep):
    g = torch.Generator().manual_seed(1)
    w0 = torch.randn(10, 7, generator=g) * 0.05
    w0[3] = 0.0  # an all-zero channel
    y0 = torch.softmax(torch.randn(len(bits), generator=g), 0)
    upstream = torch.randn(10, 7, generator=g)

    w, y = w0.clone().requires_grad_(), y0.clone().requires_grad_()
    out = mixed_fake_quantize(w, y, bits, spec.granularity, spec.scale_method,
                              keep_candidates=keep)
    out.backward(upstream)
    wr, yr = w0.clone().requires_grad_(), y0.clone().requires_grad_()
    ref = reference_mix(wr, yr, bits, spec)
    ref.backward(upstream)

    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(w.grad, wr.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(y.grad, yr.grad, rtol=1e-5, atol=1e-5)


def test_mixed_fake_quantize_with_one_hot_weights_is_exactly_one_candidate():
    w = torch.randn(8, 6) * 0.1
    for i, b in enumerate((2, 4, 8)):
        y = torch.nn.functional.one_hot(torch.tensor(i), 3).float()
        expected = fake_quantize(w, choose_scale(w, b), b)
        assert torch.equal(mixed_fake_quantize(w, y, (2, 4, 8)), expected)


def test_mse_scales_clip_so_the_ste_mask_matters():
    # a heavy outlier makes the mse scale clip it; its gradient must be zero (STE mask)
    w = torch.full((1, 16), 0.3)
    w[0, 0] = 1.0
    w.requires_grad_()
    y = torch.tensor([1.0, 0.0])
    mixed_fake_quantize(w, y, (2, 3), "per_channel", "mse").sum().backward()
    assert choose_scale(w, 2, "per_channel", "mse").item() < 1.0  # qmax = 1: 1.0 is clipped
    assert w.grad[0, 0] == 0 and torch.all(w.grad[0, 1:] == 1)


@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
@pytest.mark.parametrize("winner", [0, 1, 2])
def test_eval_forward_equals_the_single_candidate_quant_layer_exactly(spec, winner):
    model = stack()
    prepare_supernet_(model, STACK_LAYERS, (2, 4, 8), spec)
    for m in supernet_modules(model).values():
        m.alpha.data = torch.full((3,), -3.0)
        m.alpha.data[winner] = 3.0
    model.eval()
    with torch.no_grad():
        got = model(stack_input())
    reference = stack()
    prepare_(reference, Allocation("stack", dict.fromkeys(STACK_LAYERS, (2, 4, 8)[winner])),
             spec)
    with torch.no_grad():
        assert torch.equal(got, reference(stack_input()))


def test_all_candidates_share_one_weight_parameter():
    model = stack()
    before = dict(model.named_parameters())
    prepare_supernet_(model, STACK_LAYERS, (2, 4, 8))
    assert isinstance(model.lin, SupernetLinear) and isinstance(model.pos, SupernetConv1d)
    assert model.lin.weight is before["lin.weight"] and model.lin.bias is before["lin.bias"]
    pos_v = "pos.parametrizations.weight.original1"
    assert model.pos.parametrizations.weight.original1 is before[pos_v]
    assert model.tied.weight is model.out.weight  # the tied 32-bit user still shares it
    # one latent weight per layer: the only new parameters are the logits
    after = dict(model.named_parameters())
    new = sorted(set(after) - set(before))
    assert new == sorted(f"{n}.alpha" for n in STACK_LAYERS)
    assert all(after[n].shape == (3,) for n in new)
    assert architecture_parameters(model) == [after[f"{n}.alpha"] for n in supernet_modules(model)]


@pytest.mark.parametrize("hard", [False, True], ids=["soft", "hard"])
def test_gradient_reaches_alpha_and_the_shared_weight(hard):
    model = stack()
    prepare_supernet_(model, STACK_LAYERS, (2, 4, 8), hard=hard)
    model.train()
    torch.manual_seed(0)
    model(stack_input()).square().mean().backward()
    for name, m in supernet_modules(model).items():
        assert m.alpha.grad is not None and torch.isfinite(m.alpha.grad).all(), name
        assert m.alpha.grad.abs().sum() > 0, name
    assert model.lin.weight.grad is not None and model.lin.weight.grad.abs().sum() > 0
    assert model.pos.parametrizations.weight.original1.grad is not None


def test_frozen_weights_train_only_the_logits():
    model = stack()
    for p in model.parameters():
        p.requires_grad_(False)
    prepare_supernet_(model, STACK_LAYERS, (2, 4, 8))
    model.train()
    model(stack_input()).square().mean().backward()
    assert all(m.alpha.grad is not None for m in supernet_modules(model).values())
    assert model.lin.weight.grad is None


def test_hard_forward_uses_exactly_the_sampled_candidate():
    lin = nn.Linear(6, 5)
    layer = SupernetLinear.from_float(lin, (2, 4, 8), hard=True)
    layer.train()
    x = torch.randn(3, 6)
    seen = set()
    for seed in range(20):
        torch.manual_seed(seed)
        y, p = gumbel_softmax_weights(layer.alpha, layer.tau, True)
        k = int(p.argmax())
        torch.manual_seed(seed)
        out = layer(x)
        w = fake_quantize(lin.weight, choose_scale(lin.weight, (2, 4, 8)[k]), (2, 4, 8)[k])
        assert torch.equal(out, nn.functional.linear(x, w, lin.bias))
        assert torch.equal(y.detach(), nn.functional.one_hot(torch.tensor(k), 3).float())
        seen.add(k)
    assert seen == {0, 1, 2}


def test_hard_samples_follow_softmax_alpha():
    # Gumbel-max: P(argmax(alpha + g) = i) = softmax(alpha)_i, whatever tau
    alpha = torch.tensor([0.5, -1.0, 1.2])
    torch.manual_seed(3)
    n = 20000
    counts = torch.zeros(3)
    for _ in range(n):
        _, p = gumbel_softmax_weights(alpha, 0.3, True)
        counts[p.argmax()] += 1
    expected = torch.softmax(alpha, 0)
    sigma = (expected * (1 - expected) / n).sqrt()
    assert torch.all((counts / n - expected).abs() < 4 * sigma)


def test_gumbel_noise_is_deterministic_under_the_torch_seed():
    outs = []
    for seed in (5, 5, 6):
        model = stack()
        prepare_supernet_(model, STACK_LAYERS, (2, 4, 8))
        model.train()
        torch.manual_seed(seed)
        outs.append(model(stack_input()))
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])


def test_batched_sampling_is_consumed_by_the_next_forward():
    model = stack()
    prepare_supernet_(model, STACK_LAYERS, (2, 4, 8), hard=True)
    model.train()
    layers = list(supernet_modules(model).values())
    torch.manual_seed(4)
    sample_mixing_(layers)
    pending = [m.pending_mixing.detach().clone() for m in layers]
    assert all(p.sum() == 1 and p.max() == 1 for p in pending)  # exact one-hots
    out = model(stack_input())
    assert all(m.pending_mixing is None for m in layers)
    # the same forward with each layer's drawn candidate fixed by its logits in eval mode
    for m, p in zip(layers, pending, strict=True):
        m.alpha.data = p * 10
    model.eval()
    # Autograd records both forwards (the weights require grad in both), so torch runs the
    # same matmul path on the same weight values (1 * Q_k + 0 * Q_j is Q_k exactly): exact.
    # Under no_grad on one side only, the transposed 3-D input may take another path.
    assert torch.equal(out, model(stack_input()))
    model.train()
    out.sum().backward()
    assert all(m.alpha.grad is not None and m.alpha.grad.abs().sum() > 0 for m in layers)
    # seeded: the same seed draws the same rows; a new draw replaces unconsumed rows
    torch.manual_seed(4)
    sample_mixing_(layers)
    assert all(torch.equal(m.pending_mixing.detach(), p) for m, p in zip(layers, pending,
                                                                         strict=True))
    sample_mixing_(layers)
    model(stack_input()).sum().backward()  # no stale graph from the replaced rows


def test_expected_bits_by_hand():
    layer = SupernetLinear.from_float(nn.Linear(4, 3), (2, 4, 8))
    layer.alpha.data = torch.log(torch.tensor([0.2, 0.3, 0.5]))
    assert layer.expected_bits().item() == pytest.approx(0.2 * 2 + 0.3 * 4 + 0.5 * 8)
    assert layer.argmax_bits() == 8
    other = SupernetLinear.from_float(nn.Linear(4, 3), (2, 4, 8))  # zeros: uniform
    assert other.expected_bits().item() == pytest.approx(14 / 3)
    assert other.argmax_bits() == 2  # ties go to the smallest candidate
    avg = expected_average_bits({"a": layer, "b": other}, {"a": 30, "b": 10})
    assert avg.item() == pytest.approx((30 * 5.6 + 10 * 14 / 3) / 40)
    mixed = SupernetLinear.from_float(nn.Linear(4, 3), (2, 3))  # another candidate set
    assert expected_average_bits({"a": layer, "m": mixed}, {"a": 1, "m": 3}).item() == (
        pytest.approx((5.6 + 3 * 2.5) / 4))
    avg.backward()
    assert layer.alpha.grad is not None and other.alpha.grad is not None
    # d E / d alpha_i = p_i (b_i - E)
    p = torch.tensor([0.2, 0.3, 0.5])
    torch.testing.assert_close(layer.alpha.grad, 30 / 40 * p * (torch.tensor([2.0, 4, 8]) - 5.6))


def test_tau_annealing_schedule_values():
    assert anneal_tau(0, 11, 1.0, 0.1) == pytest.approx(1.0)
    assert anneal_tau(10, 11, 1.0, 0.1) == pytest.approx(0.1)
    assert anneal_tau(5, 11, 1.0, 0.1) == pytest.approx(math.sqrt(0.1))
    assert anneal_tau(5, 11, 1.0, 0.1, "linear") == pytest.approx(0.55)
    assert anneal_tau(50, 11, 1.0, 0.1) == pytest.approx(0.1)  # held past the end
    assert anneal_tau(0, 1, 1.0, 0.1) == 1.0
    values = [anneal_tau(s, 20, 2.0, 0.05) for s in range(20)]
    assert all(a > b for a, b in itertools.pairwise(values))
    with pytest.raises(ValueError, match="anneal kind"):
        anneal_tau(0, 5, 1.0, 0.1, "cosine")
    with pytest.raises(ValueError, match="temperatures"):
        anneal_tau(0, 5, 0.0, 0.1)
    model = stack()
    prepare_supernet_(model, ["lin", "out"], (2, 4))
    set_tau_(model, 0.25)
    assert all(m.tau == 0.25 for m in supernet_modules(model).values())
    with pytest.raises(ValueError, match="tau"):
        set_tau_(model, 0.0)


def test_extract_gives_the_argmax_allocation_and_the_evaluated_network():
    model = stack()
    weights = {n: p for n, p in model.named_parameters()}
    prepare_supernet_(model, STACK_LAYERS, (2, 4, 8))
    winners = {"conv": 8, "reflect": 2, "pos": 4, "lin": 2, "out": 8}
    for name, m in supernet_modules(model).items():
        m.alpha.data = torch.tensor([0.1, 0.2, 0.3])
        m.alpha.data[m.candidates.index(winners[name])] = 1.0
    model.eval()
    with torch.no_grad():
        evaluated = model(stack_input())
    alloc = extract_(model, model_name="stack")
    assert alloc == Allocation("stack", winners)
    assert not supernet_modules(model)
    assert set(fake_quant_modules(model)) == set(STACK_LAYERS)
    assert isinstance(model.lin, QuantLinear) and isinstance(model.pos, QuantConv1d)
    assert model.lin.bits == 2 and model.conv.bits == 8
    assert model.lin.weight is weights["lin.weight"]
    assert model.pos.parametrizations.weight.original0 is weights[
        "pos.parametrizations.weight.original0"]
    assert "alpha" not in " ".join(n for n, _ in model.named_parameters())
    with torch.no_grad():
        assert torch.equal(model(stack_input()), evaluated)


def test_extract_with_overrides_and_its_errors():
    model = stack()
    prepare_supernet_(model, ["lin", "out"], (2, 4, 8))
    with pytest.raises(ValueError, match="not one of its candidates"):
        extract_(model, bits={"lin": 3})
    with pytest.raises(ValueError, match="no supernet layer named"):
        extract_(model, bits={"conv": 4})
    alloc = extract_(model, bits={"lin": 4})
    assert dict(alloc.layers) == {"lin": 4, "out": 2}
    with pytest.raises(ValueError, match="no supernet layer"):
        extract_(model)


def test_prepare_supernet_errors():
    with pytest.raises(ValueError, match="no module"):
        prepare_supernet_(stack(), ["nope"])
    with pytest.raises(ValueError, match="learnable scales"):
        prepare_supernet_(stack(), ["lin"], quantizer=Quantizer(learnable_scale=True))
    with pytest.raises(ValueError, match="duplicated"):
        prepare_supernet_(stack(), ["lin"], (4, 4))
    with pytest.raises(ValueError, match="bit-width"):
        prepare_supernet_(stack(), ["lin"], (2, 9))
    with pytest.raises(ValueError, match="at least one"):
        prepare_supernet_(stack(), ["lin"], ())
    model = stack()
    prepare_(model, Allocation("stack", {"lin": 4}))
    with pytest.raises(ValueError, match="already quantized"):
        prepare_supernet_(model, ["lin"])
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    with pytest.raises(ValueError, match=r"only nn\.Linear, nn\.Conv1d and nn\.Embedding"):
        prepare_supernet_(model, ["1"])
    with pytest.raises(ValueError, match="init_logits"):
        prepare_supernet_(stack(), ["lin"], (2, 4), init_logits=[0.0])


def test_candidates_are_sorted_and_init_logits_apply():
    model = stack()
    prepare_supernet_(model, ["lin"], (8, 2, 4), init_logits=[0.0, 0.0, 2.0])
    assert model.lin.candidates == (2, 4, 8)
    assert model.lin.argmax_bits() == 8
