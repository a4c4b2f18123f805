"""Suites: validation before any model loads, resume, shards, overwrite."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from mpqbench.bench.runner import parse_shard, run_suite, shard_cells
from mpqbench.bench.suite import load_suite
from mpqbench.cli import main

SUITE = """
[suite]
name = "mini"
data = "{data}"
eval_splits = ["test-clean"]
models = ["tiny-ctc"]
seeds = [0]
max_new_tokens = 8

[budget]
train_steps = 1
batch_size = 2
search_budget = 1
dev_subset = 2

[[systems]]
method = "uniform"
avg_bits = [8, 4]
"""


def write(tmp_path: Path, text: str, name: str = "suite.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_run_resume_and_overwrite(corpus, tmp_path):
    suite = load_suite(str(write(tmp_path, SUITE.format(data=corpus))))
    assert [c.label for c in suite.cells] == ["fp32", "uniform", "uniform"]
    results = tmp_path / "results"
    first = run_suite(suite, results=results, progress=False)
    assert len(first.ran) == 3 and not first.skipped
    records = sorted((results / "mini" / "records").glob("*.json"))
    assert len(records) == 3
    before = {p.name: p.read_text() for p in records}
    again = run_suite(suite, results=results, progress=False)
    assert not again.ran and len(again.skipped) == 3
    assert before == {p.name: p.read_text() for p in records}  # nothing rewritten
    over = run_suite(suite, results=results, overwrite=True, progress=False)
    assert len(over.ran) == 3
    rec = json.loads(records[0].read_text())
    assert rec["suite"]["name"] == "mini"


def test_shards_partition_the_compressed_cells(corpus, tmp_path):
    suite = load_suite(str(write(tmp_path, SUITE.format(data=corpus))))
    parts = [shard_cells(suite, (i, 2)) for i in range(2)]
    keys = [c.key for part in parts for c in part]
    assert sorted(keys) == sorted(c.key for c in suite.compressed())
    assert len(set(keys)) == len(keys)
    results = tmp_path / "r"
    s1 = run_suite(suite, results=results, shard=(1, 2), progress=False)
    assert len(s1.ran) == 2  # its cell + the fp32 reference it needs
    s0 = run_suite(suite, results=results, shard=(0, 2), progress=False)
    assert len(s0.ran) == 1 and len(s0.skipped) == 1


def test_finetuned_reference_is_one_per_seed_and_paired_with_its_cells(corpus, tmp_path):
    text = SUITE.format(data=corpus).replace(
        "seeds = [0]", 'seeds = [0, 1]\nfp32_reference = "finetuned"')
    suite = load_suite(str(write(tmp_path, text)))
    refs = suite.references()
    assert [c.spec.budget.seed for c in refs] == [0, 1]
    assert all(c.spec.budget.train_steps == 1 for c in refs)
    ref_hashes = {c.spec.config_hash() for c in refs}
    for cell in suite.compressed():
        ref = cell.spec.reference()
        assert ref.config_hash() in ref_hashes and ref.budget.seed == cell.spec.budget.seed
    results = tmp_path / "results"
    run = run_suite(suite, results=results, shard=(0, 4), progress=False)
    ran = [json.loads(p.read_text()) for p in (results / "mini" / "records").glob("*fp32*")]
    assert len(ran) == 1 and [s["name"] for s in ran[0]["stages"]] == ["finetune"]
    assert len(run.ran) == 2


def test_parse_shard():
    assert parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "x", "1/0", "-1/2"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


BAD = {
    "malformed": ("[suite\nname=", "malformed TOML"),
    "unknown-method": (SUITE.replace('method = "uniform"', 'method = "magic"'),
                       "systems[0].method = 'magic'"),
    "unknown-model": (SUITE.replace('["tiny-ctc"]', '["no-such-model"]'),
                      "suite.models[0] = 'no-such-model'"),
    "unknown-key": (SUITE.replace("seeds = [0]", "seeds = [0]\ncolour = 1"), "colour"),
    "bits-outside-candidates": (
        SUITE.replace('method = "uniform"\navg_bits = [8, 4]',
                      'method = "one_stage"\navg_bits = [1.5]'),
        "outside the method's candidate bits"),
    "bad-param": (SUITE.replace("avg_bits = [8, 4]", "avg_bits = [8]\nparams = { nope = 1 }"),
                  "systems[0].params"),
    "missing-budget": (SUITE.split("[budget]")[0], "missing [budget]"),
    "bad-reference": (SUITE.replace("seeds = [0]", 'seeds = [0]\nfp32_reference = "tuned"'),
                      "fp32_reference"),
    "bad-alignment": (SUITE.replace("seeds = [0]", 'seeds = [0]\nalignment = "nist"'),
                      "suite.alignment = 'nist'"),
    "window-without-whisper": (
        SUITE.replace("seeds = [0]", "seeds = [0]\nwhisper_window_s = 10"),
        "suite.whisper_window_s applies to Whisper models, and suite.models ['tiny-ctc'] "
        "has none"),
    "row-groups-without-whisper": (
        SUITE.replace("avg_bits = [8, 4]", "avg_bits = [8, 4]\nembedding_row_groups = [64]"),
        "systems[0].embedding_row_groups applies to Whisper models"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_suites_are_refused_naming_file_and_field(corpus, tmp_path, case, monkeypatch):
    import mpqbench.bench.workload as workload
    import mpqbench.workloads.models.registry as registry

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded for an invalid suite")

    monkeypatch.setattr(registry, "load_model", no_loading)
    monkeypatch.setattr(workload, "load_model", no_loading)
    text, expected = BAD[case]
    path = write(tmp_path, text.replace("{data}", str(corpus)))
    with pytest.raises(ValueError) as info:
        load_suite(str(path))
    assert str(path) in str(info.value) and expected in str(info.value)


def test_cli_dry_run_lists_cells_without_loading(corpus, tmp_path, capsys):
    path = write(tmp_path, SUITE.format(data=corpus))
    assert main(["run", str(path), "--dry-run", "--results", str(tmp_path / "res")]) == 0
    out = capsys.readouterr().out
    assert "3 cells" in out and out.count("todo") == 3


def test_shipped_suites_validate():
    for name in ("smoke", "default", "default-full", "ablation", "paper", "supernet-test"):
        suite = load_suite(name)
        assert suite.references() and (suite.compressed() or suite.frontiers)


def test_supernet_test_shares_the_main_jobs_reference_and_4bit_cells():
    """supernet-test's comment says its 32-bit and uniform 4-bit cells are the main job's,
    and its mid-start one_stage is the main job's one_stage with pass 2."""
    default, test = load_suite("default"), load_suite("supernet-test")
    hashes = lambda cells: {c.spec.config_hash() for c in cells}  # noqa: E731
    assert hashes(test.references()) == hashes(default.references())
    uniform4 = [c for c in test.compressed() if c.spec.method == "uniform"
                and not c.spec.params and c.spec.target.avg_bits == 4]
    [frontier] = [f for f in default.frontiers if f.label == "uniform"]
    # the frontier's own grid cell (its targets are floats: 4.0 and 4 hash differently)
    assert hashes(uniform4) == hashes([c for c in frontier.grid_cells()
                                       if c.spec.target.avg_bits == 4])
    one_stage4 = [c for c in test.compressed()
                  if c.label == "one_stage+c23468+mid-target+separate+lsq+rows+arch-lr-0.1"
                  and c.spec.target.avg_bits == 4]
    [frontier] = [f for f in default.frontiers if f.label == "one_stage"]
    [main4] = [c for c in frontier.grid_cells() if c.spec.target.avg_bits == 4]
    assert len(one_stage4) == 1 and hashes(one_stage4) != hashes([main4])
    without_pass2 = dataclasses.replace(
        one_stage4[0].spec, params={**one_stage4[0].spec.params, "pass2_frac": 0.0})
    assert without_pass2.config_hash() == main4.spec.config_hash()


def test_whisper_settings_of_a_two_family_suite_apply_to_its_whisper_models(corpus, tmp_path):
    mixed = SUITE.replace('["tiny-ctc"]', '["tiny-ctc", "tiny-whisper"]')
    plain = load_suite(str(write(tmp_path, mixed.replace("{data}", str(corpus)), "a.toml")))
    windowed = load_suite(str(write(
        tmp_path,
        mixed.replace("seeds = [0]", "seeds = [0]\nwhisper_window_s = 10")
        .replace("avg_bits = [8, 4]", "avg_bits = [8, 4]\nembedding_row_groups = [64]")
        .replace("{data}", str(corpus)),
        "b.toml")))
    before = {(c.spec.model, c.key) for c in plain.cells}
    assert len(windowed.cells) == len(before) == 6
    for cell in windowed.cells:
        spec = cell.spec
        if spec.model == "tiny-ctc":  # untouched: the very cells of the suite without them
            assert spec.whisper_window_s is None and spec.embedding_row_groups is None
            assert (spec.model, cell.key) in before
        else:
            assert spec.whisper_window_s == 10
            assert spec.embedding_row_groups == ((64,) if spec.method != "fp32" else None)
            assert (spec.model, cell.key) not in before
