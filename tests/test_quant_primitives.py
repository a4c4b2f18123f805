"""Quantization primitives against torch's own fake-quant kernels (independent reference)."""

from __future__ import annotations

import itertools
import os
import re

import pytest
import torch

from mpqbench.quant.formats import Quantizer, QuantSpec
from mpqbench.quant.primitives import (
    SIGN_STE_CLIP,
    absmax,
    choose_scale,
    dequantize,
    fake_quantize,
    fake_quantize_lsq,
    lsq_grad_factor,
    qrange,
    quantize,
)

#: Float results here depend on which CPU kernels torch runs: .ci/run repeats them on AVX2.
pytestmark = pytest.mark.kernels

MULTIBIT = list(range(2, 9))
SHAPES = {"linear": (48, 40), "conv1d": (24, 6, 5)}


def _weight(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g) * 0.05
    w[0] = 0.0  # an all-zero channel must not break anything
    return w


@pytest.mark.parametrize("shape", [*SHAPES.values(), (7,), (3, 1)], ids=[*SHAPES, "1d", "col"])
@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
def test_absmax_is_the_max_of_the_absolute_values(shape, granularity):
    """Against |W| reduced by torch directly (and an all-zero channel, a negative maximum
    magnitude and NaN)."""
    w = _weight(shape)
    w.view(-1)[-1] = -1.0  # the largest magnitude is negative
    dims = tuple(range(1, w.dim())) if granularity == "per_channel" else tuple(range(w.dim()))
    expected = w.abs().amax(dim=dims, keepdim=True) if dims else w.abs()
    assert torch.equal(absmax(w, granularity), expected)
    w.view(-1)[0] = float("nan")
    assert absmax(w, granularity).view(-1)[0].isnan()


@pytest.mark.parametrize("bits", MULTIBIT, ids=lambda b: f"int{b}")
@pytest.mark.parametrize("shape", SHAPES.values(), ids=list(SHAPES))
@pytest.mark.parametrize("shrink", [1.0, 0.55], ids=["max-scale", "clipping"])
def test_per_channel_matches_torch_fake_quant(bits, shape, shrink):
    w = _weight(shape).requires_grad_()
    scale = choose_scale(w, bits) * shrink
    qmin, qmax = qrange(bits)
    zero = torch.zeros(shape[0], dtype=torch.int32)
    ref = torch.fake_quantize_per_channel_affine(w, scale.flatten(), zero, 0, qmin, qmax)
    out = fake_quantize(w, scale, bits)
    assert torch.equal(out, ref)
    grad = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    (g_ref,) = torch.autograd.grad(ref, w, grad)
    (g_out,) = torch.autograd.grad(out, w, grad)
    assert torch.equal(g_out, g_ref)
    if shrink < 1:
        assert (g_out == 0).any(), "clipping case must exercise the zero-gradient branch"


@pytest.mark.parametrize("bits", range(1, 9), ids=lambda b: f"int{b}")
@pytest.mark.parametrize("shape", SHAPES.values(), ids=list(SHAPES))
@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
def test_in_range_shortcut_is_exact_for_the_max_scale(bits, shape, granularity):
    w = _weight(shape, seed=bits).requires_grad_()
    w.data[1, 0] = 1e-39  # a denormal-only channel hits the scale guard
    scale = choose_scale(w, bits, granularity)
    fast = fake_quantize(w, scale, bits, in_range=True)
    full = fake_quantize(w, scale, bits)
    assert torch.equal(fast, full)
    grad = torch.randn(shape)
    assert torch.equal(torch.autograd.grad(fast, w, grad)[0], torch.autograd.grad(full, w, grad)[0])


@pytest.mark.parametrize("bits", MULTIBIT, ids=lambda b: f"int{b}")
def test_per_tensor_matches_torch_fake_quant(bits):
    w = _weight((32, 20)).requires_grad_()
    scale = choose_scale(w, bits, "per_tensor") * 0.7
    assert scale.shape == (1, 1)
    qmin, qmax = qrange(bits)
    ref = torch.fake_quantize_per_tensor_affine(w, float(scale), 0, qmin, qmax)
    out = fake_quantize(w, scale, bits)
    assert torch.equal(out, ref)
    grad = torch.randn(32, 20)
    assert torch.equal(torch.autograd.grad(out, w, grad)[0], torch.autograd.grad(ref, w, grad)[0])


@pytest.mark.parametrize("bits", MULTIBIT, ids=lambda b: f"int{b}")
def test_lsq_matches_torch_learnable_fake_quant(bits):
    w = _weight((16, 30))
    scale0 = choose_scale(w, bits) * 0.6
    qmin, qmax = qrange(bits)
    factor = lsq_grad_factor(w, scale0, bits)
    assert factor == pytest.approx(1 / (30 * qmax) ** 0.5)
    grad = torch.randn(16, 30, generator=torch.Generator().manual_seed(2))

    w_ref, s_ref = w.clone().requires_grad_(), scale0.flatten().clone().requires_grad_()
    zp = torch.zeros(16, requires_grad=True)
    ref = torch._fake_quantize_learnable_per_channel_affine(
        w_ref, s_ref, zp, 0, qmin, qmax, factor
    )
    ref.backward(grad)
    w_out, s_out = w.clone().requires_grad_(), scale0.clone().requires_grad_()
    out = fake_quantize_lsq(w_out, s_out, bits)
    out.backward(grad)
    assert torch.equal(out, ref)
    assert torch.equal(w_out.grad, w_ref.grad)
    torch.testing.assert_close(s_out.grad.flatten(), s_ref.grad, rtol=1e-5, atol=1e-6)


def test_one_bit_is_sign_times_mean_abs():
    w = torch.tensor([[0.5, -0.25, 0.0, 0.75], [0.0, 0.0, 0.0, 0.0], [-2.0, 1.0, -1.0, 0.0]])
    w.requires_grad_()
    scale = choose_scale(w, 1)
    assert torch.equal(scale[[0, 2]].flatten(), torch.tensor([0.375, 1.0]))
    assert scale[1].item() > 0, "all-zero channel needs a positive scale"
    codes = quantize(w, scale, 1)
    assert codes.tolist()[0] == [1, -1, 1, 1]  # sign(0) = +1
    assert codes.tolist()[2] == [-1, 1, -1, 1]
    out = fake_quantize(w, scale, 1)
    assert torch.equal(out, dequantize(codes, scale))
    (g,) = torch.autograd.grad(out.sum(), w)
    assert torch.equal(g, (w.detach().abs() <= SIGN_STE_CLIP).float())
    assert g[2, 0] == 0  # |w| = 2 > clip
    # mse and max coincide at b = 1
    assert torch.equal(choose_scale(w, 1, method="mse"), scale)


def test_one_bit_lsq_gradient():
    w = torch.tensor([[0.5, -0.25, 0.0, 0.75]])
    s = torch.tensor([[0.4]], requires_grad=True)
    out = fake_quantize_lsq(w, s, 1, grad_factor=0.5)
    assert torch.equal(out, torch.tensor([[0.4, -0.4, 0.4, 0.4]]))
    out.sum().backward()
    assert s.grad.item() == pytest.approx(0.5 * (1 - 1 + 1 + 1))


@pytest.mark.parametrize("bits", range(1, 9), ids=lambda b: f"int{b}")
@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
def test_dequantize_quantize_is_fake_quantize_bitwise(bits, granularity):
    w = _weight((20, 7, 3), seed=bits)
    for method in ("max", "mse"):
        scale = choose_scale(w, bits, granularity, method)
        assert (scale > 0).all()
        codes = quantize(w, scale, bits)
        assert codes.dtype == torch.int8
        qmin, qmax = qrange(bits)
        assert codes.min() >= qmin and codes.max() <= qmax
        assert torch.equal(dequantize(codes, scale), fake_quantize(w, scale, bits))
        assert torch.equal(dequantize(codes, scale), fake_quantize_lsq(w, scale, bits))


@pytest.mark.parametrize("bits", range(1, 9), ids=lambda b: f"int{b}")
@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
@pytest.mark.parametrize("seed", range(3))
def test_mse_scale_never_worse_than_max(bits, granularity, seed):
    g = torch.Generator().manual_seed(seed)
    # heavy tails make clipping worthwhile
    w = torch.randn(32, 64, generator=g) * torch.rand(32, 64, generator=g).pow(4) * 3
    err = {}
    for method in ("max", "mse"):
        scale = choose_scale(w, bits, granularity, method)
        err[method] = (fake_quantize(w, scale, bits) - w).square().sum().item()
    assert err["mse"] <= err["max"]
    if 2 <= bits <= 4:
        assert err["mse"] < err["max"]


# With the max scale, 2 bits (levels -s, 0, s with s = max|W|) is worse than 1 bit
# (sign * mean|W|) on Gaussian weights, so "max" is checked from 2 bits up.
@pytest.mark.parametrize(("method", "lowest"), [("max", 2), ("mse", 1)], ids=["max", "mse"])
def test_error_shrinks_with_bits(method, lowest):
    w = torch.randn(64, 128, generator=torch.Generator().manual_seed(3))
    errors = [
        (fake_quantize(w, choose_scale(w, b, method=method), b) - w).square().mean().item()
        for b in range(lowest, 9)
    ]
    assert all(a > b for a, b in itertools.pairwise(errors)), errors


def test_scale_guard_and_device_dtype_preserved():
    w = torch.zeros(4, 5, dtype=torch.float64)
    w[1, 2] = 1e-300
    for bits in (1, 4):
        scale = choose_scale(w, bits)
        assert scale.dtype == torch.float64 and (scale > 0).all()
        out = fake_quantize(w, scale, bits)
        assert torch.isfinite(out).all()
        assert (out[0] == 0).all() if bits > 1 else True


@pytest.mark.parametrize("bad", [0, 9, -1, 2.0, True, "4"])
def test_bad_bits_name_the_value(bad):
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        qrange(bad)
    with pytest.raises(ValueError, match=r"QuantSpec\.bits"):
        QuantSpec(bits=bad)


def test_quantspec_validation():
    assert QuantSpec().bits == 8
    with pytest.raises(ValueError, match="per_row"):
        QuantSpec(granularity="per_row")
    with pytest.raises(ValueError, match="minmax"):
        QuantSpec(scale_method="minmax")
    with pytest.raises(ValueError, match="learnable_scale"):
        QuantSpec(learnable_scale=1)
    spec = QuantSpec(bits=3, granularity="per_tensor", scale_method="mse", learnable_scale=True)
    assert QuantSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="colour"):
        QuantSpec.from_dict({"bits": 3, "colour": "red"})
    with pytest.raises(ValueError, match="method"):
        choose_scale(torch.ones(2, 2), 4, method="minmax")


def test_quantizer_has_no_bits_and_gives_each_layer_its_spec():
    # The model-wide setting has no bit-width (so none can be set and silently ignored);
    # a layer's spec is the quantizer at that layer's bits.
    q = Quantizer(granularity="per_tensor", scale_method="mse")
    assert not hasattr(q, "bits")
    assert q.at(3) == QuantSpec(bits=3, granularity="per_tensor", scale_method="mse")
    with pytest.raises(ValueError, match=r"quantizer\.granularity.*per_row"):
        Quantizer(granularity="per_row")
    with pytest.raises(ValueError, match=r"QuantSpec\.bits"):
        q.at(9)


def test_a_forced_cpu_capability_is_in_effect():
    # The test command's second pass sets ATEN_CPU_CAPABILITY=avx2; this shows it reached
    # torch (on a machine without AVX2 torch would fall back, and this would say so).
    capability = torch.backends.cpu.get_cpu_capability()
    assert capability in {"DEFAULT", "AVX2", "AVX512", "ZVECTOR", "VSX", "SVE256", "SVE"}
    forced = os.environ.get("ATEN_CPU_CAPABILITY")
    if forced:
        assert capability.lower() == forced.lower()
