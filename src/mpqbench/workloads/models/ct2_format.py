"""Reader (and a small writer, for tests) of CTranslate2 ``model.bin`` files, binary version 6.

Layout, little-endian throughout::

    u32     binary version (6)
    string  spec name, e.g. "WhisperSpec"
    u32     spec revision
    u32     variable count
    per variable:
        string  name, e.g. "encoder/layer_0/ffn/linear_0/weight"
        u8      rank
        u32     dims[rank]
        u8      dtype id: 0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16
        u32     byte count (product of dims times the item size)
        bytes   raw row-major data
    u32     alias count
    per alias: string alias, string target (a variable name)

A string is a u16 length that counts a trailing NUL, then that many bytes (UTF-8, NUL last).

The reader returns plain numpy arrays. bf16 has no numpy dtype and is widened to float32
exactly (the 16 stored bits become the high half of a float32).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mpqbench._atomic import atomic_path

BINARY_VERSION = 6

#: dtype id -> numpy dtype of the stored items (bf16 is read as raw uint16, then widened).
_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype("<u2"),
}
_BF16 = 5
_WRITE_IDS = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("int16"): 2,
              np.dtype("int32"): 3, np.dtype("float16"): 4}


@dataclass
class CT2Model:
    """The decoded content of a ``model.bin``.

    Attributes:
        spec: spec name, e.g. ``"WhisperSpec"``.
        revision: spec revision.
        variables: name -> array, aliases included (an alias maps to the same array object
            as its target).
        aliases: alias -> target name, as stored.
    """

    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str] = field(default_factory=dict)


class _Cursor:
    """Bounds-checked little-endian reads from a bytes buffer; errors name the file."""

    def __init__(self, data: bytes | memoryview, path: str) -> None:
        self.data = data
        self.pos = 0
        self.path = path

    def take(self, n: int, what: str) -> memoryview:
        end = self.pos + n
        if end > len(self.data):
            raise ValueError(
                f"{self.path}: truncated CTranslate2 model file: reading {what} needs {n} bytes "
                f"at offset {self.pos}, but the file has {len(self.data)} bytes"
            )
        view = memoryview(self.data)[self.pos : end]
        self.pos = end
        return view

    def unpack(self, fmt: str, what: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        return struct.unpack("<" + fmt, self.take(size, what))

    def u8(self, what: str) -> int:
        return self.unpack("B", what)[0]

    def u32(self, what: str) -> int:
        return self.unpack("I", what)[0]

    def string(self, what: str) -> str:
        (length,) = self.unpack("H", what)
        raw = bytes(self.take(length, what))
        if length == 0 or raw[-1] != 0:
            raise ValueError(
                f"{self.path}: corrupt CTranslate2 model file: {what} at offset "
                f"{self.pos - length} is not NUL-terminated"
            )
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{self.path}: corrupt CTranslate2 model file: {what}: {exc}") from exc


def parse_ct2(data: bytes | memoryview, path: str = "<bytes>") -> CT2Model:
    """Decode the bytes of a ``model.bin``.

    Args:
        data: the whole file content. Arrays are zero-copy, read-only views into it
            (except bf16, which is widened into a new float32 array).
        path: shown in error messages.

    Returns:
        The decoded :class:`CT2Model`, aliases resolved into ``variables``.

    Raises:
        ValueError: wrong binary version, truncated data, an unknown dtype id, a byte count
            that does not match the shape, a name stored twice, an alias to a missing
            variable, or trailing bytes; the message names ``path``.
    """
    cur = _Cursor(data, path)
    version = cur.u32("the binary version")
    if version != BINARY_VERSION:
        raise ValueError(
            f"{path}: not a CTranslate2 model.bin of binary version {BINARY_VERSION} "
            f"(found version field {version}; the file is corrupt or of another format/version)"
        )
    spec = cur.string("the spec name")
    revision = cur.u32("the spec revision")
    count = cur.u32("the variable count")
    variables: dict[str, np.ndarray] = {}
    for index in range(count):
        name = cur.string(f"the name of variable #{index}")
        if name in variables:
            raise ValueError(f"{path}: variable {name!r} is stored twice")
        rank = cur.u8(f"the rank of {name!r}")
        dims = cur.unpack("I" * rank, f"the shape of {name!r}") if rank else ()
        dtype_id = cur.u8(f"the dtype of {name!r}")
        if dtype_id not in _DTYPES:
            raise ValueError(
                f"{path}: variable {name!r} has unknown dtype id {dtype_id} "
                f"(known: 0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16)"
            )
        nbytes = cur.u32(f"the byte count of {name!r}")
        dtype = _DTYPES[dtype_id]
        expected = math.prod(dims) * dtype.itemsize  # Python ints: 4 x 2**16 must not wrap
        if nbytes != expected:
            raise ValueError(
                f"{path}: variable {name!r} of shape {tuple(dims)} and dtype id {dtype_id} "
                f"declares {nbytes} bytes, expected {expected}"
            )
        raw = cur.take(nbytes, f"the data of {name!r}")
        try:
            array = np.frombuffer(raw, dtype=dtype).reshape(dims)
        except ValueError as exc:  # e.g. shape (0, 2**32 - 1, 2**32 - 1): empty but too big
            raise ValueError(
                f"{path}: variable {name!r} has an impossible shape {dims}: {exc}"
            ) from None
        if dtype_id == _BF16:
            array = (array.astype(np.uint32) << 16).view(np.float32)
        variables[name] = array
    alias_count = cur.u32("the alias count")
    aliases: dict[str, str] = {}
    for index in range(alias_count):
        alias = cur.string(f"alias #{index}")
        target = cur.string(f"the target of alias {alias!r}")
        if alias in variables or alias in aliases:
            raise ValueError(f"{path}: alias {alias!r} is also a variable or another alias")
        aliases[alias] = target
    for alias, target in aliases.items():
        if target not in variables:
            raise ValueError(f"{path}: alias {alias!r} points to missing variable {target!r}")
        variables[alias] = variables[target]
    if cur.pos != len(data):
        raise ValueError(
            f"{path}: {len(data) - cur.pos} unexpected trailing bytes after the alias table "
            "(corrupt or concatenated file)"
        )
    return CT2Model(spec=spec, revision=revision, variables=variables, aliases=aliases)


def read_ct2(path: str | Path) -> CT2Model:
    """Read a CTranslate2 ``model.bin`` (binary version 6).

    Args:
        path: the file.

    Returns:
        The decoded :class:`CT2Model` (``.variables`` maps every name, aliases included, to a
        numpy array).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a valid version-6 model (see :func:`parse_ct2`).
    """
    path = Path(path)
    return parse_ct2(path.read_bytes(), str(path))


def _string_bytes(text: str) -> bytes:
    raw = text.encode("utf-8") + b"\x00"
    return struct.pack("<H", len(raw)) + raw


def encode_ct2(
    variables: dict[str, np.ndarray],
    *,
    spec: str = "WhisperSpec",
    revision: int = 3,
    aliases: dict[str, str] | None = None,
) -> bytes:
    """Encode variables as a version-6 ``model.bin`` (used by tests to build small files).

    Args:
        variables: name -> array of dtype float32, float16, int8, int16 or int32.
        spec: spec name to store.
        revision: spec revision to store.
        aliases: alias -> target name.

    Returns:
        The file content.

    Raises:
        ValueError: an array has an unsupported dtype.
    """
    parts = [struct.pack("<I", BINARY_VERSION), _string_bytes(spec), struct.pack("<I", revision)]
    parts.append(struct.pack("<I", len(variables)))
    for name, value in variables.items():
        array = np.asarray(value)  # (ascontiguousarray would turn a scalar into shape (1,))
        if array.dtype not in _WRITE_IDS:
            raise ValueError(f"variable {name!r}: unsupported dtype {array.dtype}")
        parts.append(_string_bytes(name))
        parts.append(struct.pack("<B", array.ndim))
        parts.append(struct.pack("<" + "I" * array.ndim, *array.shape))
        parts.append(struct.pack("<B", _WRITE_IDS[array.dtype]))
        data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes(order="C")
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    aliases = aliases or {}
    parts.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        parts.append(_string_bytes(alias) + _string_bytes(target))
    return b"".join(parts)


def write_ct2(path: str | Path, variables: dict[str, np.ndarray], **kwargs) -> None:
    """Write :func:`encode_ct2` output to ``path`` atomically (keyword args as there)."""
    data = encode_ct2(variables, **kwargs)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


__all__ = ["BINARY_VERSION", "CT2Model", "encode_ct2", "parse_ct2", "read_ct2", "write_ct2"]
