"""Allocation: rules, documented precedence, JSON round trip, and errors naming the culprit."""

from __future__ import annotations

import json

import pytest
from torch import nn

from mpqbench.quant.allocation import Allocation, LayerRule, build_allocation

GROUPS = {
    "blocks": [f"enc.{i}.{p}" for i in range(2) for p in ("q", "k", "fc1", "fc2")],
    "feature_encoder": ["conv.0", "conv.1"],
    "pos_conv": [],
    "head": ["head"],
}


def test_default_selects_blocks_only():
    alloc = build_allocation("toy", GROUPS, 4)
    assert alloc.quantized == dict.fromkeys(GROUPS["blocks"], 4)
    assert set(alloc.kept) == {"conv.0", "conv.1", "head"}
    assert list(alloc.layers)[: len(GROUPS["blocks"])] == GROUPS["blocks"]


def test_group_mapping_and_options():
    alloc = build_allocation("toy", GROUPS, groups={"blocks": 4, "head": 8, "feature_encoder": 2})
    assert alloc.layers["head"] == 8 and alloc.layers["conv.1"] == 2
    assert alloc.layers["enc.0.q"] == 4


def test_precedence_exact_beats_pattern_beats_group_later_pattern_wins():
    alloc = build_allocation(
        "toy",
        GROUPS,
        4,
        rules=[
            "enc.1.fc1=8",  # exact: wins over every pattern, even ones listed after it
            "*.fc1=2",  # glob
            "re:enc\\.1\\..*=3",  # later pattern overrides the glob on enc.1.*
            "enc.0.q=none",  # exact: keep 32-bit
            "enc.0.q=6",  # same name again: the later exact rule wins
        ],
    )
    assert alloc.layers["enc.0.fc1"] == 2  # glob over group default
    assert alloc.layers["enc.1.fc2"] == 3  # later regex
    assert alloc.layers["enc.1.k"] == 3
    assert alloc.layers["enc.1.fc1"] == 8  # exact beats later patterns
    assert alloc.layers["enc.0.q"] == 6
    assert alloc.layers["enc.0.k"] == 4  # group default
    # rules may select layers outside the default groups
    alloc = build_allocation("toy", GROUPS, 4, rules=[LayerRule("head", 8), "conv.*=fp32"])
    assert alloc.layers["head"] == 8 and alloc.layers["conv.0"] is None


def test_glob_star_crosses_dots_and_regex_is_fullmatch():
    assert LayerRule("enc.*", 4).matches("enc.0.q")
    assert not LayerRule("re:enc", 4).matches("enc.0.q")
    assert LayerRule("re:enc.*", 4).kind == "regex"
    assert LayerRule("enc.0.q", 4).kind == "exact"
    assert LayerRule("enc.?.q", 4).kind == "glob"


@pytest.mark.parametrize("pattern", ["*.fc3", "re:dec\\..*", "enc.0.v"])
def test_unmatched_pattern_names_the_pattern(pattern):
    with pytest.raises(ValueError, match="matches no eligible layer") as err:
        build_allocation("toy", GROUPS, 4, rules=[LayerRule(pattern, 4)])
    assert repr(pattern) in str(err.value)


@pytest.mark.parametrize("bad", [0, 9])
def test_bad_bits_name_value_and_place(bad):
    with pytest.raises(ValueError, match=f"group 'blocks'.*got {bad}"):
        build_allocation("toy", GROUPS, bad)
    with pytest.raises(ValueError, match=f"layer rule '.*fc1'.*got {bad}"):
        build_allocation("toy", GROUPS, 4, rules=[f"*.fc1={bad}"])
    with pytest.raises(ValueError, match=f"layer 'x'.*got {bad}"):
        Allocation("toy", {"x": bad})


def test_bad_rules_and_groups():
    with pytest.raises(ValueError, match="unknown layer group 'decoder'"):
        build_allocation("toy", GROUPS, groups=["decoder"])
    with pytest.raises(ValueError, match="PATTERN=BITS"):
        LayerRule.parse("enc.0.q")
    with pytest.raises(ValueError, match=r"'enc\.0\.q=four'"):
        LayerRule.parse("enc.0.q=four")
    with pytest.raises(ValueError, match="bad regex"):
        LayerRule("re:(", 4)


def test_json_round_trip(tmp_path):
    alloc = build_allocation("toy", GROUPS, 4, rules=["head=8", "*.fc2=2"])
    assert Allocation.from_json(alloc.to_json()) == alloc
    path = tmp_path / "alloc.json"
    alloc.save(path)
    loaded = Allocation.load(path, model_name="toy")
    assert loaded == alloc and hash(loaded) == hash(alloc)
    data = json.loads(path.read_text())
    assert data["format_version"] == 1 and data["model"] == "toy" and data["layers"]["head"] == 8
    assert loaded.with_bits({"head": None}).layers["head"] is None
    with pytest.raises(ValueError, match="no layer"):
        alloc.with_bits({"nope": 4})


def _write(tmp_path, payload) -> str:
    path = tmp_path / "a.json"
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return str(path)


GOOD = {"format": "mpqbench.allocation", "format_version": 1, "model": "toy", "layers": {"a": 4}}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("{not json", "malformed JSON"),
        ([1, 2], "expected a JSON object"),
        ({k: v for k, v in GOOD.items() if k != "layers"}, "missing field 'layers'"),
        ({**GOOD, "format": "other"}, "field 'format'"),
        ({**GOOD, "format_version": 99}, "field 'format_version'"),
        ({**GOOD, "layers": [["a", 4]]}, "field 'layers'"),
        ({**GOOD, "layers": {"a": 12}}, "layer 'a'.*got 12"),
        ({**GOOD, "layers": {"a": "4"}}, "layer 'a'.*got '4'"),
        ({**GOOD, "extra": 1}, "unknown field"),
    ],
    ids=[
        "syntax", "array", "missing", "format", "version", "layers-type", "bits", "str-bits",
        "extra",
    ],
)
def test_malformed_file_names_file_and_field(tmp_path, payload, message):
    path = _write(tmp_path, payload)
    with pytest.raises(ValueError, match=message) as err:
        Allocation.load(path)
    assert path in str(err.value)


def test_file_naming_unknown_module_or_other_model(tmp_path):
    model = nn.Sequential(nn.Linear(2, 2))
    path = _write(tmp_path, {**GOOD, "layers": {"0": 4, "decoder.fc9": 2}})
    with pytest.raises(ValueError, match=r"no module 'decoder\.fc9'") as err:
        Allocation.load(path, model=model)
    assert path in str(err.value)
    path = _write(tmp_path, {**GOOD, "layers": {"0": 4}})
    assert Allocation.load(path, model=model).quantized == {"0": 4}
    with pytest.raises(ValueError, match="'toy' but the model is 'other'"):
        Allocation.load(path, model_name="other")
