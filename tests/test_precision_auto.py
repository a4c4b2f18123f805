"""Precision "auto": bf16 where the device multiplies bf16 natively, fp32 elsewhere.

Suites say "auto" so that a CPU without AVX512-BF16/AMX trains in fp32 rather than in
emulated bf16 (16.8x slower there); on a device with native bf16 the cells are the very
cells of an explicit "bf16" suite (same config hashes, so committed results stay valid).
"""

from __future__ import annotations

import logging

import pytest
import torch

import mpqbench.precision as precision
from mpqbench.bench.suite import load_suite
from mpqbench.cli import main

SUITE = """
[suite]
name = "auto"
data = "{data}"
models = ["tiny-ctc"]
eval_splits = ["test-clean"]
eval_precision = "{eval}"
[budget]
train_steps = 1
batch_size = 2
precision = "{train}"
[[systems]]
method = "uniform"
avg_bits = [8]
[[systems]]
method = "one_stage"
frontier = {{ low = 2, high = 8, resolution = 2 }}
"""


def suite_file(tmp_path, corpus, train: str, eval_: str, name: str = "s.toml"):
    path = tmp_path / name
    path.write_text(SUITE.format(data=corpus, train=train, eval=eval_))
    return str(path)


def hashes(suite) -> list[str]:
    cells = [*suite.cells, *(c for f in suite.frontiers for c in f.grid_cells())]
    return [c.spec.config_hash() for c in cells]


@pytest.mark.parametrize("native", [True, False], ids=["native", "emulated"])
def test_auto_resolves_by_the_devices_bf16_support(monkeypatch, native):
    monkeypatch.setattr(precision, "native_bf16", lambda device: native)
    want = "bf16" if native else "fp32"
    assert precision.resolve_precision("auto", "cpu") == want
    assert precision.resolve_precision("fp32", "cpu") == "fp32"
    assert precision.resolve_precision("bf16", "cpu") == "bf16"  # asked for: kept
    assert precision.emulated_bf16("bf16", "cpu") is not native
    warning = precision.emulated_bf16_warning(["fp32", "bf16"], "cpu")
    assert (warning is None) is native
    assert precision.emulated_bf16_warning(["fp32"], "cpu") is None
    with pytest.raises(ValueError, match="precision must be one of"):
        precision.resolve_precision("half", "cpu")


def test_native_bf16_reads_torchs_cpu_probes_or_cpuinfo(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert precision.native_bf16("cpu") is True
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert precision.native_bf16("cpu") is False
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")  # an older torch: cpuinfo
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
    assert precision.native_bf16("cpu") is True
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2"})
    assert precision.native_bf16("cpu") is False


def test_an_auto_suite_is_the_explicit_suite_it_resolves_to(corpus, tmp_path, monkeypatch):
    auto = suite_file(tmp_path, corpus, "auto", "auto")
    for resolved in ("bf16", "fp32"):
        explicit = load_suite(suite_file(tmp_path, corpus, resolved, resolved, "x.toml"))
        suite = load_suite(auto, auto_precision=resolved)
        assert suite.auto_precision == resolved and explicit.auto_precision is None
        assert hashes(suite) == hashes(explicit)
        trained = [*suite.compressed(), *(f.template for f in suite.frontiers)]
        trained = [getattr(c, "spec", c) for c in trained]
        assert {s.budget.precision for s in trained} == {resolved}
        assert {c.spec.eval_precision_name for c in suite.cells} == {resolved}
    assert hashes(load_suite(auto, auto_precision="bf16")) != hashes(
        load_suite(auto, auto_precision="fp32"))
    # None: resolved for this machine (the CPU here, no CUDA)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    assert load_suite(auto).auto_precision == "fp32"
    # one auto field is enough; the other keeps its explicit value
    mixed = load_suite(suite_file(tmp_path, corpus, "auto", "fp32", "m.toml"),
                       auto_precision="bf16")
    assert {(c.spec.budget.precision, c.spec.eval_precision_name) for c in mixed.compressed()} == {
        ("bf16", "fp32")}
    with pytest.raises(ValueError, match="auto_precision must be"):
        load_suite(auto, auto_precision="auto")
    bad = suite_file(tmp_path, corpus, "auto", "automatic", "b.toml")
    with pytest.raises(ValueError, match=r"suite\.eval_precision = 'automatic' is not one of"):
        load_suite(bad)


def test_the_shipped_bf16_suites_keep_their_committed_hashes_where_bf16_is_native():
    """default, default-full, ablation and supernet-test say "auto"; resolved to bf16 they
    are the suites whose records are committed under results/ (made on AVX512-BF16 CPUs)."""
    from pathlib import Path

    results = Path(__file__).resolve().parent.parent / "results"
    for name in ("default", "default-full", "ablation", "supernet-test"):
        suite = load_suite(name, auto_precision="bf16")
        assert suite.auto_precision == "bf16"
        committed = {p.stem.rsplit("__", 1)[-1]
                     for p in (results / name / "records").glob("*.json")}
        refs = {c.spec.config_hash() for c in suite.references()}
        assert refs & committed, name  # at least its seed-0 32-bit reference ran
        assert not refs & {c.spec.config_hash()
                           for c in load_suite(name, auto_precision="fp32").references()}


def test_the_report_checks_completeness_against_the_resolution_the_records_carry(
        corpus, tmp_path, monkeypatch):
    from mpqbench.cli.report_cmd import checkable_suite

    path = suite_file(tmp_path, corpus, "auto", "auto")
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)  # this machine: fp32
    folder = tmp_path / "res" / "auto"
    (folder / "records").mkdir(parents=True)
    assert checkable_suite(path, folder).auto_precision == "fp32"  # no records: this machine
    ran_elsewhere = load_suite(path, auto_precision="bf16")
    for cell in ran_elsewhere.cells:
        (folder / "records" / f"{cell.key}.json").write_text("{}")
    assert checkable_suite(path, folder).auto_precision == "bf16"


def test_the_runner_warns_when_a_suite_asks_for_bf16_the_device_emulates(
        corpus, tmp_path, monkeypatch, caplog):
    import mpqbench.bench.runner as runner

    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    monkeypatch.setattr(runner._Run, "cell", lambda self, cell, title: None)
    monkeypatch.setattr(runner._Run, "frontier", lambda self, search: None)
    for train, warned in (("fp32", False), ("bf16", True)):
        caplog.clear()
        suite = load_suite(suite_file(tmp_path, corpus, train, "fp32", f"{train}.toml"))
        with caplog.at_level(logging.WARNING, logger="mpqbench.bench.runner"):
            runner.run_suite(suite, results=tmp_path / "r", progress=False)
        messages = [r.getMessage() for r in caplog.records]
        assert bool(messages) is warned
    assert "suite auto: bf16 on this cpu, which has no native bf16" in messages[0]


def test_the_runner_keeps_the_two_resolutions_of_a_suite_apart(corpus, tmp_path, monkeypatch):
    import mpqbench.bench.runner as runner

    monkeypatch.setattr(runner._Run, "cell", lambda self, cell, title: None)
    monkeypatch.setattr(runner._Run, "frontier", lambda self, search: None)
    path = suite_file(tmp_path, corpus, "auto", "auto")
    bf16, fp32 = (load_suite(path, auto_precision=p) for p in ("bf16", "fp32"))
    assert bf16.other_resolution().config_hashes() == fp32.config_hashes()
    assert load_suite(suite_file(tmp_path, corpus, "bf16", "bf16", "e.toml")
                      ).other_resolution() is None
    folder = tmp_path / "res" / "auto" / "records"
    folder.mkdir(parents=True)
    (folder / f"{bf16.cells[0].key}.json").write_text("{}")
    runner.run_suite(bf16, results=tmp_path / "res", progress=False)  # its own cells: fine
    with pytest.raises(ValueError, match=r"holds 1 cell\(s\) of suite auto with precision "
                                         r"\"auto\" resolved to bf16.*--name auto-fp32"):
        runner.run_suite(fp32, results=tmp_path / "res", progress=False)
    runner.run_suite(fp32, results=tmp_path / "res", name="auto-fp32", progress=False)


def test_a_dry_run_refuses_what_the_run_would_refuse(corpus, tmp_path, monkeypatch, capsys):
    import mpqbench.cli.run_cmd as run_cmd

    path = suite_file(tmp_path, corpus, "auto", "auto")
    bf16 = load_suite(path, auto_precision="bf16")
    folder = tmp_path / "res" / "auto" / "records"
    folder.mkdir(parents=True)
    (folder / f"{bf16.cells[0].key}.json").write_text("{}")
    for resolved, code in (("bf16", 0), ("fp32", 2)):
        monkeypatch.setattr(run_cmd, "resolve_precision", lambda p, d, r=resolved: r)
        assert main(["run", str(path), "--dry-run", "--results", str(tmp_path / "res")]) == code
        err = capsys.readouterr().err
        assert ("--name auto-fp32" in err) is (code == 2)
