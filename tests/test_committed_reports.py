"""Every committed results/<name>/report.md and table.csv is what ``mpqbench report`` writes
from the records beside it today.

Reports are derived files: a change to the report's code, or new records, leaves a
committed report stale unless it is regenerated (``mpqbench report SUITE --name NAME``), and
a stale report misleads its readers. Each folder's records and frontier files are copied
to a temporary results root and reported there, with the suite the folder was made from.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mpqbench.cli import main

RESULTS = Path(__file__).resolve().parent.parent / "results"
#: results folder -> the suite ``mpqbench report`` is given for it (README, "Results").
SUITE_OF = {
    "ablation": "ablation",
    "default": "default",
    "default-fp32": "default",
    "default-full": "default-full",
    "default-gpu": "default",
    "supernet-test": "supernet-test",
    "uniform-ptq": "uniform-ptq",
}
REPORTED = sorted(p.parent.name for p in RESULTS.glob("*/report.md"))


def test_every_committed_report_has_its_suite_here():
    assert sorted(SUITE_OF) == REPORTED


@pytest.mark.slow
@pytest.mark.parametrize("name", REPORTED)
def test_committed_report_is_what_report_writes_today(name, tmp_path, capsys):
    source = RESULTS / name
    target = tmp_path / name
    for part in ("records", "frontiers"):
        if (source / part).is_dir():
            shutil.copytree(source / part, target / part)
    assert main(["report", SUITE_OF[name], "--results", str(tmp_path), "--name", name]) == 0
    capsys.readouterr()
    for file in ("report.md", "table.csv"):
        committed = (source / file).read_text(encoding="utf-8")
        written = (target / file).read_text(encoding="utf-8")
        assert written == committed, (
            f"results/{name}/{file} is stale: regenerate it with "
            f"mpqbench report {SUITE_OF[name]} --name {name}"
        )
