"""Optuna precision search: per-layer bits chosen by a constrained sampler, then QAT.

DESIGN.md section 5. Two stages:

1. **search** -- one Optuna trial is one allocation: a categorical parameter per eligible
   layer, named ``"bits:<module name>"`` (:func:`param_name`), over ``config.candidates``.
   A trial is scored by a cheap post-training-quantization proxy on the dev subset
   (:class:`~mpqbench.search.ptq_proxy.PTQProxy`: KL to the 32-bit outputs by default, or
   dev WER). The average-bit target is a *constraint*, not a penalty: the constraint value
   ``avg_bits - target`` (feasible when <= 0) is set on each trial with
   ``Trial.set_constraint`` before ``tell`` (Optuna 5's replacement of the deprecated
   ``constraints_func``), and both samplers read it from the trials: NSGA-II by constrained
   domination (Deb et al. 2002), TPE by ranking infeasible trials by violation alone.
   The method owns the loop through ask/tell, so the budget is exact: the study is driven
   until it holds ``budget.search_budget`` finished trials.
2. **qat** -- the best *feasible* trial (lowest proxy; ties: fewer average bits, then the
   earlier trial) is trained for ``budget.train_steps`` by the shared fixed-bit QAT loop.
   When no trial is feasible (e.g. ``search_budget`` = 0) the fallback is the uniform
   allocation at the highest candidate within the target; ``info["fallback"]`` says so.

Choices and why (defaults):

- **Objectives** (``objectives="proxy"``): one objective (the proxy) plus the constraint.
  The alternative, ``"proxy+bits"``, minimises (proxy, average bits) as two objectives under
  the same constraint; NSGA-II's crowding then keeps part of the population at the low-bit
  end of the feasible front, of no use when one allocation at the target is wanted.
  Measured at 3 and 4 bits: docs/FINDINGS.md, "Optuna search".
- **Sampler** (``sampler="nsga2"``), seeded with ``budget.seed`` (+ a per-worker offset).
  NSGA-II with ``population_size=16``: Optuna's default of 50 leaves only a couple of
  generations at the trial counts a benchmark can afford.
- **Infeasible trials are not scored** (``score_infeasible=False``): both samplers rank
  infeasible trials by constraint violation alone and never read their objective values, so
  their proxy is recorded as ``+inf`` (user attribute ``evaluated=False``) and no forward
  pass is spent on them. ``StageTiming.evaluations`` counts the proxy evaluations made.
- **Warm start** (``warm_starts=16``, enqueued once, when the study is new): (1) uniform at
  the highest candidate within the target -- always feasible, and its proxy is the
  reference ``info["uniform_proxy"]``; (2) "sensitive layers high": uniform at that
  candidate with layers raised to the next candidate, greedily while the target allows, in
  order of the drop of relative weight-quantization error ``||Q_b(W)-W||^2/||W||^2`` per
  weight (data free, no forward pass); (3..) random allocations projected onto the target:
  lowered one candidate step at a random layer until feasible, then raised one step at a
  time in random order while feasible. With per-layer uniform random sampling almost no
  allocation of a 64-layer model is feasible at 3-4 bits (the mean is 4.7 bits for {2,4,8}).
  The warm starts are NSGA-II's generation 0 (see :func:`_run_trial`) and trials of the
  budget, not extra. Heuristic (2) is cheap but weak below 4 bits (docs/FINDINGS.md); it is
  kept as one documented trial.

Budget, storage and resume (DESIGN.md section 8):

- ``storage``: None (in-memory), any SQLAlchemy URL (``sqlite:///x.db``,
  ``postgresql://...``) or ``journal:PATH`` (see :mod:`mpqbench.search.optuna_storage`).
- ``study_name``: default :func:`default_study_name` -- model, target, seed and a
  fingerprint of everything that defines the search problem (layers, candidates, proxy,
  quantizer, dev utterances, objectives). The fingerprint is stored in the study; reusing a
  study name for a different problem is a ``ValueError``.
- ``budget.search_budget`` is the number of finished trials the *study* must hold. A second
  call with the same storage and study continues: it runs only the missing trials (none if
  the study is complete) and selects from every trial in the study. The sampler restarts
  from its seed, so a resumed study's later trials differ from an uninterrupted run's; the
  selection rule is the same.
- Parallel workers (``mpqbench search --workers N --worker-id I``): give each a distinct
  ``worker`` index (it offsets the sampler seed; trials record it as user attribute
  ``worker``); ``worker > 0`` with an SQLite URL is refused (one writer at a time). The
  study is created atomically by the storage; only the worker that created it enqueues
  the warm starts. Without heartbeats the budget check counts COMPLETE trials, so workers
  finishing at once may overshoot by at most (workers - 1) trials, and a dead worker's
  trial stays RUNNING forever. With ``heartbeat_interval`` (RDB storages, e.g.
  PostgreSQL) running trials count too; a dead worker's trial is failed after the grace
  period and its allocation re-queued (``RetryHeartbeatStaleTrialCallback``; the retry's
  system attribute ``failed_trial`` names it); a worker whose budget is reached waits
  while other workers' trials run, so the last live worker runs the retries; and a trial
  asked when lower-numbered trials already fill the budget is told PRUNED unevaluated
  (user attribute ``surplus``). The study then ends with exactly ``search_budget``
  COMPLETE trials; no trial is run by two workers, and only a killed trial's allocation
  is evaluated again (as its retry).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState
from tqdm.auto import tqdm

from mpqbench._names import safe_name
from mpqbench.method import (
    Budget,
    MethodResult,
    StageTiming,
    Target,
    Workload,
    register_method,
)
from mpqbench.method.fixed_bits import qat_fixed_bits
from mpqbench.quant.accounting import layer_sizes
from mpqbench.quant.allocation import Allocation
from mpqbench.quant.formats import Quantizer, check_bits
from mpqbench.quant.qat import TrainConfig
from mpqbench.quant.supernet import check_learnable_scale_max_bits
from mpqbench.search.optuna_storage import open_storage, redact, supports_heartbeat
from mpqbench.search.ptq_proxy import PROXIES, Proxy, PTQProxy
from mpqbench.timing import device_label, stage_timer

logger = logging.getLogger(__name__)

SAMPLERS: tuple[str, ...] = ("nsga2", "tpe")
OBJECTIVES: tuple[str, ...] = ("proxy", "proxy+bits")
#: Prefix of every per-layer parameter name: ``"bits:" + module name``.
PARAM_PREFIX = "bits:"
#: Trial user attributes written by the search.
AVG_BITS_ATTR = "avg_bits"
EVALUATED_ATTR = "evaluated"
#: Trial user attribute: the ``worker`` index that ran the trial.
WORKER_ATTR = "worker"
#: Trial user attribute set (True) on a trial told PRUNED unevaluated because, when it was
#: asked, lower-numbered trials already filled the budget (parallel workers, heartbeats on).
SURPLUS_ATTR = "surplus"
#: Name of the trial constraint ``avg_bits - target`` (``Trial.set_constraint``).
CONSTRAINT_KEY = "avg_bits_over_target"
#: Study user attribute holding the search-problem fingerprint.
FINGERPRINT_ATTR = "mpqbench_fingerprint"
#: How many Pareto points ``info["pareto_front"]`` lists at most (evenly thinned).
PARETO_SUMMARY_POINTS = 32


def param_name(layer: str) -> str:
    """The Optuna parameter name of a layer's bit-width."""
    return PARAM_PREFIX + layer


@dataclass(frozen=True, kw_only=True)
class OptunaConfig:
    """Settings of the Optuna precision search (module docstring: the choices and why)."""

    candidates: tuple[int, ...] = field(
        default=(2, 4, 8), metadata={"help": "candidate bit-widths per layer"}
    )
    proxy: Proxy = field(
        default="kl", metadata={"help": "trial score: kl (to the 32-bit dev outputs) or wer"}
    )
    sampler: Literal["nsga2", "tpe"] = field(
        default="nsga2", metadata={"help": "Optuna sampler: nsga2 or tpe"}
    )
    objectives: Literal["proxy", "proxy+bits"] = field(
        default="proxy",
        metadata={"help": "proxy (+ target constraint) or proxy+bits (two objectives)"},
    )
    population_size: int = field(default=16, metadata={"help": "NSGA-II population size"})
    tpe_startup_trials: int = field(
        default=10, metadata={"help": "TPE: trials before the model is used (warm starts count)"}
    )
    warm_starts: int = field(
        default=16, metadata={"help": "trials enqueued in a new study (0: none)"}
    )
    score_infeasible: bool = field(
        default=False, metadata={"help": "also evaluate the proxy of infeasible trials"}
    )
    storage: str | None = field(
        default=None,
        metadata={"help": "Optuna storage: None, an SQLAlchemy URL, or journal:PATH"},
    )
    study_name: str | None = field(
        default=None, metadata={"help": "study name (default: from model/target/seed)"}
    )
    worker: int = field(
        default=0, metadata={"help": "worker index in a shared study (offsets the seed)"}
    )
    heartbeat_interval: int | None = field(
        default=None, metadata={"help": "seconds between trial heartbeats (RDB storage)"}
    )
    dev_batch_size: int = field(default=16, metadata={"help": "dev utterances per forward"})
    max_new_tokens: int | None = field(
        default=None, metadata={"help": "token cap of seq2seq decoding (wer proxy)"}
    )
    quantizer: Quantizer = field(
        default_factory=Quantizer, metadata={"help": "granularity / scale method"}
    )
    learnable_scale_max_bits: int | None = field(
        default=None,
        metadata={"help": "final QAT: layers at <= this many bits learn an LSQ scale, as in "
                          "one_stage and two_stage (None: off; trials' PTQ proxy unchanged)"},
    )
    train: TrainConfig = field(
        default_factory=TrainConfig, metadata={"help": "settings of the final QAT stage"}
    )

    def __post_init__(self) -> None:
        cands = self.candidates
        if isinstance(cands, (str, bytes)) or not isinstance(cands, Sequence) or not cands:
            raise ValueError(f"optuna.candidates must be a non-empty list of bits, got {cands!r}")
        for b in cands:
            check_bits(b, what="optuna.candidates")
        if len(set(cands)) != len(cands):
            raise ValueError(f"optuna.candidates has duplicates: {list(cands)}")
        object.__setattr__(self, "candidates", tuple(sorted(cands)))
        if self.proxy not in PROXIES:
            raise ValueError(f"optuna.proxy must be one of {PROXIES}, got {self.proxy!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"optuna.sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.objectives not in OBJECTIVES:
            raise ValueError(
                f"optuna.objectives must be one of {OBJECTIVES}, got {self.objectives!r}"
            )
        for name, low in (
            ("population_size", 2),
            ("tpe_startup_trials", 0),
            ("warm_starts", 0),
            ("worker", 0),
            ("dev_batch_size", 1),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"optuna.{name} must be an integer >= {low}, got {value!r}")
        check_learnable_scale_max_bits(self.learnable_scale_max_bits,
                                       what="optuna.learnable_scale_max_bits")
        for name in ("heartbeat_interval", "max_new_tokens"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"optuna.{name} must be None or an integer >= 1, got {value!r}")
        if self.storage is not None and (not isinstance(self.storage, str) or not self.storage):
            raise ValueError(f"optuna.storage must be None or a URL string, got {self.storage!r}")
        if self.study_name is not None and (
            not isinstance(self.study_name, str) or not self.study_name.strip()
        ):
            raise ValueError(
                f"optuna.study_name must be a non-empty string, got {self.study_name!r}"
            )
        if self.heartbeat_interval is not None and self.storage is None:
            raise ValueError("optuna.heartbeat_interval needs a database storage URL")
        if self.worker > 0 and self.storage is not None and self.storage.startswith("sqlite"):
            raise ValueError(
                f"optuna.storage {self.storage!r} with worker={self.worker}: SQLite allows one "
                "writer at a time and parallel workers fail on its locks; use a server "
                "database (postgresql://...) or journal:PATH on a shared file system"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---- the search problem ------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchProblem:
    """The search problem: layers, their weight counts N_l, candidates, target average bits."""

    layers: tuple[str, ...]
    sizes: Mapping[str, int]
    candidates: tuple[int, ...]
    target: float

    @property
    def n_quantized(self) -> int:
        return sum(self.sizes.values())

    def avg_bits(self, bits: Mapping[str, int]) -> float:
        return sum(bits[n] * self.sizes[n] for n in self.layers) / self.n_quantized

    def violation(self, bits: Mapping[str, int]) -> float:
        """The constraint value: average bits minus target (feasible when <= 0)."""
        return self.avg_bits(bits) - self.target

    def uniform_bits(self) -> int:
        """The highest candidate within the target (the fallback and first warm start)."""
        return max(c for c in self.candidates if c <= self.target)


def _make_sampler(config: OptunaConfig, seed: int) -> optuna.samplers.BaseSampler:
    if config.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=config.population_size, seed=seed)
    return optuna.samplers.TPESampler(n_startup_trials=config.tpe_startup_trials, seed=seed)


def _fingerprint(workload: Workload, problem: SearchProblem, config: OptunaConfig,
                 precision: str = "fp32") -> str:
    spec = config.quantizer
    doc = {
        "model": workload.name,
        "layers": list(problem.layers),
        "candidates": list(problem.candidates),
        "target_avg_bits": repr(problem.target),
        "proxy": config.proxy,
        "objectives": config.objectives,
        "granularity": spec.granularity,
        "scale_method": spec.scale_method,
        "dev": [u.id for u in workload.dev],
        "max_new_tokens": config.max_new_tokens,
    }
    if precision != "fp32":  # studies made before the setting keep their fingerprint
        doc["precision"] = precision
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]


def default_study_name(workload: Workload, target: Target, budget: Budget, fingerprint: str) -> str:
    """``optuna-<model>-<target>-seed<seed>-<fingerprint>`` (model name made filename-safe)."""
    model = safe_name(workload.name, limit=60)
    return f"optuna-{model}-{target.label()}-seed{budget.seed}-{fingerprint}"


# ---- warm starts --------------------------------------------------------------------------------
def _raise_while_feasible(
    bits: dict[str, int], order: Sequence[str], problem: SearchProblem, steps: int = 1
) -> dict[str, int]:
    """Raise layers in ``order`` by one candidate step each, skipping those that do not fit."""
    cands = problem.candidates
    budget = problem.target * problem.n_quantized
    total = sum(bits[n] * problem.sizes[n] for n in problem.layers)
    for _ in range(steps):
        changed = False
        for name in order:
            i = cands.index(bits[name])
            if i + 1 < len(cands):
                new_total = total + (cands[i + 1] - bits[name]) * problem.sizes[name]
                if new_total <= budget:
                    bits[name], total, changed = cands[i + 1], new_total, True
        if not changed:
            break
    return bits


def _projected_random(problem: SearchProblem, rng: np.random.Generator) -> dict[str, int]:
    cands, layers = problem.candidates, problem.layers
    bits = {n: cands[int(rng.integers(len(cands)))] for n in layers}
    while problem.violation(bits) > 0:
        down = [n for n in layers if bits[n] > cands[0]]
        name = down[int(rng.integers(len(down)))]
        bits[name] = cands[cands.index(bits[name]) - 1]
    order = [layers[i] for i in rng.permutation(len(layers))]
    return _raise_while_feasible(bits, order, problem, steps=len(cands))


def warm_start_allocations(
    problem: SearchProblem,
    count: int,
    seed: int,
    relative_error: Callable[[str, int], float] | None = None,
) -> list[dict[str, int]]:
    """The allocations enqueued in a new study (module docstring, "Warm start"), deduplicated."""
    if count < 1:
        return []
    lo = problem.uniform_bits()
    starts = [dict.fromkeys(problem.layers, lo)]
    higher = [c for c in problem.candidates if c > lo]
    if count >= 2 and higher and relative_error is not None:
        hi = higher[0]
        gain = {
            n: (relative_error(n, lo) - relative_error(n, hi)) / problem.sizes[n]
            for n in problem.layers
        }
        order = sorted(problem.layers, key=lambda n: -gain[n])  # stable: model order on ties
        mixed = _raise_while_feasible(dict(starts[0]), order, problem)
        if mixed != starts[0]:
            starts.append(mixed)
    rng = np.random.default_rng(seed)
    seen = {tuple(s[n] for n in problem.layers) for s in starts}
    attempts = 0
    while len(starts) < count and attempts < 20 * count:
        attempts += 1
        bits = _projected_random(problem, rng)
        key = tuple(bits[n] for n in problem.layers)
        if key not in seen:
            seen.add(key)
            starts.append(bits)
    return starts[:count]


# ---- selection and summaries -----------------------------------------------------------------
def _trial_bits(trial: FrozenTrial, problem: SearchProblem) -> dict[str, int] | None:
    try:
        return {n: int(trial.params[param_name(n)]) for n in problem.layers}
    except KeyError:
        return None


def select_best(trials: Sequence[FrozenTrial], problem: SearchProblem) -> FrozenTrial | None:
    """The feasible, evaluated COMPLETE trial of lowest proxy (ties: fewer bits, earlier)."""
    best: tuple[float, float, int] | None = None
    chosen = None
    for t in trials:
        if t.state != TrialState.COMPLETE or not t.user_attrs.get(EVALUATED_ATTR):
            continue
        bits = _trial_bits(t, problem)
        if bits is None or problem.violation(bits) > 0:
            continue
        key = (float(t.values[0]), problem.avg_bits(bits), t.number)
        if best is None or key < best:
            best, chosen = key, t
    return chosen


def pareto_summary(trials: Sequence[FrozenTrial], problem: SearchProblem) -> list[dict[str, Any]]:
    """Non-dominated (avg bits, proxy) points of the evaluated trials, by average bits."""
    points = []
    for t in trials:
        if t.state != TrialState.COMPLETE or not t.user_attrs.get(EVALUATED_ATTR):
            continue
        bits = _trial_bits(t, problem)
        if bits is not None:
            points.append((problem.avg_bits(bits), float(t.values[0]), t.number))
    front: list[tuple[float, float, int]] = []
    for avg, value, number in sorted(points):
        if not front or value < front[-1][1]:
            front.append((avg, value, number))
    if len(front) > PARETO_SUMMARY_POINTS:
        keep = np.linspace(0, len(front) - 1, PARETO_SUMMARY_POINTS).round().astype(int)
        front = [front[i] for i in sorted(set(keep.tolist()))]
    return [
        {"trial": n, "avg_bits": round(a, 4), "proxy": v, "feasible": a <= problem.target}
        for a, v, n in front
    ]


# ---- the search loop ---------------------------------------------------------------------------
class _Heartbeat:
    """Record a running trial's heartbeat every ``interval`` seconds in a thread (RDB only)."""

    def __init__(self, storage: Any, trial: optuna.Trial) -> None:
        self._storage, self._trial_id = storage, trial._trial_id  # no public id accessor
        self._interval = storage.get_heartbeat_interval()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self._storage.record_heartbeat(self._trial_id)
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> None:
        self._thread.start()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Silence Optuna's per-trial INFO lines and experimental-feature warnings."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # ask/tell drives heartbeats itself (_Heartbeat), which Optuna does not expect
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
            yield
    finally:
        optuna.logging.set_verbosity(level)


def _open_study(
    workload: Workload, target: Target, budget: Budget, config: OptunaConfig, problem: SearchProblem
) -> tuple[optuna.Study, Any, str, bool]:
    """Open or create the study; the flag says whether this call created it."""
    storage = open_storage(config.storage, heartbeat_interval=config.heartbeat_interval)
    fingerprint = _fingerprint(workload, problem, config, budget.precision)
    name = config.study_name or default_study_name(workload, target, budget, fingerprint)
    sampler = _make_sampler(config, budget.seed + 1_000_003 * config.worker)
    directions = ["minimize"] * (1 if config.objectives == "proxy" else 2)
    try:  # the storage makes study creation atomic: exactly one worker creates the study
        study = optuna.create_study(
            storage=storage, sampler=sampler, study_name=name, directions=directions,
        )
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        created = False
        if list(study.directions) != [optuna.study.StudyDirection.MINIMIZE] * len(directions):
            raise ValueError(
                f"optuna study {name!r} in {redact(config.storage)} has "
                f"{len(study.directions)} objective(s); this search needs {len(directions)} "
                f"(objectives={config.objectives!r}); pick another study_name"
            ) from None
    found = study.user_attrs.get(FINGERPRINT_ATTR)
    if found is None:
        study.set_user_attr(FINGERPRINT_ATTR, fingerprint)
        study.set_user_attr("target_avg_bits", problem.target)
        study.set_user_attr("layers", len(problem.layers))
    elif found != fingerprint:
        raise ValueError(
            f"optuna study {name!r} in {redact(config.storage)} was made for a different search "
            f"problem (fingerprint {found}, this one {fingerprint}: model, layers, candidates, "
            "target, proxy, quantizer, dev subset or objectives differ); pick another study_name"
        )
    return study, storage, name, created


def _finished(study: optuna.Study, heartbeat: bool) -> int:
    states = (TrialState.COMPLETE, TrialState.RUNNING) if heartbeat else (TrialState.COMPLETE,)
    return len(study.get_trials(deepcopy=False, states=states))


def _complete(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


@dataclass
class SearchOutcome:
    """What the search stage gives the QAT stage: the allocation, its timing and info."""

    allocation: Allocation
    stage: StageTiming
    info: dict[str, Any]


def search_allocation(
    workload: Workload, target: Target, budget: Budget, config: OptunaConfig
) -> SearchOutcome:
    """Run (or continue) the study to ``budget.search_budget`` trials and pick the allocation.

    The model's weights are left exactly as they were (layers are swapped back after the
    search). Args as :func:`run_optuna`.

    Raises:
        ValueError: the target is below every candidate, a bad storage URL, or a study name
            already used for a different search problem.
    """
    net = workload.model.model
    sizes = layer_sizes(net, workload.eligible)
    n_total = sum(p.numel() for p in net.parameters())
    target_bits = target.avg_bits_for(n_total, sum(sizes.values()))
    if target_bits < config.candidates[0]:
        raise ValueError(
            f"target {target.label()} ({target_bits:.3f} average bits) is below the smallest "
            f"candidate bit-width {config.candidates[0]} of optuna.candidates "
            f"{list(config.candidates)}"
        )
    problem = SearchProblem(tuple(workload.eligible), sizes, config.candidates, target_bits)
    distributions = {param_name(n): CategoricalDistribution(problem.candidates)
                     for n in problem.layers}
    trials_run = evaluations = 0
    warm = 0
    with _quiet_optuna(), stage_timer(workload.device) as watch:
        study, storage, study_name, created = _open_study(
            workload, target, budget, config, problem
        )
        heartbeat = supports_heartbeat(storage)
        if heartbeat:
            optuna.storages.fail_stale_trials(study)
        done = _finished(study, heartbeat)
        if done < budget.search_budget:
            proxy = PTQProxy(
                workload.model, problem.layers, workload.dev, proxy=config.proxy,
                quantizer=config.quantizer, batch_size=config.dev_batch_size,
                max_new_tokens=config.max_new_tokens, precision=budget.precision,
            )
            with proxy, tqdm(total=budget.search_budget, initial=done, unit="trial",
                             desc=f"optuna {config.sampler} search",
                             disable=not workload.progress) as bar:
                # Only the worker that created the study enqueues the warm starts (or worker 0
                # resuming a study left empty), so parallel workers never enqueue them twice.
                if created or (config.worker == 0 and not study.get_trials(deepcopy=False)):
                    starts = warm_start_allocations(
                        problem, min(config.warm_starts, budget.search_budget), budget.seed,
                        proxy.relative_error,
                    )
                    for bits in starts:
                        study.enqueue_trial({param_name(n): b for n, b in bits.items()},
                                            skip_if_exists=True)
                    warm = len(starts)
                while True:
                    if heartbeat:
                        optuna.storages.fail_stale_trials(study)
                    if _finished(study, heartbeat) >= budget.search_budget:
                        if not heartbeat or _complete(study) >= budget.search_budget:
                            break
                        # Other workers' trials still run. Wait until they finish or their
                        # heartbeats go stale: a dead worker's trial is then failed and its
                        # retry falls to a live worker, so the last one standing completes it.
                        time.sleep(min(1.0, storage.get_heartbeat_interval()))
                        continue
                    ran = _run_trial(study, storage, heartbeat, distributions, problem, proxy,
                                     config, budget.search_budget)
                    if ran is not None:
                        evaluations += ran
                        trials_run += 1
                        bar.update(1)
        trials = study.get_trials(deepcopy=False)
        best = select_best(trials, problem)
    stage = StageTiming("search", watch.seconds, device_label(workload.device),
                        trials=trials_run, evaluations=evaluations, kind="search")

    fallback = None
    if best is None:
        bits = dict.fromkeys(problem.layers, problem.uniform_bits())
        fallback = (
            f"no feasible trial among {len(trials)} in the study; using uniform "
            f"{problem.uniform_bits()}-bit (the highest candidate within the target)"
        )
        logger.warning("optuna search: %s", fallback)
    else:
        bits = _trial_bits(best, problem)
        assert bits is not None
    uniform_trial = _uniform_trial(trials, problem)
    info = {
        "study_name": study_name,
        "storage": redact(config.storage),
        "sampler": config.sampler,
        "objectives": config.objectives,
        "proxy": config.proxy,
        "candidates": list(problem.candidates),
        "target_avg_bits": problem.target,
        "trials_run": trials_run,
        "trials_in_study": sum(t.state == TrialState.COMPLETE for t in trials),
        "evaluations": evaluations,
        "warm_starts": warm,
        "best_trial": None if best is None else best.number,
        "best_proxy": None if best is None else float(best.values[0]),
        "best_avg_bits": problem.avg_bits(bits),
        "uniform_bits": problem.uniform_bits(),
        "uniform_proxy": None if uniform_trial is None else float(uniform_trial.values[0]),
        "fallback": fallback,
        "pareto_front": pareto_summary(trials, problem),
    }
    return SearchOutcome(Allocation(workload.name, bits), stage, info)


def _uniform_trial(trials: Sequence[FrozenTrial], problem: SearchProblem) -> FrozenTrial | None:
    want = problem.uniform_bits()
    for t in trials:
        if t.state == TrialState.COMPLETE and t.user_attrs.get(EVALUATED_ATTR):
            bits = _trial_bits(t, problem)
            if bits is not None and set(bits.values()) == {want}:
                return t
    return None


def _run_trial(
    study: optuna.Study,
    storage: Any,
    heartbeat: bool,
    distributions: dict[str, CategoricalDistribution],
    problem: SearchProblem,
    proxy: PTQProxy,
    config: OptunaConfig,
    n_trials: int,
) -> int | None:
    """Ask one trial, score it if feasible (or if asked to), tell it.

    Returns:
        The number of proxy evaluations (0 or 1), or None when the trial was surplus: with
        heartbeats, a trial asked after ``n_trials`` lower-numbered trials were already
        complete or running (two workers asking at once near the end) is told PRUNED
        unevaluated, so the study holds exactly ``n_trials`` complete trials.
    """
    trial = study.ask(distributions)
    # Heartbeats from the first moment: a worker killed from here on leaves a trial that
    # goes stale (a trial with no heartbeat at all would never be failed).
    beat = _Heartbeat(storage, trial) if heartbeat else contextlib.nullcontext()
    surplus = False
    try:
        with beat:
            if heartbeat:
                ahead = study.get_trials(
                    deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)
                )
                surplus = sum(t.number < trial.number for t in ahead) >= n_trials
            if surplus:
                trial.set_user_attr(SURPLUS_ATTR, True)
            else:
                # An enqueued trial's parameters are all fixed, so the sampler is never asked
                # for relative parameters and NSGA-II never assigns it a generation: the warm
                # starts would not be part of any population and generation 0 would be 16
                # more random (and, at 3-4 bits, almost all infeasible) trials. Asking for
                # them lets every sampler register the trial as it does a sampled one
                # (NSGA-II stamps the generation); the answer is not used.
                _ = trial.relative_params
                bits = {n: int(trial.params[param_name(n)]) for n in problem.layers}
                avg = problem.avg_bits(bits)
                trial.set_user_attr(WORKER_ATTR, config.worker)
                trial.set_user_attr(AVG_BITS_ATTR, avg)
                violation = problem.violation(bits)
                trial.set_constraint(CONSTRAINT_KEY, violation)
                evaluate = config.score_infeasible or violation <= 0
                value = proxy.score(bits) if evaluate else math.inf
                trial.set_user_attr(EVALUATED_ATTR, evaluate)
    except BaseException:
        study.tell(trial, state=TrialState.FAIL)
        raise
    if surplus:
        study.tell(trial, state=TrialState.PRUNED)
        return None
    study.tell(trial, value if config.objectives == "proxy" else [value, avg])
    return int(evaluate)


@register_method("optuna", OptunaConfig)
def run_optuna(
    workload: Workload, target: Target, budget: Budget, config: OptunaConfig
) -> MethodResult:
    """Optuna precision search (``budget.search_budget`` trials) then fixed-bit QAT.

    Args:
        workload: model (modified in place by the QAT stage), data, eligible layers.
        target: average bits or compression ratio; it is a constraint of the search.
        budget: ``search_budget`` trials (the study's total), ``dev_subset`` utterances
            (``workload.dev``) for the proxy, ``train_steps`` QAT steps, ``seed``.
        config: see :class:`OptunaConfig`.

    Returns:
        The trained model, the chosen allocation, stages ``search`` (trials, proxy
        evaluations) and ``qat`` (steps), and ``info`` (module docstring).

    Raises:
        ValueError: see :func:`search_allocation`.
    """
    outcome = search_allocation(workload, target, budget, config)
    qat, result = qat_fixed_bits(
        workload, outcome.allocation, quantizer=config.quantizer, budget=budget,
        train_config=config.train, desc="optuna QAT",
        learnable_scale_max_bits=config.learnable_scale_max_bits,
    )
    info = {**outcome.info, "final_loss": result.history[-1] if result.history else None}
    return MethodResult(
        model=workload.model, allocation=outcome.allocation, stages=[outcome.stage, qat],
        info=info,
    )


__all__ = [
    "AVG_BITS_ATTR",
    "CONSTRAINT_KEY",
    "EVALUATED_ATTR",
    "OBJECTIVES",
    "PARAM_PREFIX",
    "SAMPLERS",
    "SURPLUS_ATTR",
    "WORKER_ATTR",
    "OptunaConfig",
    "SearchOutcome",
    "SearchProblem",
    "default_study_name",
    "param_name",
    "pareto_summary",
    "run_optuna",
    "search_allocation",
    "select_best",
    "warm_start_allocations",
]
