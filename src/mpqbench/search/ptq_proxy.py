"""Cheap scores of a bit allocation: post-training quantization (PTQ) of the 32-bit model.

A :class:`PTQProxy` scores many allocations on one model without copying it and without
touching its 32-bit weights:

- on entry it swaps every scored layer for a plain ``nn.Linear`` / ``nn.Conv1d`` /
  ``nn.Embedding`` twin that shares the original bias but owns a separate, frozen weight
  tensor (one extra copy of the scored weights), and puts the model in eval mode. A linear
  tied to a scored embedding (Whisper's ``proj_out``) gets a twin holding the embedding
  twin's weight, so lookup and projection read one quantized table (per-row scales: the
  embedding's per-channel layout);
- :meth:`PTQProxy.score` writes ``Q_b(W)`` -- the same :func:`choose_scale` /
  :func:`fake_quantize` arithmetic a :class:`~mpqbench.quant.QuantLinear` with a fixed scale
  uses, so the scored model equals ``prepare_(model, allocation, spec)`` -- into the twins
  whose bits changed since the last call (scales are cached per (layer, bits)), then runs
  the proxy on the dev subset. Quantizing once per allocation rather than on every forward
  matters for autoregressive decoding, which runs the decoder once per token;
- on exit the original modules (holding the untouched 32-bit Parameters) go back and the
  model's train/eval mode is restored.

Proxies (lower is better):

- ``"kl"``: mean over valid output positions of KL(p_32bit || p_quantized) on the dev subset,
  teacher-forced on the references (Whisper) or frame-wise (CTC). The 32-bit outputs are
  computed once on entry and kept as a top-k :class:`~mpqbench.quant.teacher.TeacherCache`;
  the dev batches are collated once and reused by every score.
- ``"wer"``: corpus WER of greedy decoding on the dev subset (:func:`~mpqbench.workloads.evaluate`).
  Noisier (a step function of few errors on a small subset) and, for seq2seq models, far
  slower.

A learnable-scale (LSQ) quantizer is scored with its initial scale: the quantizer's
``scale_method`` -- exactly where LSQ starts before any training.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import nn

from mpqbench.precision import autocast, check_precision
from mpqbench.quant.formats import Quantizer, check_bits
from mpqbench.quant.layers import linears_tied_to, replace_modules_
from mpqbench.quant.primitives import choose_scale, fake_quantize
from mpqbench.quant.teacher import DEFAULT_TOP_K, TeacherCache
from mpqbench.workloads.adapter import ModelBatch, SpeechModel
from mpqbench.workloads.data.types import Utterance
from mpqbench.workloads.evaluate import evaluate

logger = logging.getLogger(__name__)

#: Proxy names accepted by :class:`PTQProxy`.
PROXIES: tuple[str, ...] = ("kl", "wer")

Proxy = Literal["kl", "wer"]


def _twin(name: str, module: nn.Module) -> nn.Module:
    """A plain Linear/Conv1d/Embedding with ``module``'s shape and bias and its own frozen
    weight."""
    if isinstance(module, nn.Linear):
        new: nn.Module = nn.Linear(
            module.in_features, module.out_features, module.bias is not None, device="meta"
        )
    elif isinstance(module, nn.Conv1d):
        new = nn.Conv1d(
            module.in_channels,
            module.out_channels,
            module.kernel_size,
            stride=module.stride,
            padding=module.padding,
            dilation=module.dilation,
            groups=module.groups,
            bias=module.bias is not None,
            padding_mode=module.padding_mode,
            device="meta",
        )
    elif isinstance(module, nn.Embedding):
        if module.max_norm is not None or module.sparse:
            raise ValueError(f"embedding {name!r}: only embeddings without max_norm and "
                             "without sparse gradients are quantized")
        new = nn.Embedding(module.num_embeddings, module.embedding_dim,
                           padding_idx=module.padding_idx,
                           scale_grad_by_freq=module.scale_grad_by_freq, device="meta")
    else:
        raise ValueError(
            f"module {name!r} is a {type(module).__name__}; only nn.Linear, nn.Conv1d and "
            "nn.Embedding layers can be quantized"
        )
    with torch.no_grad():
        weight = module.weight.detach().clone()  # the effective weight, parametrized or not
    new.weight = nn.Parameter(weight, requires_grad=False)
    if not isinstance(module, nn.Embedding):
        new.bias = module.bias
    return new


def _tied_twins(net: nn.Module, layers: Sequence[str],
                twins: Mapping[str, nn.Module]) -> dict[str, nn.Module]:
    """Twins of the linears whose weight is a scored embedding's table (Whisper's
    ``proj_out``): plain linears holding the embedding twin's weight Parameter, so the
    lookup and the projection read one quantized table, as after ``prepare_``.

    Raises:
        ValueError: such a linear is itself a scored layer (the embedding decides its bits).
    """
    modules = dict(net.named_modules())
    owners = {id(modules[n].weight): n for n in layers if isinstance(modules[n], nn.Embedding)}
    tied: dict[str, nn.Module] = {}
    for name, sub, owner in linears_tied_to(net, owners):
        if name in layers:
            raise ValueError(
                f"PTQProxy: {name!r} shares its weight with the embedding {owner!r}; score "
                "the embedding only (the tied layer follows it)")
        new = nn.Linear(sub.in_features, sub.out_features, sub.bias is not None,
                        device="meta")
        new.weight = twins[owner].weight
        new.bias = sub.bias
        tied[name] = new
    return tied


class PTQProxy:
    """Score allocations by post-training quantizing ``model`` in place (a context manager).

    Args:
        model: the 32-bit model; its layers are swapped while the context is open.
        layers: module names that allocations give bits to.
        dev: the dev utterances the proxy is computed on.
        proxy: ``"kl"`` or ``"wer"`` (see the module docstring).
        quantizer: granularity and scale method (``learnable_scale`` ignored).
        batch_size: dev utterances per forward / ``transcribe`` call.
        max_new_tokens: token cap for seq2seq decoding (``"wer"`` only; None: the model's).
        top_k: teacher tokens kept per position (``"kl"``; exact KL when >= vocabulary).

    Raises:
        ValueError: unknown proxy, empty ``layers`` or ``dev``, a bad batch size, or a layer
            that is not an ``nn.Linear``/``nn.Conv1d``/``nn.Embedding`` of the model, or a
            scored linear tied to a scored embedding.
    """

    def __init__(
        self,
        model: SpeechModel,
        layers: Sequence[str],
        dev: Sequence[Utterance],
        *,
        proxy: Proxy = "kl",
        quantizer: Quantizer | None = None,
        batch_size: int = 16,
        max_new_tokens: int | None = None,
        top_k: int = DEFAULT_TOP_K,
        precision: str = "fp32",
    ) -> None:
        if proxy not in PROXIES:
            raise ValueError(f"proxy must be one of {PROXIES}, got {proxy!r}")
        if not layers:
            raise ValueError("PTQProxy: no layers to quantize")
        if len(dev) == 0:
            raise ValueError("PTQProxy: the dev subset is empty")
        if batch_size < 1:
            raise ValueError(f"PTQProxy: batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.layers = list(layers)
        self.dev = list(dev)
        self.proxy = proxy
        self.spec = dataclasses.replace(quantizer or Quantizer(), learnable_scale=False)
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.top_k = top_k
        self.precision = check_precision(precision, model.device)
        self._originals: dict[str, nn.Module] = {}
        self._twins: dict[str, nn.Module] = {}
        self._fp32: dict[str, torch.Tensor] = {}
        self._bits: dict[str, int | None] = {}
        self._scales: dict[tuple[str, int], torch.Tensor] = {}
        self._batches: list[ModelBatch] = []
        self._teacher: TeacherCache | None = None
        self._was_training = False

    # ---- context ---------------------------------------------------------------------------
    def __enter__(self) -> PTQProxy:
        net = self.model.model
        modules = dict(net.named_modules())
        missing = [n for n in self.layers if n not in modules]
        if missing:
            raise ValueError(f"PTQProxy: the model has no module(s) {missing[:5]}")
        twins = {n: _twin(n, modules[n]) for n in self.layers}
        tied = _tied_twins(net, self.layers, twins)
        self._was_training = net.training
        net.eval()
        try:
            if self.proxy == "kl":
                self._cache_teacher()
        except BaseException:
            net.train(self._was_training)
            raise
        self._originals = {n: modules[n] for n in [*self.layers, *tied]}
        self._twins = twins
        with torch.no_grad():  # views of the untouched 32-bit weights (effective if parametrized)
            self._fp32 = {n: modules[n].weight.detach() for n in self.layers}
        self._bits = dict.fromkeys(self.layers)
        replace_modules_(net, {**twins, **tied})
        net.eval()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._originals:
            replace_modules_(self.model.model, self._originals)
        self.model.model.train(self._was_training)
        self._originals, self._twins, self._fp32 = {}, {}, {}
        self._scales.clear()

    @torch.no_grad()
    def _cache_teacher(self) -> None:
        cache = TeacherCache(self.top_k)
        self._batches = []
        for start in range(0, len(self.dev), self.batch_size):
            batch = self.model.make_batch(self.dev[start : start + self.batch_size])
            with autocast(self.precision, self.model.device):
                out = self.model.forward(batch)
            cache.add_batch(batch, out.logits.float(), out.mask)
            self._batches.append(batch)
        self._teacher = cache

    # ---- quantization ------------------------------------------------------------------------
    def _scale(self, name: str, bits: int) -> torch.Tensor:
        key = (name, bits)
        if key not in self._scales:
            spec = self.spec
            self._scales[key] = choose_scale(
                self._fp32[name], bits, spec.granularity, spec.scale_method
            )
        return self._scales[key]

    def quantized_weight(self, name: str, bits: int) -> torch.Tensor:
        """``Q_bits`` of layer ``name``'s 32-bit weight (only inside the context)."""
        return fake_quantize(self._fp32[name], self._scale(name, bits), bits)

    def relative_error(self, name: str, bits: int) -> float:
        """``||Q_bits(W) - W||^2 / ||W||^2`` of layer ``name`` (a data-free sensitivity)."""
        w = self._fp32[name]
        err = (self.quantized_weight(name, bits) - w).pow(2).sum()
        return float(err / w.pow(2).sum().clamp_min(torch.finfo(w.dtype).tiny))

    @torch.no_grad()
    def apply(self, bits: Mapping[str, int | None]) -> None:
        """Quantize the swapped layers per ``bits`` (None: 32-bit); only changed layers."""
        if not self._twins:
            raise RuntimeError("PTQProxy.apply used outside its context")
        unknown = [n for n in bits if n not in self._twins]
        if unknown:
            raise ValueError(f"PTQProxy: not a scored layer: {unknown[:5]}")
        for name, b in bits.items():
            if self._bits[name] == b:
                continue
            w = self._fp32[name] if b is None else self.quantized_weight(name, check_bits(b))
            self._twins[name].weight.copy_(w)
            self._bits[name] = b

    def score(self, bits: Mapping[str, int | None]) -> float:
        """The proxy of the model quantized per ``bits`` (lower is better).

        Args:
            bits: layer -> bits for every scored layer (None keeps a layer 32-bit).

        Returns:
            Mean KL to the 32-bit outputs (``"kl"``) or dev WER (``"wer"``).

        Raises:
            ValueError: a layer missing from ``bits``, an unknown layer or bad bits.
            RuntimeError: called outside the context, or the proxy is not finite.
        """
        missing = [n for n in self.layers if n not in bits]
        if missing:
            raise ValueError(f"PTQProxy.score: no bits for layer(s) {missing[:5]}")
        self.apply(bits)
        value = self._kl() if self.proxy == "kl" else self._wer()
        if not math.isfinite(value):
            raise RuntimeError(f"PTQProxy: the {self.proxy} proxy is not finite ({value})")
        return value

    @torch.no_grad()  # not inference_mode: see mpqbench.precision
    def _kl(self) -> float:
        assert self._teacher is not None
        total, count = 0.0, 0
        for batch in self._batches:
            with autocast(self.precision, self.model.device):
                out = self.model.forward(batch)
            n = int(out.mask.sum())
            total += float(self._teacher.kl(batch, out.logits, out.mask)) * n
            count += n
        return total / max(count, 1)

    def _wer(self) -> float:
        result = evaluate(
            self.model,
            self.dev,
            batch_size=self.batch_size,
            max_new_tokens=self.max_new_tokens,
            progress=False,
            precision=self.precision,
        )
        return float(result.wer)


__all__ = ["PROXIES", "PTQProxy", "Proxy"]
