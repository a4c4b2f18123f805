"""SIGKILL ``mpqbench run`` at seeded random moments; reruns end as an uninterrupted run does.

One uninterrupted run of a tiny two-family suite (CTC and Whisper; fp32, uniform QAT, the
one-stage supernet and the optuna search) gives the reference records and a timeline:
start-up, then each cell from its ``running`` log line to the next one. Then the same
command is started again and again on another results directory and killed with SIGKILL
at a moment drawn uniformly (seeded) from what the run still has to do: start-up plus the
cells without a record. The moment is anchored to the log, "x s after the j-th cell this
run starts", so load on the machine moves kills within the planned cell, not out of it.
Kills land in start-up, model loading, teacher caching, training, search, evaluation and
between cells. After every kill:

- every file in the records directory is a complete JSON record of a finished cell (a kill
  inside a write may leave only the hidden ``.<name>.*.tmp`` file, never a partial record);
- every record there equals the uninterrupted run's record on everything deterministic.

After every ``KILLS_PER_ROUND`` kills the command is rerun to completion, the full set of
records must equal the reference, and the next round starts from an empty directory. Two
independent chains of kills run side by side (one per core; each process has one thread).

Left out of the comparison: timings (stage seconds, decoding speed) and the environment
block (git's dirty flag and the machine). Everything else, allocations, accounting,
per-utterance hypotheses and edit operations, WER, significance tests, method info and
config hashes, must be equal bit for bit.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow  # ~25 fresh interpreters importing torch + transformers

SEED = 20261126
CHAINS = 2
KILLS_PER_CHAIN = 10  # 20 kill points in all
KILLS_PER_ROUND = 5
#: Keys whose values are timings or describe the machine, not the result.
NONDETERMINISTIC = {"timing", "seconds", "compression_seconds", "environment"}
ENTRY = "import sys; from mpqbench.cli import main; sys.exit(main())"
RUNNING = re.compile(r"\] (\S+): running$", re.MULTILINE)
TIMEOUT = 600

SUITE = """
[suite]
name = "crash"
data = "{data}"
eval_splits = ["test-clean"]
models = ["tiny-ctc", "tiny-whisper"]
seeds = [0]
whisper_window_s = 10
max_new_tokens = 4
eval_batch_size = 4

[budget]
train_steps = 2
batch_size = 2
search_budget = 2
dev_subset = 2

[[systems]]
method = "uniform"
avg_bits = [4]

[[systems]]
method = "one_stage"
avg_bits = [4]

[[systems]]
method = "optuna"
avg_bits = [4]
"""


def start(suite: Path, results: Path, log: Path) -> subprocess.Popen:
    """``mpqbench run`` (the console entry point's function) in a fresh interpreter."""
    cmd = [sys.executable, "-c", ENTRY, "run", str(suite), "--results", str(results),
           "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)


def started(log: Path) -> list[str]:
    """Keys of the cells this run has started, in order (from its ``running`` log lines)."""
    return RUNNING.findall(log.read_text(errors="replace"))


def tail(log: Path) -> str:
    return f"{log}:\n" + log.read_text(errors="replace")[-3000:]


def strip(value: Any) -> Any:
    """``value`` without timing and environment fields (recursively)."""
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if k not in NONDETERMINISTIC}
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Paths where two JSON values differ (for failure messages)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b))
                for d in (differences(a.get(k), b.get(k), f"{path}/{k}")
                          if k in a and k in b else [f"{path}/{k} only on one side"])]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        pairs = enumerate(zip(a, b, strict=True))
        return [d for i, (x, y) in pairs for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {str(a)[:80]} != {str(b)[:80]}"]


def records(directory: Path) -> dict[str, dict[str, Any]]:
    """The records in ``directory`` by file name; fails on any file that is not one.

    A hidden ``.<record>.json.<random>.tmp`` is the temporary file of a write that a kill
    interrupted before its rename: allowed (no reader looks at it), and counted.
    """
    out: dict[str, dict[str, Any]] = {}
    if not directory.is_dir():
        return out
    for path in directory.iterdir():
        if path.name.startswith(".") and path.name.endswith(".tmp"):
            continue
        assert path.suffix == ".json", f"unexpected file {path.name} in {directory}"
        text = path.read_text(encoding="utf-8")
        try:
            out[path.name] = json.loads(text)
        except ValueError as exc:
            pytest.fail(f"{path}: truncated or partial record ({exc}): ...{text[-200:]!r}")
    return out


def timeline(suite: Path, results: Path, log: Path) -> tuple[float, dict[str, float]]:
    """Run to completion: (start-up seconds, seconds of each cell by record file name).

    A cell's time runs from its ``running`` line to the next cell's (the last: to exit).
    """
    t0 = time.monotonic()
    proc = start(suite, results, log)
    starts: list[float] = []
    while proc.poll() is None:
        now = time.monotonic() - t0
        starts += [now] * (len(started(log)) - len(starts))
        assert now < TIMEOUT, "the uninterrupted run takes too long"
        time.sleep(0.01)
    assert proc.returncode == 0, tail(log)
    end = time.monotonic() - t0
    keys = started(log)
    starts += [end] * (len(keys) - len(starts))
    bounds = [*starts, end]
    return starts[0], {f"{k}.json": bounds[i + 1] - bounds[i] for i, k in enumerate(keys)}


def kill_point(rng: random.Random, startup: float, cells: list[float]) -> tuple[int, float]:
    """A moment drawn uniformly from the rest of a run: (segment, seconds into it).

    Segment 0 is start-up (seconds from the process start); segment j >= 1 is the j-th
    cell the run starts (seconds from its ``running`` line).
    """
    segments = [startup, *cells]
    x = rng.uniform(0.0, sum(segments))
    for j, length in enumerate(segments):
        if x < length:
            return j, x
        x -= length
    return len(segments) - 1, segments[-1]


def kill_at(proc: subprocess.Popen, log: Path, segment: int, offset: float) -> bool:
    """SIGKILL ``proc`` ``offset`` s into ``segment``; False when it exits before that."""
    deadline = time.monotonic() + TIMEOUT
    while segment and len(started(log)) < segment:
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, tail(log)
        time.sleep(0.005)
    try:
        proc.wait(timeout=offset)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
        return True
    return False


@dataclass
class Chain:
    """One chain of kills and reruns on its own results directory."""

    index: int
    suite: Path
    root: Path
    startup: float
    durations: dict[str, float]
    reference: dict[str, dict[str, Any]]
    kills: list[str] = field(default_factory=list)  # "<cell or start-up> +<s>"
    runs: int = 0
    rounds: int = 0
    finished_early: int = 0
    leftovers: int = 0

    @property
    def directory(self) -> Path:
        return self.root / "results" / "crash" / "records"

    def consistent(self, where: str) -> dict[str, dict[str, Any]]:
        found = records(self.directory)
        assert set(found) <= set(self.reference), f"{where}: records of unknown cells"
        for name, record in found.items():
            diff = differences(strip(record), self.reference[name])
            assert not diff, f"chain {self.index}, {where}: {name} differs: {diff[:5]}"
        return found

    def launch(self) -> tuple[subprocess.Popen, Path]:
        self.runs += 1
        log = self.root / f"run-{self.runs:02d}.log"
        return start(self.suite, self.root / "results", log), log

    def run(self, kills: int) -> Chain:
        rng = random.Random(SEED + self.index)
        while len(self.kills) < kills:
            present = self.consistent(f"before kill {len(self.kills) + 1}")
            missing = [n for n in self.durations if n not in present]
            segment, offset = kill_point(rng, self.startup, [self.durations[n] for n in missing])
            proc, log = self.launch()
            if kill_at(proc, log, segment, offset):
                where = started(log)  # the cell it was in, by the log (not by the plan)
                self.kills.append(f"{where[-1] if where else 'start-up'} +{offset:.2f} s")
            else:  # finished before the kill point: faster than the reference run
                assert proc.returncode == 0, tail(log)
                self.finished_early += 1
                assert self.finished_early <= kills, "runs keep finishing before their kill"
            found = self.consistent(f"after kill {len(self.kills)}")
            if proc.returncode == 0 or len(self.kills) % KILLS_PER_ROUND == 0:
                if proc.returncode != 0:  # rerun to completion
                    proc, log = self.launch()
                    assert proc.wait(timeout=TIMEOUT) == 0, tail(log)
                    found = self.consistent(f"after the rerun of round {self.rounds + 1}")
                assert found.keys() == self.reference.keys(), "the rerun left cells undone"
                self.leftovers += sum(1 for p in self.directory.iterdir()
                                      if p.name.endswith(".tmp"))
                shutil.rmtree(self.root / "results")
                self.rounds += 1
        return self


def test_sigkill_at_random_moments_then_rerun_equals_uninterrupted(corpus, tmp_path):
    suite = tmp_path / "crash.toml"
    suite.write_text(SUITE.format(data=corpus))
    t0 = time.monotonic()
    startup, durations = timeline(suite, tmp_path / "reference", tmp_path / "reference.log")
    reference = {k: strip(v) for k, v in records(tmp_path / "reference/crash/records").items()}
    assert set(reference) == set(durations)
    assert len(reference) == 8  # 2 fp32 references + 2 models x 3 systems
    t_reference = time.monotonic() - t0

    chains = []
    for i in range(CHAINS):
        (tmp_path / f"chain{i}").mkdir()
        chains.append(Chain(i, suite, tmp_path / f"chain{i}", startup, durations, reference))
    with ThreadPoolExecutor(CHAINS) as pool:
        done = [f.result() for f in [pool.submit(c.run, KILLS_PER_CHAIN) for c in chains]]

    kills = [k for c in done for k in c.kills]
    hit = {k.split(" +")[0] for k in kills}
    print(f"\nuninterrupted run {t_reference:.1f} s (start-up {startup:.1f} s); {len(kills)} "
          f"kills in {sum(c.runs for c in done)} runs, {sum(c.rounds for c in done)} rounds "
          f"completed and compared, {sum(c.finished_early for c in done)} runs finished "
          f"before their kill, {sum(c.leftovers for c in done)} temporary files left by "
          f"killed writes; {len(hit)} distinct places hit:\n  " + "\n  ".join(kills))
    assert len(kills) == CHAINS * KILLS_PER_CHAIN >= 20
    assert sum(c.rounds for c in done) >= CHAINS * KILLS_PER_CHAIN // KILLS_PER_ROUND
    assert len(hit) >= 4, kills  # spread over the run, not stuck in one place
