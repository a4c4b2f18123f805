"""The one serializable per-layer bit allocation, and the rules that build it.

An :class:`Allocation` maps module names (as in ``model.named_modules()``) to a bit-width
in 1..8 or ``None`` (the layer is eligible but kept 32-bit). It is the currency between
methods, accounting, ``prepare_``/``convert_``, the exporter and the report, and it
round-trips through JSON::

    {"format": "mpqbench.allocation", "format_version": 1,
     "model": "whisper-tiny.en",
     "layers": {"model.encoder.layers.0.self_attn.k_proj": 4, "proj_out": null, ...}}

Building one (:func:`build_allocation`) from the model's layer groups (``blocks``,
``feature_encoder``, ``pos_conv``, ``head``; see ``SpeechModel.layer_groups``) and rules.
Precedence, lowest to highest -- a higher tier always overrides a lower one:

1. every eligible layer (the union of all groups) starts as ``None`` (32-bit);
2. **group defaults**: layers of the selected groups (default: ``blocks`` only) get the
   group's bits; when a layer is in two selected groups, the group listed later wins;
3. **pattern rules** (fnmatch globs such as ``*.fc1``, or ``re:<regex>`` matched with
   ``re.fullmatch``) in the order given: a later pattern overrides an earlier one;
4. **exact-name rules** (a rule whose pattern has no glob metacharacter and no ``re:``
   prefix) override everything, regardless of where they appear in the list; for the same
   name, the later rule wins.

Patterns and names are matched against eligible layers only. A rule that matches no
eligible layer is an error (``ValueError`` naming the pattern), as is an unknown group.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from torch import nn

from mpqbench._atomic import atomic_write_text
from mpqbench.quant.formats import check_bits
from mpqbench.workloads.adapter import LAYER_GROUPS

logger = logging.getLogger(__name__)

ALLOCATION_FORMAT = "mpqbench.allocation"
ALLOCATION_FORMAT_VERSION = 1
#: Groups quantized when none are named (DESIGN.md section 4).
DEFAULT_GROUPS: tuple[str, ...] = ("blocks",)

_GLOB_CHARS = frozenset("*?[")
_KEEP_WORDS = frozenset({"none", "null", "fp32", "32"})


@dataclass(frozen=True)
class Allocation:
    """Per-layer bit allocation: module name -> bits (1..8) or None (keep 32-bit).

    Attributes:
        model: the name of the model it was made for (registry name or path).
        layers: read-only mapping in the order given (usually model order).
    """

    model: str
    layers: Mapping[str, int | None]

    def __post_init__(self) -> None:
        if not isinstance(self.model, str):
            raise ValueError(f"Allocation.model must be a string, got {self.model!r}")
        clean: dict[str, int | None] = {}
        for name, bits in dict(self.layers).items():
            if not isinstance(name, str) or not name:
                raise ValueError(
                    f"allocation: module names must be non-empty strings, got {name!r}"
                )
            clean[name] = None if bits is None else check_bits(bits, what=f"layer {name!r}")
        object.__setattr__(self, "layers", MappingProxyType(clean))

    def __hash__(self) -> int:
        return hash((self.model, frozenset(self.layers.items())))

    # ---- views -------------------------------------------------------------------------
    @property
    def quantized(self) -> dict[str, int]:
        """Layers that are quantized: name -> bits."""
        return {n: b for n, b in self.layers.items() if b is not None}

    @property
    def kept(self) -> list[str]:
        """Eligible layers kept 32-bit."""
        return [n for n, b in self.layers.items() if b is None]

    def with_bits(self, updates: Mapping[str, int | None]) -> Allocation:
        """A copy with some layers' bits replaced.

        Raises:
            ValueError: a name not in this allocation, or bad bits.
        """
        unknown = [n for n in updates if n not in self.layers]
        if unknown:
            raise ValueError(f"allocation has no layer(s) {unknown}")
        return Allocation(self.model, {**self.layers, **updates})

    # ---- JSON --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (format tag, version, model, layers)."""
        return {
            "format": ALLOCATION_FORMAT,
            "format_version": ALLOCATION_FORMAT_VERSION,
            "model": self.model,
            "layers": dict(self.layers),
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        """Serialise to JSON text (keys keep model order)."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<allocation>") -> Allocation:
        """Parse the :meth:`to_dict` form.

        Args:
            data: the decoded JSON value.
            source: where it came from, for error messages (a file path).

        Raises:
            ValueError: a wrong format tag or version, a missing or mistyped field, or bad
                bits; the message names ``source`` and the field or module.
        """
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}")
        for key in ("format", "format_version", "model", "layers"):
            if key not in data:
                raise ValueError(f"{source}: missing field {key!r}")
        if data["format"] != ALLOCATION_FORMAT:
            raise ValueError(
                f"{source}: field 'format' is {data['format']!r}, expected {ALLOCATION_FORMAT!r}"
            )
        if (
            type(data["format_version"]) is not int
            or data["format_version"] != ALLOCATION_FORMAT_VERSION
        ):
            raise ValueError(
                f"{source}: field 'format_version' is {data['format_version']!r}; "
                f"this version reads {ALLOCATION_FORMAT_VERSION}"
            )
        if not isinstance(data["model"], str):
            raise ValueError(f"{source}: field 'model' must be a string, got {data['model']!r}")
        layers = data["layers"]
        if not isinstance(layers, dict):
            raise ValueError(f"{source}: field 'layers' must be an object of name -> bits|null")
        for name, bits in layers.items():
            if not name:
                raise ValueError(f"{source}: field 'layers' has an empty module name")
            if bits is not None:
                check_bits(bits, what=f"{source}: layer {name!r}")
        extra = set(data) - {"format", "format_version", "model", "layers"}
        if extra:
            raise ValueError(f"{source}: unknown field(s) {sorted(extra)}")
        return cls(data["model"], layers)

    @classmethod
    def from_json(cls, text: str, *, source: str = "<allocation>") -> Allocation:
        """Parse JSON text.

        Raises:
            ValueError: malformed JSON (with line/column), a key given twice in one object,
                or any :meth:`from_dict` error; the message names ``source``.
        """
        try:
            data = json.loads(text, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}: malformed JSON: {exc}") from None
        except _DuplicateKeyError as exc:
            raise ValueError(f"{source}: duplicate key {exc.args[0]!r} in a JSON object") from None
        except RecursionError:
            raise ValueError(f"{source}: malformed JSON: nested too deeply") from None
        except ValueError as exc:  # e.g. an integer literal over Python's 4300-digit limit
            raise ValueError(f"{source}: malformed JSON: {exc}") from None
        return cls.from_dict(data, source=source)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the JSON form atomically (layers in model order)."""
        atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        model: nn.Module | None = None,
        model_name: str | None = None,
    ) -> Allocation:
        """Read an allocation file and optionally check it against a model.

        Args:
            path: JSON file written by :meth:`save`.
            model: if given, every named module must exist in it (see :meth:`check_model`).
            model_name: if given, must equal the file's ``model`` field.

        Raises:
            FileNotFoundError: no such file.
            ValueError: malformed file, or a mismatch with ``model`` / ``model_name``; the
                message names the file and the field or module.
        """
        path = Path(path)
        if path.is_dir():
            raise ValueError(f"{path}: is a directory, not an allocation file")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: not UTF-8 text ({exc})") from None
        alloc = cls.from_json(text, source=str(path))
        if model_name is not None and alloc.model != model_name:
            raise ValueError(
                f"{path}: field 'model' is {alloc.model!r} but the model is {model_name!r}"
            )
        if model is not None:
            alloc.check_model(model, source=str(path))
        return alloc

    def check_model(self, model: nn.Module, *, source: str = "allocation") -> None:
        """Check that every layer named here is a module of ``model``.

        Raises:
            ValueError: naming ``source`` and the missing module(s).
        """
        present = {name for name, _ in model.named_modules()}
        missing = [n for n in self.layers if n not in present]
        if missing:
            shown = ", ".join(repr(n) for n in missing[:5])
            more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
            raise ValueError(f"{source}: the model has no module {shown}{more}")


class _DuplicateKeyError(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json`` object hook: a key given twice is an error, not "the last one wins"."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKeyError(key)
        out[key] = value
    return out


@dataclass(frozen=True)
class LayerRule:
    """Set the bits of the eligible layers a pattern matches.

    Attributes:
        pattern: an exact module name, an fnmatch glob (contains ``*``, ``?`` or ``[``;
            ``*`` also crosses dots), or ``re:<regex>`` (``re.fullmatch`` on the name).
        bits: 1..8, or None to keep the matched layers 32-bit.
    """

    pattern: str
    bits: int | None

    def __post_init__(self) -> None:
        if not isinstance(self.pattern, str) or not self.pattern:
            raise ValueError(
                f"layer rule: pattern must be a non-empty string, got {self.pattern!r}"
            )
        if self.bits is not None:
            check_bits(self.bits, what=f"layer rule {self.pattern!r}")
        if self.kind == "regex":
            try:
                re.compile(self.pattern[3:])
            # OverflowError: a repeat count such as {99999999999}; RecursionError: nesting
            except (re.error, OverflowError, RecursionError) as exc:
                raise ValueError(f"layer rule {self.pattern!r}: bad regex: {exc}") from None

    @property
    def kind(self) -> str:
        """``"exact"``, ``"glob"`` or ``"regex"``."""
        if self.pattern.startswith("re:"):
            return "regex"
        return "glob" if _GLOB_CHARS & set(self.pattern) else "exact"

    def matches(self, name: str) -> bool:
        """Whether this rule applies to module ``name``."""
        if self.kind == "regex":
            return re.fullmatch(self.pattern[3:], name) is not None
        if self.kind == "glob":
            return fnmatch.fnmatchcase(name, self.pattern)
        return name == self.pattern

    @classmethod
    def parse(cls, text: str) -> LayerRule:
        """Parse ``"PATTERN=BITS"``; BITS is 1..8 or one of none/null/fp32/32 (keep 32-bit).

        Raises:
            ValueError: not a string, no ``=``, or bad bits; the message quotes ``text``.
        """
        if not isinstance(text, str):
            raise ValueError(f"layer rule {text!r}: expected a 'PATTERN=BITS' string")
        pattern, sep, value = text.rpartition("=")
        if not sep or not pattern:
            raise ValueError(f"layer rule {text!r}: expected PATTERN=BITS")
        value = value.strip().lower()
        if value in _KEEP_WORDS:
            return cls(pattern.strip(), None)
        try:
            bits = int(value)
        except ValueError:
            raise ValueError(f"layer rule {text!r}: bits must be 1..8 or 'none'") from None
        return cls(pattern.strip(), bits)


def build_allocation(
    model_name: str,
    layer_groups: Mapping[str, Sequence[str]],
    bits: int | None = 8,
    *,
    groups: Iterable[str] | Mapping[str, int | None] = DEFAULT_GROUPS,
    rules: Sequence[LayerRule | str] = (),
) -> Allocation:
    """Build an allocation from layer groups and rules (precedence in the module docstring).

    Args:
        model_name: recorded in the allocation.
        layer_groups: group -> module names, e.g. ``speech_model.layer_groups()``.
        bits: bits for the selected groups when ``groups`` is a list of names.
        groups: the groups to quantize: names (all at ``bits``) or a mapping group -> bits.
        rules: :class:`LayerRule` objects or ``"PATTERN=BITS"`` strings.

    Returns:
        An allocation over every eligible layer (selected or not), in group order.

    Raises:
        ValueError: unknown group, bad bits, or a rule matching no eligible layer.
    """
    group_bits = dict(groups) if isinstance(groups, Mapping) else dict.fromkeys(groups, bits)
    for group, b in group_bits.items():
        if group not in LAYER_GROUPS or group not in layer_groups:
            raise ValueError(f"unknown layer group {group!r}; groups are {list(LAYER_GROUPS)}")
        if b is not None:
            check_bits(b, what=f"group {group!r}")
    layers: dict[str, int | None] = {}
    for group in LAYER_GROUPS:
        for name in layer_groups.get(group, []):
            layers.setdefault(name, None)
    empty = [g for g in group_bits if not layer_groups[g]]
    if empty:
        # e.g. the default "embeddings" of a CTC model, which has no token embedding: only
        # worth a warning when no selected group has a layer at all.
        log = logger.warning if len(empty) == len(group_bits) else logger.info
        log("layer group(s) %s of %s empty; nothing selected there", empty, model_name)
    for group, b in group_bits.items():
        for name in layer_groups[group]:
            layers[name] = b
    parsed = [r if isinstance(r, LayerRule) else LayerRule.parse(r) for r in rules]
    ordered = [r for r in parsed if r.kind != "exact"] + [r for r in parsed if r.kind == "exact"]
    for rule in ordered:
        hits = [n for n in layers if rule.matches(n)]
        if not hits:
            raise ValueError(
                f"layer rule {rule.pattern!r} matches no eligible layer of {model_name} "
                f"({len(layers)} eligible, e.g. {next(iter(layers), '<none>')!r})"
            )
        for name in hits:
            layers[name] = rule.bits
    return Allocation(model_name, layers)


def allocation_for(
    speech_model: Any,
    bits: int | None = 8,
    *,
    groups: Iterable[str] | Mapping[str, int | None] = DEFAULT_GROUPS,
    rules: Sequence[LayerRule | str] = (),
) -> Allocation:
    """:func:`build_allocation` for a ``SpeechModel`` (its ``name`` and ``layer_groups()``)."""
    return build_allocation(
        speech_model.name, speech_model.layer_groups(), bits, groups=groups, rules=rules
    )


__all__ = [
    "ALLOCATION_FORMAT",
    "ALLOCATION_FORMAT_VERSION",
    "DEFAULT_GROUPS",
    "Allocation",
    "LayerRule",
    "allocation_for",
    "build_allocation",
]
