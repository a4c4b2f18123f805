"""Pure tensor functions for symmetric uniform weight quantization.

Everything here is side-effect free, keeps the input's device and dtype, and works on any
weight whose output channels lie on axis 0 (Linear ``[out, in]``, Conv1d ``[out, in/g, k]``).
Scales are returned *keep-dim* (shape ``[out, 1, ...]`` per channel, ``[1, 1, ...]`` per
tensor) so they broadcast against the weight without knowing its layout.

Quantizer (b >= 2), zero point 0::

    qmax = 2^(b-1) - 1,  qmin = -qmax
    codes = clamp(round(W * (1/s)), qmin, qmax)        # round half to even
    Q_b(W) = codes * s

``W * (1/s)`` (not ``W / s``) is the arithmetic of ``torch.fake_quantize_per_channel_affine``,
so the two agree bit for bit. ``dequantize(quantize(W, s), s)`` and ``fake_quantize(W, s)``
are the same float operations, so a packed model reproduces the fake-quant model exactly.

b = 1: codes = sign(W) with sign(0) = +1, Q_1(W) = codes * s with s = mean|W| (per channel
by default) -- the closed-form least-squares scale for sign quantization, so the ``max`` and
``mse`` scale methods coincide at b = 1.

Straight-through estimators (STE):
- b >= 2: the gradient passes where the *rounded* value lies inside [qmin, qmax] and is zero
  outside, exactly as ``torch.fake_quantize_per_channel_affine``'s backward.
- b = 1: the gradient passes where |W| <= ``SIGN_STE_CLIP`` (= 1.0; the hard-tanh STE of
  BinaryConnect/BNN, Courbariaux et al. 2016, on the raw weight). Speech-model weights are
  far below 1 in magnitude, so this is the identity in practice; it only stops runaway
  weights from receiving gradient.
- Learnable scale (LSQ, Esser et al. 2020): d out/d s = codes - W/s inside the range and
  qmin / qmax where clamped (b = 1: sign(W)), multiplied by the gradient scale
  g = 1 / sqrt(n * qmax), n = number of weights sharing the scale (in*k per channel, numel
  per tensor) -- the same formula as ``torch._fake_quantize_learnable_per_channel_affine``.

Scale guard: every scale is clamped to at least ``torch.finfo(dtype).tiny`` so an all-zero
channel gets a positive scale (its codes are all 0, its dequantized weight exactly 0) and
``1/s`` never overflows.
"""

from __future__ import annotations

import math

import torch

from mpqbench.quant.formats import GRANULARITIES, SCALE_METHODS, check_bits

#: b = 1 STE: the gradient passes where |W| <= this (hard-tanh on the raw weight).
SIGN_STE_CLIP = 1.0

#: Clipping ratios of max|W| tried by the ``mse`` scale method (includes 1.0, the ``max``
#: scale, so ``mse`` is never worse than ``max`` per channel).
MSE_RATIOS: tuple[float, ...] = tuple(1.0 - 0.03125 * i for i in range(25))  # 1.0 .. 0.25


def qrange(bits: int) -> tuple[int, int]:
    """Integer code range of the symmetric quantizer.

    Args:
        bits: bit-width in 1..8.

    Returns:
        ``(qmin, qmax)`` = ``(-(2^(b-1)-1), 2^(b-1)-1)`` for b >= 2 and ``(-1, 1)`` for b = 1
        (whose codes are only -1 and +1).

    Raises:
        ValueError: ``bits`` outside 1..8.
    """
    check_bits(bits)
    if bits == 1:
        return -1, 1
    qmax = 2 ** (bits - 1) - 1
    return -qmax, qmax


def _reduce_dims(w: torch.Tensor, granularity: str, axis: int) -> tuple[int, ...]:
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    if w.dim() == 0:
        raise ValueError("cannot quantize a 0-d tensor")
    if granularity == "per_tensor":
        return tuple(range(w.dim()))
    axis = axis % w.dim()
    return tuple(d for d in range(w.dim()) if d != axis)


def _guard(scale: torch.Tensor) -> torch.Tensor:
    return scale.clamp_min(torch.finfo(scale.dtype).tiny)


def absmax(w: torch.Tensor, granularity: str = "per_channel", *, axis: int = 0) -> torch.Tensor:
    """max|W| per channel (keep-dim) or per tensor (all dims kept as size 1).

    Args:
        w: floating weight tensor.
        granularity: ``"per_channel"`` or ``"per_tensor"``.
        axis: the channel axis for ``per_channel`` (0 for Linear and Conv1d weights).

    Returns:
        Tensor of w's dtype/device, broadcastable to ``w``.

    Raises:
        ValueError: unknown granularity or a 0-d tensor.
    """
    dims = _reduce_dims(w, granularity, axis)
    w = w.detach()
    if not dims:  # 1-d per-channel: every element is its own channel
        return w.abs()
    # max(max W, -min W): the same value as amax(|W|) (no rounding either way) without an
    # |W|-sized temporary (timings: docs/FINDINGS.md, "The supernet mixture in cache-sized
    # blocks")
    return torch.maximum(w.amax(dim=dims, keepdim=True), w.amin(dim=dims, keepdim=True).neg_())


def choose_scale(
    w: torch.Tensor,
    bits: int,
    granularity: str = "per_channel",
    method: str = "max",
    *,
    axis: int = 0,
) -> torch.Tensor:
    """Choose a positive quantization scale for ``w`` (no gradient flows through it).

    Args:
        w: floating weight tensor (output channels on ``axis``).
        bits: bit-width in 1..8.
        granularity: ``"per_channel"`` (default) or ``"per_tensor"``.
        method: ``"max"``: s = max|W| / qmax. ``"mse"``: s = r* max|W| / qmax with r* the
            ratio in :data:`MSE_RATIOS` of least squared error per channel (ties -> the
            larger ratio). b = 1 ignores ``method``: s = mean|W|.
        axis: channel axis for ``per_channel``.

    Returns:
        Keep-dim scale tensor (w's dtype and device), every entry >= finfo.tiny.

    Raises:
        ValueError: bad bits, granularity or method.
    """
    check_bits(bits)
    if method not in SCALE_METHODS:
        raise ValueError(f"scale method must be one of {SCALE_METHODS}, got {method!r}")
    dims = _reduce_dims(w, granularity, axis)
    with torch.no_grad():
        w = w.detach()
        if bits == 1:
            mean_abs = w.abs().mean(dim=dims, keepdim=True) if dims else w.abs()
            return _guard(mean_abs)
        _, qmax = qrange(bits)
        base = _guard(absmax(w, granularity, axis=axis) / qmax)
        if method == "max" or not dims:
            return base
        best_scale = base
        best_err = _sq_error(w, base, bits, dims)
        for ratio in MSE_RATIOS[1:]:
            cand = _guard(base * ratio)
            err = _sq_error(w, cand, bits, dims)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_scale = torch.where(better, cand, best_scale)
        return best_scale


def _sq_error(w: torch.Tensor, scale: torch.Tensor, bits: int, dims: tuple[int, ...]):
    diff = _fq_forward(w, scale, bits)
    diff.sub_(w)
    return diff.square_().sum(dim=dims, keepdim=True)


def quantize(w: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer codes of ``w`` (int8, same shape).

    Args:
        w: floating weight tensor.
        scale: positive scale broadcastable to ``w`` (e.g. from :func:`choose_scale`).
        bits: bit-width in 1..8.

    Returns:
        int8 tensor: ``clamp(round(w * (1/scale)), qmin, qmax)``; for b = 1, sign(w) with
        sign(0) = +1.

    Raises:
        ValueError: bad bits.
    """
    check_bits(bits)
    with torch.no_grad():
        if bits == 1:
            return torch.where(w >= 0, 1, -1).to(torch.int8)
        qmin, qmax = qrange(bits)
        q = torch.round(w.detach() * torch.reciprocal(scale))
        return q.clamp_(qmin, qmax).to(torch.int8)


def dequantize(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``codes * scale`` in the scale's dtype (bitwise equal to :func:`fake_quantize`'s output).

    Args:
        codes: integer codes (any integer dtype).
        scale: floating scale broadcastable to ``codes``.

    Returns:
        Floating tensor of the broadcast shape, scale's dtype.
    """
    return codes.to(scale.dtype) * scale


def _fq_forward(w: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """Fake-quantized values without autograd bookkeeping (a fresh tensor)."""
    return _fq_and_mask(w.detach(), scale, bits, need_mask=False)[0]


def _fq_and_mask(
    w: torch.Tensor, scale: torch.Tensor, bits: int, *, need_mask: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(fake-quantized w, STE mask or None); in-place ops on one fresh buffer (fast)."""
    if bits == 1:
        out = torch.where(w >= 0, 1.0, -1.0).to(w.dtype).mul_(scale)
        return out, (w.abs() <= SIGN_STE_CLIP) if need_mask else None
    qmin, qmax = qrange(bits)
    q = torch.mul(w, torch.reciprocal(scale)).round_()
    # symmetric range: qmin <= q <= qmax  <=>  |q| <= qmax
    mask = q.abs() <= qmax if need_mask else None
    return q.clamp_(qmin, qmax).mul_(scale), mask


class _FakeQuantSTE(torch.autograd.Function):
    """Fake quantization, STE gradient to the weight only (the scale is a constant)."""

    @staticmethod
    def forward(ctx, w, scale, bits, in_range):  # type: ignore[override]
        ctx.pass_all = in_range and bits >= 2
        if ctx.pass_all:  # codes provably inside [qmin, qmax]: no clamp, all-ones mask
            return torch.mul(w, torch.reciprocal(scale)).round_().mul_(scale)
        need = ctx.needs_input_grad[0]
        out, mask = _fq_and_mask(w, scale, bits, need_mask=need)
        if need:
            ctx.save_for_backward(mask)
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        if ctx.pass_all:
            return grad, None, None, None
        (mask,) = ctx.saved_tensors
        return grad * mask, None, None, None


def fake_quantize(
    w: torch.Tensor, scale: torch.Tensor, bits: int, *, in_range: bool = False
) -> torch.Tensor:
    """Quantize-dequantize ``w`` with a straight-through estimator for round (and sign).

    Args:
        w: floating weight tensor (may require grad).
        scale: positive scale broadcastable to ``w``; treated as a constant (no gradient).
            Use :func:`fake_quantize_lsq` for a learnable scale.
        bits: bit-width in 1..8.
        in_range: the caller guarantees ``round(w / scale)`` lies in [qmin, qmax] -- true
            for the ``max`` scale of :func:`choose_scale` -- so the clamp and the STE mask
            (all ones then) are skipped: 3 instead of 7 elementwise passes, same values and
            gradient. Ignored for b = 1.

    Returns:
        Tensor like ``w`` equal to ``dequantize(quantize(w, scale, bits), scale)``. Gradient:
        b >= 2, passes where the rounded value is inside [qmin, qmax], zero elsewhere;
        b = 1, passes where |w| <= :data:`SIGN_STE_CLIP`.

    Raises:
        ValueError: bad bits.
    """
    check_bits(bits)
    return _FakeQuantSTE.apply(w, scale.detach(), bits, bool(in_range))


def _sum_to(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    pairs = enumerate(zip(t.shape, shape, strict=True))
    dims = tuple(d for d, (n, m) in pairs if m == 1 and n != 1)
    return t.sum(dim=dims, keepdim=True) if dims else t


class _FakeQuantLSQ(torch.autograd.Function):
    """Fake quantization with the LSQ gradient to the scale.

    Saves only the STE mask and d out/d s per element, not the inputs.
    """

    @staticmethod
    def forward(ctx, w, scale, bits, grad_factor):  # type: ignore[override]
        ctx.grad_factor, ctx.scale_shape = grad_factor, scale.shape
        if bits == 1:
            sign = torch.where(w >= 0, 1.0, -1.0).to(w.dtype)
            ctx.save_for_backward(w.abs() <= SIGN_STE_CLIP, sign)
            return sign * scale
        qmin, qmax = qrange(bits)
        scaled = torch.mul(w, torch.reciprocal(scale))
        q = torch.round(scaled)
        inside = q.abs() <= qmax
        q.clamp_(qmin, qmax)
        # d out / d s = q - w/s inside the range, the clamp bound (qmin or qmax) outside
        ds = q - scaled.mul_(inside)
        ctx.save_for_backward(inside, ds)
        return q.mul_(scale)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        mask, ds = ctx.saved_tensors
        grad_s = _sum_to(grad * ds, ctx.scale_shape) * ctx.grad_factor
        return grad * mask, grad_s, None, None


def lsq_grad_factor(w: torch.Tensor, scale: torch.Tensor, bits: int) -> float:
    """LSQ gradient scale ``1 / sqrt(n * qmax)``, n = weights per scale entry.

    Args:
        w: the weight tensor.
        scale: its keep-dim scale.
        bits: bit-width in 1..8.

    Returns:
        The factor as a Python float.
    """
    _, qmax = qrange(bits)
    per_scale = w.numel() // max(scale.numel(), 1)
    return 1.0 / math.sqrt(per_scale * qmax)


def fake_quantize_lsq(
    w: torch.Tensor, scale: torch.Tensor, bits: int, grad_factor: float | None = None
) -> torch.Tensor:
    """Fake quantization with a learnable scale (LSQ; Esser et al., ICLR 2020).

    Forward values are identical to :func:`fake_quantize`.

    Args:
        w: floating weight tensor.
        scale: positive keep-dim scale; gets gradient
            ``sum(grad * (codes - w/s if inside else qmin|qmax)) * grad_factor``
            (b = 1: ``sum(grad * sign(w)) * grad_factor``).
        bits: bit-width in 1..8.
        grad_factor: gradient scale; default :func:`lsq_grad_factor`.

    Returns:
        The fake-quantized tensor.

    Raises:
        ValueError: bad bits.
    """
    check_bits(bits)
    if grad_factor is None:
        grad_factor = lsq_grad_factor(w, scale, bits)
    return _FakeQuantLSQ.apply(w, scale, bits, float(grad_factor))


__all__ = [
    "MSE_RATIOS",
    "SIGN_STE_CLIP",
    "absmax",
    "choose_scale",
    "dequantize",
    "fake_quantize",
    "fake_quantize_lsq",
    "lsq_grad_factor",
    "qrange",
    "quantize",
]
