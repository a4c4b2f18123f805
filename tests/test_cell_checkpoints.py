"""A cell interrupted during QAT resumes from its checkpoints and ends as an uninterrupted run.

The interruption is injected: the loop's checkpoint writer is wrapped so that the process
"dies" (an exception nothing catches) right after the checkpoint of step ``CRASH_AT`` is on
disk, as a SIGKILL at that moment would leave it (tests/test_qat_sigkill.py covers real
kills inside the loop). The rerun must log that it resumed, and its record must equal an
uninterrupted run's on everything but timings and the environment. With the newest
checkpoint corrupted (one byte flipped) the rerun must skip it for the previous one and
still end with the same record. Through the runner, the checkpoints live in
``<results>/<suite>/checkpoints/<cell key>/`` and are removed once the record is written.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from mpqbench.bench import runner
from mpqbench.bench.cell import CellSpec, run_cell
from mpqbench.bench.suite import load_suite
from mpqbench.method import Budget, Target
from mpqbench.quant import qat
from mpqbench.quant.checkpoint import list_checkpoints, save_checkpoint
from mpqbench.quant.qat import DEFAULT_CHECKPOINT_EVERY
from test_run_sigkill import strip
from test_suite_runner import SUITE

STEPS = 6
EVERY = 2
CRASH_AT = 4


class Crash(Exception):
    """Stands in for the process dying."""


def crash_after(step: int):
    def save(directory: Path, done: int, state: dict[str, Any], **kwargs: Any) -> Path:
        path = save_checkpoint(directory, done, state, **kwargs)
        if done == step:
            raise Crash(f"died after the checkpoint of step {done}")
        return path
    return save


def resumed_steps(caplog: pytest.LogCaptureFixture) -> list[int]:
    return [r.args[1] for r in caplog.records
            if r.name == qat.log.name and r.msg.endswith("resumed from checkpoint at step %d")]


@pytest.fixture(scope="module")
def spec(corpus) -> CellSpec:
    budget = Budget(train_steps=STEPS, batch_size=2, dev_subset=2, seed=3)
    return CellSpec(model="tiny-ctc", data=str(corpus), method="uniform",
                    target=Target(avg_bits=4), budget=budget, eval_splits=("test-clean",),
                    params={"train": {"checkpoint_every": EVERY, "lr": 1e-3,
                                      "checkpoint_min_interval_s": 0}})


def test_interrupted_cell_resumes_from_checkpoint_even_when_the_newest_is_corrupt(
        spec, tmp_path, monkeypatch, caplog):
    reference = run_cell(spec.reference(), progress=False)
    plain = run_cell(spec, reference=reference, progress=False)
    assert plain["stages"][0]["steps"] == STEPS

    ckpt = tmp_path / "mini"
    with monkeypatch.context() as patch:
        patch.setattr(qat, "save_checkpoint", crash_after(CRASH_AT))
        with pytest.raises(Crash):
            run_cell(spec, reference=reference, progress=False, checkpoint_dir=ckpt)
    stage_dir = ckpt / "qat"
    assert [p.name for p in list_checkpoints(stage_dir)] == ["step-000002.pt", "step-000004.pt"]
    corrupt = tmp_path / "corrupt"
    shutil.copytree(ckpt, corrupt)
    newest = corrupt / "qat" / "step-000004.pt"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))

    caplog.set_level(logging.INFO)
    resumed = run_cell(spec, reference=reference, progress=False, checkpoint_dir=ckpt)
    assert resumed_steps(caplog) == [CRASH_AT]
    assert resumed["stages"][0]["steps"] == STEPS
    assert strip(resumed) == strip(plain)

    caplog.clear()
    fallback = run_cell(spec, reference=reference, progress=False, checkpoint_dir=corrupt)
    assert resumed_steps(caplog) == [EVERY]
    assert any("fails its sha256 check" in r.getMessage() for r in caplog.records)
    assert strip(fallback) == strip(plain)


def one_cell_suite(steps: int) -> str:
    """The runner tests' suite with one compressed cell of ``steps`` QAT steps."""
    text = SUITE.replace("train_steps = 1\n", f"train_steps = {steps}\n")
    # checkpoint at every multiple of checkpoint_every, however fast the tiny run is (the
    # text is a format string: doubled braces)
    eager = "params = {{ train = {{ checkpoint_min_interval_s = 0 }} }}\n"
    text = text.replace("avg_bits = [8, 4]\n", "avg_bits = [4]\n" + eager)
    assert text.count(f"train_steps = {steps}\n") == 1 and "avg_bits = [4]\n" in text
    return text


def test_runner_resumes_a_killed_cell_and_removes_its_checkpoints(
        corpus, tmp_path, monkeypatch, caplog):
    every = DEFAULT_CHECKPOINT_EVERY
    path = tmp_path / "suite.toml"
    path.write_text(one_cell_suite(every + 2).format(data=corpus))
    suite = load_suite(str(path))
    results = tmp_path / "results"
    cell = suite.compressed()[0]
    with monkeypatch.context() as patch:
        patch.setattr(qat, "save_checkpoint", crash_after(every))
        with pytest.raises(Crash):
            runner.run_suite(suite, results=results, progress=False)
    checkpoints = runner.checkpoint_path(results, "mini", cell)
    assert checkpoints == results / "mini" / "checkpoints" / cell.key
    assert [p.name for p in list_checkpoints(checkpoints / "qat")] == [f"step-{every:06d}.pt"]
    assert not runner.record_path(results, "mini", cell).exists()

    caplog.set_level(logging.INFO)
    summary = runner.run_suite(suite, results=results, progress=False)
    assert summary.ran == [cell.key] and len(summary.skipped) == 1  # the fp32 reference
    assert resumed_steps(caplog) == [every]
    record = runner.load_record(runner.record_path(results, "mini", cell))
    assert record["stages"][0]["steps"] == every + 2
    assert not checkpoints.exists()
    assert not any((results / "mini" / "checkpoints").iterdir())
