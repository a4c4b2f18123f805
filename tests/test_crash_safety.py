"""Crash safety below the suite: atomic writes, checkpoint recovery, records that are not.

- A SIGKILL inside an atomic write leaves the old file, never part of the new one.
- A corrupt newest checkpoint (bit rot, no checksum file, a checksum over bytes torch cannot
  read) makes training resume from the previous one and end with the uninterrupted weights.
- A suite rerun treats a record file that is not a complete record of its cell as missing:
  moved aside, the cell run again, the new record equal to the lost one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mpqbench._atomic import atomic_path, atomic_write_text
from mpqbench.bench.runner import run_suite
from mpqbench.bench.suite import load_suite
from mpqbench.quant.checkpoint import list_checkpoints, save_checkpoint
from mpqbench.quant.qat import TrainConfig, train
from mpqbench.quant.teacher import build_teacher_cache
from mpqbench.workloads.models.registry import load_model
from test_qat_loop import final_weights, make_utterances
from test_run_sigkill import strip
from test_suite_runner import SUITE

WRITER = """
import sys, time
from mpqbench._atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    with open(tmp, "wb") as fh:
        fh.write(b"new " * 100_000)
        fh.flush()
        print("half written", flush=True)
        time.sleep(120)
        fh.write(b"end")
"""


def test_sigkill_inside_an_atomic_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "record.json"
    target.write_text("old")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"half written\n", proc.stderr.read().decode()
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert target.read_text() == "old"
    leftovers = [p.name for p in tmp_path.iterdir() if p != target]
    assert len(leftovers) == 1 and leftovers[0].startswith(".record.json.")
    assert leftovers[0].endswith(".tmp")  # hidden, and out of every *.json glob


def test_failed_atomic_write_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    mask = os.umask(0o027)
    try:
        atomic_write_text(target, "new")
    finally:
        os.umask(mask)
    assert target.read_text() == "new" and target.stat().st_mode & 0o777 == 0o640


# --- checkpoints ---------------------------------------------------------------------------

STEPS, EVERY = 6, 2


def train_tiny(checkpoint_dir: Path | None, crash_at: int | None = None):
    """tiny-ctc, 6 QAT-loop steps, checkpoints every 2; raises KeyboardInterrupt at crash_at."""
    def on_step(step: int) -> None:
        if step == crash_at:
            raise KeyboardInterrupt

    torch.manual_seed(0)
    model = load_model("tiny-ctc")
    data = make_utterances()
    teacher = build_teacher_cache(model, data, batch_size=3, progress=False)
    result = train(model, data, steps=STEPS, batch_size=2, seed=3,
                   config=TrainConfig(lr=1e-3, checkpoint_every=EVERY if checkpoint_dir else 0,
                                      checkpoint_min_interval_s=0),
                   teacher=teacher, checkpoint_dir=checkpoint_dir, on_step=on_step,
                   progress=False)
    return final_weights(model), result


@pytest.fixture(scope="module")
def uninterrupted():
    return train_tiny(None)[0]


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def drop_checksum(path: Path) -> None:  # killed between the rename and the .sha256 write
    path.with_name(path.name + ".sha256").unlink()


def checksum_over_garbage(path: Path) -> None:  # verifies, but torch cannot read it
    import hashlib

    path.write_bytes(b"not a torch file")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_name(path.name + ".sha256").write_text(digest + "\n")


CORRUPTIONS = {"bit-flip": flip_a_byte, "no-checksum": drop_checksum,
               "unreadable": checksum_over_garbage}


@pytest.mark.parametrize("how", sorted(CORRUPTIONS))
def test_corrupt_checkpoint_resumes_from_previous_and_ends_equal(tmp_path, uninterrupted, how):
    with pytest.raises(KeyboardInterrupt):
        train_tiny(tmp_path, crash_at=5)
    newest = list_checkpoints(tmp_path)
    assert [p.name for p in newest] == ["step-000002.pt", "step-000004.pt"]
    CORRUPTIONS[how](newest[-1])
    weights, result = train_tiny(tmp_path)
    assert result.resumed_from == 2 and result.steps == STEPS - 2
    assert len(result.history) == STEPS
    assert all(torch.equal(uninterrupted[k], weights[k]) for k in uninterrupted)


def test_no_usable_checkpoint_starts_over_and_ends_equal(tmp_path, uninterrupted):
    with pytest.raises(KeyboardInterrupt):
        train_tiny(tmp_path, crash_at=5)
    for path in list_checkpoints(tmp_path):
        flip_a_byte(path)
    weights, result = train_tiny(tmp_path)
    assert result.resumed_from == 0
    assert all(torch.equal(uninterrupted[k], weights[k]) for k in uninterrupted)


def test_save_removes_temporaries_of_killed_saves_and_refuses_keep_0(tmp_path):
    stale = [tmp_path / ".step-000004.pt.x1y2.tmp", tmp_path / ".step-000004.pt.sha256.z.tmp"]
    for path in stale:
        path.write_bytes(b"half")
    save_checkpoint(tmp_path, 6, {"w": torch.ones(2)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000006.pt",
                                                          "step-000006.pt.sha256"]
    with pytest.raises(ValueError, match="keep"):
        save_checkpoint(tmp_path, 8, {}, keep=0)


# --- suite records ------------------------------------------------------------------------


def test_rerun_replaces_records_that_are_not_complete(corpus, tmp_path, caplog):
    path = tmp_path / "suite.toml"
    path.write_text(SUITE.format(data=corpus))
    suite = load_suite(str(path))
    results = tmp_path / "results"
    assert len(run_suite(suite, results=results, progress=False).ran) == 3
    folder = results / "mini" / "records"
    files = sorted(folder.glob("*.json"))
    before = {p.name: strip(json.loads(p.read_text())) for p in files}
    fp32, = (p for p in files if "__fp32__" in p.name)
    others = [p for p in files if p != fp32]
    fp32.write_text(fp32.read_text()[:500])  # truncated (a partial copy)
    others[0].write_bytes(b"\xff\xfe garbage")  # not even UTF-8
    wrong = json.loads(others[1].read_text())
    wrong["config_hash"] = "0" * 16  # another configuration's record
    others[1].write_text(json.dumps(wrong))

    again = run_suite(suite, results=results, progress=False)
    assert len(again.ran) == 3 and not again.skipped
    assert {p.name: strip(json.loads(p.read_text())) for p in folder.glob("*.json")} == before
    assert sorted(p.name for p in folder.glob("*.corrupt")) == sorted(
        p.name + ".corrupt" for p in files)
    assert sum("moved to" in r.getMessage() for r in caplog.records) == 3
    assert not run_suite(suite, results=results, progress=False).ran  # complete now
