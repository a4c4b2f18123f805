"""The supernet's weight mixture in one pass per chunk of rows (CPU cache-sized blocks).

``sum_i y_i Q_{b_i}(W)`` over a layer's candidates, where some candidates use the weight's
``max`` scale (max|W| per channel / qmax, a constant) and others a learnable LSQ scale,
computed by one autograd function that walks the weight's rows in blocks and, inside a
block, quantizes every candidate and accumulates the mix while the block is in cache.
Nothing candidate-sized outlives a block: the backward recomputes each candidate from the
weight, so the function saves only the weight, the mixing weights and the scales.

Why: the vectorised path (:func:`~mpqbench.quant.supernet.mixed_fake_quantize` plus one LSQ
autograd chain per learnable candidate) makes a fresh ``(K, N)`` tensor, several full
passes over it per layer and step, and boolean STE masks. For whisper-tiny.en's blocks and
tied embedding (36.4 M weights, candidates {2, 3, 4, 6, 8}, LSQ at <= 3 bits) on a 2-core
AVX2 CPU that was 1.1-1.4 s of a 3.1 s one_stage step (docs/FINDINGS.md, "The supernet
mixture in cache-sized blocks").

Arithmetic, per candidate, is that of the primitives it replaces: a ``max`` candidate is
``round(w * (1/s)) * s`` (:func:`~mpqbench.quant.primitives.fake_quantize` with
``in_range``: a max scale never clips, so its straight-through mask is all ones); an LSQ
candidate is :func:`~mpqbench.quant.primitives.fake_quantize_lsq` (clamped codes, masked
straight-through gradient, the LSQ scale gradient times its factor). Each candidate's
quantized block is bit-for-bit the primitive's; the mix adds ``y_i Q_i`` in candidate
order, so with one-hot ``y`` the output is exactly the chosen candidate. Sums over a
layer (dL/dy, per-row dL/ds) are accumulated block by block, so they differ from one
whole-tensor reduction in the last bits only.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from mpqbench.quant.primitives import qrange

#: Elements per block on a CPU: a few of these fp32 blocks (the weight's, the gradient's,
#: one candidate's) stay in a core's L2/L3 cache. On other devices the whole weight is
#: one block (kernel launches, not memory traffic, are what a GPU would pay for blocks).
CPU_BLOCK_ELEMENTS = 1 << 18


def _rows_per_block(rows: int, cols: int, device: torch.device) -> int:
    if device.type != "cpu":
        return rows
    return max(1, min(rows, CPU_BLOCK_ELEMENTS // max(cols, 1)))


def _block_scale(scale: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """Rows a:b of a ``(rows, 1)`` scale, or the ``(1, 1)`` per-tensor scale itself."""
    return scale if scale.shape[0] == 1 else scale[a:b]


class _Plan:
    """What the autograd function needs besides tensors (positions, bits, LSQ factors)."""

    def __init__(self, max_pos: Sequence[int], lsq_pos: Sequence[int],
                 lsq_bits: Sequence[int], grad_factors: Sequence[float]) -> None:
        self.max_pos = tuple(max_pos)
        self.lsq_pos = tuple(lsq_pos)
        self.lsq_bits = tuple(lsq_bits)
        self.grad_factors = tuple(float(f) for f in grad_factors)
        self.order = sorted([(i, k, None) for k, i in enumerate(self.max_pos)]
                            + [(i, k, b) for k, (i, b) in enumerate(zip(self.lsq_pos,
                                                                         self.lsq_bits,
                                                                         strict=True))])


@functools.cache
def _below_half_past(qmax: int) -> float:
    """The largest float32 below ``qmax + 0.5``: ``round(x)`` lies in [-qmax, qmax] exactly
    when ``|x|`` is at most this (round half to even; qmax = 2^(b-1) - 1 is odd)."""
    return float(torch.nextafter(torch.tensor(qmax + 0.5), torch.tensor(0.0)))


class _BlockMix(torch.autograd.Function):
    """sum_i y_i Q_i(W) over row blocks; see the module docstring.

    Only float arithmetic inside the blocks: comparisons that produce boolean masks, and
    products with them, ran several times slower than a float multiply on the AVX2 CPUs
    measured (docs/FINDINGS.md). An LSQ candidate's clamp and mask come from
    ``u = clamp(x, -t, t)`` with ``t`` the largest float below qmax + 0.5:
    ``round(u) = clamp(round(x), qmin, qmax)`` and ``sign(x - u)`` is 0 inside the range,
    +-1 outside, exactly.
    """

    @staticmethod
    def forward(ctx, w, y, plan, *scales):  # type: ignore[override]
        n_max = len(plan.max_pos)
        max_scales, lsq_scales = scales[:n_max], scales[n_max:]
        rows = w.shape[0]
        w2 = w.reshape(rows, -1)
        # per candidate: 1/s and the factor s * y_i of its rounded codes in the mix
        terms = []
        for i, k, bits in plan.order:
            s = max_scales[k] if bits is None else lsq_scales[k]
            terms.append((torch.reciprocal(s), s * y[i].to(s.dtype),
                          None if bits is None else qrange(bits)))
        out = torch.empty_like(w2)
        step = _rows_per_block(rows, w2.shape[1], w.device)
        buf = torch.empty((step, w2.shape[1]), dtype=w.dtype, device=w.device)
        for a in range(0, rows, step):
            b = min(rows, a + step)
            wc, acc, q = w2[a:b], out[a:b], buf[: b - a]
            for n, (r, sy, limits) in enumerate(terms):
                torch.mul(wc, _block_scale(r, a, b), out=q).round_()
                if limits is not None:
                    q.clamp_(*limits)
                if n == 0:
                    torch.mul(q, _block_scale(sy, a, b), out=acc)
                else:
                    acc.addcmul_(q, _block_scale(sy, a, b))
        ctx.plan = plan
        ctx.save_for_backward(w, y, *scales)
        return out.view(w.shape)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        plan = ctx.plan
        w, y, *scales = ctx.saved_tensors
        n_max = len(plan.max_pos)
        max_scales, lsq_scales = scales[:n_max], scales[n_max:]
        need_w, need_y = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_s = any(ctx.needs_input_grad[3 + n_max:])
        rows = w.shape[0]
        w2 = w.reshape(rows, -1)
        g2 = grad.reshape(rows, -1).to(w.dtype)
        max_r = [torch.reciprocal(s) for s in max_scales]
        lsq_r = [torch.reciprocal(s) for s in lsq_scales]
        bounds = [_below_half_past(qrange(bits)[1]) for bits in plan.lsq_bits]
        y_w = y.to(w.dtype)
        # dL/dW = g * (sum_i y_i - sum_lsq y_j [outside j's range]): a max candidate's
        # straight-through mask is all ones
        y_sum = y_w[list(plan.max_pos) + list(plan.lsq_pos)].sum()
        neg_y = [-y_w[i] for i in plan.lsq_pos]
        lsq_factor = [y_w[i] * f for i, f in zip(plan.lsq_pos, plan.grad_factors, strict=True)]
        grad_w = torch.empty_like(w2) if need_w else None
        grad_y = torch.zeros(y.shape, dtype=w.dtype, device=w.device) if need_y else None
        grad_s = [torch.zeros_like(s) for s in lsq_scales] if need_s else []
        step = _rows_per_block(rows, w2.shape[1], w.device)
        bufs = torch.empty((3, step, w2.shape[1]), dtype=w.dtype, device=w.device)
        lsq_work = plan.lsq_pos if (need_w or need_y or need_s) else ()
        for a in range(0, rows, step):
            b = min(rows, a + step)
            wc, gc = w2[a:b], g2[a:b]
            x, u, c = bufs[0, : b - a], bufs[1, : b - a], bufs[2, : b - a]
            gw = None
            if need_w:
                gw = torch.mul(gc, y_sum, out=grad_w[a:b])
            if need_y:
                for i, s, r in zip(plan.max_pos, max_scales, max_r, strict=True):
                    torch.mul(wc, _block_scale(r, a, b), out=c).round_()
                    c.mul_(_block_scale(s, a, b))
                    grad_y[i] += torch.vdot(c.view(-1), gc.reshape(-1))
            for k, i in enumerate(lsq_work):
                t = bounds[k]
                torch.mul(wc, _block_scale(lsq_r[k], a, b), out=x)
                torch.clamp(x, -t, t, out=u)
                torch.round(u, out=c)  # the clamped codes
                # 0 inside the range, +-1 outside (needed by dL/ds and dL/dW only)
                outside = x.sub_(u).sign_() if need_s or gw is not None else None
                if need_s:
                    # d out / d s = c - x inside the range, the clamp bound c outside
                    ds = torch.sub(c, u, out=u).add_(outside, alpha=t)
                    part = ds.mul_(gc).sum(dim=1, keepdim=True).mul_(lsq_factor[k])
                    if grad_s[k].shape[0] == 1:
                        grad_s[k] += part.sum(dim=0, keepdim=True)
                    else:
                        grad_s[k][a:b] += part
                if need_y:
                    c.mul_(_block_scale(lsq_scales[k], a, b))
                    grad_y[i] += torch.vdot(c.view(-1), gc.reshape(-1))
                if gw is not None:
                    gw.addcmul_(outside.abs_().mul_(gc), neg_y[k])
        return (None if grad_w is None else grad_w.view(w.shape),
                None if grad_y is None else grad_y.to(y.dtype),
                None,
                *([None] * n_max),
                *(grad_s if need_s else [None] * len(lsq_scales)))


def block_mix(
    w: torch.Tensor,
    y: torch.Tensor,
    max_candidates: Sequence[tuple[int, torch.Tensor]],
    lsq_candidates: Sequence[tuple[int, int, torch.Tensor, float]],
) -> torch.Tensor:
    """``sum_i y_i Q_i(w)`` in row blocks (module docstring).

    Args:
        w: weight, output channels (or table rows) on axis 0; may require grad.
        y: ``(K,)`` mixing weights over every candidate; may require grad.
        max_candidates: ``(position in y, scale)`` of each max-scale candidate (b >= 2): a
            keep-dim scale per output channel or per tensor, treated as a constant.
        lsq_candidates: ``(position in y, bits, scale, grad_factor)`` of each LSQ candidate
            (b >= 2): its keep-dim scale may require grad (dL/ds as
            :func:`~mpqbench.quant.primitives.fake_quantize_lsq` gives it).

    Returns:
        Tensor like ``w`` (its dtype; the arithmetic runs outside any autocast region).
    """
    rows = w.shape[0]
    max_scales = [s.detach().reshape(s.shape[0], 1) for _, s in max_candidates]
    lsq_scales = [s.reshape(s.shape[0], 1) for _, _, s, _ in lsq_candidates]
    assert all(s.shape[0] in (1, rows) for s in max_scales + lsq_scales), "scale shape"
    assert all(b >= 2 for _, b, _, _ in lsq_candidates), "1-bit candidates take the old path"
    plan = _Plan([i for i, _ in max_candidates], [i for i, _, _, _ in lsq_candidates],
                 [b for _, b, _, _ in lsq_candidates], [f for _, _, _, f in lsq_candidates])
    with torch.autocast(w.device.type, enabled=False):
        return _BlockMix.apply(w, y, plan, *max_scales, *lsq_scales)


__all__ = ["CPU_BLOCK_ELEMENTS", "block_mix"]
