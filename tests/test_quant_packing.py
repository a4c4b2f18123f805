"""Contract every packer must pass: pack then unpack is the identity; layout matches numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mpqbench.quant.packing import PACKERS, BitPacker, pack, packed_nbytes, unpack
from mpqbench.quant.primitives import qrange

#: Float results here depend on which CPU kernels torch runs: .ci/run repeats them on AVX2.
pytestmark = pytest.mark.kernels

ALL_PACKERS = list(PACKERS.values())


def _random_codes(bits: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    qmin, qmax = qrange(bits)
    if bits == 1:
        return torch.randint(0, 2, shape, generator=g).mul(2).sub(1).to(torch.int8)
    return torch.randint(qmin, qmax + 1, shape, generator=g).to(torch.int8)


def _numpy_reference(codes: torch.Tensor, bits: int) -> np.ndarray:
    """Independent layout reference: numpy bit arrays, little-endian bit order."""
    c = codes.reshape(-1).numpy().astype(np.int16)
    u = (c + 1) // 2 if bits == 1 else c + 2 ** (bits - 1)
    bit_matrix = np.unpackbits(u.astype(np.uint8)[:, None], axis=1, bitorder="little")[:, :bits]
    return np.packbits(bit_matrix.reshape(-1), bitorder="little")


@pytest.mark.parametrize("packer", ALL_PACKERS, ids=lambda p: p.name)
@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(1, 13), min_size=1, max_size=3).map(tuple),
    seed=st.integers(0, 2**31 - 1),
)
def test_pack_unpack_identity(packer: BitPacker, shape, seed):
    codes = _random_codes(packer.bits, shape, seed)
    packed = packer.pack(codes)
    assert packed.dtype == torch.uint8 and packed.dim() == 1
    expected_bytes = math.ceil(codes.numel() * packer.bits / 8)
    assert packed.numel() == packer.nbytes(codes.numel()) == expected_bytes
    out = packer.unpack(packed, shape)
    assert out.dtype == torch.int8 and out.shape == codes.shape
    assert torch.equal(out, codes)


@pytest.mark.parametrize("packer", ALL_PACKERS, ids=lambda p: p.name)
@pytest.mark.parametrize("numel", [1, 7, 8, 9, 63, 1000])
def test_layout_matches_numpy_packbits(packer: BitPacker, numel):
    codes = _random_codes(packer.bits, (numel,), seed=numel)
    assert np.array_equal(packer.pack(codes).numpy(), _numpy_reference(codes, packer.bits))


@pytest.mark.parametrize("packer", ALL_PACKERS, ids=lambda p: p.name)
def test_extreme_codes_round_trip(packer: BitPacker):
    qmin, qmax = qrange(packer.bits)
    codes = torch.tensor([qmin, qmax] * 5, dtype=torch.int8).reshape(2, 5)
    assert torch.equal(packer.unpack(packer.pack(codes), (2, 5)), codes)


def test_documented_layout_by_hand():
    # 3 bits: codes -3, 0, 3, 1 -> offset-binary 1, 4, 7, 5 -> bits (LSB first)
    # 100 001 111 101 -> byte0 = 1 | 4<<3 | (7 & 3)<<6 = 225, byte1 = 7>>2 | 5<<1 = 11
    assert pack(torch.tensor([-3, 0, 3, 1]), 3).tolist() == [225, 11]
    # 1 bit: -1 -> 0, +1 -> 1
    assert pack(torch.tensor([1, -1, -1, 1, 1]), 1).tolist() == [0b11001]
    # 8 bits: c + 128
    assert pack(torch.tensor([-127, 0, 127]), 8).tolist() == [1, 128, 255]
    assert packed_nbytes(10, 3) == 4


def test_large_tensor_round_trip_all_bits():
    for bits in range(1, 9):
        codes = _random_codes(bits, (384, 1537), seed=bits)
        assert torch.equal(unpack(pack(codes, bits), bits, codes.shape), codes)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"\[-3, 3\], got \[-4, 3\]"):
        pack(torch.tensor([-4, 3]), 3)
    with pytest.raises(ValueError, match=r"\{-1, \+1\}"):
        pack(torch.tensor([1, 0]), 1)
    with pytest.raises(ValueError, match="integer tensor"):
        pack(torch.tensor([1.0]), 4)
    with pytest.raises(ValueError, match="needs 2"):
        unpack(torch.zeros(3, dtype=torch.uint8), 4, (4,))
    with pytest.raises(ValueError, match="uint8"):
        unpack(torch.zeros(2, dtype=torch.int8), 4, (4,))
    with pytest.raises(ValueError, match=r"BitPacker\.bits"):
        BitPacker(9)
