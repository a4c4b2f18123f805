"""The quantization contract on a CUDA device (skipped without one)."""

from __future__ import annotations

import pytest
import torch

from mpqbench.quant import (
    Allocation,
    Quantizer,
    choose_scale,
    convert_,
    fake_quantize,
    load_packed,
    prepare_,
    qrange,
    save_packed,
)
from quant_toys import STACK_LAYERS, stack, stack_input

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("bits", range(2, 9), ids=lambda b: f"int{b}")
def test_fake_quant_matches_torch_on_cuda(bits):
    g = torch.Generator().manual_seed(bits)
    w = (torch.randn(384, 1536, generator=g) * 0.05).cuda().requires_grad_()
    scale = choose_scale(w, bits) * 0.7
    qmin, qmax = qrange(bits)
    zero = torch.zeros(384, dtype=torch.int32, device="cuda")
    ref = torch.fake_quantize_per_channel_affine(w, scale.flatten(), zero, 0, qmin, qmax)
    out = fake_quantize(w, scale, bits)
    assert torch.equal(out, ref)
    grad = torch.randn_like(w)
    assert torch.equal(torch.autograd.grad(out, w, grad)[0], torch.autograd.grad(ref, w, grad)[0])


@pytest.mark.parametrize(
    "spec",
    [Quantizer(), Quantizer(learnable_scale=True), Quantizer(scale_method="mse")],
    ids=["max", "lsq", "mse"],
)
def test_packed_reload_exact_on_cuda(tmp_path, spec):
    bits = {n: 1 + (3 * i) % 8 for i, n in enumerate(STACK_LAYERS)}
    alloc = Allocation("stack", bits)
    x = stack_input().cuda()
    model = stack().cuda()
    prepare_(model, alloc, spec)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    model(x).square().mean().backward()
    opt.step()
    with torch.no_grad():
        expected = model(x)
    save_packed(model, alloc, tmp_path / "m.safetensors")
    loaded = load_packed(stack(seed=1).cuda(), tmp_path / "m.safetensors")
    with torch.no_grad():
        assert torch.equal(loaded(x), expected)
    convert_(model)
    with torch.no_grad():
        assert torch.equal(model(x), expected)
