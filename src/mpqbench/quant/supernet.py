"""Weight-sharing mixed-precision supernet layers (the one-stage method's search space).

A :class:`SupernetLinear` / :class:`SupernetConv1d` / :class:`SupernetEmbedding` replaces an
``nn.Linear`` / ``nn.Conv1d`` / ``nn.Embedding`` and holds the *same* latent fp32 weight
``Parameter`` (and bias, and weight parametrization) as the layer it replaces. Every
candidate bit-width b_i in the candidate set B quantizes that one weight; the layer owns
architecture logits ``alpha`` (an ``nn.Parameter`` of shape ``(|B|,)``, float32) and
forwards with the mixed weight::

    W~ = sum_i y_i Q_{b_i}(W)

where, in training mode,

- **soft** (default): y = p = softmax((alpha + g) / tau), g ~ Gumbel(0, 1) i.i.d. per
  candidate, drawn once per forward from torch's global RNG (seeded and checkpointed by the
  shared loop, so runs are reproducible);
- **hard** (straight-through Gumbel-softmax): y = onehot(argmax p) + p - p.detach(). Its
  value is exactly the one-hot (``p - p.detach()`` is exactly 0), so the forward uses exactly
  Q_{b_k}(W) of the sampled candidate k; its gradient is the soft one, dL/dp_i = <dL/dW~,
  Q_{b_i}(W)>, which needs every candidate's quantized weight in the backward.

``tau`` is a plain attribute set from outside (annealed by the method, see
:func:`anneal_tau` and :func:`set_tau_`).

**Eval mode** (``module.eval()``): no noise; the layer uses only its argmax candidate,
computed by exactly the arithmetic of :class:`~mpqbench.quant.layers.QuantLinear` (and of
``QuantEmbedding`` and ``TiedQuantLinear``), so the evaluated supernet equals the sub-network
:func:`extract_` returns, bit for bit. Ties in ``alpha`` go to the first (smallest)
candidate, as ``torch.argmax`` does.

**Token embeddings.** A :class:`SupernetEmbedding` replaces an ``nn.Embedding`` (the table
``[num_embeddings, dim]``, per-row scales under ``per_channel``); every ``nn.Linear`` whose
weight is that table (Whisper's ``proj_out``) becomes a :class:`TiedSupernetLinear`, which
multiplies by the embedding's mixed table and has no logits or weight of its own: the tied
tensor is one Parameter with one ``alpha``, listed once by :func:`supernet_modules`, and
:func:`extract_` turns the pair into a :class:`~mpqbench.quant.layers.QuantEmbedding` and its
:class:`~mpqbench.quant.layers.TiedQuantLinear`, the model ``prepare_`` gives for the
extracted allocation (which names the embedding only). The training-mode lookup mixes only
the gathered rows (per-row scales: equal to gathering from the mixed table), and the lookup
and the projection of one forward use the same mixing weights y: the embedding holds one
Gumbel draw that each use reads once (:func:`sample_mixing_` sets it; a use that has
already read it draws anew; the full rule in :class:`SupernetEmbedding`).

**Mixing weights, not outputs.** The candidates are mixed in weight space, so one matmul
runs per layer whatever |B| is (FBNet-style output mixing would run |B|). The extra cost is
elementwise work on the weights only.

Cost of one training forward + backward per layer (N weights, K = |B| candidates):

- scales: max|W| per channel is reduced *once* and divided by each candidate's
  qmax (``mse`` scales run the per-candidate search instead; b = 1 uses mean|W|);
- ``max`` scales and every candidate b >= 2 (the suites' setting):
  :func:`~mpqbench.quant.supernet_mix.block_mix`, one autograd function that walks the
  weight in cache-sized blocks of rows and quantizes and mixes every candidate there,
  learnable-scale ones included, saving nothing candidate-sized (the backward recomputes
  each block's candidates). A max scale never clips, so those candidates' STE masks are all
  ones and dL/dW = g * sum_i y_i for them; dL/dy_i = <g, Q_i(W)>. On whisper-tiny.en's
  blocks and tied embedding with candidates {2, 3, 4, 6, 8} (LSQ at <= 3 bits) it took
  0.49-0.58 s against 1.38-1.44 s for the vectorised path below on a 2-core AVX2 CPU
  (docs/FINDINGS.md);
- otherwise (``mse`` scales, a 1-bit candidate) one custom autograd function vectorised
  across candidates: forward, the K quantized weights as one ``(K, N)`` tensor mixed by one
  matrix-vector product; backward, dL/dy = Q (K, N) @ g (N) and the STE gradient
  dL/dW = g * sum_i y_i m_i, m_i candidate i's STE mask. By default
  (``keep_candidates=True``) Q is kept from the forward, K weight-sized tensors per layer
  until the backward; ``keep_candidates=False`` recomputes Q in the backward instead (one
  more quantization pass, nothing of size K * N kept). Learnable-scale candidates are added
  one by one (below);
- a tied embedding table: the projection mixes the full table once per draw and the lookup
  mixes only the rows it gathers; with ``per_tensor`` scales the lookup needs the full table
  too, and the table the first use mixes serves the second (one full-table mix per draw
  either way);
- sampling: :func:`sample_mixing_` draws the Gumbel noise of all layers in one batched op
  per step, and :class:`ExpectedBits` computes the budget's expected bits in one batched op,
  so that the per-layer kernel count -- what bounds a small model's step on a GPU -- stays
  close to uniform QAT's.

Frozen weights (two-stage DNAS): with ``requires_grad=False`` on W the backward computes
only dL/dalpha.

**Learnable scales of low-bit candidates** (``learnable_scale_max_bits``, default None: off).
By default every candidate's scale is derived from the weight on every forward (a
learnable-scale :class:`Quantizer` is refused). With ``learnable_scale_max_bits = m`` every
candidate with b <= m gets its own learnable scale Parameter (keep-dim, one per output
channel under ``per_channel``, one per tensor under ``per_tensor``), initialised by the
quantizer's scale method at that b and stored in ``lsq_scales[str(b)]``; that candidate is
quantized by :func:`~mpqbench.quant.primitives.fake_quantize_lsq` -- the LSQ primitive and
gradient scale of :class:`~mpqbench.quant.layers.QuantLinear`'s ``learnable_scale`` -- and
added to the vectorised mix of the other candidates, so W~ = sum_{b_i > m} y_i Q_{b_i}(W)
+ sum_{b_i <= m} y_i Q^LSQ_{b_i}(W; s_i). Each scale gets the gradient y_i dL/dQ_i through
LSQ (zero in a hard step that did not pick it); it trains with the weights (any parameter
with ``requires_grad`` is a weight to the shared loop). Eval mode and :func:`extract_` use
the learned scale: an extracted layer at a learnable candidate's bits is a
learnable-scale fake-quant layer holding *that* scale Parameter (the same object), so its
output equals the supernet's candidate output, bit for bit, and the packed export stores
it. A :class:`SupernetEmbedding` learns per-row scales the same way (the per-row lookup
gathers the scales of the rows it reads, as ``QuantEmbedding`` does). Cost: each learnable
candidate is its own LSQ graph (a few elementwise passes, and its STE mask and d out/d s,
two weight-sized tensors, kept until the backward) on the vectorised path; the block path
recomputes them per block. Without the switch the layers hold no
scale Parameter and compute exactly what they computed before it.

Expected bits for budget terms: :meth:`_SupernetMixin.expected_bits` = sum_i softmax(alpha)_i
b_i (no noise, no temperature), differentiable in alpha.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import weakref
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear

from mpqbench.quant.allocation import Allocation
from mpqbench.quant.formats import Quantizer, check_bits
from mpqbench.quant.layers import (
    FAKE_QUANT_TYPES,
    QuantConv1d,
    QuantEmbedding,
    QuantLinear,
    TiedLinearBase,
    TiedQuantLinear,
    _adopt,
    _TiedToFakeQuantTable,
    replace_modules_,
)
from mpqbench.quant.primitives import (
    SIGN_STE_CLIP,
    absmax,
    choose_scale,
    fake_quantize,
    fake_quantize_lsq,
    lsq_grad_factor,
    qrange,
)
from mpqbench.quant.supernet_mix import block_mix

logger = logging.getLogger(__name__)

#: The candidate set of DESIGN.md section 1.
DEFAULT_CANDIDATES: tuple[int, ...] = (2, 4, 8)

#: Temperature schedules understood by :func:`anneal_tau`.
ANNEAL_KINDS: tuple[str, ...] = ("exponential", "linear")


def check_candidates(candidates: Sequence[int], *, what: str = "candidates") -> tuple[int, ...]:
    """Validate a candidate set and return it sorted ascending.

    Raises:
        ValueError: empty, duplicated, or a bit-width outside 1..8.
    """
    values = tuple(candidates)
    if not values:
        raise ValueError(f"{what}: give at least one bit-width")
    for b in values:
        check_bits(b, what=what)
    if len(set(values)) != len(values):
        raise ValueError(f"{what}: duplicated bit-width in {list(values)}")
    return tuple(sorted(values))


def check_learnable_scale_max_bits(value: object, *,
                                   what: str = "learnable_scale_max_bits") -> int | None:
    """Validate ``learnable_scale_max_bits``: None (off) or a bit-width in 1..8.

    Raises:
        ValueError: naming ``what`` and the value.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 8:
        raise ValueError(f"{what} must be None (off) or an integer bit-width in 1..8, got "
                         f"{value!r}")
    return value


def anneal_tau(step: int, total: int, start: float, end: float, kind: str = "exponential") -> float:
    """Gumbel-softmax temperature at ``step`` of ``total``: ``start`` first, ``end`` last.

    ``exponential``: start * (end / start) ** (step / (total - 1)); ``linear``: start +
    (end - start) * step / (total - 1). A run of one step uses ``start``; steps past the end
    hold ``end``.

    Raises:
        ValueError: non-positive temperatures or an unknown kind.
    """
    if not (start > 0 and end > 0):
        raise ValueError(f"temperatures must be > 0, got start={start}, end={end}")
    if kind not in ANNEAL_KINDS:
        raise ValueError(f"anneal kind must be one of {ANNEAL_KINDS}, got {kind!r}")
    if total <= 1:
        return float(start)
    frac = min(max(step / (total - 1), 0.0), 1.0)
    if kind == "exponential":
        return float(start * (end / start) ** frac)
    return float(start + (end - start) * frac)


# ---- the vectorised candidate arithmetic ----------------------------------------------------


def candidate_qmax(bits: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """``(K,)`` tensor of each candidate's qmax (1 for b = 1), dtype/device of ``like``."""
    return torch.tensor([qrange(b)[1] for b in bits], dtype=like.dtype, device=like.device)


def candidate_scales(
    w: torch.Tensor,
    bits: Sequence[int],
    granularity: str,
    method: str,
    qmax: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scales of every candidate, stacked: ``(K, *keep-dim scale shape)``, no gradient.

    Row i equals ``choose_scale(w, bits[i], granularity, method)`` bit for bit; with
    ``method="max"`` max|W| is reduced once and shared by every b >= 2 candidate.
    ``qmax`` (from :func:`candidate_qmax`) may be passed to avoid building it per call.
    """
    with torch.no_grad():
        w = w.detach()
        if method != "max":
            return torch.stack([choose_scale(w, b, granularity, method) for b in bits])
        amax = absmax(w, granularity)
        if qmax is None:
            qmax = candidate_qmax(bits, w)
        scales = amax.unsqueeze(0) / qmax.view(-1, *([1] * amax.dim()))
        scales = scales.clamp_min_(torch.finfo(w.dtype).tiny)
        for i, b in enumerate(bits):
            if b == 1:
                scales[i] = choose_scale(w, 1, granularity, method)
        return scales


def _quantize_all(
    w: torch.Tensor, scales: torch.Tensor, bits: tuple[int, ...], qmin: torch.Tensor,
    qmax: torch.Tensor, need_mask: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Every candidate's fake-quantized weight ``(K, *w.shape)`` and, optionally, STE masks.

    Row i is bitwise equal to ``fake_quantize(w, scales[i], bits[i])``. ``qmin``/``qmax`` are
    ``(K,)`` (qmin = -qmax).
    """
    shape = (-1,) + (1,) * w.dim()
    qmin, qmax = qmin.view(shape), qmax.view(shape)
    q = torch.mul(w.unsqueeze(0), torch.reciprocal(scales)).round_()
    mask = q.abs() <= qmax if need_mask else None
    out = q.clamp_(min=qmin, max=qmax).mul_(scales)
    for i, b in enumerate(bits):
        if b == 1:
            out[i] = torch.where(w >= 0, 1.0, -1.0).to(w.dtype).mul_(scales[i])
            if mask is not None:
                mask[i] = w.abs() <= SIGN_STE_CLIP
    return out, mask


class _MixedFakeQuant(torch.autograd.Function):
    """W~ = sum_i y_i Q_{b_i}(W): STE to W, exact gradient <g, Q_i(W)> to y_i."""

    @staticmethod
    def forward(ctx, w, y, scales, qmin, qmax, bits, need_mask, keep):  # type: ignore[override]
        k = len(bits)
        need_w, need_y = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        keep = keep and (need_y or (need_w and need_mask))
        # The mixture is quantizer arithmetic: fp32 (w's dtype) even inside a caller's
        # autocast region, whose matmul would otherwise come out in bf16.
        with torch.autocast(w.device.type, enabled=False):
            quant, mask = _quantize_all(w, scales, bits, qmin, qmax,
                                        need_mask=keep and need_mask)
            out = (y.to(w.dtype) @ quant.view(k, -1)).view(w.shape)
        ctx.bits, ctx.need_mask, ctx.kept = bits, need_mask, keep
        if keep:
            ctx.save_for_backward(w, y, quant, mask)
        else:
            ctx.save_for_backward(w, y, scales, qmin, qmax)
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        need_w, need_y = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        k = len(ctx.bits)
        masks = need_w and ctx.need_mask
        if ctx.kept:
            w, y, quant, mask = ctx.saved_tensors
        else:
            w, y, scales, qmin, qmax = ctx.saved_tensors
            quant = mask = None
            if need_y or masks:
                quant, mask = _quantize_all(w.detach(), scales, ctx.bits, qmin, qmax,
                                            need_mask=masks)
        grad_w = grad_y = None
        grad = grad.to(w.dtype)
        if need_y:
            grad_y = (quant.view(k, -1) @ grad.reshape(-1)).to(y.dtype)
        if masks:
            weight = (y.to(w.dtype) @ mask.view(k, -1).to(w.dtype)).view(w.shape)
            grad_w = grad * weight
        elif need_w:
            grad_w = grad * y.sum().to(grad.dtype)
        return grad_w, grad_y, None, None, None, None, None, None


def mixed_fake_quantize(
    w: torch.Tensor,
    y: torch.Tensor,
    bits: Sequence[int],
    granularity: str = "per_channel",
    scale_method: str = "max",
    qmax: torch.Tensor | None = None,
    *,
    keep_candidates: bool = True,
    qmin: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mix every candidate's fake-quantized ``w`` with weights ``y``: sum_i y_i Q_{b_i}(w).

    Args:
        w: weight tensor (output channels on axis 0); may require grad.
        y: ``(K,)`` mixing weights (probabilities, or a straight-through one-hot); may
            require grad.
        bits: the K candidate bit-widths.
        granularity: scale granularity, as in :class:`Quantizer`.
        scale_method: ``"max"`` or ``"mse"``.
        qmax: :func:`candidate_qmax` of ``bits`` (built here when None); ``qmin`` its
            negation.
        keep_candidates: keep the ``(K, *w.shape)`` quantized weights from the forward for the
            backward (K weight-sized tensors per layer held until the backward; fewest
            kernels); False recomputes them in the backward instead (less memory, one more
            quantization pass).

    Returns:
        Tensor like ``w``. Gradients: dL/dy_i = <dL/dout, Q_{b_i}(w)>; dL/dw = dL/dout *
        sum_i y_i m_i with m_i candidate i's straight-through mask (see
        :func:`~mpqbench.quant.primitives.fake_quantize`).

    Raises:
        ValueError: bad bits or a ``y`` of the wrong shape.
    """
    bits = tuple(check_bits(b) for b in bits)
    if y.shape != (len(bits),):
        raise ValueError(f"mixing weights must have shape ({len(bits)},), got {tuple(y.shape)}")
    if qmax is None:
        qmax = candidate_qmax(bits, w)
    if qmin is None:
        qmin = -qmax
    scales = candidate_scales(w, bits, granularity, scale_method, qmax)
    need_mask = scale_method != "max" or 1 in bits
    return _MixedFakeQuant.apply(w, y, scales, qmin, qmax, bits, need_mask, keep_candidates)


def mix_candidates(
    w: torch.Tensor,
    y: torch.Tensor,
    bits: Sequence[int],
    granularity: str = "per_channel",
    scale_method: str = "max",
    *,
    keep_candidates: bool = True,
) -> torch.Tensor:
    """sum_i y_i Q_{b_i}(w) by the path a supernet layer without learnable scales takes.

    ``max`` scales with every b >= 2: :func:`~mpqbench.quant.supernet_mix.block_mix`;
    otherwise :func:`mixed_fake_quantize` (``keep_candidates`` applies there). Values and
    gradients as :func:`mixed_fake_quantize`'s (the two differ in the last bits of the sums).

    Raises:
        ValueError: bad bits or a ``y`` of the wrong shape.
    """
    bits = tuple(check_bits(b) for b in bits)
    if y.shape != (len(bits),):
        raise ValueError(f"mixing weights must have shape ({len(bits)},), got {tuple(y.shape)}")
    if scale_method != "max" or 1 in bits:
        return mixed_fake_quantize(w, y, bits, granularity, scale_method,
                                   keep_candidates=keep_candidates)
    scales = candidate_scales(w, bits, granularity, "max")
    return block_mix(w, y, [(i, scales[i]) for i in range(len(bits))], [])


def gumbel_noise(alpha: torch.Tensor) -> torch.Tensor:
    """One Gumbel draw shaped like ``alpha``, stored negated: ``-g = log E``, E ~ Exp(1).

    From torch's global RNG (of ``alpha``'s device), no gradient; pass it to
    :func:`gumbel_softmax_weights` as ``noise``.
    """
    with torch.no_grad():
        return torch.empty_like(alpha, requires_grad=False).exponential_().log_()


def gumbel_softmax_weights(
    alpha: torch.Tensor, tau: float, hard: bool, *, noise: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample mixing weights from logits: ``(y, p)`` with p = softmax((alpha + g) / tau).

    ``alpha`` is ``(K,)`` or a batch ``(L, K)`` (one independent draw per row). ``y`` is ``p``
    (soft) or the straight-through one-hot ``onehot(argmax p) + p - p.detach()`` (hard),
    whose value is exactly one-hot. Gumbel noise comes from torch's global RNG (of
    ``alpha``'s device); no host synchronisation. ``noise``: a draw of :func:`gumbel_noise`
    to use instead of a new one (the same noise and logits give the same ``y``, bit for bit).
    """
    gumbel = gumbel_noise(alpha) if noise is None else noise  # -g, g ~ Gumbel(0, 1)
    p = torch.softmax((alpha - gumbel) / tau, dim=-1)
    if not hard:
        return p, p
    onehot = F.one_hot(p.argmax(dim=-1), p.shape[-1]).to(p.dtype)
    return onehot + (p - p.detach()), p


# ---- the layers -----------------------------------------------------------------------------


class _SupernetMixin:
    """State and forward arithmetic shared by the supernet layers."""

    weight: torch.Tensor
    qmax_values: torch.Tensor
    qmin_values: torch.Tensor
    bit_values: torch.Tensor
    training: bool
    quantizer: Quantizer
    candidates: tuple[int, ...]
    alpha: nn.Parameter
    tau: float
    hard: bool
    keep_candidates: bool
    pending_mixing: torch.Tensor | None
    learnable_bits: tuple[int, ...]
    lsq_scales: nn.ParameterDict | None

    def _init_supernet(
        self, candidates: Sequence[int], quantizer: Quantizer, *, hard: bool, tau: float,
        init_logits: Sequence[float] | None, keep_candidates: bool,
        learnable_scale_max_bits: int | None = None,
    ) -> None:
        if not isinstance(quantizer, Quantizer):
            raise ValueError(f"supernet layers take a Quantizer (no bits: the candidates give "
                             f"them), got {type(quantizer).__name__}")
        if quantizer.learnable_scale:
            raise ValueError(
                "supernet layers derive scales from the weight on every forward; "
                "learnable scales (Quantizer.learnable_scale) are not supported: give "
                "learnable_scale_max_bits to learn the scales of the low-bit candidates"
            )
        max_bits = check_learnable_scale_max_bits(learnable_scale_max_bits)
        self.candidates = check_candidates(candidates)
        self.quantizer = quantizer
        self.hard = bool(hard)
        self.tau = float(tau)
        self.keep_candidates = bool(keep_candidates)
        self.pending_mixing = None
        k = len(self.candidates)
        init = torch.zeros(k) if init_logits is None else torch.tensor(list(init_logits))
        if init.shape != (k,):
            raise ValueError(f"init_logits must have {k} values, got {tuple(init.shape)}")
        self.alpha = nn.Parameter(init.to(device=self.weight.device, dtype=torch.float32))
        device = self.weight.device
        bit_values = torch.tensor(self.candidates, dtype=torch.float32, device=device)
        qmax = candidate_qmax(self.candidates, self.weight)
        self.register_buffer("bit_values", bit_values, persistent=False)  # type: ignore
        self.register_buffer("qmax_values", qmax, persistent=False)  # type: ignore
        self.register_buffer("qmin_values", -qmax, persistent=False)  # type: ignore
        self._init_learnable_scales(max_bits)

    def _init_learnable_scales(self, max_bits: int | None) -> None:
        """One LSQ scale Parameter per candidate with b <= ``max_bits`` (none when None),
        initialised by the quantizer's scale method; the other candidates' positions and
        qmin/qmax, for the vectorised mix of the rest."""
        self.learnable_scale_max_bits = max_bits
        self.learnable_bits = tuple(b for b in self.candidates
                                    if max_bits is not None and b <= max_bits)
        if not self.learnable_bits:
            self.lsq_scales = None
            return
        spec = self.quantizer
        with torch.no_grad():
            w = self.weight.detach()
            self.lsq_scales = nn.ParameterDict({
                str(b): nn.Parameter(choose_scale(w, b, spec.granularity, spec.scale_method))
                for b in self.learnable_bits})
        fixed = [i for i, b in enumerate(self.candidates) if b not in self.learnable_bits]
        self._fixed_bits = tuple(self.candidates[i] for i in fixed)
        self._learnable_positions = tuple(
            (i, b) for i, b in enumerate(self.candidates) if b in self.learnable_bits)
        device = self.weight.device
        index = torch.tensor(fixed, dtype=torch.long, device=device)
        self.register_buffer("fixed_index", index, persistent=False)  # type: ignore

    # -- architecture views --
    def probabilities(self) -> torch.Tensor:
        """softmax(alpha), no noise (differentiable)."""
        return torch.softmax(self.alpha, dim=-1)

    def expected_bits(self) -> torch.Tensor:
        """sum_i softmax(alpha)_i b_i: a differentiable 0-d tensor (no noise, no tau)."""
        return self.probabilities() @ self.bit_values

    def argmax_index(self) -> int:
        """Index of the most likely candidate (ties: the smallest bit-width)."""
        return int(torch.argmax(self.alpha.detach()))

    def argmax_bits(self) -> int:
        """The bit-width this layer gets at extraction."""
        return self.candidates[self.argmax_index()]

    @property
    def bits(self) -> int:
        """Alias of :meth:`argmax_bits` (what the evaluated layer uses)."""
        return self.argmax_bits()

    # -- forward --
    def quantized_weight(self) -> torch.Tensor:
        """The weight this forward uses: the Gumbel mix in training, argmax in eval."""
        w = self.weight
        spec = self.quantizer
        y, self.pending_mixing = self.pending_mixing, None
        if not self.training:
            b = self.argmax_bits()
            if b in self.learnable_bits:
                return self._lsq_candidate(w, b)
            return fake_quantize(w, choose_scale(w.detach(), b, spec.granularity,
                                                 spec.scale_method), b)
        if y is None:
            y, _ = gumbel_softmax_weights(self.alpha, self.tau, self.hard)
        return self._mix(w, y)

    def _mix(self, w: torch.Tensor, y: torch.Tensor,
             row_ids: torch.Tensor | None = None) -> torch.Tensor:
        """sum_i y_i Q_{b_i}(w) with this layer's candidates, quantizer and memory setting.

        Learnable-scale candidates are added one by one to the vectorised mix of the rest;
        ``row_ids``: ``w`` is the rows of an embedding table gathered at these ids (their
        learnable scales are gathered with them)."""
        spec = self.quantizer
        if spec.scale_method == "max" and 1 not in self.candidates:
            return self._block_mix(w, y, row_ids)
        if not self.learnable_bits:
            qmin, qmax = self.qmin_values, self.qmax_values
            if qmax.dtype != w.dtype:
                qmin, qmax = qmin.to(w.dtype), qmax.to(w.dtype)
            return mixed_fake_quantize(w, y, self.candidates, spec.granularity,
                                       spec.scale_method, qmax,
                                       keep_candidates=self.keep_candidates, qmin=qmin)
        out = None
        if self._fixed_bits:
            qmax = self.qmax_values.index_select(0, self.fixed_index).to(w.dtype)
            out = mixed_fake_quantize(w, y.index_select(0, self.fixed_index),
                                      self._fixed_bits, spec.granularity, spec.scale_method,
                                      qmax, keep_candidates=self.keep_candidates, qmin=-qmax)
        for i, b in self._learnable_positions:
            term = y[i].to(w.dtype) * self._lsq_candidate(w, b, row_ids)
            out = term if out is None else out + term
        return out

    def _block_mix(self, w: torch.Tensor, y: torch.Tensor,
                   row_ids: torch.Tensor | None) -> torch.Tensor:
        """:meth:`_mix` by :func:`~mpqbench.quant.supernet_mix.block_mix` (max scales, every
        candidate b >= 2): each candidate's values as the vectorised path's, summed in
        candidate order, no ``(K, N)`` tensor kept or built."""
        spec = self.quantizer
        fixed = [(i, b) for i, b in enumerate(self.candidates) if b not in self.learnable_bits]
        qmax = self.qmax_values[[i for i, _ in fixed]].to(w.dtype) if fixed else None
        scales = (candidate_scales(w, [b for _, b in fixed], spec.granularity, "max", qmax)
                  if fixed else [])
        lsq = []
        for i, b in self._learnable_positions if self.learnable_bits else ():
            param = self.lsq_scales[str(b)]  # type: ignore[index]
            scale = param.clamp_min(torch.finfo(param.dtype).tiny)
            if row_ids is None:
                lsq.append((i, b, scale, lsq_grad_factor(w, scale, b)))
            else:
                rows = scale.reshape(-1)[row_ids.reshape(-1)].unsqueeze(-1)
                lsq.append((i, b, rows, lsq_grad_factor(self.weight, param, b)))
        return block_mix(w, y, [(i, scales[k]) for k, (i, _) in enumerate(fixed)], lsq)

    def _lsq_candidate(self, w: torch.Tensor, bits: int,
                       row_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Candidate ``bits`` (learnable) of ``w`` with its learned scale: the arithmetic of
        a learnable-scale ``QuantLinear`` / ``QuantEmbedding`` (per-row lookup when
        ``row_ids`` are the ids ``w``'s rows were gathered at)."""
        param = self.lsq_scales[str(bits)]  # type: ignore[index]
        scale = param.clamp_min(torch.finfo(param.dtype).tiny)
        if row_ids is None:
            return fake_quantize_lsq(w, scale, bits)
        scale = scale.reshape(-1)[row_ids.reshape(-1)].unsqueeze(-1)
        # n weights per scale entry is the row length either way: the same LSQ factor
        return fake_quantize_lsq(w, scale, bits,
                                 grad_factor=lsq_grad_factor(self.weight, param, bits))

    def scale_parameters(self) -> list[nn.Parameter]:
        """The learnable candidates' scale Parameters, in ascending bits (none when off)."""
        return [] if self.lsq_scales is None else list(self.lsq_scales.values())

    def _set_pending_(self, mixing: torch.Tensor, noise: torch.Tensor) -> None:
        """Take a row of :func:`sample_mixing_`'s batched draw for the next forward."""
        self.pending_mixing = mixing

    def extra_repr(self) -> str:
        base = super().extra_repr()  # type: ignore[misc]
        mode = "hard" if self.hard else "soft"
        learned = (f", learnable scale at {list(self.learnable_bits)}"
                   if self.learnable_bits else "")
        return (f"{base}, candidates={list(self.candidates)}, {mode}, tau={self.tau:g}, "
                f"{self.quantizer.granularity}, scale={self.quantizer.scale_method}{learned}")


class SupernetLinear(_SupernetMixin, nn.Linear):
    """``nn.Linear`` whose weight is a Gumbel-softmax mix of candidate bit-widths.

    Build with :meth:`from_float`.
    """

    @classmethod
    def from_float(
        cls, linear: nn.Linear, candidates: Sequence[int], quantizer: Quantizer | None = None, *,
        hard: bool = False, tau: float = 1.0, init_logits: Sequence[float] | None = None,
        keep_candidates: bool = True, learnable_scale_max_bits: int | None = None,
    ) -> SupernetLinear:
        """Wrap ``linear``'s Parameters (shared, not copied) with a supernet over ``candidates``.

        Args:
            linear: the layer to wrap.
            candidates: bit-widths (sorted ascending internally).
            quantizer: granularity and scale method (no learnable scale).
            hard: straight-through one-hot sampling instead of soft mixing.
            tau: initial Gumbel-softmax temperature.
            init_logits: initial ``alpha``, aligned with the sorted candidates (default
                zeros: every candidate equally likely).
            keep_candidates: on the vectorised path (``mse`` scales or a 1-bit candidate),
                keep the K quantized weights from forward to backward (see
                :func:`mixed_fake_quantize`); the block path keeps none.
            learnable_scale_max_bits: candidates with b <= this get a learnable (LSQ)
                scale (module docstring); None: none.

        Raises:
            ValueError: bad candidates, a learnable-scale quantizer, wrong init_logits or
                a bad ``learnable_scale_max_bits``.
        """
        new = cls(linear.in_features, linear.out_features, linear.bias is not None, device="meta")
        _adopt(new, linear)
        new._init_supernet(candidates, quantizer or Quantizer(), hard=hard, tau=tau,
                           init_logits=init_logits, keep_candidates=keep_candidates,
                           learnable_scale_max_bits=learnable_scale_max_bits)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.quantized_weight(), self.bias)


class SupernetConv1d(_SupernetMixin, nn.Conv1d):
    """``nn.Conv1d`` whose (effective) weight is a Gumbel-softmax mix of candidate bit-widths.

    Build with :meth:`from_float`.
    """

    @classmethod
    def from_float(
        cls, conv: nn.Conv1d, candidates: Sequence[int], quantizer: Quantizer | None = None, *,
        hard: bool = False, tau: float = 1.0, init_logits: Sequence[float] | None = None,
        keep_candidates: bool = True, learnable_scale_max_bits: int | None = None,
    ) -> SupernetConv1d:
        """Wrap ``conv``'s Parameters (and weight parametrization); see SupernetLinear."""
        new = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
            padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
            bias=conv.bias is not None, padding_mode=conv.padding_mode, device="meta",
        )
        _adopt(new, conv)
        new._init_supernet(candidates, quantizer or Quantizer(), hard=hard, tau=tau,
                           init_logits=init_logits, keep_candidates=keep_candidates,
                           learnable_scale_max_bits=learnable_scale_max_bits)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.quantized_weight(), self.bias)


#: The two uses of a tied table (the keys of :attr:`_Draw.uses`).
_LOOKUP, _PROJECTION = "lookup", "projection"


class _Draw:
    """One Gumbel draw of a :class:`SupernetEmbedding`'s logits, shared by its two uses.

    ``noise`` is the draw (:func:`gumbel_noise`, no gradient); ``uses`` the uses that have
    read it; ``table`` the full mixed table one use computed for the other (per-tensor
    scales only) and ``table_key`` the weight and logit versions it was computed from.
    """

    __slots__ = ("__weakref__", "noise", "table", "table_key", "uses")

    def __init__(self, noise: torch.Tensor) -> None:
        self.noise = noise
        self.uses: set[str] = set()
        self.table: torch.Tensor | None = None
        self.table_key: tuple[int, ...] | None = None


def _drop_table(ref: weakref.ref[_Draw], grad: torch.Tensor) -> None:
    """Backward hook of a shared table: the graph behind it is spent, so forget it."""
    draw = ref()
    if draw is not None:
        draw.table = draw.table_key = None


class SupernetEmbedding(_SupernetMixin, nn.Embedding):
    """``nn.Embedding`` whose table is a Gumbel-softmax mix of candidate bit-widths.

    One ``alpha`` for the table; a linear layer tied to the table (Whisper's ``proj_out``)
    becomes a :class:`TiedSupernetLinear` that multiplies by this layer's mixed table, so
    the tied tensor is searched once, as the embedding (one bit-width, as in
    :class:`~mpqbench.quant.layers.QuantEmbedding`).

    Training-mode lookup: with ``per_channel`` (per-row) scales a row's candidates depend
    on that row alone, so the lookup mixes the candidates of the gathered rows only -- the
    values of gathering from the mixed table, at the cost of the rows looked up (not of
    the 51,864-row table), gradients included (a ``padding_idx`` row sends none, neither to
    the table nor to alpha); ``per_tensor`` mixes the whole table, then gathers. Eval mode:
    the argmax candidate, by exactly the arithmetic of ``QuantEmbedding`` at those bits, so
    the evaluated supernet equals the network :func:`extract_` returns, bit for bit.

    **One draw, two uses.** Within a training forward the lookup and the tied projection
    use the *same* mixing weights y. The layer holds the current draw -- its Gumbel noise
    g, without gradient -- and each use computes y from ``alpha``, g and ``tau`` itself (the
    same values, bit for bit, so with hard sampling both use the same candidate; each use
    has its own small graph back to ``alpha``, so dL/dalpha sums both uses' contributions
    and no use can meet a graph a previous backward freed). The rule:

    - :func:`sample_mixing_` sets a new draw (the one-stage method calls it once per step);
    - a use takes the current draw unless it has already read it; a use that finds no draw,
      or one it has read, draws anew. Without :func:`sample_mixing_` (two-stage DNAS), a
      step's lookup therefore draws and the projection that follows reuses that draw; a
      second lookup in the same forward would start another draw;
    - eval-mode forwards neither read nor draw.

    With per-tensor scales, the full mixed table the first use computes is kept for the
    second (one table mix per draw, the ``(K, N)`` candidate tensor built once); it is
    dropped when the second use takes it, when a backward passes through it, or when the
    weight or ``alpha`` has changed in place since. ``max_norm`` and sparse gradients are
    refused. Build with :meth:`from_float`.
    """

    _draw: _Draw | None

    @classmethod
    def from_float(
        cls, embedding: nn.Embedding, candidates: Sequence[int],
        quantizer: Quantizer | None = None, *, hard: bool = False, tau: float = 1.0,
        init_logits: Sequence[float] | None = None, keep_candidates: bool = True,
        learnable_scale_max_bits: int | None = None,
    ) -> SupernetEmbedding:
        """Wrap ``embedding``'s table Parameter (shared, not copied); see SupernetLinear.

        Raises:
            ValueError: the embedding uses ``max_norm`` or sparse gradients, or the
                arguments SupernetLinear refuses.
        """
        if embedding.max_norm is not None or embedding.sparse:
            raise ValueError("only embeddings without max_norm and without sparse gradients "
                             "are quantized")
        new = cls(embedding.num_embeddings, embedding.embedding_dim,
                  padding_idx=embedding.padding_idx,
                  scale_grad_by_freq=embedding.scale_grad_by_freq, device="meta")
        _adopt(new, embedding)
        new._init_supernet(candidates, quantizer or Quantizer(), hard=hard, tau=tau,
                           init_logits=init_logits, keep_candidates=keep_candidates,
                           learnable_scale_max_bits=learnable_scale_max_bits)
        new._draw = None
        return new

    # -- the draw --
    def _set_pending_(self, mixing: torch.Tensor, noise: torch.Tensor) -> None:
        """Make ``noise`` (this layer's row of the batched draw) the current draw."""
        self._draw = _Draw(noise.detach())

    def _take_draw(self, use: str) -> _Draw:
        """The draw ``use`` reads under the rule of the class docstring."""
        draw = self._draw
        if draw is None or use in draw.uses or draw.noise.device != self.alpha.device:
            draw = self._draw = _Draw(gumbel_noise(self.alpha))
        draw.uses.add(use)
        return draw

    def _weights(self, draw: _Draw) -> torch.Tensor:
        return gumbel_softmax_weights(self.alpha, self.tau, self.hard, noise=draw.noise)[0]

    def draw_mixing(self) -> torch.Tensor | None:
        """The mixing weights y of the current draw (detached; None before any draw)."""
        if self._draw is None:
            return None
        with torch.no_grad():
            return self._weights(self._draw)

    # -- the table --
    def _table_for(self, use: str) -> torch.Tensor:
        """The full mixed table for ``use`` (training), reusing the other use's if kept."""
        draw = self._take_draw(use)
        key = (self.weight._version, self.alpha._version,
               *(p._version for p in self.scale_parameters()))
        kept, kept_key = draw.table, draw.table_key
        draw.table = draw.table_key = None
        if kept is not None and kept_key == key:
            return kept
        table = self._mix(self.weight, self._weights(draw))
        if self.quantizer.granularity != "per_channel" and len(draw.uses) == 1:
            # the other use (lookup or projection) will want the same table: keep it
            draw.table, draw.table_key = table, key
            if table.requires_grad:
                table.register_hook(functools.partial(_drop_table, weakref.ref(draw)))
        return table

    def quantized_weight(self) -> torch.Tensor:
        """The full table the tied projection multiplies by: the current draw's mix in
        training mode (a projection use of the draw), the argmax candidate in eval mode."""
        if not self.training:
            return self._argmax_table()
        return self._table_for(_PROJECTION)

    def _argmax_table(self) -> torch.Tensor:
        """``QuantEmbedding.fake_quant_with_scale()[0]`` at the argmax bits, same ops."""
        spec, b, w = self.quantizer, self.argmax_bits(), self.weight
        if b in self.learnable_bits:
            return self._lsq_candidate(w, b)
        scale = choose_scale(w.detach(), b, spec.granularity, spec.scale_method)
        return fake_quantize(w, scale, b, in_range=spec.scale_method == "max")

    # -- forward --
    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        spec = self.quantizer
        if spec.granularity != "per_channel":
            table = self._table_for(_LOOKUP) if self.training else self._argmax_table()
            return self._lookup(ids, table)
        rows = self._lookup(ids, self.weight).reshape(-1, self.embedding_dim)
        if self.training:
            out = self._mix(rows, self._weights(self._take_draw(_LOOKUP)), row_ids=ids)
            if self.padding_idx is not None:
                # as when gathering from the mixed table: a padding row sends no gradient,
                # to the table (F.embedding sees to that) nor to alpha
                pad = (ids.reshape(-1, 1) == self.padding_idx)
                out = torch.where(pad, out.detach(), out)
        else:  # QuantEmbedding's per-row arithmetic at the argmax bits
            b = self.argmax_bits()
            if b in self.learnable_bits:
                out = self._lsq_candidate(rows, b, row_ids=ids)
            else:
                scale = choose_scale(rows.detach(), b, "per_channel", spec.scale_method)
                out = fake_quantize(rows, scale, b, in_range=spec.scale_method == "max")
        return out.reshape(*ids.shape, self.embedding_dim)

    def _lookup(self, ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, table, self.padding_idx, None, 2.0, self.scale_grad_by_freq)


class TiedSupernetLinear(_TiedToFakeQuantTable):
    """The projection tied to a :class:`SupernetEmbedding`: multiplies by its mixed table.

    It has no ``alpha`` and registers no weight: the tied tensor is one Parameter with one
    set of logits, the embedding's, and :func:`supernet_modules` lists the embedding only.
    In training mode each forward is a projection use of the embedding's current draw (the
    same y as the step's lookup; rule: :class:`SupernetEmbedding`); in eval mode the
    argmax candidate's table, as :class:`~mpqbench.quant.layers.TiedQuantLinear` computes.
    Build with :meth:`from_float` (``linear``, its ``SupernetEmbedding`` owner).
    """


SUPERNET_TYPES: tuple[type[nn.Module], ...] = (SupernetLinear, SupernetConv1d, SupernetEmbedding)


# ---- model-level verbs ----------------------------------------------------------------------


def _supernet_class(name: str, module: nn.Module) -> type[_SupernetMixin]:
    if isinstance(module, SUPERNET_TYPES + FAKE_QUANT_TYPES):
        raise ValueError(f"module {name!r} is already quantized ({type(module).__name__})")
    if isinstance(module, TiedLinearBase):
        raise ValueError(
            f"module {name!r} is a projection tied to an embedding's table "
            f"({type(module).__name__}): it is quantized with that embedding (already "
            "quantized, or name the embedding or its row groups instead)")
    if type(module) is NonDynamicallyQuantizableLinear:
        raise ValueError(
            f"module {name!r} is an nn.MultiheadAttention out_proj, whose weight the attention "
            "reads directly; it cannot be swapped"
        )
    if isinstance(module, nn.Linear):
        return SupernetLinear
    if isinstance(module, nn.Conv1d):
        return SupernetConv1d
    if isinstance(module, nn.Embedding):
        return SupernetEmbedding
    raise ValueError(
        f"module {name!r} is a {type(module).__name__}; only nn.Linear, nn.Conv1d and "
        "nn.Embedding are quantized"
    )


def _tied_supernet_linears(
    model: nn.Module, names: Sequence[str], replacements: Mapping[str, nn.Module]
) -> dict[str, TiedSupernetLinear]:
    """Linear layers whose weight is a searched embedding's table, tied to it.

    Raises:
        ValueError: such a linear is itself eligible (one tensor, one bit-width: the
            embedding's logits decide it).
    """
    owners = {id(new.weight): (name, new) for name, new in replacements.items()
              if isinstance(new, SupernetEmbedding)}
    tied: dict[str, TiedSupernetLinear] = {}
    if not owners:
        return tied
    eligible = {id(model.get_submodule(n)) for n in names}
    for name, sub in model.named_modules():
        if isinstance(sub, nn.Linear) and id(sub.weight) in owners:
            owner_name, owner = owners[id(sub.weight)]
            if id(sub) in eligible:
                raise ValueError(
                    f"prepare_supernet_: {name!r} shares its weight with the embedding "
                    f"{owner_name!r}; make the embedding eligible only (the tied layer "
                    "follows it)")
            tied[name] = TiedSupernetLinear.from_float(sub, owner)
    return tied


def prepare_supernet_(
    model: nn.Module,
    eligible: Sequence[str],
    candidates: Sequence[int] = DEFAULT_CANDIDATES,
    quantizer: Quantizer | None = None,
    *,
    hard: bool = False,
    tau: float = 1.0,
    init_logits: Sequence[float] | None = None,
    keep_candidates: bool = True,
    learnable_scale_max_bits: int | None = None,
) -> nn.Module:
    """Swap every ``eligible`` layer for its supernet twin, in place.

    Args:
        model: the ``nn.Module`` (e.g. ``SpeechModel.model``).
        eligible: module names to make searchable.
        candidates: candidate bit-widths of every layer.
        quantizer: granularity / scale method (no learnable scale); default ``Quantizer()``.
        hard: straight-through hard sampling.
        tau: initial temperature.
        init_logits: initial logits of every layer (default zeros).
        keep_candidates: on the vectorised path (``mse`` scales or a 1-bit candidate), keep
            the K quantized weights from forward to backward (default; fewest kernels) or
            recompute them in the backward (less memory); the block path keeps none.
        learnable_scale_max_bits: every candidate with b <= this gets a learnable (LSQ)
            scale Parameter per layer (see the module docstring); None (default): none.

    Returns:
        ``model``. Weight and bias Parameters are the same objects as before; each layer gains
        an ``alpha`` Parameter (see :func:`architecture_parameters`). An ``nn.Embedding``
        becomes a :class:`SupernetEmbedding`, and every ``nn.Linear`` whose weight is its
        table (Whisper's ``proj_out``) a :class:`TiedSupernetLinear` reading its mixed table
        (no logits of its own).

    Raises:
        ValueError: an unknown name, a module that is not Linear/Conv1d/Embedding, one
            already quantized, an eligible linear tied to an eligible embedding, an
            embedding with ``max_norm`` or sparse gradients, bad candidates, a
            learnable-scale quantizer (use ``learnable_scale_max_bits``), or a bad
            ``learnable_scale_max_bits``.
    """
    quantizer = quantizer or Quantizer()
    candidates = check_candidates(candidates)
    names = list(dict.fromkeys(eligible))
    present = dict(model.named_modules())
    missing = [n for n in names if n not in present]
    if missing:
        raise ValueError(f"prepare_supernet_: the model has no module {missing[:5]}")
    replacements: dict[str, nn.Module] = {}
    for name in names:
        module = present[name]
        cls = _supernet_class(name, module)
        replacements[name] = cls.from_float(module, candidates, quantizer, hard=hard, tau=tau,
                                            init_logits=init_logits,
                                            keep_candidates=keep_candidates,
                                            learnable_scale_max_bits=learnable_scale_max_bits)
    tied = _tied_supernet_linears(model, names, replacements)
    replace_modules_(model, {**replacements, **tied})
    logger.info("prepare_supernet_: %d layers%s, candidates %s", len(replacements),
                f" ({len(tied)} tied to an embedding)" if tied else "", candidates)
    return model


def supernet_modules(model: nn.Module) -> dict[str, _SupernetMixin]:
    """Name -> supernet layer, in model order (a module at several paths listed once)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, SUPERNET_TYPES)}


def architecture_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The ``alpha`` logits of every supernet layer, in model order."""
    return [m.alpha for m in supernet_modules(model).values()]


def set_tau_(model: nn.Module, tau: float) -> None:
    """Set the Gumbel-softmax temperature of every supernet layer.

    Raises:
        ValueError: ``tau`` not positive.
    """
    if not tau > 0 or math.isinf(tau):
        raise ValueError(f"tau must be a positive finite number, got {tau}")
    for m in supernet_modules(model).values():
        m.tau = float(tau)


def sample_mixing_(layers: Iterable[_SupernetMixin]) -> None:
    """Draw the mixing weights of every layer's next training forward in batched ops.

    Layers with the same candidate count, mode, temperature and device share one Gumbel draw
    of shape ``(L, K)`` (a few kernels instead of a few per layer); each layer consumes its
    row at its next forward (a layer that samples for itself when nothing is pending). Call
    it once per training step, before the forward (the one-stage method does, from the
    loop's ``on_step``); a row not consumed by a forward is replaced at the next call. A
    :class:`SupernetEmbedding` takes its row's Gumbel noise as the draw its lookup and tied
    projection share (rule: :class:`SupernetEmbedding`).
    """
    groups: dict[tuple[int, bool, float, torch.device], list[_SupernetMixin]] = {}
    for m in layers:
        key = (len(m.candidates), m.hard, m.tau, m.alpha.device)
        groups.setdefault(key, []).append(m)
    for (_, hard, tau, _), members in groups.items():
        alphas = torch.stack([m.alpha for m in members])
        noise = gumbel_noise(alphas)
        y, _ = gumbel_softmax_weights(alphas, tau, hard, noise=noise)
        for m, row, draw in zip(members, y.unbind(0), noise.unbind(0), strict=True):
            m._set_pending_(row, draw)


class ExpectedBits:
    """E[average bits] = sum_l N_l E_l[bits] / sum_l N_l of fixed layers, as one batched op.

    Args:
        layers: name -> supernet layer.
        sizes: name -> N_l (weight elements).

    Raises:
        ValueError: no weights in ``layers``.
    """

    def __init__(self, layers: Mapping[str, _SupernetMixin], sizes: Mapping[str, int]) -> None:
        self.layers = dict(layers)
        total = sum(sizes[n] for n in self.layers)
        if not self.layers or total <= 0:
            raise ValueError("expected bits: no weights in the given layers")
        self._fractions = {n: sizes[n] / total for n in self.layers}
        first = next(iter(self.layers.values()))
        same = all(m.candidates == first.candidates for m in self.layers.values())
        self._stacked = None
        if same:
            weights = torch.tensor(list(self._fractions.values()), dtype=torch.float32)
            self._stacked = (first.bit_values, weights.to(first.alpha.device))

    def __call__(self) -> torch.Tensor:
        """A differentiable 0-d tensor (no noise, no temperature)."""
        if self._stacked is not None:
            bits, weights = self._stacked
            alphas = torch.stack([m.alpha for m in self.layers.values()])
            return torch.softmax(alphas, dim=-1) @ bits @ weights
        terms = [m.expected_bits() * self._fractions[n] for n, m in self.layers.items()]
        return torch.stack(terms).sum()


def expected_average_bits(
    layers: Mapping[str, _SupernetMixin], sizes: Mapping[str, int]
) -> torch.Tensor:
    """sum_l N_l E_l[bits] / sum_l N_l over ``layers``: a differentiable 0-d tensor."""
    return ExpectedBits(layers, sizes)()


#: The fixed-bit layer :func:`extract_` makes of each supernet layer type.
_EXTRACTED: dict[type[nn.Module], type[nn.Module]] = {
    SupernetLinear: QuantLinear, SupernetConv1d: QuantConv1d, SupernetEmbedding: QuantEmbedding,
}


def extract_(
    model: nn.Module,
    *,
    model_name: str = "",
    bits: Mapping[str, int] | None = None,
) -> Allocation:
    """Replace every supernet layer by a plain fake-quantized layer at its chosen bits.

    Args:
        model: a model prepared with :func:`prepare_supernet_`; modified in place.
        model_name: recorded in the returned allocation.
        bits: layer name -> bits overriding the argmax (e.g. a budget repair); each value
            must be one of that layer's candidates.

    Returns:
        The allocation (supernet layer names in model order -> bits). The new
        :class:`QuantLinear` / :class:`QuantConv1d` / :class:`QuantEmbedding` layers share the
        weight Parameter (and bias, parametrization) of the supernet layer and its
        quantizer; ``alpha`` is dropped. A layer whose bits are a learnable-scale
        candidate's becomes a ``learnable_scale`` layer holding that candidate's scale
        Parameter (the same object: its output equals the supernet's candidate output);
        the other candidates' scales are dropped. A :class:`TiedSupernetLinear` becomes a
        :class:`TiedQuantLinear` of the new ``QuantEmbedding`` (the allocation lists the
        embedding only), so the model is what ``prepare_`` gives for that allocation.

    Raises:
        ValueError: no supernet layer, an override for an unknown layer, or a bit-width that
            is not a candidate of its layer.
    """
    layers = supernet_modules(model)
    if not layers:
        raise ValueError("extract_: the model has no supernet layer")
    bits = dict(bits or {})
    unknown = sorted(set(bits) - set(layers))
    if unknown:
        raise ValueError(f"extract_: no supernet layer named {unknown[:5]}")
    chosen: dict[str, int] = {}
    replacements: dict[str, nn.Module] = {}
    for name, layer in layers.items():
        b = bits.get(name, layer.argmax_bits())
        if b not in layer.candidates:
            raise ValueError(
                f"extract_: layer {name!r} gets {b} bits, not one of its candidates "
                f"{list(layer.candidates)}"
            )
        spec = layer.quantizer.at(b)
        learned = b in layer.learnable_bits
        if learned:
            spec = dataclasses.replace(spec, learnable_scale=True)
        # isinstance, not type(): a parametrized layer's class is a subclass torch makes
        cls = next(fixed for kind, fixed in _EXTRACTED.items() if isinstance(layer, kind))
        new = cls.from_float(layer, spec)  # type: ignore[attr-defined]
        if learned:  # the learned scale itself (the same Parameter), not a fresh init
            new.scale = layer.lsq_scales[str(b)]
        replacements[name] = new
        chosen[name] = b
    new_owner = {id(layer): replacements[name] for name, layer in layers.items()}
    tied = {name: TiedQuantLinear.from_float(sub, new_owner[id(sub.owner[0])])  # type: ignore
            for name, sub in model.named_modules()
            if isinstance(sub, TiedSupernetLinear) and id(sub.owner[0]) in new_owner}
    replace_modules_(model, {**replacements, **tied})
    return Allocation(model_name, chosen)


__all__ = [
    "ANNEAL_KINDS",
    "DEFAULT_CANDIDATES",
    "SUPERNET_TYPES",
    "ExpectedBits",
    "SupernetConv1d",
    "SupernetEmbedding",
    "SupernetLinear",
    "TiedSupernetLinear",
    "anneal_tau",
    "architecture_parameters",
    "candidate_qmax",
    "candidate_scales",
    "check_candidates",
    "check_learnable_scale_max_bits",
    "expected_average_bits",
    "extract_",
    "gumbel_noise",
    "gumbel_softmax_weights",
    "mix_candidates",
    "mixed_fake_quantize",
    "prepare_supernet_",
    "sample_mixing_",
    "set_tau_",
    "supernet_modules",
]
