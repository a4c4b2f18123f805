"""The block-wise supernet mixture against the primitives it replaces.

Reference: ``mixed_fake_quantize`` over the max-scale candidates plus ``y_i *
fake_quantize_lsq`` per learnable-scale candidate (the vectorised path, itself tested
against ``fake_quantize``), values and gradients to w, y and the LSQ scales. Small blocks
force many row blocks and a ragged last one.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import mpqbench.quant.supernet_mix as supernet_mix
from mpqbench.quant.formats import Quantizer
from mpqbench.quant.primitives import (
    choose_scale,
    fake_quantize,
    fake_quantize_lsq,
    lsq_grad_factor,
    qrange,
)
from mpqbench.quant.supernet import (
    SupernetEmbedding,
    SupernetLinear,
    candidate_scales,
    mixed_fake_quantize,
)
from mpqbench.quant.supernet_mix import _below_half_past, block_mix

CANDIDATES = (2, 3, 4, 6, 8)
LEARNABLE = (2, 3)
FIXED = (4, 6, 8)


def _reference(w, y, lsq, granularity):
    """The vectorised path: max candidates by mixed_fake_quantize, LSQ ones added."""
    fixed_at = [CANDIDATES.index(b) for b in FIXED]
    out = mixed_fake_quantize(w, y[fixed_at], FIXED, granularity, "max")
    for b, scale in lsq.items():
        out = out + y[CANDIDATES.index(b)] * fake_quantize_lsq(w, scale, b)
    return out


def _block(w, y, lsq, granularity):
    scales = candidate_scales(w, FIXED, granularity, "max")
    return block_mix(
        w, y, [(CANDIDATES.index(b), scales[k]) for k, b in enumerate(FIXED)],
        [(CANDIDATES.index(b), b, s, lsq_grad_factor(w, s, b)) for b, s in lsq.items()])


def _inputs(shape, granularity, seed=0):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(*shape, generator=gen).requires_grad_()
    y = torch.softmax(torch.randn(len(CANDIDATES), generator=gen), 0).requires_grad_()
    # LSQ scales below the max scale, so that some codes clip (the mask matters)
    lsq = {b: (choose_scale(w.detach(), b, granularity, "max") * 0.6).requires_grad_()
           for b in LEARNABLE}
    return w, y, lsq, torch.randn(*shape, generator=gen)


@pytest.mark.parametrize("block", [64, 1000, 1 << 18])
@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
@pytest.mark.parametrize("shape", [(37, 29), (6, 5, 3)])
def test_block_mix_matches_the_vectorised_path(monkeypatch, block, granularity, shape):
    monkeypatch.setattr(supernet_mix, "CPU_BLOCK_ELEMENTS", block)
    w, y, lsq, g = _inputs(shape, granularity)
    params = [w, y, *lsq.values()]
    ref = _reference(w, y, lsq, granularity)
    ref_grads = torch.autograd.grad((ref * g).sum(), params)
    out = _block(w, y, lsq, granularity)
    grads = torch.autograd.grad((out * g).sum(), params)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # some LSQ codes clipped, so the masked gradient was exercised
    s2 = lsq[2].detach()
    assert (torch.round(w.detach() / s2).abs() > 1).any()


@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
def test_one_hot_mixing_is_exactly_one_candidate(monkeypatch, granularity):
    monkeypatch.setattr(supernet_mix, "CPU_BLOCK_ELEMENTS", 100)
    w, _, lsq, _ = _inputs((23, 17), granularity, seed=1)
    w = w.detach()
    for k, b in enumerate(CANDIDATES):
        y = nn.functional.one_hot(torch.tensor(k), len(CANDIDATES)).float()
        lsq_now = {c: s.detach() for c, s in lsq.items()}
        if b in LEARNABLE:
            expected = fake_quantize_lsq(w, lsq_now[b], b)
        else:
            expected = fake_quantize(w, choose_scale(w, b, granularity, "max"), b)
        assert torch.equal(_block(w, y, lsq_now, granularity), expected), b


@pytest.mark.parametrize("bits", range(2, 9))
def test_clamp_below_half_past_gives_the_clamped_codes_and_the_mask(bits):
    """round(clamp(x, -t, t)) = clamp(round(x)) and sign(x - clamp) = 0 iff inside, at and
    around every rounding boundary (the identities the LSQ candidates use)."""
    qmin, qmax = qrange(bits)
    t = _below_half_past(qmax)
    edges = [qmax + 0.5, qmax - 0.5, qmax, qmax + 1, t, 0.5, 0.0]
    xs = []
    for e in edges:
        v = torch.tensor(float(e))
        xs += [v, torch.nextafter(v, torch.tensor(0.0)), torch.nextafter(v, torch.tensor(1e9))]
    x = torch.stack(xs)
    x = torch.cat([x, -x, torch.linspace(-2 * qmax - 3, 2 * qmax + 3, 4001)])
    u = torch.clamp(x, -t, t)
    assert torch.equal(torch.round(u), torch.round(x).clamp(qmin, qmax))
    inside = torch.round(x).abs() <= qmax
    assert torch.equal(torch.sign(x - u) == 0, inside)
    assert torch.equal(torch.sign(x - u).abs(), (~inside).float())


def test_lsq_gradients_at_the_clip_boundary_equal_the_primitive():
    """Weights placed exactly at +-(qmax + 0.5) scales (outside: round half to even) and one
    float inside it: the mask and d out / d s of fake_quantize_lsq, element for element."""
    scale = torch.tensor([[0.25]])
    qmax = qrange(2)[1]
    edge = torch.tensor((qmax + 0.5) * 0.25)
    below = torch.nextafter(edge, torch.tensor(0.0))
    w = torch.stack([edge, below, -edge, -below, torch.tensor(0.1)]).reshape(1, 5)
    w.requires_grad_()
    s_ref = scale.clone().requires_grad_()
    s_new = scale.clone().requires_grad_()
    g = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]])
    y = torch.tensor([1.0])
    ref = fake_quantize_lsq(w, s_ref, 2, grad_factor=0.5)
    ref_w, ref_s = torch.autograd.grad((ref * g).sum(), [w, s_ref])
    out = block_mix(w, y, [], [(0, 2, s_new, 0.5)])
    new_w, new_s = torch.autograd.grad((out * g).sum(), [w, s_new])
    assert torch.equal(out, ref)
    assert torch.equal(new_w, ref_w)
    torch.testing.assert_close(new_s, ref_s, rtol=1e-6, atol=0)
    assert new_w[0, 0] == 0 and new_w[0, 1] == 2  # the edge clips, the float below does not


def test_only_the_requested_gradients_are_computed():
    w, y, lsq, g = _inputs((9, 8), "per_channel")
    frozen = w.detach()
    out = _block(frozen, y, lsq, "per_channel")
    grads = torch.autograd.grad((out * g).sum(), [y, lsq[2]])
    ref = _reference(frozen, y, lsq, "per_channel")
    ref_grads = torch.autograd.grad((ref * g).sum(), [y, lsq[2]])
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # only dL/dy (weights and scales frozen, as in two_stage's DNAS pass)
    fixed_scales = {b: s.detach() for b, s in lsq.items()}
    (got,) = torch.autograd.grad((_block(frozen, y, fixed_scales, "per_channel") * g).sum(), [y])
    (want,) = torch.autograd.grad((_reference(frozen, y, fixed_scales, "per_channel") * g).sum(),
                                  [y])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_the_mix_stays_fp32_under_bf16_autocast():
    w, y, lsq, _ = _inputs((16, 12), "per_channel")
    plain = _block(w, y, lsq, "per_channel")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = _block(w, y, lsq, "per_channel")
    assert mixed.dtype == torch.float32
    assert torch.equal(mixed, plain)


@pytest.mark.parametrize("learnable", [None, 3])
def test_supernet_layers_take_the_block_path_and_match_the_vectorised_one(monkeypatch,
                                                                            learnable):
    """A supernet linear and embedding (max scales, b >= 2) mix by block_mix: their outputs
    and gradients equal those of the vectorised path on the same draw."""
    monkeypatch.setattr(supernet_mix, "CPU_BLOCK_ELEMENTS", 50)
    torch.manual_seed(0)
    calls = []
    real = supernet_mix.block_mix
    monkeypatch.setattr("mpqbench.quant.supernet.block_mix",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    lin = SupernetLinear.from_float(nn.Linear(12, 10), CANDIDATES, Quantizer(),
                                    learnable_scale_max_bits=learnable)
    emb = SupernetEmbedding.from_float(nn.Embedding(40, 6), CANDIDATES, Quantizer(),
                                       learnable_scale_max_bits=learnable)
    y = torch.softmax(torch.randn(len(CANDIDATES)), 0)
    for layer in (lin, emb):
        w = layer.weight
        got = layer._mix(w, y)
        lsq = {b: layer.lsq_scales[str(b)] for b in layer.learnable_bits} if learnable else {}
        fixed = [b for b in CANDIDATES if b not in lsq]
        want = mixed_fake_quantize(w, y[[CANDIDATES.index(b) for b in fixed]], fixed)
        for b, s in lsq.items():
            want = want + y[CANDIDATES.index(b)] * fake_quantize_lsq(w, s, b)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
        params = [w, *lsq.values()]
        g = torch.randn_like(w)
        for a, b in zip(torch.autograd.grad((got * g).sum(), params),
                        torch.autograd.grad((want * g).sum(), params), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert len(calls) == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
def test_block_mix_on_cuda_matches_the_vectorised_path(granularity):
    """On CUDA the whole weight is one block; values and gradients as the vectorised path's
    on the same device."""
    w, y, lsq, g = _inputs((384, 1536), granularity, seed=3)
    w, y, g = (t.detach().cuda().requires_grad_(t.requires_grad) for t in (w, y, g))
    lsq = {b: s.detach().cuda().requires_grad_() for b, s in lsq.items()}
    params = [w, y, *lsq.values()]
    ref = _reference(w, y, lsq, granularity)
    ref_grads = torch.autograd.grad((ref * g).sum(), params)
    out = _block(w, y, lsq, granularity)
    grads = torch.autograd.grad((out * g).sum(), params)
    assert out.device.type == "cuda"
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
