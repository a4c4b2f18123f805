"""Fake-quantized layers and ``prepare_``, which swaps them into a model in place.

:class:`QuantLinear` / :class:`QuantConv1d` are drop-in subclasses of ``nn.Linear`` /
``nn.Conv1d`` holding the *same* latent fp32 weight ``Parameter`` as the layer they replace
(optimizers and weight sharing survive; device and dtype are unchanged), the layer's
:class:`QuantSpec`, and -- with ``learnable_scale`` -- a ``scale`` Parameter (keep-dim,
``[out, 1]`` / ``[out, 1, 1]`` per channel, all ones-shaped per tensor). Every forward
fake-quantizes the weight (STE); the bias stays fp32. Without a learnable scale the scale
is recomputed from the current weight on each forward (``mse`` costs one pass per grid
point, ``max`` one reduction).

Speed: a QAT forward fake-quantizes every layer, so for b >= 2 with a fixed (non-learned)
fp32 scale the layers call torch's fused kernels ``torch.fake_quantize_per_channel_affine``
/ ``..._per_tensor_affine`` (zero point 0, range ``qrange(b)``): one kernel each way and a
native backward instead of about eight eager ops and a Python backward. Those kernels are
bitwise identical to :func:`mpqbench.quant.primitives.fake_quantize` in values and STE
gradient (``tests/test_quant_primitives.py`` checks it, and it was checked on CUDA), so the
packed model still reproduces the fake-quant outputs exactly. b = 1, learnable scales and
other dtypes use the primitives.

Parametrized weights: a layer whose ``weight`` is produced by a parametrization (wav2vec2's
positional convolution uses ``torch.nn.utils.parametrizations.weight_norm``) keeps that
parametrization -- the same ``original0``/``original1`` (g, v) Parameter objects -- and the
quantizer acts on the *effective* weight ``g * v / ||v||``. ``convert_`` stores that
effective weight packed; g and v are not kept.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear
from torch.nn.utils import parametrize

from mpqbench.quant._unwrap import unwrap_module
from mpqbench.quant.allocation import Allocation
from mpqbench.quant.formats import QuantSpec
from mpqbench.quant.primitives import (
    choose_scale,
    fake_quantize,
    fake_quantize_lsq,
    qrange,
    quantize,
)

logger = logging.getLogger(__name__)


class _FakeQuantMixin:
    """Shared state and arithmetic of the fake-quantized layers."""

    spec: QuantSpec
    weight: torch.Tensor
    scale: nn.Parameter | None

    def _init_quant(self, spec: QuantSpec) -> None:
        self.spec = spec
        self._qrange = qrange(spec.bits)
        channels = self.weight.shape[0] if spec.granularity == "per_channel" else 1
        zero = torch.zeros(channels, dtype=torch.int32, device=self.weight.device)
        self.register_buffer("_zero_point", zero, persistent=False)  # type: ignore[attr-defined]
        if spec.learnable_scale:
            with torch.no_grad():
                init = self._choose_scale(self.weight.detach())
            self.scale = nn.Parameter(init)
        else:
            self.register_parameter("scale", None)  # type: ignore[attr-defined]

    def _choose_scale(self, w: torch.Tensor) -> torch.Tensor:
        return choose_scale(w, self.spec.bits, self.spec.granularity, self.spec.scale_method)

    def _learned_scale(self) -> torch.Tensor:
        assert self.scale is not None
        return self.scale.clamp_min(torch.finfo(self.scale.dtype).tiny)

    @property
    def bits(self) -> int:
        """The layer's bit-width."""
        return self.spec.bits

    def current_scale(self) -> torch.Tensor:
        """The scale the next forward uses (detached, keep-dim)."""
        with torch.no_grad():
            if self.scale is not None:
                return self._learned_scale().detach()
            return self._choose_scale(self.weight.detach())

    def quantized_weight(self) -> torch.Tensor:
        """The fake-quantized weight used by forward (differentiable via STE / LSQ)."""
        w = self.weight
        bits = self.spec.bits
        if self.scale is not None:
            return fake_quantize_lsq(w, self._learned_scale(), bits)
        scale = self._choose_scale(w.detach())
        if bits >= 2 and scale.dtype == torch.float32:
            qmin, qmax = self._qrange
            if self.spec.granularity == "per_channel":
                return torch.fake_quantize_per_channel_affine(
                    w, scale.view(-1), self._zero_point, 0, qmin, qmax
                )
            return torch.fake_quantize_per_tensor_affine(
                w, scale.view(()), self._zero_point.view(()), qmin, qmax
            )
        return fake_quantize(w, scale, bits)

    def codes(self) -> torch.Tensor:
        """int8 codes of the current weight (what ``convert_`` packs)."""
        with torch.no_grad():
            return quantize(self.weight.detach(), self.current_scale(), self.spec.bits)

    def extra_repr(self) -> str:
        base = super().extra_repr()  # type: ignore[misc]
        spec = self.spec
        scale = "learnable" if spec.learnable_scale else spec.scale_method
        return f"{base}, bits={spec.bits}, {spec.granularity}, scale={scale}"


def _adopt(new: nn.Module, old: nn.Module) -> None:
    """Give ``new`` (built on the meta device) the Parameters of ``old``: same objects."""
    if parametrize.is_parametrized(old):
        other = [n for n in old.parametrizations if n != "weight"]
        if other:
            raise ValueError(f"only the weight may be parametrized, found {other}")
        for p in old.parametrizations["weight"]:
            parametrize.register_parametrization(new, "weight", p, unsafe=True)
        new.parametrizations = old.parametrizations
    else:
        new.weight = old.weight
    new.bias = old.bias
    new.train(old.training)


class QuantLinear(_FakeQuantMixin, nn.Linear):
    """``nn.Linear`` whose forward uses the fake-quantized weight.

    Build with :meth:`from_float`; do not call the constructor directly.
    """

    @classmethod
    def from_float(cls, linear: nn.Linear, spec: QuantSpec) -> QuantLinear:
        """Wrap ``linear``'s Parameters (shared, not copied) with quantizer ``spec``."""
        new = cls(linear.in_features, linear.out_features, linear.bias is not None, device="meta")
        _adopt(new, linear)
        new._init_quant(spec)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.quantized_weight(), self.bias)


class QuantConv1d(_FakeQuantMixin, nn.Conv1d):
    """``nn.Conv1d`` whose forward uses the fake-quantized (effective) weight.

    Build with :meth:`from_float`; do not call the constructor directly.
    """

    @classmethod
    def from_float(cls, conv: nn.Conv1d, spec: QuantSpec) -> QuantConv1d:
        """Wrap ``conv``'s Parameters (and weight parametrization) with quantizer ``spec``."""
        new = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
            device="meta",
        )
        _adopt(new, conv)
        new._init_quant(spec)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.quantized_weight(), self.bias)


FAKE_QUANT_TYPES: tuple[type[nn.Module], ...] = (QuantLinear, QuantConv1d)


def _module_paths(model: nn.Module) -> dict[int, list[str]]:
    paths: dict[int, list[str]] = {}
    for name, mod in model.named_modules(remove_duplicate=False):
        paths.setdefault(id(mod), []).append(name)
    return paths


def _set_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_name, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def replace_modules_(model: nn.Module, replacements: dict[str, nn.Module]) -> None:
    """Put ``replacements[name]`` at ``name`` and at every other path of the same module."""
    paths = _module_paths(model)
    for name, new in replacements.items():
        old = model.get_submodule(name)
        for path in paths[id(old)]:
            if path == "":
                raise ValueError("cannot replace the root module itself")
            _set_module(model, path, new)


def _quantizable(name: str, module: nn.Module) -> type[nn.Module]:
    if isinstance(module, FAKE_QUANT_TYPES):
        raise ValueError(f"module {name!r} is already fake-quantized (prepare_ called twice?)")
    if type(module) is NonDynamicallyQuantizableLinear:
        raise ValueError(
            f"module {name!r} is an nn.MultiheadAttention out_proj, whose weight the attention "
            "reads directly; it cannot be swapped"
        )
    if isinstance(module, nn.Linear):
        return QuantLinear
    if isinstance(module, nn.Conv1d):
        return QuantConv1d
    raise ValueError(
        f"module {name!r} is a {type(module).__name__}; only nn.Linear and nn.Conv1d are "
        "quantized"
    )


def prepare_(model: Any, allocation: Allocation, spec: QuantSpec | None = None) -> Any:
    """Swap every layer the allocation quantizes for its fake-quantized twin, in place.

    Args:
        model: an ``nn.Module``, or a SpeechModel (its ``.model`` is modified).
        allocation: layer name -> bits; ``None`` entries are left untouched.
        spec: granularity, scale method and learnable-scale setting shared by all layers;
            its ``bits`` is replaced per layer by the allocation. Default ``QuantSpec()``
            (per channel, max scale, fixed).

    Returns:
        ``model`` (modified in place; the same object that was passed). The latent weight
        Parameters are the same objects as before, so an optimizer built earlier still
        updates them.

    Raises:
        ValueError: the allocation names a module the model lacks, a module that is not an
            ``nn.Linear``/``nn.Conv1d``, or one that is already fake-quantized.
    """
    spec = spec or QuantSpec()
    module = unwrap_module(model)
    name_of = getattr(model, "name", None)
    if isinstance(name_of, str) and name_of != allocation.model:
        logger.warning("allocation made for %r applied to %r", allocation.model, name_of)
    allocation.check_model(module)
    replacements: dict[str, nn.Module] = {}
    for name, bits in allocation.quantized.items():
        layer = module.get_submodule(name)
        cls = _quantizable(name, layer)
        replacements[name] = cls.from_float(layer, dataclasses.replace(spec, bits=bits))
    replace_modules_(module, replacements)
    logger.info("prepare_: %d layers fake-quantized", len(replacements))
    return model


def fake_quant_modules(model: Any) -> dict[str, _FakeQuantMixin]:
    """Name -> fake-quantized module, in model order (shared modules listed once)."""
    items = unwrap_module(model).named_modules()
    return {n: m for n, m in items if isinstance(m, FAKE_QUANT_TYPES)}


__all__ = [
    "FAKE_QUANT_TYPES",
    "QuantConv1d",
    "QuantLinear",
    "fake_quant_modules",
    "prepare_",
    "replace_modules_",
]
