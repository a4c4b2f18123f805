"""Packed integer-storage layers and ``convert_``, which swaps them in for fake-quant layers.

State of a packed layer (what ``state_dict`` and the exporter store):

========== ================= ========= ==================================================
field      shape             dtype     meaning
========== ================= ========= ==================================================
qweight    [ceil(N*b/8)]     uint8     the weight's codes packed by
                                       :func:`mpqbench.quant.packing.pack` (offset
                                       binary, row-major, LSB first); N = numel(weight)
scale      [out, 1(, 1)] or  float32   per-output-channel (or per-tensor, all-ones shape)
           [1, 1(, 1)]                 scale; weight = codes * scale
bias       [out]             float32   unchanged fp32 bias (a Parameter), if any
========== ================= ========= ==================================================

``bits`` and ``weight_shape`` are plain attributes (the exporter writes them to metadata).
The dequantized weight is ``dequantize(unpack(qweight), scale)`` -- the same float
arithmetic as :func:`mpqbench.quant.primitives.fake_quantize` -- so outputs equal the
fake-quant layer's bit for bit. With ``cache=True`` (the default) it is computed once and
kept in a non-persistent buffer (fast evaluation, fp32 memory); with ``cache=False`` it is
unpacked on every forward (packed memory only). The cache is refreshed after
``load_state_dict``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mpqbench.quant._unwrap import unwrap_module
from mpqbench.quant.formats import check_bits
from mpqbench.quant.layers import (
    FAKE_QUANT_TYPES,
    QuantConv1d,
    QuantEmbedding,
    QuantLinear,
    TiedLinearBase,
    TiedQuantLinear,
    replace_modules_,
)
from mpqbench.quant.packing import pack, packed_nbytes, unpack
from mpqbench.quant.primitives import dequantize

logger = logging.getLogger(__name__)


class _PackedBase(nn.Module):
    """Packed weight buffers, optional bias, optional dequantized cache."""

    def __init__(
        self,
        qweight: torch.Tensor,
        scale: torch.Tensor,
        bits: int,
        weight_shape: tuple[int, ...],
        bias: torch.Tensor | None,
        *,
        cache: bool = True,
    ) -> None:
        super().__init__()
        check_bits(bits)
        self.bits = bits
        self.weight_shape = tuple(int(d) for d in weight_shape)
        numel = int(torch.Size(self.weight_shape).numel())
        if qweight.dtype != torch.uint8 or qweight.numel() != packed_nbytes(numel, bits):
            raise ValueError(
                f"qweight must be {packed_nbytes(numel, bits)} uint8 bytes for {bits}-bit "
                f"weight {self.weight_shape}, got {qweight.numel()} {qweight.dtype}"
            )
        if (
            scale.dim() != len(self.weight_shape)
            or scale.shape[0] not in (1, self.weight_shape[0])
            or any(d != 1 for d in scale.shape[1:])
        ):
            raise ValueError(
                f"scale of shape {tuple(scale.shape)} does not fit weight {self.weight_shape}"
            )
        self.register_buffer("qweight", qweight)
        self.register_buffer("scale", scale)
        if bias is None:
            self.register_parameter("bias", None)
        else:
            self.bias = bias if isinstance(bias, nn.Parameter) else nn.Parameter(bias)
        self.cache = cache
        self.register_buffer("_weight_cache", None, persistent=False)
        self._refresh_cache()
        self.register_load_state_dict_post_hook(lambda module, _keys: module._refresh_cache())

    @property
    def granularity(self) -> str:
        """``"per_channel"`` or ``"per_tensor"`` (from the scale's shape)."""
        if self.scale.numel() == 1 and self.weight_shape[0] != 1:
            return "per_tensor"
        return "per_channel"

    def _refresh_cache(self) -> None:
        with torch.no_grad():
            self._weight_cache = self._dequantize() if self.cache else None

    def _dequantize(self) -> torch.Tensor:
        return dequantize(unpack(self.qweight, self.bits, self.weight_shape), self.scale)

    def codes(self) -> torch.Tensor:
        """The int8 codes, unpacked."""
        return unpack(self.qweight, self.bits, self.weight_shape)

    def dequantized_weight(self) -> torch.Tensor:
        """``codes * scale`` (the cached copy when ``cache`` is on)."""
        if self._weight_cache is not None:
            return self._weight_cache
        return self._dequantize()

    @property
    def weight(self) -> torch.Tensor:
        """Read-only dequantized weight, for code that inspects ``module.weight``."""
        return self.dequantized_weight()

    def extra_repr(self) -> str:
        return f"weight_shape={self.weight_shape}, bits={self.bits}, bias={self.bias is not None}"


def _packed_fields(module: Any) -> tuple[torch.Tensor, torch.Tensor, int, tuple[int, ...]]:
    """``(qweight, scale, bits, weight_shape)`` of a fake-quant layer's current weight."""
    codes, scale = module.codes_and_scale()
    return pack(codes, module.bits), scale, module.bits, tuple(codes.shape)


class PackedLinear(_PackedBase):
    """Linear layer with bit-packed integer weights (see module docstring for the fields)."""

    @property
    def in_features(self) -> int:
        return self.weight_shape[1]

    @property
    def out_features(self) -> int:
        return self.weight_shape[0]

    @classmethod
    def from_quant(cls, module: QuantLinear, *, cache: bool = True) -> PackedLinear:
        """Pack a :class:`QuantLinear`'s current weight (its bias Parameter is shared)."""
        return cls(*_packed_fields(module), module.bias, cache=cache)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantized_weight(), self.bias)


class PackedConv1d(_PackedBase):
    """Conv1d layer with bit-packed integer weights; geometry as ``nn.Conv1d``."""

    def __init__(
        self,
        qweight: torch.Tensor,
        scale: torch.Tensor,
        bits: int,
        weight_shape: tuple[int, ...],
        bias: torch.Tensor | None,
        *,
        geometry: nn.Conv1d,
        cache: bool = True,
    ) -> None:
        """Args as :class:`_PackedBase`; ``geometry``: a Conv1d whose stride, padding,
        dilation, groups and padding mode are copied (its weights are not used)."""
        super().__init__(qweight, scale, bits, weight_shape, bias, cache=cache)
        self.stride = geometry.stride
        self.padding = geometry.padding
        self.dilation = geometry.dilation
        self.groups = geometry.groups
        self.padding_mode = geometry.padding_mode
        self._reversed_padding_repeated_twice = geometry._reversed_padding_repeated_twice

    @property
    def in_channels(self) -> int:
        return self.weight_shape[1] * self.groups

    @property
    def out_channels(self) -> int:
        return self.weight_shape[0]

    @property
    def kernel_size(self) -> tuple[int]:
        return (self.weight_shape[2],)

    @classmethod
    def from_quant(cls, module: QuantConv1d, *, cache: bool = True) -> PackedConv1d:
        """Pack a :class:`QuantConv1d`'s current (effective) weight."""
        return cls(*_packed_fields(module), module.bias, geometry=module, cache=cache)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.dequantized_weight()
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return F.conv1d(x, w, self.bias, self.stride, 0, self.dilation, self.groups)
        return F.conv1d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, stride={self.stride}, padding={self.padding}, "
                f"groups={self.groups}")


class PackedEmbedding(_PackedBase):
    """Embedding table with bit-packed integer rows (one scale per row, or per tensor).

    The lookup gathers rows of ``codes * scale``: the values the fake-quant lookup computes.
    """

    def __init__(
        self,
        qweight: torch.Tensor,
        scale: torch.Tensor,
        bits: int,
        weight_shape: tuple[int, ...],
        *,
        padding_idx: int | None = None,
        cache: bool = True,
    ) -> None:
        """Args as :class:`_PackedBase` (no bias); ``padding_idx`` as ``nn.Embedding``."""
        super().__init__(qweight, scale, bits, weight_shape, None, cache=cache)
        self.padding_idx = padding_idx

    @property
    def num_embeddings(self) -> int:
        return self.weight_shape[0]

    @property
    def embedding_dim(self) -> int:
        return self.weight_shape[1]

    @classmethod
    def from_quant(cls, module: QuantEmbedding, *, cache: bool = True) -> PackedEmbedding:
        """Pack a :class:`QuantEmbedding`'s current table."""
        return cls(*_packed_fields(module), padding_idx=module.padding_idx, cache=cache)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.dequantized_weight(), self.padding_idx)


class PackedTiedLinear(TiedLinearBase):
    """The packed twin of :class:`TiedQuantLinear`: multiplies by its
    :class:`PackedEmbedding` owner's ``codes * scale``; it stores no weight of its own."""

    def table(self) -> torch.Tensor:
        return self.owner[0].dequantized_weight()


PACKED_TYPES: tuple[type[nn.Module], ...] = (PackedLinear, PackedConv1d, PackedEmbedding)


def convert_(model: Any, *, cache: bool = True) -> Any:
    """Replace every fake-quantized layer with its packed integer-storage twin, in place.

    Args:
        model: a model prepared with :func:`mpqbench.quant.layers.prepare_` (an
            ``nn.Module`` or a SpeechModel).
        cache: keep a dequantized copy of each weight for fast forwards (default), or
            unpack on every forward.

    Returns:
        ``model`` (the same object); its outputs equal the fake-quant model's bit for bit.

    Raises:
        ValueError: the model has no fake-quantized layer.
    """
    root = unwrap_module(model)
    replacements: dict[str, nn.Module] = {}
    packed_of: dict[int, PackedEmbedding] = {}
    tied: dict[str, TiedQuantLinear] = {}
    for name, module in root.named_modules():
        if isinstance(module, QuantLinear):
            replacements[name] = PackedLinear.from_quant(module, cache=cache)
        elif isinstance(module, QuantConv1d):
            replacements[name] = PackedConv1d.from_quant(module, cache=cache)
        elif isinstance(module, QuantEmbedding):
            replacements[name] = packed_of[id(module)] = PackedEmbedding.from_quant(
                module, cache=cache)
        elif isinstance(module, TiedQuantLinear):
            tied[name] = module
        else:
            assert not isinstance(module, FAKE_QUANT_TYPES)
    for name, module in tied.items():
        replacements[name] = PackedTiedLinear(packed_of[id(module.owner[0])], module.bias)
    if not replacements:
        raise ValueError("convert_: the model has no fake-quantized layer (call prepare_ first)")
    replace_modules_(root, replacements)
    logger.info("convert_: %d layers packed", len(replacements))
    return model


def packed_modules(model: Any) -> dict[str, _PackedBase]:
    """Name -> packed module, in model order."""
    items = unwrap_module(model).named_modules()
    return {n: m for n, m in items if isinstance(m, PACKED_TYPES)}


__all__ = [
    "PACKED_TYPES",
    "PackedConv1d",
    "PackedEmbedding",
    "PackedLinear",
    "PackedTiedLinear",
    "convert_",
    "packed_modules",
]
