"""prepare_/convert_: same Parameters, exact packed outputs, parametrized convs, errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from mpqbench.quant.allocation import Allocation
from mpqbench.quant.formats import Quantizer, QuantSpec
from mpqbench.quant.layers import (
    QuantConv1d,
    QuantLinear,
    fake_quant_modules,
    frozen_quantized_weights,
    prepare_,
)
from mpqbench.quant.packed_layers import PackedConv1d, PackedLinear, convert_, packed_modules
from mpqbench.quant.primitives import choose_scale, fake_quantize
from quant_toys import STACK_LAYERS, rounding_tolerance, stack, stack_input

#: Float results here depend on which CPU kernels torch runs: .ci/run repeats them on AVX2.
pytestmark = pytest.mark.kernels

SPECS = {
    "max-channel": Quantizer(),
    "mse-tensor": Quantizer(granularity="per_tensor", scale_method="mse"),
    "lsq-channel": Quantizer(learnable_scale=True),
}


@pytest.mark.parametrize("bits", range(1, 9), ids=lambda b: f"int{b}")
@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
def test_convert_reproduces_fake_quant_exactly(bits, spec):
    model = stack()
    alloc = Allocation("stack", {n: bits for n in STACK_LAYERS})
    prepare_(model, alloc, spec)
    # one training step so the weights and (LSQ) scales are no longer at their init
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    model(stack_input()).square().mean().backward()
    opt.step()
    with torch.no_grad():
        expected = model(stack_input())
    convert_(model)
    assert set(packed_modules(model)) == set(STACK_LAYERS)
    assert not fake_quant_modules(model)
    with torch.no_grad():
        assert torch.equal(model(stack_input()), expected)
    # uncached packed layers give the same result
    for m in packed_modules(model).values():
        m.cache = False
        m._refresh_cache()
    with torch.no_grad():
        assert torch.equal(model(stack_input()), expected)


def test_prepare_keeps_parameter_objects_and_optimizer_works():
    model = stack()
    before = {n: p for n, p in model.named_parameters()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    prepare_(model, Allocation("stack", {"lin": 4, "pos": 3, "out": 2, "conv": None}))
    assert isinstance(model.lin, QuantLinear) and isinstance(model.pos, QuantConv1d)
    assert isinstance(model.conv, nn.Conv1d) and not isinstance(model.conv, QuantConv1d)
    assert model.lin.weight is before["lin.weight"] and model.lin.bias is before["lin.bias"]
    v = "pos.parametrizations.weight.original1"
    assert model.pos.parametrizations.weight.original1 is before[v]
    # a 32-bit module tied to a quantized one keeps using the same latent Parameter
    assert type(model.tied) is nn.Linear and model.tied.weight is model.out.weight
    assert dict(model.named_parameters()).keys() == before.keys()
    w0 = model.lin.weight.detach().clone()
    model(stack_input()).square().mean().backward()
    opt.step()
    assert not torch.equal(model.lin.weight, w0), "optimizer built before prepare_ must still work"
    assert model.lin.weight.grad is not None
    assert model.pos.parametrizations.weight.original0.grad is not None


def test_a_module_at_two_paths_is_swapped_at_both():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    prepare_(model, Allocation("seq", {"0": 4}))
    assert isinstance(model[2], QuantLinear) and model[0] is model[2]
    convert_(model)
    assert isinstance(model[2], PackedLinear) and model[0] is model[2]


def test_forward_is_fake_quantized_effective_weight():
    model = stack()
    x = torch.randn(2, 16, 7)
    effective = model.pos.weight.detach().clone()
    prepare_(model, Allocation("stack", {"pos": 3}))
    scale = choose_scale(effective, 3)
    # Both sides under no_grad: the same conv1d on the same weight values, so exact (with
    # autograd recording on one side only, torch may pick another convolution path).
    with torch.no_grad():
        expected = nn.functional.conv1d(
            x, fake_quantize(effective, scale, 3), model.pos.bias, padding=2, groups=4
        )
        assert torch.equal(model.pos(x), expected)


@pytest.mark.parametrize("bits", range(1, 9), ids=lambda b: f"int{b}")
@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
def test_layer_weight_equals_primitive_values_and_gradient(bits, granularity):
    # the layer's quantized weight must be the primitive's, bit for bit, gradient included
    # (the primitive itself is checked against torch in test_quant_primitives)
    model = stack()
    prepare_(model, Allocation("stack", {"lin": bits, "conv": bits}),
             Quantizer(granularity=granularity))
    for layer in (model.lin, model.conv):
        w = layer.weight
        w.data.mul_(1.5)  # make the weight differ from the one scales were first taken of
        grad = torch.randn_like(w)
        fast = layer.quantized_weight()
        ref = fake_quantize(w, choose_scale(w, bits, granularity), bits)
        assert torch.equal(fast, ref)
        g_fast = torch.autograd.grad(fast, w, grad)[0]
        g_ref = torch.autograd.grad(ref, w, grad)[0]
        assert torch.equal(g_fast, g_ref)


def test_codes_and_scale_rebuild_the_forward_weight_exactly():
    model = stack()
    prepare_(model, Allocation("stack", {"lin": 5, "pos": 1}), Quantizer(learnable_scale=True))
    for layer in (model.lin, model.pos):
        codes, scale = layer.codes_and_scale()
        assert codes.dtype == torch.int8
        assert torch.equal(codes.float() * scale, layer.quantized_weight().detach())
        assert torch.equal(scale, layer.current_scale())


def test_learnable_scale_is_a_parameter_that_learns():
    model = stack()
    prepare_(model, Allocation("stack", {"lin": 3}), Quantizer(learnable_scale=True))
    scale = model.lin.scale
    assert isinstance(scale, nn.Parameter) and scale.shape == (32, 1)
    assert torch.equal(scale, choose_scale(model.lin.weight, 3))
    model(stack_input()).square().mean().backward()
    assert scale.grad is not None and scale.grad.abs().sum() > 0
    assert "lin.scale" in model.state_dict()


def test_device_and_dtype_preserved():
    model = stack().double()
    prepare_(model, Allocation("stack", {"lin": 4}), Quantizer(learnable_scale=True))
    assert model.lin.weight.dtype == torch.float64 and model.lin.scale.dtype == torch.float64
    x = stack_input().double()
    trained = model(x)  # a training forward: autograd records it
    assert trained.dtype == torch.float64
    with torch.no_grad():
        expected = model(x)
    convert_(model)
    assert model.lin.scale.dtype == torch.float64 and model.lin.qweight.dtype == torch.uint8
    with torch.no_grad():
        packed = model(x)
    # Exact by construction: both inference forwards run F.linear on the same float64
    # weight values (codes * scale, checked bit for bit by codes_and_scale) and inputs.
    assert packed.dtype == torch.float64 and torch.equal(packed, expected)
    # Not exact: with autograd recording, torch's matmul on the transposed 3-D input may
    # take another kernel path (it avoids folding batch dims when an operand requires
    # grad), which sums in another order. That differs by rounding only: a few ulps of
    # the 16-term dot products, then tanh and two 32-term products.
    tol = rounding_tolerance(torch.float64, terms=16 + 32)
    torch.testing.assert_close(trained.detach(), packed, rtol=tol, atol=tol)


def test_packed_layer_interface():
    model = stack()
    prepare_(model, Allocation("stack", {"lin": 3, "conv": 5}))
    convert_(model)
    lin, conv = model.lin, model.conv
    assert isinstance(lin, PackedLinear) and isinstance(conv, PackedConv1d)
    assert (lin.in_features, lin.out_features) == (16, 32)
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (4, 16, (3,))
    assert lin.qweight.numel() == (16 * 32 * 3 + 7) // 8
    assert set(lin.state_dict()) == {"qweight", "scale", "bias"}
    assert lin.weight.shape == (32, 16)
    # load_state_dict refreshes the dequantized cache
    sd = {k: v.clone() for k, v in lin.state_dict().items()}
    sd["scale"] *= 2
    lin.load_state_dict(sd)
    assert torch.equal(lin.weight, lin.codes().float() * sd["scale"])


def test_prepare_takes_a_quantizer_not_a_per_layer_spec():
    with pytest.raises(ValueError, match="prepare_ takes a Quantizer"):
        prepare_(stack(), Allocation("stack", {"lin": 4}), QuantSpec(bits=2))


def test_errors_name_the_module():
    model = stack()
    with pytest.raises(ValueError, match="no module 'nope'"):
        prepare_(model, Allocation("stack", {"nope": 4}))
    seq = nn.Sequential(nn.ReLU(), nn.LayerNorm(3))
    with pytest.raises(ValueError, match="module '1' is a LayerNorm"):
        prepare_(seq, Allocation("seq", {"1": 4}))
    prepare_(model, Allocation("stack", {"lin": 4}))
    with pytest.raises(ValueError, match="'lin' is already fake-quantized"):
        prepare_(model, Allocation("stack", {"lin": 4}))
    mha = nn.Sequential(nn.MultiheadAttention(8, 2))
    with pytest.raises(ValueError, match="MultiheadAttention"):
        prepare_(mha, Allocation("mha", {"0.out_proj": 4}))
    with pytest.raises(ValueError, match="no fake-quantized layer"):
        convert_(nn.Sequential(nn.Linear(2, 2)))


def test_prepare_on_a_copy_leaves_original_untouched():
    model = stack()
    copy_ = copy.deepcopy(model)
    prepare_(copy_, Allocation("stack", {"lin": 4}))
    assert type(model.lin) is nn.Linear


def test_frozen_quantized_weights_are_computed_once_and_change_nothing(monkeypatch):
    model = stack()
    prepare_(model, Allocation("stack", {"lin": 4, "pos": 3, "out": 2, "conv": None}))
    x = stack_input()
    with torch.no_grad():
        expected = model(x)
    calls = []
    original = QuantLinear.fake_quant_with_scale

    def counting(self):
        calls.append(self)
        return original(self)

    monkeypatch.setattr(QuantLinear, "fake_quant_with_scale", counting)
    with frozen_quantized_weights(model):
        entered = len(calls)
        with torch.no_grad():
            first, second = model(x), model(x)
        assert len(calls) == entered, "no forward may quantize again inside the context"
        # exact: the frozen weight is the tensor every forward would compute
        assert torch.equal(first, expected) and torch.equal(second, expected)
        model(x).square().mean().backward()  # autograd on: quantized afresh, gradients flow
        assert len(calls) > entered and model.lin.weight.grad is not None
    calls.clear()
    with torch.no_grad():
        model(x)
    assert calls, "after the context every forward quantizes again"


def test_frozen_weights_stored_in_the_autocast_dtype_give_the_same_outputs():
    model = stack()
    prepare_(model, Allocation("stack", {"lin": 4, "pos": 3, "out": 2, "conv": 4}))
    x = stack_input()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        with frozen_quantized_weights(model):
            expected = model(x)
        with frozen_quantized_weights(model, torch.bfloat16):
            assert model.lin._frozen_weight.dtype == torch.bfloat16
            got = model(x)
    # exact: autocast rounds the fp32 weight to bf16 at each call; here it was rounded once
    assert torch.equal(got, expected)
