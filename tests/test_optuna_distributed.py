"""Parallel ``mpqbench search`` workers on one study: PostgreSQL (heartbeats, a worker
SIGKILLed mid-trial) and JournalStorage (a shared log file); SQLite refused for several.

The PostgreSQL test starts a real throwaway server (tests/pg_server.py). It skips only when
no server can be started *and* the environment variable CI is unset; under CI it fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from mpqbench.cli import main as cli_main
from mpqbench.quant.allocation import Allocation
from mpqbench.search.optuna_search import (
    SURPLUS_ATTR,
    WORKER_ATTR,
    OptunaConfig,
    SearchProblem,
    _run_trial,
)
from mpqbench.search.optuna_storage import open_storage
from pg_server import PostgresUnavailable, postgres_server

WORKER = Path(__file__).with_name("optuna_worker.py")
STUDY = "two-workers"
TARGET_BITS = 5.0  # between candidates (2, 4, 8): room for 8 distinct feasible warm starts


@pytest.fixture
def postgres_url():
    """The URL of a database on a fresh local PostgreSQL server, stopped afterwards."""
    try:
        with postgres_server() as url:
            yield url
            return
    except PostgresUnavailable as exc:
        reason = f"no local PostgreSQL server could be started: {exc}"
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: .ci/run installs Debian's postgresql package)")
    pytest.skip(reason)


def _start(tmp_path: Path, url: str, worker: int, sleeps: str, trials: int,
           heartbeat: int | None) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / f"worker{worker}.log"
    args = [
        "--model", "tiny-ctc", "--avg-bits", str(TARGET_BITS), "--trials", str(trials),
        "--dev-subset", "1", "--storage", url, "--study-name", STUDY,
        "--workers", "2", "--worker-id", str(worker), "--seed", "3",
        "--set", f"warm_starts={trials}", "--set", "population_size=4",
        "--set", "dev_batch_size=1", "--out", str(tmp_path / f"alloc{worker}.json"),
    ]
    if heartbeat is not None:
        args += ["--heartbeat", str(heartbeat)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), str(tmp_path / "markers"), f"w{worker}", sleeps, "--",
             *args],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )
    return proc, log


#: Hang guard only: a worker takes seconds on an idle machine, but minutes when CPU-starved.
TIMEOUT_S = 600


def _wait_for(markers: list[Path], procs: list[tuple[subprocess.Popen, Path]],
              timeout: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not all(m.exists() for m in markers):
        for proc, log in procs:
            if proc.poll() is not None:
                pytest.fail(f"worker exited early ({proc.returncode}):\n{log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {[m.name for m in markers]}")
        time.sleep(0.05)


def _finish(proc: subprocess.Popen, log: Path, timeout: float = TIMEOUT_S) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"worker did not finish in {timeout} s:\n{log.read_text()}")
    text = log.read_text()
    assert proc.returncode == 0, text
    return text


def _params(trial: optuna.trial.FrozenTrial) -> tuple:
    return tuple(sorted(trial.params.items()))


def _chosen(path: Path) -> dict[str, int]:
    return {f"bits:{n}": b for n, b in Allocation.load(path).layers.items()}


def _check_allocation(path: Path, study: optuna.Study) -> None:
    """The allocation at ``path`` is the study's best feasible trial (all trials finished)."""
    best = min((t for t in study.get_trials() if t.state == TrialState.COMPLETE),
               key=lambda t: (t.value, t.user_attrs["avg_bits"], t.number))
    assert _chosen(path) == best.params
    assert best.user_attrs["avg_bits"] <= TARGET_BITS


def _rerun(url: str, trials: int, out: Path) -> None:
    """The search command again, in this process: the study is complete, nothing runs."""
    code = cli_main(["search", "--model", "tiny-ctc", "--avg-bits", str(TARGET_BITS),
                     "--trials", str(trials), "--dev-subset", "1", "--storage", url,
                     "--study-name", STUDY, "--seed", "3", "--set", f"warm_starts={trials}",
                     "--set", "population_size=4", "--set", "dev_batch_size=1",
                     "--out", str(out)])
    assert code == 0


def test_two_postgres_workers_survive_a_sigkill_mid_trial(postgres_url, tmp_path):
    trials = 8
    (tmp_path / "markers").mkdir()
    markers = tmp_path / "markers"
    # Worker 0 creates the study (enqueuing the 8 warm starts), finishes its first trial in
    # 1 s and hangs 60 s in its second; worker 1 joins once worker 0 is in a trial and
    # takes the other 6. Worker 0 is killed while worker 1 is in the last of them: when
    # worker 1 finishes it, 7 trials are complete and the 8th is still RUNNING with a fresh
    # heartbeat, so worker 1 must wait for it to go stale and then run its retry.
    a = _start(tmp_path, postgres_url, 0, "1,60", trials, heartbeat=1)
    _wait_for([markers / "w0-0"], [a])
    b = _start(tmp_path, postgres_url, 1, "0.5", trials, heartbeat=1)
    _wait_for([markers / "w0-1", markers / f"w1-{trials - 3}"], [a, b])
    a[0].send_signal(signal.SIGKILL)  # mid-trial: worker 0 is inside its second trial
    a[0].wait(timeout=30)
    assert a[0].returncode == -signal.SIGKILL
    out = _finish(*b)
    assert "best feasible trial" in out

    study = optuna.load_study(study_name=STUDY, storage=open_storage(postgres_url))
    all_trials = study.get_trials()
    assert [t.number for t in all_trials] == list(range(len(all_trials)))
    complete = [t for t in all_trials if t.state == TrialState.COMPLETE]
    failed = [t for t in all_trials if t.state == TrialState.FAIL]
    surplus = [t for t in all_trials if t.state == TrialState.PRUNED]
    assert len(complete) == trials
    assert all(t.user_attrs.get(SURPLUS_ATTR) for t in surplus)
    assert len(complete) + len(failed) + len(surplus) == len(all_trials)  # none left running
    # The killed trial: worker 0's second, failed by heartbeat and retried by worker 1.
    assert len(failed) == 1
    dead = failed[0]
    assert dead.user_attrs[WORKER_ATTR] == 0
    retries = [t for t in complete if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retries) == 1 and retries[0].user_attrs[WORKER_ATTR] == 1
    assert _params(retries[0]) == _params(dead)
    # Both workers did trials; no allocation was evaluated twice except the killed one.
    assert {t.user_attrs[WORKER_ATTR] for t in complete} == {0, 1}
    assert len({_params(t) for t in complete}) == trials
    evaluations = sorted(p.name for p in markers.iterdir())
    assert len(evaluations) == trials + 1, evaluations  # 8 + the killed evaluation
    assert sum(n.startswith("w0-") for n in evaluations) == 2
    _check_allocation(tmp_path / "alloc1.json", study)

    # A rerun of a finished study runs nothing and gives the same answer.
    rerun = tmp_path / "rerun.json"
    _rerun(postgres_url, trials, rerun)
    assert json.loads(rerun.read_text()) == json.loads((tmp_path / "alloc1.json").read_text())
    assert len(study.get_trials()) == len(all_trials)


def test_two_journal_workers_share_one_study(tmp_path):
    trials = 6
    (tmp_path / "markers").mkdir()
    markers = tmp_path / "markers"
    url = f"journal:{tmp_path / 'study.log'}"
    # worker 0's second trial waits until worker 1 is in its first: both do trials
    a = _start(tmp_path, url, 0, "0.5,@w1-0,0.5", trials, heartbeat=None)
    _wait_for([markers / "w0-0"], [a])
    b = _start(tmp_path, url, 1, "0.3", trials, heartbeat=None)
    _finish(*a)
    _finish(*b)

    study = optuna.load_study(study_name=STUDY, storage=open_storage(url))
    all_trials = study.get_trials()
    assert [t.number for t in all_trials] == list(range(len(all_trials)))
    assert all(t.state == TrialState.COMPLETE for t in all_trials)
    # no heartbeats: workers finishing at once may overshoot by at most workers - 1
    assert trials <= len(all_trials) <= trials + 1
    assert {t.user_attrs[WORKER_ATTR] for t in all_trials} == {0, 1}
    assert len({_params(t) for t in all_trials}) == len(all_trials)
    evaluated = sum(bool(t.user_attrs["evaluated"]) for t in all_trials)
    assert len(list(markers.iterdir())) == evaluated  # each trial evaluated at most once
    assert evaluated >= trials  # the warm starts are feasible: all scored
    # Without heartbeats a worker answers when the budget is complete, perhaps before the
    # other's surplus trial ends: each answer is a feasible trial of the study, and a rerun
    # (all trials finished) gives the study's best.
    feasible = [t.params for t in all_trials if t.user_attrs["avg_bits"] <= TARGET_BITS]
    assert _chosen(tmp_path / "alloc0.json") in feasible
    assert _chosen(tmp_path / "alloc1.json") in feasible
    _rerun(url, trials, tmp_path / "rerun.json")
    _check_allocation(tmp_path / "rerun.json", study)
    assert len(study.get_trials()) == len(all_trials)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--storage", "sqlite:///x.db", "--workers", "2"], "SQLite locks the whole database"),
        (["--workers", "2"], "needs a shared --storage"),
        (["--storage", "journal:x.log", "--workers", "2", "--worker-id", "2"],
         "must be below --workers"),
        (["--storage", "journal:x.log", "--heartbeat", "5"], "database --storage"),
    ],
)
def test_unusable_worker_setups_are_refused_before_any_model_loads(argv, words, capsys):
    code = cli_main(["search", "--model", "no-such-model", "--avg-bits", "4", "--trials", "2",
                     *argv])
    assert code == 2
    assert words in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_a_trial_asked_when_the_budget_is_taken_is_pruned_unevaluated(tmp_path):
    """Two workers asking at once near the end: the higher-numbered trial is surplus."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    storage = open_storage(url, heartbeat_interval=1)
    study = optuna.create_study(storage=storage)
    dist = {"bits:a": CategoricalDistribution((2, 4))}
    other = study.ask(dist)  # the other worker's trial, running, fills a budget of 1
    storage.record_heartbeat(other._trial_id)
    problem = SearchProblem(("a",), {"a": 10}, (2, 4), 4.0)
    config = OptunaConfig(storage=url, heartbeat_interval=1)
    # proxy=None: a surplus trial must be told before any proxy evaluation
    assert _run_trial(study, storage, True, dist, problem, None, config, 1) is None
    mine = study.get_trials()[1]
    assert mine.state == TrialState.PRUNED and mine.user_attrs[SURPLUS_ATTR] is True
    assert study.get_trials()[0].state == TrialState.RUNNING
