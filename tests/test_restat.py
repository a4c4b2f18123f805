"""``mpqbench restat``: statistics recomputed from stored alignments, measurements kept."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mpqbench.bench.restat import restat_records
from mpqbench.bench.table import load_records, records_table
from mpqbench.cli import main

SMOKE = Path(__file__).resolve().parent.parent / "results" / "smoke" / "records"


@pytest.fixture()
def old_records(tmp_path):
    """The committed smoke records as written before log10_p and alignment existed."""
    out = tmp_path / "records"
    shutil.copytree(SMOKE, out)
    for file in out.glob("*.json"):
        record = json.loads(file.read_text())
        record.pop("alignment", None)
        record.pop("restat", None)
        for split in record["splits"].values():
            split.pop("alignment", None)
        for sig in (record.get("significance") or {}).values():
            sig["mapsswe"].pop("log10_p", None)
        file.write_text(json.dumps(record))
    return out


def test_restat_adds_log10_p_and_keeps_measurements_and_decisions(old_records):
    before = {f.name: json.loads(f.read_text()) for f in old_records.glob("*.json")}
    victim = next(n for n, r in before.items() if r.get("significance"))
    record = before[victim]
    split = next(iter(record["significance"]))
    record["significance"][split]["mapsswe"]["p_value"] = 0.0  # as underflowed records had
    (old_records / victim).write_text(json.dumps(record))

    changes = restat_records(old_records)
    assert len(changes) == sum(1 for r in before.values() if r["config"]["method"] != "fp32")
    assert not any(c.decision_changed for c in changes)
    assert any(split in line for c in changes if c.file.name == victim for line in c.lines)
    for name, old in before.items():
        new = json.loads((old_records / name).read_text())
        assert new["alignment"] == "unit"
        assert all(s["alignment"] == "unit" for s in new["splits"].values())
        for s in new["splits"].values():
            s.pop("alignment")
        assert new["splits"] == old["splits"]  # the measurements are untouched
        assert new["config_hash"] == old["config_hash"]
        assert new["lossless"] == old["lossless"]
        for split_name, sig in (new.get("significance") or {}).items():
            test = sig["mapsswe"]
            assert test["p_value"] > 0.0 and test["log10_p"] <= 0.0
            assert sig["significantly_worse"] == old["significance"][split_name][
                "significantly_worse"]
    table = records_table(load_records(old_records))
    assert (table.dropna(subset=["p_value"]).p_value > 0).all()
    assert table.log10_p.notna().sum() == table.p_value.notna().sum()


def test_restat_dry_run_writes_nothing_and_cli_reports(old_records, capsys):
    before = {f.name: f.read_bytes() for f in old_records.glob("*.json")}
    assert main(["restat", str(old_records), "--dry-run"]) == 0
    assert "would rewrite" in capsys.readouterr().out
    assert {f.name: f.read_bytes() for f in old_records.glob("*.json")} == before
    assert main(["restat", str(old_records)]) == 0
    assert "0 changed a significance decision" in capsys.readouterr().out


def test_restat_needs_the_reference(old_records):
    for file in old_records.glob("*__fp32__*.json"):
        file.unlink()
    with pytest.raises(ValueError, match="32-bit reference"):
        restat_records(old_records)
