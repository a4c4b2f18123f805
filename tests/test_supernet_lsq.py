"""Learnable (LSQ) scales of a supernet's low-bit candidates (issue 15): which candidates
get them, their gradients, extraction with the learned scale, and the packed export."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mpqbench.quant import load_packed, packed_modules, save_packed
from mpqbench.quant.formats import Quantizer
from mpqbench.quant.layers import QuantEmbedding, QuantLinear, fake_quant_modules
from mpqbench.quant.primitives import choose_scale, fake_quantize, fake_quantize_lsq
from mpqbench.quant.supernet import (
    SupernetLinear,
    extract_,
    prepare_supernet_,
    supernet_modules,
)
from quant_toys import STACK_LAYERS, stack, stack_input, tied_lm, token_ids

#: Float results here depend on which CPU kernels torch runs: .ci/run repeats them on AVX2.
pytestmark = pytest.mark.kernels

SPECS = {"max-channel": Quantizer(), "mse-tensor": Quantizer(granularity="per_tensor",
                                                            scale_method="mse")}


def test_scales_exist_only_for_candidates_at_or_below_the_threshold():
    model = stack()
    prepare_supernet_(model, STACK_LAYERS, (2, 3, 4, 8), learnable_scale_max_bits=3)
    for name, layer in supernet_modules(model).items():
        assert layer.learnable_bits == (2, 3), name
        assert sorted(layer.lsq_scales) == ["2", "3"]
        for b in (2, 3):
            init = choose_scale(layer.weight.detach(), b, "per_channel", "max")
            assert torch.equal(layer.lsq_scales[str(b)].detach(), init)  # the max scale
            assert layer.lsq_scales[str(b)].shape == (layer.weight.shape[0],
                                                      *[1] * (layer.weight.dim() - 1))
    names = {n for n, _ in model.named_parameters()}
    assert {f"lin.lsq_scales.{b}" for b in (2, 3)} <= names
    assert not any(n.endswith(("lsq_scales.4", "lsq_scales.8")) for n in names)
    per_tensor = SupernetLinear.from_float(nn.Linear(6, 5), (2, 4, 8),
                                           Quantizer(granularity="per_tensor"),
                                           learnable_scale_max_bits=4)
    assert [p.shape for p in per_tensor.scale_parameters()] == [(1, 1), (1, 1)]
    below = SupernetLinear.from_float(nn.Linear(6, 5), (2, 4, 8), learnable_scale_max_bits=1)
    assert below.scale_parameters() == [] and below.lsq_scales is None


def test_default_off_leaves_parameters_and_values_unchanged():
    plain, off = stack(), stack()
    prepare_supernet_(plain, STACK_LAYERS, (2, 4, 8))
    prepare_supernet_(off, STACK_LAYERS, (2, 4, 8), learnable_scale_max_bits=None)
    assert [n for n, _ in off.named_parameters()] == [n for n, _ in plain.named_parameters()]
    assert list(off.state_dict()) == list(plain.state_dict())
    assert all(m.scale_parameters() == [] for m in supernet_modules(off).values())
    plain.train()
    off.train()
    torch.manual_seed(0)
    a = plain(stack_input())
    torch.manual_seed(0)
    assert torch.equal(off(stack_input()), a)


@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
def test_values_and_gradients_match_the_lsq_primitive(spec):
    torch.manual_seed(0)
    lin = nn.Linear(7, 6)
    layer = SupernetLinear.from_float(lin, (2, 4, 8), spec, learnable_scale_max_bits=2)
    layer.train()
    x = torch.randn(4, 7)
    y = torch.tensor([0.5, 0.3, 0.2], requires_grad=True)
    layer.pending_mixing = y
    layer(x).square().sum().backward()
    # reference: the primitives, one candidate at a time, the 2-bit one with LSQ
    w = lin.weight.detach().clone().requires_grad_(True)
    s = layer.lsq_scales["2"].detach().clone().requires_grad_(True)
    yr = y.detach().clone().requires_grad_(True)
    mixed = yr[0] * fake_quantize_lsq(w, s, 2) + sum(
        yr[i] * fake_quantize(w, choose_scale(w.detach(), b, spec.granularity,
                                              spec.scale_method), b)
        for i, b in ((1, 4), (2, 8)))
    nn.functional.linear(x, mixed, lin.bias.detach()).square().sum().backward()
    scale = layer.lsq_scales["2"]
    assert scale.grad is not None and scale.grad.abs().sum() > 0
    torch.testing.assert_close(scale.grad, s.grad, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(lin.weight.grad, w.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(y.grad, yr.grad, rtol=1e-5, atol=1e-7)


def test_hard_step_gives_the_scale_gradient_only_when_its_candidate_is_drawn():
    torch.manual_seed(0)
    layer = SupernetLinear.from_float(nn.Linear(5, 4), (2, 4, 8),
                                      learnable_scale_max_bits=4)
    layer.train()
    x = torch.randn(3, 5)
    for k in range(3):
        layer.zero_grad()
        onehot = nn.functional.one_hot(torch.tensor(k), 3).float()
        layer.pending_mixing = onehot + layer.alpha - layer.alpha.detach()  # straight-through
        layer(x).sum().backward()
        grads = [float(p.grad.abs().sum()) for p in layer.scale_parameters()]  # bits 2, 4
        assert [g > 0 for g in grads] == [k == 0, k == 1], (k, grads)


@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
def test_extraction_keeps_the_learned_scale_and_the_candidate_output(spec):
    model = stack()
    prepare_supernet_(model, STACK_LAYERS, (2, 4, 8), spec, learnable_scale_max_bits=4)
    model.train()
    model(stack_input()).square().mean().backward()
    torch.optim.SGD(model.parameters(), lr=0.5).step()  # scales move off their init
    winners = {"conv": 8, "reflect": 2, "pos": 4, "lin": 2, "out": 4}
    for name, m in supernet_modules(model).items():
        m.alpha.data = torch.full((3,), -2.0)
        m.alpha.data[m.candidates.index(winners[name])] = 2.0
    layers = supernet_modules(model)
    learned = {n: layers[n].lsq_scales[str(b)] for n, b in winners.items() if b <= 4}
    assert all(not torch.equal(p.detach(), choose_scale(layers[n].weight.detach(),
                                                        winners[n], spec.granularity,
                                                        spec.scale_method))
               for n, p in learned.items())
    x = stack_input()
    # the supernet's candidate output, training mode, one-hot mixing at the winner
    for name, m in layers.items():
        m.pending_mixing = nn.functional.one_hot(
            torch.tensor(m.candidates.index(winners[name])), 3).float()
    with torch.no_grad():
        candidate_out = model(x)
    model.eval()
    with torch.no_grad():
        evaluated = model(x)
    assert torch.equal(candidate_out, evaluated)
    extract_(model, model_name="stack")
    quantized = fake_quant_modules(model)
    for name, b in winners.items():
        assert quantized[name].spec.learnable_scale == (b <= 4), name
        if b <= 4:
            assert quantized[name].scale is learned[name]  # the same Parameter
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), evaluated)
    model.train()
    with torch.no_grad():
        assert torch.equal(model(x), candidate_out)


def test_extracted_learned_scales_survive_the_packed_export(tmp_path):
    model = stack()
    prepare_supernet_(model, STACK_LAYERS, (2, 4, 8), learnable_scale_max_bits=4)
    model.train()
    model(stack_input()).square().mean().backward()
    torch.optim.SGD(model.parameters(), lr=0.5).step()
    for i, m in enumerate(supernet_modules(model).values()):
        m.alpha.data = torch.zeros(3)
        m.alpha.data[i % 3] = 1.0
    alloc = extract_(model, model_name="stack")
    assert {fake_quant_modules(model)[n].spec.learnable_scale for n in STACK_LAYERS} == {
        True, False}
    model.eval()
    with torch.no_grad():
        expected = model(stack_input())
    path = tmp_path / "supernet.safetensors"
    save_packed(model, alloc, path)
    loaded = load_packed(stack(seed=123), path)
    assert {n: m.bits for n, m in packed_modules(loaded).items()} == dict(alloc.layers)
    with torch.no_grad():
        assert torch.equal(loaded(stack_input()), expected)


@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
def test_embedding_and_its_tied_projection_learn_and_keep_the_scale(granularity):
    model = tied_lm()
    spec = Quantizer(granularity=granularity)
    prepare_supernet_(model, ["embed", "mix"], (2, 4, 8), spec, learnable_scale_max_bits=2)
    embed = model.embed
    assert embed.learnable_bits == (2,)
    rows = 40 if granularity == "per_channel" else 1
    assert embed.lsq_scales["2"].shape == (rows, 1)
    model.train()
    ids = token_ids()
    model(ids).square().mean().backward()
    assert embed.lsq_scales["2"].grad.abs().sum() > 0
    torch.optim.SGD(model.parameters(), lr=0.5).step()
    with torch.no_grad():
        embed.alpha.copy_(torch.tensor([2.0, 0.0, 0.0]))  # 2 bits: the learned scale
    model.eval()
    with torch.no_grad():
        evaluated = model(ids)
    learned = embed.lsq_scales["2"]
    extract_(model)
    assert isinstance(model.embed, QuantEmbedding) and model.embed.spec.learnable_scale
    assert model.embed.scale is learned and isinstance(model.mix, QuantLinear)
    with torch.no_grad():
        assert torch.equal(model(ids), evaluated)
