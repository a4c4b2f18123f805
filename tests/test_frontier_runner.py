"""Frontier systems in suites: parsing, the runner's search loop, resume, the report.

The loop tests replace ``run_cell`` by an oracle that makes a record whose dev verdict is
a known function of the target (the runner's orchestration is what they test; the cells
themselves are tested elsewhere). One end-to-end test runs real tiny-ctc cells.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import mpqbench.bench.runner as runner
from mpqbench.bench.completeness import completeness_section, search_states
from mpqbench.bench.frontier import frontier_grid, max_frontier_cells
from mpqbench.bench.headline import headline
from mpqbench.bench.report import write_report
from mpqbench.bench.runner import frontier_path, record_path, run_suite
from mpqbench.bench.suite import load_suite
from mpqbench.bench.table import load_records, records_table
from mpqbench.cli import main

SUITE = """
[suite]
name = "front"
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
avg_bits = [8]

[[systems]]
method = "one_stage"
frontier = {{ low = 2, high = 8, resolution = 0.5 }}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.toml"
    path.write_text(text)
    return path


def test_frontier_system_parses_to_a_search_and_adds_dev_to_every_cell(corpus, tmp_path):
    suite = load_suite(str(write(tmp_path, SUITE.format(data=corpus))))
    assert [c.label for c in suite.cells] == ["fp32", "uniform"]
    (search,) = suite.frontiers
    assert search.label == "one_stage" and search.spec.low == 2 and search.spec.high == 8
    for cell in [*suite.cells, *search.grid_cells()]:
        assert cell.spec.eval_splits == ("dev", "test-clean")
    # every grid cell is paired with the suite's one reference
    ref = suite.references()[0].spec.config_hash()
    assert {c.spec.reference().config_hash() for c in search.grid_cells()} == {ref}
    assert [c.spec.target.avg_bits for c in search.grid_cells()] == list(
        frontier_grid(search.spec))
    assert len({c.key for c in search.grid_cells()}) == len(frontier_grid(search.spec))


def test_frontier_start_is_read_from_the_suite(corpus, tmp_path):
    text = SUITE.replace("resolution = 0.5 }}", 'resolution = 0.5, start = "middle" }}')
    (search,) = load_suite(str(write(tmp_path, text.format(data=corpus)))).frontiers
    assert search.spec.start == "middle"
    (search,) = load_suite(str(write(tmp_path, SUITE.format(data=corpus)))).frontiers
    assert search.spec.start == "ends"


BAD = {
    "both": ("frontier = {{ low = 2", "avg_bits = [4]\nfrontier = {{ low = 2",
             "exactly one of avg_bits"),
    "missing": (", resolution = 0.5 }}", " }}", "missing ['resolution']"),
    "unknown": ("resolution = 0.5 }}", "resolution = 0.5, step = 1 }}", "step"),
    "order": ("low = 2, high = 8", "low = 8, high = 2", "low must be < high"),
    "start": ("resolution = 0.5 }}", 'resolution = 0.5, start = "top" }}', "start must be"),
    "range": ("low = 2, high = 8", "low = 1, high = 8", "outside the method's reachable"),
    "not-table": ("frontier = {{ low = 2, high = 8, resolution = 0.5 }}", "frontier = 3",
                  "must be a table"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_frontier_is_refused_naming_the_field(corpus, tmp_path, case):
    old, new, expected = BAD[case]
    text = SUITE.replace(old, new).format(data=corpus)
    with pytest.raises(ValueError) as info:
        load_suite(str(write(tmp_path, text)))
    assert "systems[1]" in str(info.value) and expected in str(info.value)


def _fake_run_cell(threshold: float, calls: list[float], fail_after: int | None = None):
    """A ``run_cell`` whose record is lossless on dev iff its target >= ``threshold``."""

    def run_cell(spec, *, reference=None, **kwargs) -> dict[str, Any]:
        bits = spec.target.avg_bits if spec.target else 32.0
        if spec.target is not None:
            if fail_after is not None and len(calls) == fail_after:
                raise KeyboardInterrupt("killed")
            calls.append(bits)
        ok = bits >= threshold
        split = {"wer": 0.1 if ok else 0.5, "utterances": []}
        record = {"config": spec.to_dict(), "config_hash": spec.config_hash(),
                  "avg_bits": bits, "compression_ratio": {"value": 32.0 / bits},
                  "splits": {name: split for name in spec.eval_splits},
                  "lossless": ok, "compression_seconds": 1.0, "export": None}
        if spec.target is not None:
            record["lossless_dev"] = ok
            record["significance"] = {name: {"mapsswe": {"p_value": 0.5 if ok else 0.001},
                                             "significantly_worse": not ok}
                                      for name in spec.eval_splits}
        return record

    return run_cell


@pytest.mark.parametrize("threshold", [2.0, 3.25, 5.5, 8.0, 9.0])
def test_runner_brackets_the_frontier_and_writes_its_summary(corpus, tmp_path, monkeypatch,
                                                            threshold):
    suite = load_suite(str(write(tmp_path, SUITE.format(data=corpus))))
    (search,) = suite.frontiers
    calls: list[float] = []
    monkeypatch.setattr(runner, "run_cell", _fake_run_cell(threshold, calls))
    results = tmp_path / "res"
    summary = run_suite(suite, results=results, progress=False)
    assert len(calls) <= max_frontier_cells(search.spec) + 1  # + the fixed uniform cell
    front = json.loads(frontier_path(results, "front", search).read_text())
    grid = frontier_grid(search.spec)
    if threshold > 8:
        assert front["status"] == "high_lossy" and front["chosen_cell"] is None
    elif threshold <= 2:
        assert front["status"] == "low_lossless" and front["lossless_target"] == 2
    else:
        assert front["status"] == "bracketed"
        lossless = min(g for g in grid if g >= threshold)
        assert front["lossless_target"] == lossless
        assert front["lossy_target"] == max(g for g in grid if g < threshold)
        assert front["chosen_cell"] == search.cell(lossless).key
    assert [s["target"] for s in front["steps"]] == calls[1:]
    assert all(s["lossless_dev"] == (s["target"] >= threshold) for s in front["steps"])
    assert summary.frontiers and front["reason"] in summary.frontiers[0]
    for step in front["steps"]:  # every cell the search ran is an ordinary record
        record = json.loads(record_path(results, "front", search.cell(step["target"]))
                            .read_text())
        assert record["suite"]["frontier"] == search.key
    # a rerun runs nothing and writes the same summary
    again: list[float] = []
    monkeypatch.setattr(runner, "run_cell", _fake_run_cell(threshold, again))
    rerun = run_suite(suite, results=results, progress=False)
    assert again == [] and not rerun.ran
    assert json.loads(frontier_path(results, "front", search).read_text()) == front


def test_an_interrupted_search_continues_where_it_stopped(corpus, tmp_path, monkeypatch):
    suite = load_suite(str(write(tmp_path, SUITE.format(data=corpus))))
    results = tmp_path / "res"
    first: list[float] = []
    monkeypatch.setattr(runner, "run_cell", _fake_run_cell(4.5, first, fail_after=3))
    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, results=results, progress=False)
    assert first == [8, 8, 2]  # uniform 8, then the search's high and low
    rest: list[float] = []
    monkeypatch.setattr(runner, "run_cell", _fake_run_cell(4.5, rest))
    run_suite(suite, results=results, progress=False)
    full: list[float] = []
    monkeypatch.setattr(runner, "run_cell", _fake_run_cell(4.5, full))
    run_suite(suite, results=tmp_path / "fresh", progress=False)
    assert first + rest == full  # same cells as one uninterrupted run, none twice
    (search,) = suite.frontiers
    front = json.loads(frontier_path(results, "front", search).read_text())
    assert front["lossless_target"] == 4.5 and front["lossy_target"] == 4.0


def test_dry_run_lists_the_frontier_searches(corpus, tmp_path, capsys):
    path = write(tmp_path, SUITE.format(data=corpus))
    assert main(["run", str(path), "--dry-run", "--results", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "frontier searches" in out and "<= 6 of 13 grid targets, 0 with records" in out


def test_real_cells_frontier_and_report(corpus, tmp_path):
    """tiny-ctc end to end: dev verdicts drive the search, the report shows it, and a
    dev-lossy frontier cell is not a headline candidate."""
    text = SUITE.format(data=corpus).replace(
        'method = "one_stage"\nfrontier = { low = 2, high = 8, resolution = 0.5 }',
        'method = "uniform"\nlabel = "uniform-frontier"\n'
        'frontier = { low = 2, high = 8, resolution = 3 }')
    suite = load_suite(str(write(tmp_path, text)))
    results = tmp_path / "res"
    run_suite(suite, results=results, progress=False)
    (search,) = suite.frontiers
    front = json.loads(frontier_path(results, "front", search).read_text())
    assert front["status"] in ("bracketed", "high_lossy", "low_lossless")
    records = load_records(results / "front" / "records")
    assert len(records) == 2 + len(front["steps"])
    for step in front["steps"]:
        rec = next(r for r in records if Path(r["_file"]).stem == step["cell"])
        dev = rec["significance"]["dev"]
        assert step["lossless_dev"] == (not dev["significantly_worse"]) == rec["lossless_dev"]
        assert rec["lossless"] == (not rec["significance"]["test-clean"]["significantly_worse"])
    table = records_table(records)
    (h,) = headline(table)
    candidates = table[(table.method == "uniform") & table.lossless
                       & ~((table.frontier.notna()) & (table.lossless_dev == False))]  # noqa: E712
    expected = float(candidates.cr.max()) if len(candidates) else None
    assert h.lossless_cr["uniform"] == expected
    files = write_report(results / "front")
    report = files.report.read_text()
    assert "lossless frontier (decided on dev)" in report
    assert front["reason"] in report
    assert "## Completeness" not in report  # no suite given: nothing to check against
    suite_file = str(tmp_path / "suite.toml")
    assert main(["report", suite_file, "--results", str(results)]) == 0
    report = files.report.read_text()
    assert ("Suite front (`suite.toml`) declares 2 fixed cells and 1 frontier search. "
            "Every one of them has run.") in report


def test_the_report_says_which_searches_and_cells_have_not_run(corpus, tmp_path,
                                                              monkeypatch):
    text = SUITE.replace("seeds = [0]", "seeds = [0, 1]") + (
        '\n[[systems]]\nmethod = "uniform"\nlabel = "uniform-f"\n'
        'frontier = {{ low = 2, high = 8, resolution = 2 }}\n')
    suite = load_suite(str(write(tmp_path, text.format(data=corpus))))
    assert [(s.label, s.template.budget.seed) for s in suite.frontiers] == [
        ("one_stage", 0), ("one_stage", 1), ("uniform-f", 0), ("uniform-f", 1)]
    results = tmp_path / "res"
    calls: list[float] = []
    # shard 0/4 takes search 0 (one_stage s0) and fixed cell 0; the kill lands in
    # shard 2/4's search (uniform-f s0) after its first cell
    monkeypatch.setattr(runner, "run_cell", _fake_run_cell(4.5, calls))
    run_suite(suite, results=results, shard=(0, 4), progress=False)
    monkeypatch.setattr(runner, "run_cell", _fake_run_cell(4.5, calls, len(calls) + 1))
    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, results=results, shard=(2, 4), progress=False)

    def loaded(what: str) -> list[dict[str, Any]]:  # the oracle's records are minimal
        return [json.loads(p.read_text()) for p in sorted((results / "front" / what)
                                                          .glob("*.json"))]

    def section() -> str:
        return "\n".join(completeness_section(suite, loaded("records"), loaded("frontiers")))

    states = search_states(suite, loaded("records"), loaded("frontiers"))
    assert [s.key for s in states["finished"]] == [suite.frontiers[0].key]
    assert [s.key for s in states["started"]] == [suite.frontiers[2].key]
    assert [s.key for s in states["not started"]] == [suite.frontiers[1].key,
                                                     suite.frontiers[3].key]
    text = section()
    assert "## Completeness: a partial run" in text
    assert ("**This is a partial run**: 1 of 4 searches have finished, 1 started without "
            "finishing, 2 have not started; 2 of 3 fixed cells have a record.") in text
    assert "- Finished: one_stage (seed 0)." in text
    assert "- Started: uniform-f (seed 0)." in text
    assert "- Not started: one_stage (seed 1); uniform-f (seed 1)." in text
    # 1 fixed cell + uniform-f s0's 4 less the 1 it ran + one_stage s1's 6 + uniform-f s1's
    # 4; the oracle's records store no timings, so no hours
    assert "- Still to run: at most 14 cells.\n" in text + "\n"
    # the untouched 32-bit reference is one cell for both seeds; seed 1's uniform 8 is
    # the fixed cell of shard 1/4
    missing = [c.key for c in suite.cells if c.spec.budget.seed == 1]
    assert len(suite.cells) == 3 and len(missing) == 1
    assert "- Fixed cells without a record: " + ", ".join(f"`{k}`" for k in missing) in text
    # the rest of the suite: the report then says it is whole
    monkeypatch.setattr(runner, "run_cell", _fake_run_cell(4.5, calls))
    run_suite(suite, results=results, progress=False)
    assert ("declares 3 fixed cells and 4 frontier searches. Every one of them has run."
            in section())


def test_the_report_bounds_what_is_left_at_the_recorded_pace(corpus, tmp_path):
    from mpqbench.bench.completeness import remaining_estimate

    suite = load_suite(str(write(tmp_path, SUITE.format(data=corpus))))
    (search,) = suite.frontiers
    ref, uniform = suite.cells
    assert max_frontier_cells(search.spec) == 6

    def record(cell, label: str, train_s: float, eval_s: tuple[float, ...]) -> dict:
        return {"config_hash": cell.spec.config_hash(),
                "suite": {"name": suite.name, "label": label},
                "stages": [{"name": "qat", "seconds": train_s, "device": "cpu: Test"}],
                "splits": {f"s{k}": {"timing": {"wall_s": w}} for k, w in enumerate(eval_s)}}

    fixed = [record(ref, "fp32", 100.0, (20.0,)), record(uniform, "uniform", 50.0, (6.0, 4.0))]
    one = record(search.grid_cells()[3], "one_stage", 200.0, (15.0, 5.0))
    # one cell of the search has run: 5 more at most, at its own 220 s
    assert remaining_estimate(suite, [*fixed, one], [search], []) == (5, 1100.0, ["cpu: Test"])
    # none has run: 6 at the median of every compressed cell (uniform's 60 s alone)
    assert remaining_estimate(suite, fixed, [search], []) == (6, 360.0, ["cpu: Test"])
    # a missing 32-bit reference with no 32-bit record to price it: cells, no time
    assert remaining_estimate(suite, fixed[1:], [search], [ref]) == (7, None, [])
    text = "\n".join(completeness_section(suite, [*fixed, one], []))
    assert "- Still to run: at most 5 cells, about 0.3 h at most" in text
    assert "on cpu: Test (training and evaluation" in text
