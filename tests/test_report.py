"""Records table, headline ratios, report.md / table.csv / PNG plots (mpqbench report)."""

from __future__ import annotations

import math
import statistics

import pandas as pd
import pytest
from matplotlib.image import imread
from scipy.stats import norm

from mpqbench.bench.headline import cr_sentence, headline, time_sentence
from mpqbench.bench.report import render_report, write_report
from mpqbench.bench.table import TABLE_COLUMNS, load_records, record_cr, records_table
from mpqbench.cli import main
from record_factory import (
    FIXTURES,
    make_cell,
    make_reference,
    real_records,
    write_records,
)

LAYERS = list(real_records()[1]["allocation"]["layers"])


def mixed(low: int, high: int, share_low: int) -> dict[str, int]:
    """The first ``share_low`` fixture layers at ``low`` bits, the rest at ``high``."""
    return {name: (low if k < share_low else high) for k, name in enumerate(LAYERS)}


def suite_records() -> list[dict]:
    """A hand-made suite: 32-bit, uniform 8/4/2, one_stage 4/3, two_stage 4/3, optuna 4."""
    ref = make_reference()
    cell = lambda **kw: make_cell(ref, **kw)  # noqa: E731
    return [
        ref,
        cell(method="uniform", target_bits=8, avg_bits=8, cr=3.5, stages=[("qat", "qat", 9)]),
        cell(method="uniform", target_bits=4, avg_bits=4, cr=6.0, stages=[("qat", "qat", 10)]),
        cell(method="uniform", target_bits=2, avg_bits=2, cr=10.0, degrade=0.3,
             stages=[("qat", "qat", 11)]),
        cell(method="one_stage", target_bits=4, avg_bits=4, cr=6.2, allocation=mixed(2, 8, 4),
             stages=[("supernet", "qat", 20), ("pass2", "qat", 5)]),
        cell(method="one_stage", target_bits=3, avg_bits=3, cr=8.0, allocation=mixed(2, 4, 6),
             stages=[("supernet", "qat", 25), ("pass2", "qat", 5)]),
        cell(method="two_stage", target_bits=4, avg_bits=4, cr=6.1, allocation=mixed(4, 4, 0),
             stages=[("precision", "search", 30), ("qat", "qat", 15)]),
        cell(method="two_stage", target_bits=3, avg_bits=3, cr=7.9, allocation=mixed(2, 4, 6),
             degrade={"test-clean": 0.0, "test-other": 0.3},
             stages=[("precision", "search", 35), ("qat", "qat", 20)]),
        cell(method="optuna", target_bits=4, avg_bits=4, cr=6.0, degrade=0.3,
             allocation=mixed(2, 8, 3), stages=[("search", "search", 8), ("qat", "qat", 10)]),
    ]


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    write_records(results / "synthetic" / "records", suite_records())
    assert main(["report", "synthetic", "--results", str(results)]) == 0
    return results / "synthetic"


def test_table_one_row_per_cell_and_split(report_dir):
    table = records_table(load_records(report_dir))
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert len(table) == 9 * 2
    assert (table.wer == table.errors / table.n).all()
    lossy = table[~table.lossless].drop_duplicates("config_hash")
    assert sorted(zip(lossy.method, lossy.target, strict=True)) == [
        ("optuna", "4bit"), ("two_stage", "3bit"), ("uniform", "2bit")]
    one = table[(table.method == "one_stage") & (table.target == "4bit")].iloc[0]
    assert (one.search_seconds, one.qat_seconds, one.compression_seconds) == (0, 25, 25)
    two = table[(table.method == "two_stage") & (table.target == "4bit")].iloc[0]
    assert (two.search_seconds, two.qat_seconds) == (30, 15)
    csv = pd.read_csv(report_dir / "table.csv")
    assert len(csv) == 18 and "record_file" not in csv and "record" in csv


def test_report_sections_and_headline_numbers(report_dir):
    text = (report_dir / "report.md").read_text()
    for heading in ("## Setup", "## Headline", "## Summary table",
                    "## Per-layer allocation", "## Plots"):
        assert heading in text
    assert "| uniform | 6.00x | 2 of 3 |" in text
    assert "| one_stage | 8.00x | 2 of 2 |" in text
    assert "| two_stage | 6.10x | 1 of 2 |" in text
    assert "| optuna | none | 0 of 1 |" in text
    # 8.0 / 6.0 and 8.0 / 6.1 from the lossless CRs; (45 + 55) / (25 + 30) for time.
    assert "one_stage / uniform lossless CR = 8.00x / 6.00x = **1.33x** (paper: up to 1.7x)" \
        in text
    assert "below the paper's 1.7x" in text
    assert "one_stage / two_stage lossless CR = 8.00x / 6.10x = **1.31x**" in text
    assert "100.0 s / 55.0 s = **1.82x** (per matched pair 1.80x-1.83x)" in text
    assert "lies within the paper's range" in text
    assert "Test CPU" in text and "train_steps=1" in text
    assert "60 utterances, 600 reference words" in text
    # Paper-form summary rows: the lossy two_stage 3-bit system is worse on test-other only.
    row = next(ln for ln in text.splitlines() if ln.startswith("| two_stage | 3bit |"))
    assert "test-clean: no (p=" in row and "test-other: **yes** (p=" in row
    assert row.rstrip().endswith("| no | 55.0 |")
    assert "fewest bits (2) in 6 layers, most (4) in 6" in text
    assert "enc0.q" in text and "enc1.fc2" in text
    for plot in ("wer_vs_cr_tiny-ctc.png", "bit_allocation_tiny-ctc.png",
                 "compression_time_tiny-ctc.png"):
        assert f"(plots/{plot})" in text


def test_plots_are_real_pngs(report_dir):
    plots = sorted((report_dir / "plots").glob("*.png"))
    assert [p.name for p in plots] == ["bit_allocation_tiny-ctc.png",
                                       "compression_time_tiny-ctc.png", "wer_vs_cr_tiny-ctc.png"]
    for plot in plots:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        height, width = imread(plot).shape[:2]
        assert height > 300 and width > 500
    assert not list((report_dir / "plots").glob("*.tmp"))


def test_report_is_deterministic_and_drops_stale_plots(report_dir, tmp_path):
    before = (report_dir / "report.md").read_text()
    stale = report_dir / "plots" / "wer_vs_cr_gone-model.png"
    stale.write_bytes(b"old")
    unrelated = report_dir / "plots" / "notes.png"
    unrelated.write_bytes(b"mine")
    write_report(report_dir)
    assert (report_dir / "report.md").read_text() == before
    assert not stale.exists() and unrelated.exists()
    unrelated.unlink()


def test_lossless_cr_per_label_when_labels_differ(tmp_path):
    ref = make_reference()
    records = [
        ref,
        make_cell(ref, method="two_stage", label="two_stage-kl", target_bits=4, avg_bits=4,
                  cr=6.1),
        make_cell(ref, method="two_stage", label="two_stage-hessian", target_bits=3,
                  avg_bits=3, cr=7.9, degrade=0.3),
    ]
    write_records(tmp_path / "labels" / "records", records)
    text = write_report(tmp_path / "labels").report.read_text()
    assert "| two_stage | 6.10x | 1 of 2 |" in text
    assert "By system label: two_stage-hessian none, two_stage-kl 6.10x." in text


def _headline(records):
    (h,) = headline(records_table(records))
    return h


def test_headline_undefined_without_a_lossless_uniform_system():
    ref = make_reference()
    h = _headline([
        ref,
        make_cell(ref, method="uniform", target_bits=2, avg_bits=2, cr=10.0, degrade=0.3),
        make_cell(ref, method="one_stage", target_bits=3, avg_bits=3, cr=8.0),
    ])
    assert h.lossless_cr == {"uniform": None, "one_stage": 8.0}
    assert h.cr_vs_uniform.value is None
    text = cr_sentence(h.cr_vs_uniform, "uniform", 1.7)
    assert "undefined, because uniform has no lossless system" in text
    assert "undefined, because no two_stage cells in the records" in cr_sentence(
        h.cr_vs_two_stage, "two_stage", 1.9)
    assert "undefined" in time_sentence(h.time_ratio, h.time_pairs)


def test_headline_says_plainly_when_one_stage_loses():
    ref = make_reference()
    h = _headline([
        ref,
        make_cell(ref, method="uniform", target_bits=4, avg_bits=4, cr=6.0),
        make_cell(ref, method="one_stage", target_bits=4, avg_bits=4, cr=6.2, degrade=0.3,
                  stages=[("supernet", "qat", 50)]),
        make_cell(ref, method="one_stage", target_bits=6, avg_bits=6, cr=4.5,
                  stages=[("supernet", "qat", 50)]),
        make_cell(ref, method="two_stage", target_bits=4, avg_bits=4, cr=6.1,
                  stages=[("precision", "search", 10), ("qat", "qat", 30)]),
    ])
    assert h.cr_vs_uniform.value == pytest.approx(4.5 / 6.0)
    text = cr_sentence(h.cr_vs_uniform, "uniform", 1.7)
    assert "**0.75x**" in text and "one_stage loses here" in text
    assert "opposite of the paper's finding" in text
    # Only the 4-bit targets match: 40 s two_stage / 50 s one_stage.
    assert [(p.target, p.ratio) for p in h.time_pairs] == [("4bit", 0.8)]
    assert "one_stage was slower here" in time_sentence(h.time_ratio, h.time_pairs)


def test_headline_time_pairs_need_the_same_device():
    ref = make_reference()
    h = _headline([
        ref,
        make_cell(ref, method="one_stage", target_bits=4, avg_bits=4, cr=6.2,
                  device="cuda: GPU A"),
        make_cell(ref, method="two_stage", target_bits=4, avg_bits=4, cr=6.1, device="cpu: B"),
    ])
    assert h.time_pairs == [] and h.time_ratio.value is None
    assert "same target, seed, device and candidate bit-widths" in h.time_ratio.reason
    assert h.unmatched_time == ["two_stage 4bit seed 0"]


def test_headline_time_pairs_need_the_same_candidate_set():
    """A one_stage system over {2,3,4,6,8} is timed against the two_stage system over the same
    set only, not against a {2,4,8} one."""
    ref = make_reference()
    cells = [
        make_cell(ref, method="one_stage", target_bits=4, avg_bits=4, cr=6.2,
                  stages=[("supernet", "qat", 50)]),
        make_cell(ref, method="one_stage", label="one_stage-c5", target_bits=4, avg_bits=4,
                  cr=6.2, stages=[("supernet", "qat", 60)]),
        make_cell(ref, method="two_stage", target_bits=4, avg_bits=4, cr=6.1,
                  stages=[("precision", "search", 70), ("qat", "qat", 30)]),
        make_cell(ref, method="two_stage", label="two_stage-c5", target_bits=4, avg_bits=4,
                  cr=6.1, stages=[("precision", "search", 90), ("qat", "qat", 30)]),
    ]
    for cell, cands in zip(cells, ([2, 4, 8], [2, 3, 4, 6, 8]) * 2, strict=True):
        cell["method_config"] = {"candidates": cands}
    h = _headline([ref, *cells])
    assert [(p.two_label, p.one_label, p.ratio) for p in h.time_pairs] == [
        ("two_stage", "one_stage", 2.0), ("two_stage-c5", "one_stage-c5", 2.0)]


def test_corrupt_record_is_named(tmp_path, capsys):
    folder = write_records(tmp_path / "bad" / "records", [make_reference()])
    (folder / "broken.json").write_text('{"config": ')
    assert main(["report", "bad", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "broken.json" in err and "not valid JSON" in err


def test_record_missing_a_field_is_named(tmp_path):
    rec = make_reference()
    del rec["splits"]
    folder = write_records(tmp_path / "records", [rec])
    with pytest.raises(ValueError, match=r"tiny-ctc__fp32.*missing field 'splits'"):
        load_records(folder)


def test_totals_that_disagree_with_rows_are_refused(tmp_path):
    rec = make_reference()
    rec["splits"]["test-clean"]["totals"]["s"] += 1
    with pytest.raises(ValueError, match="disagrees with the per-utterance rows"):
        records_table([rec])


def test_no_records_is_an_error(tmp_path, capsys):
    (tmp_path / "empty" / "records").mkdir(parents=True)
    assert main(["report", "empty", "--results", str(tmp_path)]) == 2
    assert "no records in" in capsys.readouterr().err


def test_real_fixture_records_and_factory_share_one_layout():
    fp32, uniform = real_records()
    table = records_table(load_records(FIXTURES))
    assert len(table) == 4  # two cells x two splits
    for rec in (fp32, uniform):
        for split, data in rec["splits"].items():
            row = table[(table.config_hash == rec["config_hash"]) & (table.split == split)]
            assert row.wer.item() == pytest.approx(data["wer"])
    made = make_cell(make_reference(), method="one_stage", target_bits=3, avg_bits=3, cr=8.0)
    assert set(made) == set(uniform)
    assert set(made["splits"]["test-clean"]) == set(uniform["splits"]["test-clean"])
    assert set(made["splits"]["test-clean"]["utterances"][0]) == set(
        uniform["splits"]["test-clean"]["utterances"][0])
    assert set(made["significance"]["test-clean"]) == set(uniform["significance"]["test-clean"])
    assert set(made["stages"][0]) == set(uniform["stages"][0])


def test_report_reads_a_suite_file_name(tmp_path):
    suite = tmp_path / "mine.toml"
    suite.write_text('[suite]\nname = "synthetic"\n')
    write_records(tmp_path / "r" / "synthetic" / "records", suite_records()[:2])
    assert main(["report", str(suite), "--results", str(tmp_path / "r")]) == 0
    text = (tmp_path / "r" / "synthetic" / "report.md").read_text()
    assert text.startswith("# Benchmark report: synthetic")
    assert (tmp_path / "r" / "synthetic" / "plots" / "wer_vs_cr_tiny-ctc.png").exists()
    # Only uniform: the mixed-precision heatmap is skipped, the other two plots exist.
    assert not (tmp_path / "r" / "synthetic" / "plots" / "bit_allocation_tiny-ctc.png").exists()


@pytest.mark.parametrize(("wers", "scale", "label"), [
    ([4.2, 6.6, 17.5], "linear", "WER (%)"),
    ([4.2, 6.6, 926.0], "log", "WER (%, log scale)"),
    ([0.0, 6.6, 926.0], "symlog", "WER (%, log scale)"),
    ([0.0, 0.0], "linear", "WER (%)"),
])
def test_wer_axis_goes_logarithmic_only_for_a_wide_spread(wers, scale, label):
    from matplotlib.figure import Figure

    from mpqbench.bench.plots import _wer_axis

    ax = Figure().subplots()
    assert _wer_axis(ax, wers) == label
    assert ax.get_yscale() == scale


def test_cr_rule_picks_the_named_figure_and_old_records_fall_back(tmp_path):
    ref = make_reference()
    whole = make_cell(ref, method="uniform", target_bits=4, avg_bits=4, cr=6.6)
    whole["config"]["groups"] = ["blocks", "embeddings"]
    whole["compression_ratios"] = {"cr_paper": 6.6, "cr_blocks_only": 1.63}
    old = make_cell(ref, method="uniform", target_bits=8, avg_bits=8, cr=1.49)
    old["config"]["groups"] = ["blocks"]
    old.pop("compression_ratios", None)
    assert record_cr(whole) == 6.6 and record_cr(whole, "cr_blocks_only") == 1.63
    # A blocks-only record made before the field existed: both rules are its one figure.
    assert record_cr(old, "cr_paper") == record_cr(old, "cr_blocks_only") == 1.49
    older = dict(old, config=dict(old["config"], groups=["blocks", "embeddings"]))
    with pytest.raises(ValueError, match="cr_blocks_only"):
        record_cr(older, "cr_blocks_only")
    with pytest.raises(ValueError, match="rules are"):
        record_cr(whole, "cr_whatever")
    table = records_table([ref, whole], cr_rule="cr_blocks_only")
    row = table[table.method == "uniform"].iloc[0]
    assert row.cr == 1.63 and row.cr_rule == "cr_blocks_only"
    assert row.groups == "blocks+embeddings"
    results = tmp_path / "r"
    write_records(results / "rules" / "records", [ref, whole])
    assert main(["report", "rules", "--results", str(results), "--cr-rule",
                 "cr_blocks_only"]) == 0
    text = (results / "rules" / "report.md").read_text()
    assert "rule cr_blocks_only" in text and "blocks, embeddings" not in text
    assert "Quantized layer groups: blocks+embeddings" in text


def _independent_power_pts(split: dict) -> tuple[int, int, float]:
    """(words, utterances, detectable increase in WER points), from the utterance rows with
    the statistics module and scipy quantiles (not mpqbench's power code)."""
    counts = [u["s"] + u["d"] + u["i"] for u in split["utterances"]]
    words, n = sum(u["n"] for u in split["utterances"]), len(counts)
    sigma_d = math.sqrt(2 * statistics.variance(counts))
    delta = (norm.ppf(0.975) + norm.ppf(0.8)) * sigma_d / math.sqrt(n)
    return words, n, 100 * delta * n / words


def test_report_states_the_power_of_each_split(report_dir):
    text = (report_dir / "report.md").read_text()
    ref = make_reference()  # seeded: the suite's 32-bit record
    assert "Power of the lossless verdicts" in text
    for name, split in ref["splits"].items():
        words, n, pts = _independent_power_pts(split)
        assert 0.5 < pts < 20
        line = next(ln for ln in text.splitlines() if ln.startswith(f"- Power ({name},"))
        assert line.startswith(f"- Power ({name}, {words:,} words, {n} utterance segments): "
                               f"MAPSSWE at alpha 0.05 detects a WER increase of >= "
                               f"{pts:.2f} points (80% power; +")
        assert f"relative to the 32-bit WER of {100 * split['wer']:.2f}%)" in line


def _render(folder, records):
    loaded = load_records(write_records(folder, records))
    return render_report(loaded, records_table(loaded), "t", {})


def test_power_line_says_why_it_cannot_be_computed(tmp_path):
    ref = make_reference()
    cell = make_cell(ref, method="uniform", target_bits=4, avg_bits=4, cr=6.0)
    for row in ref["splits"]["test-other"]["utterances"]:
        del row["ops"]
    for row in ref["splits"]["test-clean"]["utterances"]:  # an error-free 32-bit system
        row.update(ops="C" * row["n"], s=0, d=0, i=0)
    ref["splits"]["test-clean"]["totals"].update(s=0, d=0, i=0, errors=0, wer=0.0)
    text = _render(tmp_path / "records", [ref, cell])
    assert ("- Power (test-other): cannot be computed: the 32-bit record's per-utterance rows "
            "hold no alignment ops.") in text
    assert ("- Power (test-clean): cannot be computed: every one of the 60 utterances has 0 "
            "errors; with zero variance") in text


def test_power_lines_per_seed_and_without_a_reference(tmp_path):
    refs = [make_reference(), make_reference(seed=5)]
    refs[1]["config"]["budget"]["seed"] = 1
    refs[1]["config_hash"] = "seed1"
    cell = make_cell(refs[0], method="uniform", target_bits=4, avg_bits=4, cr=6.0)
    text = _render(tmp_path / "two", [*refs, cell])
    for seed, ref in enumerate(refs):
        words, n, pts = _independent_power_pts(ref["splits"]["test-clean"])
        assert (f"- Power (seed {seed}, test-clean, {words:,} words, {n} utterance segments): "
                f"MAPSSWE at alpha 0.05 detects a WER increase of >= {pts:.2f} points") in text
    text = _render(tmp_path / "none", [cell])
    assert "- Power: cannot be computed: no 32-bit record of this model." in text


def test_seed_spread_of_wer_and_of_frontiers(tmp_path):
    from pathlib import Path

    refs, cells = [], []
    for seed in (0, 1, 2):
        ref = make_reference(seed=0)
        ref["config"]["budget"]["seed"] = seed
        ref["config_hash"] = f"ref{seed}"
        refs.append(ref)
        cells.append(make_cell(ref, method="uniform", target_bits=4, avg_bits=4, cr=6.0,
                               seed=seed, degrade=0.05 * seed, rng_seed=seed + 1))
    cells.append(make_cell(refs[0], method="optuna", target_bits=4, avg_bits=4, cr=6.0))
    loaded = load_records(write_records(tmp_path / "records", [*refs, *cells]))
    table = records_table(loaded)
    uniform = [r for r in loaded if r["config"]["method"] == "uniform"]
    common = {"kind": "frontier", "model": uniform[0]["config"]["model"], "steps": [],
              "decision_split": "dev", "spec": {"low": 2, "high": 8, "resolution": 1},
              "max_cells": 5, "reason": "r", "lossy_cell": None}
    frontiers = [{**common, "label": "uniform", "seed": seed, "status": "bracketed",
                  "lossless_target": 4 + seed, "chosen_cell": Path(rec["_file"]).stem}
                 for seed, rec in enumerate(uniform)]
    frontiers.append({**common, "label": "optuna", "seed": 0, "status": "high_lossy",
                      "lossless_target": None, "chosen_cell": None})
    text = render_report(loaded, table, "t", {}, frontiers)
    assert "spread over seeds" in text
    for split in ("test-clean", "test-other"):
        wers = [100 * r["splits"][split]["wer"] for r in uniform]
        want = (f"{statistics.fmean(wers):.2f} ± {statistics.stdev(wers):.2f} "
                f"({min(wers):.2f}-{max(wers):.2f})")
        assert want in text
    assert "| uniform | 4bit | 0, 1, 2 |" in text
    spread = text[text.index("spread over seeds"):]
    assert "| optuna | 4bit |" not in spread  # one seed: no spread row
    assert "s0: 4 bits, 6.00x; s1: 5 bits, 6.00x; s2: 6 bits, 6.00x" in text
    assert "5.00 ± 1.00 (4.00-6.00)" in text
    single = render_report(loaded, table[table.seed == 0], "t", {})
    assert "spread over seeds" not in single


def test_ablation_section_compares_each_switch_with_its_base_and_uniform(tmp_path):
    from mpqbench.bench.stats import mapsswe

    ref = make_reference(n_utts=120)
    cell = lambda **kw: make_cell(ref, avg_bits=4, cr=6.0, target_bits=4, **kw)  # noqa: E731
    uniform = cell(method="uniform", degrade=0.05, rng_seed=3)
    base = cell(method="one_stage", degrade=0.4, rng_seed=4)
    better = cell(method="one_stage", label="one_stage+fix", degrade=0.05, rng_seed=5)
    lonely = cell(method="one_stage", label="other+fix", degrade=0.05, rng_seed=6)
    uniform_lsq = cell(method="uniform", label="uniform+lsq", degrade=0.05, rng_seed=7)
    text = _render(tmp_path / "abl", [ref, uniform, base, better, lonely, uniform_lsq])
    section = text[text.index("ablation (each BASE+SWITCH"):]
    section = section[:section.index("\n## ")]
    row = next(line for line in section.splitlines() if line.startswith("| one_stage+fix"))
    ops = lambda rec, s: {u["id"]: u["ops"] for u in rec["splits"][s]["utterances"]}  # noqa: E731
    for split in ("test-clean", "test-other"):
        vs_base = mapsswe(ops(base, split), ops(better, split))
        assert vs_base.significant and vs_base.better == "b"  # the fixture is decisive
        delta = 100 * (better["splits"][split]["wer"] - base["splits"][split]["wer"])
        assert f"{delta:+.2f} pts (p={vs_base.p_value:.3g}, **better**)" in row
        vs_uni = mapsswe(ops(uniform, split), ops(better, split))
        assert f"(p={vs_uni.p_value:.3g}, " in row
    lonely_row = next(line for line in section.splitlines() if line.startswith("| other+fix"))
    assert lonely_row.count("no base at this target") == 2  # no cell 'other'; uniform shown
    vs_uni = mapsswe(ops(uniform, "test-clean"), ops(lonely, "test-clean"))
    assert f"(p={vs_uni.p_value:.3g}, " in lonely_row
    assert "- Base uniform" not in section  # uniform against itself says nothing
    assert "- Base one_stage at 4bit against uniform: test-clean: " in section
    assert "**worse**" in section.split("- Base one_stage")[1]


def test_headline_names_each_methods_lossless_system_and_its_lossy_neighbour(report_dir):
    text = (report_dir / "report.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| uniform | 6.00x"))
    assert "uniform 4bit (4.00 bits, 6.00x): test-clean p=" in row
    assert "uniform 2bit (2.00 bits, 10.00x): test-clean p=" in row
    assert row.count("test-other p") == 2
    optuna = next(line for line in text.splitlines() if line.startswith("| optuna | none"))
    assert optuna.endswith("| none | - |")


def test_a_method_with_only_dev_lossy_frontier_cells_has_no_lossless_cr():
    ref = make_reference()
    one = make_cell(ref, method="one_stage", target_bits=8, avg_bits=8, cr=3.5,
                    stages=[("supernet", "qat", 10)])
    two = make_cell(ref, method="two_stage", target_bits=8, avg_bits=8, cr=3.5, degrade=0.3,
                    stages=[("precision", "search", 5), ("qat", "qat", 10)])
    for rec, dev_ok in ((one, True), (two, False)):
        rec["suite"]["frontier"] = f"{rec['config']['method']}-search"
        rec["lossless_dev"] = dev_ok
    (h,) = headline(records_table([ref, one, two]))
    assert h.lossless_cr == {"one_stage": 3.5, "two_stage": None}
    assert "two_stage has no lossless system" in h.cr_vs_two_stage.reason
    assert h.time_pairs and h.time_ratio.value == pytest.approx(15 / 10)  # still paired


def test_headline_within_each_seed_counts_where_one_stage_led(tmp_path):
    """Three seeds: one_stage beats uniform at seed 0 (6.2x vs 6.0x), loses at seed 1
    (uniform 6.0x, one_stage's only cell lossy: none = 1.00x), ties at seed 2 (6.0x both);
    two_stage ran at seed 0 alone. The best-seed headline says 6.20x / 6.00x."""
    refs = []
    for seed in (0, 1, 2):
        ref = make_reference()
        ref["config"]["budget"]["seed"] = seed
        ref["config_hash"] = f"ref{seed}"
        refs.append(ref)
    cell = lambda ref, seed, **kw: make_cell(ref, seed=seed, target_bits=4, avg_bits=4,  # noqa: E731
                                             **kw)
    records = [
        *refs,
        cell(refs[0], 0, method="uniform", cr=6.0),
        cell(refs[0], 0, method="one_stage", cr=6.2),
        cell(refs[0], 0, method="two_stage", cr=5.0),
        cell(refs[1], 1, method="uniform", cr=6.0),
        cell(refs[1], 1, method="one_stage", cr=6.2, degrade=0.3),
        cell(refs[2], 2, method="uniform", cr=6.0),
        cell(refs[2], 2, method="one_stage", cr=6.0),
    ]
    h = _headline(records)
    assert h.lossless_cr["one_stage"] == 6.2 and h.cr_vs_uniform.value == pytest.approx(6.2 / 6)
    assert [s.seed for s in h.per_seed] == [0, 1, 2]
    assert [s.lossless_cr for s in h.per_seed] == [
        {"uniform": 6.0, "one_stage": 6.2, "two_stage": 5.0},
        {"uniform": 6.0, "one_stage": None},
        {"uniform": 6.0, "one_stage": 6.0},
    ]
    assert [s.cr_vs_uniform.value for s in h.per_seed] == [
        pytest.approx(6.2 / 6.0), None, pytest.approx(1.0)]
    text = _render(tmp_path / "seeds", records)
    assert ("| seed | uniform lossless CR | one_stage lossless CR | two_stage lossless CR "
            "| one_stage / uniform | one_stage / two_stage |") in text
    assert "| 0 | 6.00x | 6.20x | 5.00x | 1.03x | 1.24x |" in text
    assert "| 1 | 6.00x | none | not run | undefined (one_stage: none lossless) | not run |" \
        in text
    assert "| 2 | 6.00x | 6.00x | not run | 1.00x | not run |" in text
    assert ("one_stage / uniform within a seed: one_stage's lossless CR is higher in 1, lower "
            "in 1 and equal in 1 of 3 seeds with cells of both") in text
    assert "the ratio is 1.02x median (1.00x-1.03x over 2 seeds)" in text
    assert ("one_stage / two_stage within a seed: one_stage's lossless CR is higher in 1, "
            "lower in 0 and equal in 0 of 1 seeds with cells of both") in text
    single = _render(tmp_path / "one", [refs[0], *records[3:6]])
    assert "Within each seed" not in single


def test_setup_names_the_cpu_kernels_and_bf16_support_the_records_state(tmp_path):
    ref = make_reference()
    cell = make_cell(ref, method="uniform", target_bits=4, avg_bits=4, cr=6.0)
    assert "CPU kernels" not in _render(tmp_path / "old", [ref, cell])  # older records
    for rec, (capability, native) in zip((ref, cell), (("AVX2", False), ("AVX512", True)),
                                         strict=True):
        rec["environment"]["device"].update(type="cpu", cpu_capability=capability,
                                            bf16_native=native)
    text = _render(tmp_path / "new", [ref, cell])
    assert ("- CPU kernels and bf16 (from the records' environments): cpu AVX2, bf16 "
            "emulated; cpu AVX512, native bf16.") in text


def test_plots_keep_their_axes_with_many_long_labels(tmp_path):
    """26 systems with labels of up to 70 characters (as in results/ablation): the legends
    and tick labels must not squeeze the axes to nothing (matplotlib then warns that
    constrained layout collapsed them, and the panel is a sliver)."""
    import itertools
    import warnings

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ref = make_reference(splits=["dev"])  # one panel, as in the ablation
    labels = [f"one_stage+{k:02d}" + "+switch" * (k % 10) for k in range(26)]
    assert max(map(len, labels)) > 70
    records = [ref] + [
        make_cell(ref, method="one_stage", label=label, target_bits=4, avg_bits=4,
                  cr=6.0 + k / 100, allocation=mixed(2, 8, 4),
                  stages=[("supernet", "qat", 20), ("pass2", "qat", 5)])
        for k, label in enumerate(labels)
    ]
    write_records(tmp_path / "many" / "records", records)
    widths, heights, overlaps = [], [], []
    real_savefig = Figure.savefig

    def savefig(fig, *args, **kwargs):
        real_savefig(fig, *args, **kwargs)
        axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
        widths.append(min(ax.get_position().width * fig.get_figwidth() for ax in axes))
        heights.append(min(ax.get_position().height * fig.get_figheight() for ax in axes))
        renderer = FigureCanvasAgg(fig).get_renderer()
        for ax in axes:  # upright tick labels side by side must not run into each other
            ticks = [t for t in ax.get_xticklabels() if t.get_text()]
            boxes = [t.get_window_extent(renderer) for t in ticks if not t.get_rotation()]
            overlaps.extend((fig.get_suptitle(), a.x1, b.x0)
                            for a, b in itertools.pairwise(boxes) if a.x1 > b.x0)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a collapsed constrained layout warns
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(Figure, "savefig", savefig)
            assert main(["report", "many", "--results", str(tmp_path)]) == 0
    assert len(widths) == 3 and min(widths) > 2.0, widths  # inches of every plot's axes
    assert min(heights) > 2.0, heights
    assert not overlaps
