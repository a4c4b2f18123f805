"""The decoding duration cap (``max_tokens_per_s``) as a suite and cell setting."""

from __future__ import annotations

import dataclasses

import pytest

from mpqbench.bench.cell import CellSpec
from mpqbench.bench.suite import load_suite
from mpqbench.method import Budget, Target


def _spec(**kw) -> CellSpec:
    return CellSpec(model="tiny-whisper", method="uniform", target=Target(avg_bits=4),
                    budget=Budget(train_steps=2), **kw)


def test_unset_keeps_hashes_and_a_set_rate_is_part_of_the_cell():
    spec = _spec()
    assert spec.max_tokens_per_s is None
    capped = dataclasses.replace(spec, max_tokens_per_s=10.0)
    assert capped.config_hash() != spec.config_hash()
    assert capped.to_dict()["max_tokens_per_s"] == 10.0
    assert CellSpec.from_dict(capped.to_dict()) == capped
    assert capped.reference().max_tokens_per_s == 10.0  # the reference decodes alike
    for bad in (0, -2.0, True, "10"):
        with pytest.raises(ValueError, match="max_tokens_per_s"):
            _spec(max_tokens_per_s=bad)


def test_suites_take_a_duration_cap(tmp_path):
    text = """
[suite]
name = "d"
models = ["tiny-whisper"]
max_tokens_per_s = 10
[budget]
train_steps = 1
[[systems]]
method = "uniform"
avg_bits = [8]
"""
    path = tmp_path / "d.toml"
    path.write_text(text)
    suite = load_suite(str(path))
    assert suite.compressed()[0].spec.max_tokens_per_s == 10.0
    assert suite.compressed()[0].spec.reference().max_tokens_per_s == 10.0
    path.write_text(text.replace("max_tokens_per_s = 10", 'max_tokens_per_s = "fast"'))
    with pytest.raises(ValueError, match=r"suite\.max_tokens_per_s must be a number > 0"):
        load_suite(str(path))


def test_the_default_suite_caps_decoding_at_ten_tokens_a_second():
    suite = load_suite("default")
    cells = [*suite.cells, *(c for f in suite.frontiers for c in f.grid_cells())]
    assert len(cells) > len(suite.cells)
    assert {c.spec.max_tokens_per_s for c in cells} == {10.0}
