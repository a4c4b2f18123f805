"""Fuzz the CTranslate2 ``model.bin`` reader (issue 6, items 4 and 5).

Packaged files are sha256-checked before they are parsed, but the parser is also the
reader of any ``model.bin`` a user converts, so damaged files must end in a ``ValueError``
naming the file, never a numpy/struct error or a silently different model.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzz_support import FUZZ, clear_error_or_success, damaged_bytes
from mpqbench.workloads.models.ct2_format import encode_ct2, parse_ct2

_VARIABLES = {
    "encoder/conv1/weight": np.arange(12, dtype=np.float16).reshape(3, 4),
    "encoder/conv1/bias": np.arange(3, dtype=np.float32),
    "decoder/num_heads": np.array(6, dtype=np.int32),
    "decoder/embeddings/weight": np.arange(-4, 4, dtype=np.int8).reshape(2, 4),
}
_VALID = encode_ct2(_VARIABLES, aliases={"decoder/projection/weight": "decoder/embeddings/weight"})
_PATH = "/models/ü/model.bin"


def _header(count: int) -> bytes:
    spec = b"WhisperSpec\x00"
    return struct.pack("<I", 6) + struct.pack("<H", len(spec)) + spec + struct.pack("<II", 3, count)


def _variable(name: bytes, dims: tuple[int, ...], dtype_id: int, nbytes: int,
              data: bytes) -> bytes:
    name += b"\x00"
    shape = struct.pack("<B", len(dims)) + struct.pack("<" + "I" * len(dims), *dims)
    return (struct.pack("<H", len(name)) + name + shape + struct.pack("<BI", dtype_id, nbytes)
            + data)


@st.composite
def _files(draw: st.DrawFn) -> bytes:
    how = draw(st.sampled_from(["damaged", "damaged", "crafted", "random"]))
    if how == "random":
        return draw(st.binary(max_size=300))
    if how == "damaged":
        return draw(damaged_bytes(_VALID))
    dims = tuple(draw(st.lists(st.sampled_from([0, 1, 2, 3, 2**16, 2**31, 2**32 - 1]),
                               max_size=5)))
    nbytes = draw(st.sampled_from([0, 1, 4, 2**32 - 1]))
    data = draw(st.binary(max_size=16))
    body = _variable(b"w", dims, draw(st.integers(0, 7)), nbytes, data)
    if draw(st.booleans()):
        body += _variable(b"w", (), 0, 4, b"\x00" * 4)  # the same name twice
    return _header(draw(st.integers(1, 3))) + body + struct.pack("<I", 0)


@FUZZ
@given(data=_files())
def test_model_bin_parses_consistently_or_fails_naming_the_file(data):
    with clear_error_or_success(_PATH) as caught:
        model = parse_ct2(data, _PATH)
    if caught:
        return
    for name, array in model.variables.items():
        assert isinstance(name, str) and isinstance(array, np.ndarray)
    for alias, target in model.aliases.items():
        assert model.variables[alias] is model.variables[target]


def test_valid_file_round_trips():
    model = parse_ct2(_VALID, _PATH)
    for name, value in _VARIABLES.items():
        np.testing.assert_array_equal(model.variables[name], value)


@pytest.mark.parametrize(("dims", "what"), [
    ((2**16, 2**16, 2**16, 2**16), "declares 0 bytes"),  # 2**64 wrapped to 0 in int64
    ((2**32 - 1, 2**32 - 1, 3), "declares 0 bytes"),
])
def test_shapes_whose_size_overflows_int64_are_refused(dims, what):
    data = _header(1) + _variable(b"w", dims, 0, 0, b"") + struct.pack("<I", 0)
    with pytest.raises(ValueError, match=what):
        parse_ct2(data, _PATH)


def test_an_empty_but_too_big_shape_is_refused():
    data = _header(1) + _variable(b"w", (0, 2**32 - 1, 2**32 - 1), 0, 0, b"")
    with pytest.raises(ValueError, match="'w' has an impossible shape"):
        parse_ct2(data + struct.pack("<I", 0), _PATH)


def test_a_name_stored_twice_is_refused():
    data = (_header(2) + _variable(b"w", (1,), 0, 4, b"\x00" * 4)
            + _variable(b"w", (1,), 0, 4, b"\x00\x00\x80\x3f") + struct.pack("<I", 0))
    with pytest.raises(ValueError, match="'w' is stored twice"):
        parse_ct2(data, _PATH)
