"""CTranslate2 model.bin reader: round trip, every dtype, aliases, and every kind of bad file."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from mpqbench.workloads.models.ct2_format import encode_ct2, parse_ct2, read_ct2, write_ct2


def _variables() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "encoder/conv1/weight": rng.standard_normal((4, 3, 3)).astype(np.float32),
        "decoder/embeddings/weight": rng.standard_normal((5, 2)).astype(np.float16),
        "q/int8": rng.integers(-128, 128, size=(3, 2), dtype=np.int8),
        "q/int16": rng.integers(-3000, 3000, size=(7,), dtype=np.int16),
        "q/int32": rng.integers(-(2**31), 2**31 - 1, size=(2, 2), dtype=np.int32),
        "decoder/num_heads": np.array(6, dtype=np.int16),
        "decoder/pre_norm": np.array(1, dtype=np.int8),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }


def test_round_trip_every_dtype_and_alias(tmp_path):
    variables = _variables()
    path = tmp_path / "model.bin"
    write_ct2(
        path,
        variables,
        spec="WhisperSpec",
        revision=3,
        aliases={"decoder/projection/weight": "decoder/embeddings/weight"},
    )
    model = read_ct2(path)
    assert (model.spec, model.revision) == ("WhisperSpec", 3)
    assert model.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert set(model.variables) == {*variables, "decoder/projection/weight"}
    for name, value in variables.items():
        got = model.variables[name]
        assert got.dtype == value.dtype and got.shape == value.shape, name
        np.testing.assert_array_equal(got, value)
    tied = model.variables["decoder/projection/weight"]
    assert tied is model.variables["decoder/embeddings/weight"]
    assert int(model.variables["decoder/num_heads"]) == 6


def _string(s: str) -> bytes:
    return struct.pack("<H", len(s) + 1) + s.encode() + b"\x00"


def _header(count: int) -> bytes:
    return struct.pack("<I", 6) + _string("WhisperSpec") + struct.pack("<II", 3, count)


def test_writer_produces_the_documented_bytes():
    # Built by hand from the layout in DESIGN.md section 3, independent of the writer.
    expected = b"".join([
        _header(1),
        _string("a"), struct.pack("<B", 2), struct.pack("<II", 2, 1), struct.pack("<B", 0),
        struct.pack("<I", 8), struct.pack("<ff", 1.5, -2.0),
        struct.pack("<I", 1), _string("c"), _string("a"),
    ])  # fmt: skip
    variables = {"a": np.array([[1.5], [-2.0]], np.float32)}
    assert encode_ct2(variables, aliases={"c": "a"}) == expected
    model = parse_ct2(expected)
    np.testing.assert_array_equal(model.variables["a"], variables["a"])
    assert model.variables["c"] is model.variables["a"]


def test_bf16_is_widened_exactly():
    data = b"".join([
        _header(1),
        _string("b"), struct.pack("<B", 1), struct.pack("<I", 3), struct.pack("<B", 5),
        struct.pack("<I", 6), struct.pack("<HHH", 0x3FC0, 0xC040, 0x0001),  # 1.5, -3.0, tiny
        struct.pack("<I", 0),
    ])  # fmt: skip
    got = parse_ct2(data).variables["b"]
    assert got.dtype == np.float32
    expected = np.array([0x3FC00000, 0xC0400000, 0x00010000], np.uint32).view(np.float32)
    np.testing.assert_array_equal(got, expected)
    assert got[0] == 1.5 and got[1] == -3.0


def test_every_truncation_is_named(tmp_path):
    data = encode_ct2(_variables(), aliases={"x": "q/int8"})
    for cut in range(len(data)):
        with pytest.raises(ValueError, match=r"model\.bin.*(truncated|NUL)"):
            parse_ct2(data[:cut], "dir/model.bin")


def test_bad_version_is_named(tmp_path):
    data = bytearray(encode_ct2(_variables()))
    data[0:4] = struct.pack("<I", 5)
    path = tmp_path / "old.bin"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"old\.bin.*version 6.*found version field 5"):
        read_ct2(path)


def test_unknown_dtype_is_named():
    data = bytearray(encode_ct2({"w": np.zeros(2, np.float32)}))
    offset = 4 + 2 + len("WhisperSpec") + 1 + 4 + 4 + 2 + 2 + 1 + 4  # header, name, rank, dim
    assert data[offset] == 0
    data[offset] = 9
    with pytest.raises(ValueError, match=r"m\.bin: variable 'w' has unknown dtype id 9"):
        parse_ct2(bytes(data), "m.bin")


def test_byte_count_must_match_shape():
    data = bytearray(encode_ct2({"w": np.zeros(2, np.float32)}))
    offset = 4 + 2 + len("WhisperSpec") + 1 + 4 + 4 + 2 + 2 + 1 + 4 + 1
    data[offset : offset + 4] = struct.pack("<I", 4)
    with pytest.raises(ValueError, match="declares 4 bytes, expected 8"):
        parse_ct2(bytes(data), "m.bin")


def test_trailing_bytes_and_dangling_alias_are_refused():
    data = encode_ct2({"w": np.zeros(2, np.float32)})
    with pytest.raises(ValueError, match="trailing bytes"):
        parse_ct2(data + b"\x00", "m.bin")
    with pytest.raises(ValueError, match="alias 'x' points to missing variable 'nope'"):
        parse_ct2(encode_ct2({"w": np.zeros(2, np.float32)}, aliases={"x": "nope"}), "m.bin")


def test_writer_refuses_unsupported_dtype():
    with pytest.raises(ValueError, match="unsupported dtype float64"):
        encode_ct2({"w": np.zeros(2)})


def test_missing_file():
    with pytest.raises(FileNotFoundError):
        read_ct2("/nonexistent/model.bin")
