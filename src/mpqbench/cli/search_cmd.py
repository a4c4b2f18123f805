"""``mpqbench search``: the Optuna precision search alone (no QAT), one worker of a study.

Several processes -- on one machine or many -- run this command with the same
``--storage``, ``--study-name`` and ``--trials`` and distinct ``--worker-id`` values; they
share one Optuna study until it holds ``--trials`` complete trials, then each prints (and,
with ``--out``, writes) the best feasible allocation of the whole study. A rerun of the
same command continues the study (and only reads the answer when it is complete).

Storages (see :mod:`mpqbench.search.optuna_storage`):

- ``postgresql://user@host:5432/db`` (or another server database): any number of workers.
  Heartbeats are on by default (``--heartbeat 10`` seconds): the trial of a worker that
  dies is failed after ``2 x`` the interval and its allocation re-run by a live worker.
- ``journal:PATH``: any number of workers sharing the file system, no server; no
  heartbeats, so a killed worker's trial stays RUNNING (and the study may end with up to
  ``workers - 1`` extra trials).
- ``sqlite:///PATH``: one worker only. SQLite locks the whole database file for every
  write, so parallel workers fail with "database is locked"; ``--workers`` above 1 with an
  SQLite URL is refused.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from mpqbench._atomic import atomic_write_json
from mpqbench.bench.workload import eligible_layers, make_workload, open_dev, open_model
from mpqbench.cli._shared import add_layer_selection_args, positive_int, resolve_device
from mpqbench.cli.quantize_cmd import parse_sets
from mpqbench.method import Budget, Target, make_config
from mpqbench.quant.teacher import TeacherCache
from mpqbench.search.optuna_search import search_allocation
from mpqbench.search.optuna_storage import JOURNAL_PREFIX, redact
from mpqbench.workloads.data.embedded import EMBEDDED
from mpqbench.workloads.models.registry import available_models

log = logging.getLogger(__name__)

#: Default seconds between trial heartbeats on database storages.
DEFAULT_HEARTBEAT_S = 10


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``search`` subcommand."""
    p = subparsers.add_parser(
        "search",
        help="Optuna precision search (no QAT); parallel workers share one study",
        description=(
            "Run (or join, or resume) an Optuna precision search on a model: each trial is one "
            "per-layer allocation scored by post-training quantization on dev utterances. "
            "Workers given the same --storage and --study-name share the study; PostgreSQL "
            "(with heartbeats) or journal:PATH for several workers, SQLite for one."
        ),
    )
    p.add_argument(
        "--model", default="whisper-tiny.en",
        help=f"registered model ({', '.join(available_models())}) or a local HF directory",
    )
    p.add_argument("--data", default=EMBEDDED, help="'embedded' or a LibriSpeech-layout root")
    p.add_argument("--dev-split", default="dev", help="split of the proxy utterances (dev)")
    p.add_argument("--dev-subset", type=positive_int, default=32,
                   help="dev utterances scored per trial (32)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--avg-bits", type=float, help="target average bits (e.g. 4)")
    target.add_argument("--cr", type=float, help="target compression ratio (paper's rule)")
    p.add_argument("--trials", type=_nonnegative_int, required=True,
                   help="complete trials the study must hold (all workers together)")
    p.add_argument("--storage", default=None,
                   help="Optuna storage: postgresql://..., journal:PATH or sqlite:///PATH "
                   "(default: in-memory, one worker, nothing kept)")
    p.add_argument("--study-name", default=None,
                   help="study name shared by the workers (default: from model, target, seed "
                   "and a fingerprint of the search problem)")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="how many workers share the study (1); more than 1 needs a server "
                   "database or journal:PATH")
    p.add_argument("--worker-id", type=_nonnegative_int, default=0,
                   help="this worker's index, 0 .. workers-1 (offsets the sampler seed)")
    p.add_argument("--heartbeat", type=_nonnegative_int, default=None, metavar="SECONDS",
                   help=f"trial heartbeat interval on database storages (default "
                   f"{DEFAULT_HEARTBEAT_S}; 0: off); a dead worker's trial is failed and "
                   "retried after 2 x SECONDS")
    p.add_argument("--seed", type=int, default=0, help="sampler seed (0)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="optuna config field (TOML value), e.g. sampler=tpe, "
                   "candidates=[2,4,8], warm_starts=8; repeatable")
    add_layer_selection_args(p)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--out", type=Path, default=None,
                   help="write the best feasible allocation here (JSON, atomically)")
    p.add_argument("--info-out", type=Path, default=None,
                   help="write the search summary (best trial, Pareto front, ...) here (JSON)")
    p.set_defaults(func=run)


def check_workers(storage: str | None, workers: int, worker_id: int) -> None:
    """Refuse a storage that cannot serve ``workers`` parallel workers.

    Raises:
        ValueError: ``worker_id`` not below ``workers``; several workers on in-memory storage
            (nothing is shared) or on SQLite (one writer at a time).
    """
    if worker_id >= workers:
        raise ValueError(f"--worker-id {worker_id} must be below --workers {workers}")
    if workers == 1:
        return
    if storage is None:
        raise ValueError(
            f"--workers {workers} needs a shared --storage (postgresql://... or journal:PATH); "
            "the default in-memory study lives in one process"
        )
    if storage.startswith("sqlite"):
        raise ValueError(
            f"--storage {redact(storage)!r} with --workers {workers}: SQLite locks the whole "
            "database file for every write, so parallel workers fail with 'database is "
            "locked'; use a server database (postgresql://user@host/db) or journal:PATH on "
            "a shared file system"
        )


def run(args: argparse.Namespace) -> int:
    """Execute ``mpqbench search``; returns the exit code."""
    check_workers(args.storage, args.workers, args.worker_id)
    heartbeat = args.heartbeat
    database = args.storage is not None and not args.storage.startswith(JOURNAL_PREFIX)
    if heartbeat is None:
        heartbeat = DEFAULT_HEARTBEAT_S if database else 0
    elif heartbeat and not database:
        raise ValueError("--heartbeat needs a database --storage (heartbeats are RDB-only)")
    params = {
        **parse_sets(args.set),
        "storage": args.storage,
        "study_name": args.study_name,
        "worker": args.worker_id,
        "heartbeat_interval": heartbeat or None,
    }
    config = make_config("optuna", params)  # refuse a bad config before any model loads
    target = Target(avg_bits=args.avg_bits, compression_ratio=args.cr)
    budget = Budget(train_steps=0, batch_size=1, search_budget=args.trials,
                    dev_subset=args.dev_subset, seed=args.seed)
    device = resolve_device(args.device)

    dev = open_dev(args.data, args.dev_split, budget.dev_subset, budget.seed)  # before the model
    model = open_model(args.model, device=device, whisper_window_s=args.whisper_window)
    eligible = eligible_layers(model, [g for g in args.groups.split(",") if g], args.rule)
    workload = make_workload(  # the proxy needs no training data
        model, eligible, data=args.data, train_split=None, dev_split=args.dev_split,
        dev_subset=budget.dev_subset, seed=budget.seed, teacher=TeacherCache(), device=device,
        dev=dev,
    )
    outcome = search_allocation(workload, target, budget, config)
    info = {**outcome.info, "worker": args.worker_id, "workers": args.workers,
            "seconds": outcome.stage.seconds, "evaluations_here": outcome.stage.evaluations}
    if args.out is not None:
        outcome.allocation.save(args.out)
    if args.info_out is not None:
        atomic_write_json(args.info_out, info)
    best = info["best_trial"]
    print(
        f"study {info['study_name']} ({info['storage']}): {info['trials_in_study']} complete "
        f"trials, {info['trials_run']} run by worker {args.worker_id} in "
        f"{outcome.stage.seconds:.1f} s"
    )
    if best is None:
        print(f"no feasible trial: {info['fallback']}")
    else:
        print(f"best feasible trial {best}: proxy {info['best_proxy']:.6g}, "
              f"{info['best_avg_bits']:.4f} average bits (target {info['target_avg_bits']:.4f})")
    print(json.dumps(dict(outcome.allocation.layers)))
    if args.out is not None:
        print(f"allocation: {args.out}")
    return 0


def _nonnegative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


__all__ = ["DEFAULT_HEARTBEAT_S", "check_workers", "register", "run"]
