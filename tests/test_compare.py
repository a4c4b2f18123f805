"""mpqbench compare: passes on identical records, fails on degraded ones and says why."""

from __future__ import annotations

import copy
import shutil

import pytest

from mpqbench.bench.compare import Tolerances, compare_records
from mpqbench.cli import main
from record_factory import add_errors, degrade_record, make_cell, make_reference, write_records


@pytest.fixture(scope="module")
def base_records():
    ref = make_reference()
    return [
        ref,
        make_cell(ref, method="uniform", target_bits=4, avg_bits=4, cr=6.0,
                  stages=[("qat", "qat", 10.0)]),
        make_cell(ref, method="one_stage", target_bits=3, avg_bits=3, cr=8.0,
                  stages=[("supernet", "qat", 20.0), ("pass2", "qat", 4.0)]),
    ]


def run_compare(tmp_path, base, new, *flags):
    shutil.rmtree(tmp_path / "base", ignore_errors=True)
    shutil.rmtree(tmp_path / "new", ignore_errors=True)
    write_records(tmp_path / "base" / "records", base)
    write_records(tmp_path / "new" / "records", new)
    return main(["compare", str(tmp_path / "base" / "records"), str(tmp_path / "new"), *flags])


def replace(records, index, record):
    out = copy.deepcopy(records)
    out[index] = record
    return out


def test_identical_records_pass(tmp_path, capsys, base_records):
    assert run_compare(tmp_path, base_records, copy.deepcopy(base_records)) == 0
    out = capsys.readouterr().out
    assert "3 matched cells, 0 only in BASE, 0 only in NEW; regressions: none -> OK" in out
    assert "REGRESSION" not in out and "changed" not in out
    assert "time tolerance 2x" in out and "CI machines are noisy" in out


def test_degraded_record_fails_and_says_what_changed(tmp_path, capsys, base_records):
    bad = degrade_record(base_records[2], 0.3)  # corrupt hypotheses: many new substitutions
    bad["compression_ratio"]["value"] = 7.0
    bad["compression_seconds"] *= 3
    assert run_compare(tmp_path, base_records, replace(base_records, 2, bad)) == 1
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("REGRESSION")]
    assert len(lines) == 4  # WER on two splits, CR, time
    assert all("tiny-ctc one_stage 3bit s0" in ln for ln in lines)
    wer = next(ln for ln in lines if "WER test-clean" in ln)
    assert "NEW significantly worse" in wer and "MAPSSWE" in wer
    assert any("CR 8.0000x -> 7.0000x (-12.50%" in ln for ln in lines)
    assert any("compression time 24.0 s -> 72.0 s (3.00x > 2x tolerance)" in ln for ln in lines)
    assert "regressions: cr 1, time 1, wer 2 -> FAIL" in out


@pytest.mark.parametrize("what", ["wer", "cr", "time"])
def test_each_criterion_alone_fails(tmp_path, capsys, base_records, what):
    bad = copy.deepcopy(base_records[1])
    if what == "wer":
        bad = degrade_record(bad, 0.3)
    elif what == "cr":
        bad["compression_ratio"]["value"] *= 0.99
    else:
        bad["compression_seconds"] = 25.0
    assert run_compare(tmp_path, base_records, replace(base_records, 1, bad)) == 1
    assert f"regressions: {what} " in capsys.readouterr().out


def test_tolerances_are_respected(tmp_path, base_records):
    slower = copy.deepcopy(base_records[1])
    slower["compression_seconds"] = 19.0  # 1.9x: inside the default 2.0x
    smaller = copy.deepcopy(base_records[2])
    smaller["compression_ratio"]["value"] = 8.0 * 0.97
    new = replace(replace(base_records, 1, slower), 2, smaller)
    assert run_compare(tmp_path, base_records, new) == 1  # the CR fall fails at 0 %
    assert run_compare(tmp_path, base_records, new, "--cr-tolerance", "0.05") == 0
    assert run_compare(tmp_path, base_records, new, "--cr-tolerance", "0.05",
                       "--time-tolerance", "1.5") == 1
    assert run_compare(tmp_path, base_records, new, "--cr-tolerance", "0.05",
                       "--time-tolerance", "1.5", "--time-floor", "10") == 0


def test_tiny_time_growth_under_the_floor_passes(base_records):
    fast = copy.deepcopy(base_records)
    for rec in fast[1:]:
        rec["compression_seconds"] = 0.2
    slow = copy.deepcopy(fast)
    for rec in slow[1:]:
        rec["compression_seconds"] = 0.9  # 4.5x, but only 0.7 s
    assert compare_records(fast, slow).ok
    assert not compare_records(fast, slow, Tolerances(time_floor_s=0.5)).ok


def test_a_non_significant_wer_change_passes_and_is_shown(tmp_path, capsys, base_records):
    new = replace(base_records, 1, add_errors(base_records[1], "test-clean", 1))
    assert run_compare(tmp_path, base_records, new) == 0
    out = capsys.readouterr().out
    assert "changed    tiny-ctc uniform 4bit s0" in out and "not significant" in out


def test_a_significant_improvement_passes(tmp_path, capsys, base_records):
    worse_base = replace(base_records, 1, degrade_record(base_records[1], 0.3))
    assert run_compare(tmp_path, worse_base, base_records) == 0
    assert "NEW significantly better" in capsys.readouterr().out


def test_missing_and_extra_cells(tmp_path, capsys, base_records):
    assert run_compare(tmp_path, base_records, base_records[:2]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION tiny-ctc one_stage 3bit s0" in out and "no record in NEW" in out
    assert "1 only in BASE" in out
    assert run_compare(tmp_path, base_records[:2], base_records) == 0
    out = capsys.readouterr().out
    assert "1 only in NEW" in out and "no record in BASE" in out


def test_unpairable_utterances_fail(base_records):
    other = copy.deepcopy(base_records)
    other[1]["splits"]["test-clean"]["utterances"][0]["id"] = "renamed"
    result = compare_records(base_records, other)
    assert not result.ok
    assert [c.kind for c in result.regressions] == ["incomparable"]
    assert "cannot be paired" in result.regressions[0].message


def test_bad_inputs_are_one_line_errors(tmp_path, capsys, base_records):
    folder = write_records(tmp_path / "b", base_records)
    (folder / "zz_broken.json").write_text("{")
    assert main(["compare", str(folder), str(folder)]) == 2
    err = capsys.readouterr().err
    assert "zz_broken.json" in err and "corrupt" in err
    assert main(["compare", str(tmp_path / "nope"), str(folder)]) == 2
    assert "does not exist" in capsys.readouterr().err
    (folder / "zz_broken.json").unlink()
    assert main(["compare", str(folder), str(folder), "--time-tolerance", "0.5"]) == 2
    assert "--time-tolerance must be >= 1" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["compare", str(empty), str(folder)]) == 2
    assert "BASE holds no records" in capsys.readouterr().err


def test_cells_pair_across_a_new_null_config_field(base_records):
    new = copy.deepcopy(base_records)
    for rec in new:
        rec["config"]["new_option"] = None  # a field added later with a null default
        rec["config_hash"] = rec["config_hash"][::-1]
    result = compare_records(base_records, new)
    assert result.ok and len(result.matched) == 3 and not result.only_new
    assert "differ only in null or absent fields ['new_option']" in result.changes[0].message
    new[1]["config"]["new_option"] = 5  # a real setting: a different experiment
    result = compare_records(base_records, new)
    assert not result.ok and len(result.only_base) == 1 and len(result.only_new) == 1


def test_times_are_not_checked_across_devices(tmp_path, capsys, base_records):
    """A baseline from another machine (or thread count, or CPU kernel set) says nothing
    about this machine's wall clock: the time is printed, not failed; WER and CR still are."""
    slow = copy.deepcopy(base_records[1])
    slow["compression_seconds"] = 100.0  # 10x
    for stage in slow["stages"]:
        stage["device"] = "cpu: Other CPU (1 threads)"
    assert run_compare(tmp_path, base_records, replace(base_records, 1, slow)) == 0
    out = capsys.readouterr().out
    assert ("device differs (cpu: Test CPU (2 threads) -> cpu: Other CPU (1 threads)): "
            "compression time 10.0 s -> 100.0 s, not checked across devices") in out
    same_label = copy.deepcopy(base_records[1])
    same_label["compression_seconds"] = 100.0
    kernels = [copy.deepcopy(base_records), replace(base_records, 1, same_label)]
    for records, capability in zip(kernels, ("AVX512", "AVX2"), strict=True):
        records[1]["environment"]["device"]["cpu_capability"] = capability
    assert run_compare(tmp_path, *kernels) == 0
    assert "(2 threads), AVX512 -> cpu: Test CPU (2 threads), AVX2)" in capsys.readouterr().out
    kernels[1][1]["environment"]["device"]["cpu_capability"] = "AVX512"
    assert run_compare(tmp_path, *kernels) == 1  # same machine kind: 10x is a regression
    assert "regressions: time 1 -> FAIL" in capsys.readouterr().out
