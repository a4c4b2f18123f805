"""Bit-packing of signed quantization codes into ``uint8`` containers.

Stored layout of ``pack(codes, bits)`` (one 1-d ``torch.uint8`` tensor per weight):

- **offset binary**: a code c of a b-bit symmetric quantizer is stored as the unsigned
  value u = c + 2^(b-1) for b >= 2 (codes -(2^(b-1)-1)..2^(b-1)-1 -> u in 1..2^b-1; u = 0 is
  never produced), and u = (c + 1) / 2 for b = 1 (codes -1, +1 -> u = 0, 1).
- **row-major**: elements are taken in the C order of ``codes`` (``codes.flatten()``).
- **little-endian bit order**: element i occupies stream bits [i*b, (i+1)*b), least
  significant bit first; stream bit k is bit (k mod 8) of byte k // 8.
- **padding**: the stream is padded with zero bits to a whole byte, so the tensor holds
  ``ceil(numel * b / 8)`` bytes. Shape and bit-width are not stored in the bytes; the
  exporter keeps them in the file's metadata.

The implementation groups 8 elements (= exactly b bytes) into one int64 word, so every
b in 1..8 is packed and unpacked with the same vectorised torch ops (b = 8 is a plain
byte copy). Packers are also available by name (``int3_in_uint8``...) in :data:`PACKERS`
for contract tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mpqbench.quant.formats import MAX_BITS, MIN_BITS, check_bits
from mpqbench.quant.primitives import qrange


def packed_nbytes(numel: int, bits: int) -> int:
    """Bytes that :func:`pack` produces for ``numel`` codes: ``ceil(numel * bits / 8)``."""
    check_bits(bits)
    return math.ceil(numel * bits / 8)


def _offset(bits: int) -> int:
    return 0 if bits == 1 else 2 ** (bits - 1)


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack signed b-bit codes into a 1-d ``uint8`` tensor (layout in the module docstring).

    Args:
        codes: integer tensor of any shape with values in ``qrange(bits)`` (for b = 1, only
            -1 and +1).
        bits: bit-width in 1..8.

    Returns:
        1-d ``torch.uint8`` tensor of :func:`packed_nbytes` bytes on ``codes``' device.

    Raises:
        ValueError: bad bits, a non-integer tensor, or a code outside the range.
    """
    check_bits(bits)
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise ValueError(f"pack: codes must be an integer tensor, got {codes.dtype}")
    flat = codes.reshape(-1).to(torch.int16)
    qmin, qmax = qrange(bits)
    if flat.numel():
        lo, hi = int(flat.min()), int(flat.max())
        if lo < qmin or hi > qmax or (bits == 1 and bool((flat == 0).any())):
            allowed = "{-1, +1}" if bits == 1 else f"[{qmin}, {qmax}]"
            raise ValueError(f"pack: {bits}-bit codes must lie in {allowed}, got [{lo}, {hi}]")
    u = (flat + 1).div_(2, rounding_mode="floor") if bits == 1 else flat + _offset(bits)
    if bits == 8:
        return u.to(torch.uint8)
    n = u.numel()
    pad = (-n) % 8
    if pad:
        u = torch.cat([u, u.new_zeros(pad)])
    shifts = torch.arange(8, device=u.device, dtype=torch.int64) * bits
    words = (u.view(-1, 8).to(torch.int64) << shifts).sum(dim=1)  # 8*b <= 56 bits
    byte_shifts = torch.arange(bits, device=u.device, dtype=torch.int64) * 8
    out = ((words.unsqueeze(1) >> byte_shifts) & 0xFF).to(torch.uint8).reshape(-1)
    return out[: packed_nbytes(n, bits)]


def unpack(packed: torch.Tensor, bits: int, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """Inverse of :func:`pack`.

    Args:
        packed: 1-d ``uint8`` tensor from :func:`pack`.
        bits: the bit-width it was packed with.
        shape: the shape of the original codes.

    Returns:
        ``torch.int8`` codes of ``shape`` on ``packed``'s device.

    Raises:
        ValueError: bad bits, wrong dtype, or a byte count that does not match ``shape``.
    """
    check_bits(bits)
    shape = tuple(int(d) for d in shape)
    n = math.prod(shape)
    if packed.dtype != torch.uint8 or packed.dim() != 1:
        raise ValueError(
            f"unpack: expected a 1-d uint8 tensor, got {packed.dtype} of shape "
            f"{tuple(packed.shape)}"
        )
    if packed.numel() != packed_nbytes(n, bits):
        raise ValueError(
            f"unpack: {packed.numel()} bytes cannot hold {bits}-bit codes of shape {shape} "
            f"(needs {packed_nbytes(n, bits)})"
        )
    if bits == 8:
        u = packed.to(torch.int16)
    else:
        pad = (-packed.numel()) % bits
        if pad:
            packed = torch.cat([packed, packed.new_zeros(pad)])
        byte_shifts = torch.arange(bits, device=packed.device, dtype=torch.int64) * 8
        words = (packed.view(-1, bits).to(torch.int64) << byte_shifts).sum(dim=1)
        shifts = torch.arange(8, device=packed.device, dtype=torch.int64) * bits
        u = ((words.unsqueeze(1) >> shifts) & ((1 << bits) - 1)).reshape(-1)[:n]
        u = u.to(torch.int16)
    codes = u * 2 - 1 if bits == 1 else u - _offset(bits)
    return codes.to(torch.int8).reshape(shape)


@dataclass(frozen=True)
class BitPacker:
    """A named packer: signed ``bits``-bit codes in a ``uint8`` container.

    Attributes:
        bits: bit-width in 1..8.
    """

    bits: int

    def __post_init__(self) -> None:
        check_bits(self.bits, what="BitPacker.bits")

    @property
    def name(self) -> str:
        """``"int{bits}_in_uint8"``."""
        return f"int{self.bits}_in_uint8"

    def pack(self, codes: torch.Tensor) -> torch.Tensor:
        """:func:`pack` at this packer's bit-width."""
        return pack(codes, self.bits)

    def unpack(self, packed: torch.Tensor, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
        """:func:`unpack` at this packer's bit-width."""
        return unpack(packed, self.bits, shape)

    def nbytes(self, numel: int) -> int:
        """:func:`packed_nbytes` at this packer's bit-width."""
        return packed_nbytes(numel, self.bits)


#: Every packer, by bit-width.
PACKERS: dict[int, BitPacker] = {b: BitPacker(b) for b in range(MIN_BITS, MAX_BITS + 1)}

__all__ = ["PACKERS", "BitPacker", "pack", "packed_nbytes", "unpack"]
