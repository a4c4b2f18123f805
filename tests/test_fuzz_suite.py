"""Fuzz suite files (issue 6, item 4): clear errors naming the file, or a well-typed suite.

Two families of cases:

* bytes: random bytes, a valid suite truncated or damaged, re-encoded as UTF-16/Latin-1,
  nested past the parser's recursion limit, or holding a 5,000-digit integer;
* documents: a valid suite with fields retyped (random TOML values: huge integers, NaN,
  inf, dates, nested arrays and tables), removed, duplicated or joined by unknown keys.

``load_suite`` must either raise a plain ``ValueError``/``FileNotFoundError`` naming the
file, or return a suite every field of which has its documented type and range (checked
independently below): a wrong type that slips through is a silent wrong result.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from fuzz_support import FUZZ, clear_error_or_success, damaged_bytes, json_values
from mpqbench.bench.suite import load_suite
from mpqbench.quant.allocation import LayerRule
from mpqbench.workloads.adapter import LAYER_GROUPS

_BASE: dict = {
    "suite": {
        "name": "fuzz",
        "description": "fuzzed suite",
        "data": "embedded",
        "eval_splits": ["test-clean", "test-other"],
        "models": ["tiny-ctc", "tiny-whisper"],
        "seeds": [0, 1],
        "groups": ["blocks"],
        "rules": ["*.fc1=8"],
        "eval_batch_size": 8,
        "max_new_tokens": 12,
        "eval_limit": 24,
        "whisper_window_s": 10,
    },
    "budget": {"train_steps": 4, "batch_size": 4, "search_budget": 4, "dev_subset": 8},
    "systems": [
        {"method": "uniform", "avg_bits": [8, 4]},
        {"method": "two_stage", "label": "two_stage-kl", "avg_bits": [4],
         "params": {"stage1": "kl"}},
        {"method": "optuna", "cr": [8.0]},
    ],
}


# ----------------------------------------------------------------------- TOML writing
def _toml_string(text: str) -> str:
    body = json.dumps(text, ensure_ascii=False)[1:-1].replace("\x7f", "\\u007f")
    return f'"{body}"'


def _toml_value(value) -> str | None:
    """TOML text of a value; None for values TOML cannot hold (None itself)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    if isinstance(value, list):
        items = [t for t in map(_toml_value, value) if t is not None]
        return "[" + ", ".join(items) + "]"
    if isinstance(value, Mapping):
        items = [f"{_toml_string(k)} = {t}" for k, v in value.items()
                 if (t := _toml_value(v)) is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    raise TypeError(value)


def _toml_document(doc: Mapping) -> str:
    lines = []
    for key, value in doc.items():
        tables = isinstance(value, list) and all(isinstance(s, Mapping) for s in value)
        if key == "systems" and tables:
            for system in value:
                lines.append("[[systems]]")
                lines += [f"{_toml_string(k)} = {t}" for k, v in system.items()
                          if (t := _toml_value(v)) is not None]
        elif isinstance(value, Mapping):
            lines.append(f"[{_toml_string(key)}]")
            lines += [f"{_toml_string(k)} = {t}" for k, v in value.items()
                      if (t := _toml_value(v)) is not None]
        elif (t := _toml_value(value)) is not None:
            lines.insert(0, f"{_toml_string(key)} = {t}")  # top-level keys before tables
    return "\n".join(lines) + "\n"


_VALID_TEXT = _toml_document(_BASE)


# ----------------------------------------------------------------------- strategies
_PLAUSIBLE = st.one_of(
    st.integers(-2, 40),
    st.sampled_from([4.0, 8.0, 2.5, "embedded", "test-clean", "dev", "blocks", "kl", "uniform",
                     ["test-clean"], ["head"], ["blocks", "feature_encoder"], [2, 4], [3],
                     ["whisper-tiny.en"], ["proj_out=none"], {"candidates": [2, 4]},
                     "finetuned", "pretrained"]),
)
_TOML_VALUES = st.one_of(
    _PLAUSIBLE,
    _PLAUSIBLE,
    json_values(),
    st.dates(),
    st.datetimes(timezones=st.none() | st.just(dt.timezone.utc)),
    st.sampled_from([2**63 - 1, -(2**63), 10**30, "", "../../etc", "a/b", "x" * 300, [], {},
                     ["blocks", "head"], ["nosuch"], [1, 2], [True], [[]], ["*.q_proj=4"],
                     ["bad rule"], [0, 0], ["test-clean", "test-clean"], ["tiny-ctc"], [""]]),
)
_FIELDS = [("suite", k) for k in [*_BASE["suite"], "fp32_reference", "train_split", "dev_split"]]
_FIELDS += [("budget", k) for k in _BASE["budget"]]
_SYSTEM_FIELDS = ["method", "label", "avg_bits", "cr", "params"]


@st.composite
def _documents(draw: st.DrawFn) -> dict:
    doc = json.loads(json.dumps(_BASE))
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):
        how = draw(st.sampled_from(["retype", "retype", "drop", "unknown", "system", "table"]))
        if how in ("retype", "drop"):
            table, key = draw(st.sampled_from(_FIELDS))
            if not isinstance(doc.get(table), dict):
                continue
            if how == "drop":
                doc[table].pop(key, None)
            else:
                doc[table][key] = draw(_TOML_VALUES)
        elif how == "unknown":
            table = draw(st.sampled_from(["suite", "budget", None]))
            if table is not None and not isinstance(doc.get(table), dict):
                continue
            key = draw(st.text(min_size=1, max_size=8))
            (doc if table is None else doc[table])[key] = draw(_TOML_VALUES)
        elif how == "system":
            if not isinstance(doc.get("systems"), list) or not doc["systems"]:
                continue
            system = doc["systems"][draw(st.integers(0, len(doc["systems"]) - 1))]
            if not isinstance(system, dict):
                continue
            key = draw(st.sampled_from(_SYSTEM_FIELDS))
            if draw(st.booleans()):
                system.pop(key, None)
            else:
                system[key] = draw(_TOML_VALUES)
        else:
            doc[draw(st.sampled_from(["suite", "budget", "systems"]))] = draw(_TOML_VALUES)
    return doc


@st.composite
def _raw_files(draw: st.DrawFn) -> bytes:
    how = draw(st.sampled_from(["random", "damaged", "encoded"]))
    if how == "random":
        return draw(st.binary(max_size=400))
    if how == "encoded":
        text = _VALID_TEXT.replace("fuzzed suite", "fuzzed suite é ✓")
        return text.encode(draw(st.sampled_from(["utf-16", "utf-32", "latin-1", "cp1252"])),
                           errors="replace")
    return draw(damaged_bytes(_VALID_TEXT.encode()))


# ----------------------------------------------------------------------- the checks
def _check_suite(suite, path) -> None:
    """Every field of a loaded suite has its documented type and range."""
    assert isinstance(suite.name, str) and suite.name and "/" not in suite.name
    assert suite.name not in (".", "..")
    assert isinstance(suite.description, str)
    keys = [cell.key for cell in suite.cells]
    assert len(keys) == len(set(keys)), "two cells share a key (duplicate model/seed/target)"
    for cell in suite.cells:
        spec = cell.spec
        assert isinstance(cell.label, str) and cell.label and "/" not in cell.label
        assert isinstance(spec.model, str) and spec.model
        assert isinstance(spec.data, str) and spec.data
        for split in (*spec.eval_splits, spec.train_split, spec.dev_split):
            assert isinstance(split, str) and split and "/" not in split
        assert spec.eval_splits and all(g in LAYER_GROUPS for g in spec.groups)
        for rule in spec.rules:
            LayerRule.parse(rule)  # raises on a bad rule
        assert type(spec.eval_batch_size) is int and spec.eval_batch_size >= 1
        for name in ("max_new_tokens", "eval_limit"):
            value = getattr(spec, name)
            assert value is None or (type(value) is int and value >= 1), (name, value)
        window = spec.whisper_window_s
        assert window is None or (type(window) is int and 1 <= window <= 30), window
        budget = spec.budget.to_dict()
        assert all(type(v) is int for v in budget.values()), budget
        assert 0 <= budget["seed"] < 2**32
        assert isinstance(spec.params, Mapping)
        if spec.target is not None:
            for value in (spec.target.avg_bits, spec.target.compression_ratio):
                assert value is None or math.isfinite(value)
        spec.config_hash()  # JSON-serialisable


def _load_and_check(raw: bytes, tmp_path) -> bool:
    path = tmp_path / "fuzz suite é.toml"
    path.write_bytes(raw)
    with clear_error_or_success(str(path)) as caught:
        suite = load_suite(str(path))
    if not caught:
        _check_suite(suite, path)
    return not caught


def test_the_unmutated_suite_loads(tmp_path):
    assert _load_and_check(_VALID_TEXT.encode(), tmp_path)
    suite = load_suite(str(tmp_path / "fuzz suite é.toml"))
    # 2 models x (1 reference + 2 seeds x (2 + 1 + 1) targets)
    assert len(suite.cells) == 2 * (1 + 2 * 4)


@FUZZ
@given(raw=_raw_files())
def test_suite_bytes_fail_clearly(raw, tmp_path):
    event("read" if _load_and_check(raw, tmp_path) else "refused")


@pytest.mark.parametrize("text", [
    "a = " + "[" * 5000 + "]" * 5000,
    "a = " + "{b = " * 2000 + "1" + "}" * 2000,
    "[suite]\nname = \"x\"\nseeds = [" + "7" * 5000 + "]\n",
], ids=["deep-array", "deep-table", "5000-digit-int"])
def test_parser_limits_fail_clearly(text, tmp_path):
    _load_and_check(text.encode(), tmp_path)


@FUZZ
@given(doc=_documents())
def test_suite_documents_load_well_typed_or_fail_naming_the_file(doc, tmp_path):
    event("read" if _load_and_check(_toml_document(doc).encode(), tmp_path) else "refused")
