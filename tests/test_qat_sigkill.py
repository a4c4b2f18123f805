"""A QAT run killed with SIGKILL between checkpoints resumes to the uninterrupted result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

WORKER = Path(__file__).with_name("qat_worker.py")
STEPS = 7


def worker(ckpt: Path, out: Path, pause: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), str(ckpt), str(out), str(STEPS),
                             str(pause)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_sigkill_between_checkpoints_then_resume(tmp_path):
    reference = tmp_path / "reference.safetensors"
    proc = worker(tmp_path / "ckpt-ref", reference)
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()

    ckpt, out = tmp_path / "ckpt", tmp_path / "resumed.safetensors"
    proc = worker(ckpt, out, pause=0.5)
    deadline = time.monotonic() + 300
    while not (ckpt / "step-000004.pt.sha256").exists():  # 4 steps done, checkpoint written
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "worker made no progress"
        time.sleep(0.05)
    time.sleep(0.6)  # inside step 5 or 6: after the checkpoint, before the next one
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    assert not list(ckpt.glob("*.tmp")) and not list(ckpt.glob(".*.tmp"))

    proc = worker(ckpt, out)  # resumes from step 4 (or 6)
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()
    ref, got = load_file(str(reference)), load_file(str(out))
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref)
