"""A method's config fields as rows of (dotted name, type, default, help), for users.

:func:`config_fields` walks a config dataclass and its nested config dataclasses (e.g.
``quantizer``, ``train``) so every settable key -- what a suite's ``params`` and
``mpqbench quantize --set`` take -- is listed once, with its type, default and the help
text in the field's metadata.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

from mpqbench.method.interface import field_default


@dataclass(frozen=True)
class FieldDoc:
    """One settable field: ``name`` is dotted for nested configs (``train.lr``)."""

    name: str
    type: str
    default: Any
    help: str


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def config_fields(config_cls: type, prefix: str = "") -> list[FieldDoc]:
    """Every settable field of ``config_cls``, nested dataclass fields expanded in place.

    Args:
        config_cls: a config dataclass (a method's, or :class:`~mpqbench.method.Budget`).
        prefix: dotted prefix of the names (used for the nested ones).

    Raises:
        TypeError: ``config_cls`` is not a dataclass.
    """
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"{config_cls!r} is not a dataclass")
    hints = typing.get_type_hints(config_cls)
    out: list[FieldDoc] = []
    for f in dataclasses.fields(config_cls):
        default = field_default(f)
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(default) and not isinstance(default, type):
            out += config_fields(type(default), prefix=f"{name}.")
            continue
        out.append(FieldDoc(name, _type_name(hints.get(f.name, f.type)), default,
                            str(f.metadata.get("help", ""))))
    return out


__all__ = ["FieldDoc", "config_fields"]
