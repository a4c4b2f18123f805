"""The search-trajectory plot: drawn from the records' info, only where a trajectory exists."""

from __future__ import annotations

from matplotlib.image import imread

from mpqbench.bench.table import load_records, records_table
from mpqbench.bench.trajectory_plot import trajectories
from mpqbench.cli import main
from record_factory import write_records
from test_report import suite_records


def _trajectory(target: float, hard: int | None) -> dict:
    steps = list(range(0, 40, 4))
    return {"step": steps, "tau": [1.0 - 0.02 * s for s in steps],
            "expected_avg_bits": [target + 0.5 - 0.01 * s for s in steps],
            "logit_spread_max": [0.1 * s for s in steps],
            "logit_spread_mean": [0.05 * s for s in steps], "hard_from_step": hard}


def _records() -> list[dict]:
    records = suite_records()
    ones = [r for r in records if r["config"]["method"] == "one_stage"]
    assert len(ones) == 2
    for r, hard in zip(ones, (20, None), strict=True):
        target = r["config"]["target"]["avg_bits"]
        r["info"] = {**(r.get("info") or {}), "target_avg_bits": target,
                     "trajectory": _trajectory(target, hard)}
    return records


def test_trajectories_are_read_from_the_one_stage_records_only(tmp_path):
    write_records(tmp_path / "s" / "records", _records())
    records = load_records(tmp_path / "s" / "records")
    found = trajectories(records, records_table(records), "tiny-ctc")
    assert [(name.split()[0], target) for name, target, _ in found] == [
        ("one_stage", 4.0), ("one_stage", 3.0)]
    assert [t["hard_from_step"] for _, _, t in found] == [20, None]


def test_report_draws_the_trajectory_plot_only_when_a_record_has_one(tmp_path):
    write_records(tmp_path / "with" / "records", _records())
    assert main(["report", "with", "--results", str(tmp_path)]) == 0
    plot = tmp_path / "with" / "plots" / "search_trajectory_tiny-ctc.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width = imread(plot).shape[:2]
    assert height > 300 and width > 800
    assert "(plots/search_trajectory_tiny-ctc.png)" in (tmp_path / "with" / "report.md").read_text()
    write_records(tmp_path / "without" / "records", suite_records())
    assert main(["report", "without", "--results", str(tmp_path)]) == 0
    assert not (tmp_path / "without" / "plots" / "search_trajectory_tiny-ctc.png").exists()
