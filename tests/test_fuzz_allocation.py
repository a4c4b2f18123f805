"""Fuzz allocation files and layer rules (issue 6, item 4): clear errors or correct results.

An allocation file read by ``Allocation.load`` either loads to exactly the layers it
states (checked against an independent strict reading of the same bytes) or is refused
with a ``ValueError`` naming the file. Layer rules either parse and apply as written or are
refused naming the rule.
"""

from __future__ import annotations

import fnmatch
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzz_support import FUZZ, clear_error_or_success, damaged_bytes, json_scalars, json_values
from mpqbench.quant.allocation import Allocation, LayerRule, build_allocation

_FIELDS = ("format", "format_version", "model", "layers")
_NAMES = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=12
) | st.sampled_from(["encoder.layers.0.fc1", "proj_out", "a" * 300, "x.y", " ", "\t"])
_BITS = st.one_of(st.integers(1, 8), st.none(), json_scalars())


@st.composite
def _documents(draw: st.DrawFn) -> bytes:
    """A valid allocation file, or one of many ways to break it."""
    layers = draw(st.dictionaries(_NAMES, _BITS, max_size=6))
    doc: dict = {
        "format": "mpqbench.allocation",
        "format_version": 1,
        "model": draw(st.text(max_size=10) | st.just("whisper-tiny.en")),
        "layers": layers,
    }
    how = draw(st.sampled_from(
        ["as-is", "drop", "extra", "retype", "nest", "duplicate", "damage", "nan", "bigint"]
    ))
    if how == "drop":
        doc.pop(draw(st.sampled_from(_FIELDS)))
    elif how == "extra":
        doc[draw(st.text(max_size=6))] = draw(json_values())
    elif how == "retype":
        doc[draw(st.sampled_from(_FIELDS))] = draw(json_values())
    elif how == "nest":
        depth = draw(st.integers(1, 5000))
        doc["layers"] = json.loads("[" * depth + "]" * depth) if depth < 900 else "DEEP"
        text = json.dumps(doc)
        if depth >= 900:  # beyond json's recursion limit: build the text directly
            text = text.replace('"DEEP"', "[" * depth + "]" * depth)
        return text.encode()
    if how == "duplicate" and layers:
        name = next(iter(layers))
        text = json.dumps(doc)
        dup = json.dumps({name: draw(_BITS)})[1:-1]
        return text.replace('"layers": {', '"layers": {' + dup + ", ", 1).encode()
    if how == "nan":
        doc["layers"]["n"] = float("nan")
    text = json.dumps(doc, indent=draw(st.sampled_from([None, 2])))
    if how == "bigint":
        text = text.replace('"format_version": 1', '"format_version": 1' + "0" * 5000)
    data = text.encode("utf-8")
    return draw(damaged_bytes(data)) if how == "damage" else data


class _Dup(Exception):
    pass


def _strict(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise _Dup
    return dict(pairs)


def _expected(raw: bytes) -> tuple[str, dict] | None:
    """The independent reading: (model, layers) if ``raw`` is a valid allocation, else None."""
    try:
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=_strict)
    except (ValueError, RecursionError, _Dup):
        return None
    if not isinstance(doc, dict) or sorted(doc) != sorted(_FIELDS):
        return None
    version = doc["format_version"]
    if doc["format"] != "mpqbench.allocation" or type(version) is not int or version != 1:
        return None
    if not isinstance(doc["model"], str) or not isinstance(doc["layers"], dict):
        return None
    for name, bits in doc["layers"].items():
        if not name:
            return None
        if bits is not None and (type(bits) is not int or not 1 <= bits <= 8):
            return None
    return doc["model"], doc["layers"]


@FUZZ
@given(raw=_documents())
def test_allocation_files_load_exactly_or_fail_naming_the_file(raw, tmp_path):
    path = tmp_path / "alloc.json"
    path.write_bytes(raw)
    expected = _expected(raw)
    with clear_error_or_success(str(path)) as caught:
        alloc = Allocation.load(path)
    if caught:
        assert expected is None, f"a valid allocation was refused: {caught[0]}"
    else:
        assert expected is not None, f"an invalid allocation loaded: {raw[:200]!r}"
        model, layers = expected
        assert alloc.model == model
        assert list(alloc.layers.items()) == list(layers.items())


def test_allocation_odd_paths(tmp_path):
    with pytest.raises(FileNotFoundError):
        Allocation.load(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="is a directory"):
        Allocation.load(tmp_path)
    (tmp_path / "dup.json").write_text(
        '{"format": "mpqbench.allocation", "format_version": 1, "model": "m",'
        ' "layers": {"fc1": 4, "fc1": 8}}'
    )
    with pytest.raises(ValueError, match=r"dup\.json: duplicate key 'fc1'"):
        Allocation.load(tmp_path / "dup.json")


# ------------------------------------------------------------------------------ rules
_LAYERS = {
    "blocks": ["enc.0.fc1", "enc.0.fc2", "enc.1.fc1", "enc.1.q_proj", "dec.0.fc1"],
    "head": ["proj_out"],
}
_ELIGIBLE = [n for names in _LAYERS.values() for n in names]
_PATTERN_ALPHABET = "enc.01fq_*?[]!-re:(){}+|^$\\dproj"


@st.composite
def _rule_texts(draw: st.DrawFn) -> object:
    how = draw(st.sampled_from(["structured", "structured", "random", "regex-bomb", "odd"]))
    if how == "random":
        return draw(st.text(max_size=30))
    if how == "odd":
        return draw(json_scalars())
    if how == "regex-bomb":
        return draw(st.sampled_from([
            "re:a{99999999999}=4", "re:" + "(" * 2000 + ")" * 2000 + "=4",
            "re:(?P<x>a)(?P=y)=4", "re:[a-=4", "re:a{4294967296,}=2", "re:(a*)*b=4",
        ]))
    pattern = draw(st.sampled_from([*_ELIGIBLE, "*.fc1", "enc.*", "re:enc\\.\\d\\..*", "*"])
                   | st.text(alphabet=_PATTERN_ALPHABET, max_size=12))
    bits = draw(st.sampled_from(["4", "8", "1", "none", "FP32", "32", "0", "9", "-1", "4.0", "x",
                                 " 2 ", "1" * 5000, "٣"]))
    return f"{pattern}={bits}"


def _matches(pattern: str, name: str) -> bool:
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], name) is not None
    if set("*?[") & set(pattern):
        return fnmatch.fnmatchcase(name, pattern)
    return name == pattern


@FUZZ
@given(text=_rule_texts())
def test_layer_rules_apply_as_written_or_fail_naming_the_rule(text):
    names = [repr(text)]
    if isinstance(text, str):
        names.append(repr(text.rpartition("=")[0].strip()))
    with clear_error_or_success(*names) as caught:
        rule = LayerRule.parse(text)
    if caught:
        return
    pattern, _, value = text.rpartition("=")
    assert rule.pattern == pattern.strip()
    keep = value.strip().lower() in {"none", "null", "fp32", "32"}
    assert rule.bits == (None if keep else int(value))
    with clear_error_or_success(repr(rule.pattern)) as caught:
        alloc = build_allocation("m", _LAYERS, 8, rules=[rule])
    hits = [n for n in _ELIGIBLE if _matches(rule.pattern, n)]
    if caught:
        assert not hits, f"rule {text!r} matches {hits} but was refused: {caught[0]}"
        return
    for name in _ELIGIBLE:
        default = 8 if name in _LAYERS["blocks"] else None
        assert alloc.layers[name] == (rule.bits if name in hits else default), name
