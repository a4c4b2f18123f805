"""Quantization formats as small frozen value objects.

A :class:`Quantizer` says *how* weights are quantized -- scale granularity, how the scale is
chosen and whether it is learned -- without a bit-width: it is what a method's config and
the model-wide verbs (``prepare_``, ``prepare_supernet_``) take, since the bits of each layer
come from an :class:`mpqbench.quant.allocation.Allocation` (or a supernet's candidates).
A :class:`QuantSpec` is one layer's complete setting: a quantizer at a bit-width.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

#: Scale granularities: one scale per output channel (axis 0 of a Linear ``[out, in]`` or
#: Conv1d ``[out, in/groups, k]`` weight), or one scale for the whole tensor.
GRANULARITIES: tuple[str, ...] = ("per_channel", "per_tensor")

#: Scale choices: ``max`` = max|W| / qmax; ``mse`` = the clipping ratio of max|W| with the
#: least squared quantization error, searched on a small grid (see ``primitives``).
SCALE_METHODS: tuple[str, ...] = ("max", "mse")

MIN_BITS = 1
MAX_BITS = 8

Granularity = Literal["per_channel", "per_tensor"]
ScaleMethod = Literal["max", "mse"]


def check_bits(bits: object, *, what: str = "bits") -> int:
    """Validate a bit-width (an int in 1..8, not a bool) and return it.

    Args:
        bits: the value to check.
        what: how the value is named in the error message (e.g. a module name).

    Returns:
        ``bits`` unchanged.

    Raises:
        ValueError: ``bits`` is not an int in 1..8; the message names ``what`` and the value.
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(
            f"{what}: bit-width must be an integer in {MIN_BITS}..{MAX_BITS}, got {bits!r}"
        )
    return bits


def _check_how(granularity: object, scale_method: object, learnable_scale: object,
               what: str) -> None:
    if granularity not in GRANULARITIES:
        raise ValueError(f"{what}.granularity must be one of {GRANULARITIES}, got {granularity!r}")
    if scale_method not in SCALE_METHODS:
        raise ValueError(
            f"{what}.scale_method must be one of {SCALE_METHODS}, got {scale_method!r}"
        )
    if not isinstance(learnable_scale, bool):
        raise ValueError(f"{what}.learnable_scale must be a bool, got {learnable_scale!r}")


@dataclass(frozen=True, kw_only=True)
class Quantizer:
    """How weights are quantized (symmetric, uniform, zero point 0), whatever their bits.

    Attributes:
        granularity: ``"per_channel"`` (one scale per output channel, the default) or
            ``"per_tensor"``.
        scale_method: ``"max"`` (max|W| / qmax) or ``"mse"`` (grid search over clipping
            ratios of max|W|). For b = 1 both give mean|W|, the closed-form MSE optimum.
        learnable_scale: learn the scale with the LSQ gradient (Esser et al. 2020), initialised
            by ``scale_method``; otherwise the scale is recomputed from the weight on every
            forward and receives no gradient.
    """

    granularity: Granularity = field(
        default="per_channel", metadata={"help": "per_channel (axis 0) or per_tensor"}
    )
    scale_method: ScaleMethod = field(
        default="max", metadata={"help": "max (max|W|/qmax) or mse (clipping-ratio search)"}
    )
    learnable_scale: bool = field(default=False, metadata={"help": "LSQ learnable scale"})

    def __post_init__(self) -> None:
        _check_how(self.granularity, self.scale_method, self.learnable_scale, "quantizer")

    def at(self, bits: int) -> QuantSpec:
        """This quantizer at ``bits`` bits: one layer's :class:`QuantSpec`."""
        return QuantSpec(bits=bits, granularity=self.granularity,
                         scale_method=self.scale_method, learnable_scale=self.learnable_scale)


@dataclass(frozen=True, kw_only=True)
class QuantSpec:
    """How one weight tensor is quantized: a bit-width and the :class:`Quantizer` fields.

    Attributes:
        bits: bit-width b in 1..8. b >= 2: codes in [-(2^(b-1)-1), 2^(b-1)-1];
            b = 1: codes in {-1, +1} (sign, with sign(0) = +1) and scale mean|W|.
        granularity, scale_method, learnable_scale: as in :class:`Quantizer`.
    """

    bits: int = field(default=8, metadata={"help": "bit-width, 1..8"})
    granularity: Granularity = "per_channel"
    scale_method: ScaleMethod = "max"
    learnable_scale: bool = False

    def __post_init__(self) -> None:
        check_bits(self.bits, what="QuantSpec.bits")
        _check_how(self.granularity, self.scale_method, self.learnable_scale, "QuantSpec")

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict of the fields."""
        return {
            "bits": self.bits,
            "granularity": self.granularity,
            "scale_method": self.scale_method,
            "learnable_scale": self.learnable_scale,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> QuantSpec:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: unknown keys or invalid values (the message names the field).
        """
        unknown = set(data) - {"bits", "granularity", "scale_method", "learnable_scale"}
        if unknown:
            raise ValueError(f"QuantSpec: unknown field(s) {sorted(unknown)}")
        return cls(**data)  # type: ignore[arg-type]


__all__ = [
    "GRANULARITIES",
    "MAX_BITS",
    "MIN_BITS",
    "SCALE_METHODS",
    "Granularity",
    "QuantSpec",
    "Quantizer",
    "ScaleMethod",
    "check_bits",
]
