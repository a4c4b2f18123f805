"""Optuna precision search: feasibility, selection, naming, seeding, storages and resume."""

from __future__ import annotations

import copy
import time

import numpy as np
import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from mpqbench.method import Budget, Target, Workload
from mpqbench.quant.accounting import account
from mpqbench.quant.allocation import Allocation, allocation_for
from mpqbench.quant.formats import Quantizer
from mpqbench.quant.layers import prepare_
from mpqbench.quant.teacher import build_teacher_cache
from mpqbench.search.optuna_search import (
    AVG_BITS_ATTR,
    CONSTRAINT_KEY,
    EVALUATED_ATTR,
    OptunaConfig,
    SearchProblem,
    param_name,
    pareto_summary,
    run_optuna,
    search_allocation,
    select_best,
    warm_start_allocations,
)
from mpqbench.search.optuna_storage import open_storage, redact
from mpqbench.search.ptq_proxy import PTQProxy
from mpqbench.workloads.data.types import Utterance
from mpqbench.workloads.models.registry import load_model

TEXTS = ["THE CAT SAT", "A DOG RAN HOME", "BIRDS SING", "WE WALK TO TOWN"]


def _utterances(n: int, seed: int) -> list[Utterance]:
    rng = np.random.default_rng(seed)
    return [
        Utterance(id=f"{seed}-1-{i:04d}", text=TEXTS[i % len(TEXTS)],
                  audio=(0.1 * rng.standard_normal(6400 + 400 * i)).astype(np.float32))
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def workload() -> Workload:
    """One tiny CTC workload for the module: the search leaves the model unchanged."""
    model = load_model("tiny-ctc")
    train, dev = _utterances(2, 1), _utterances(1, 2)
    eligible = list(allocation_for(model, 8).quantized)
    teacher = build_teacher_cache(model, train, batch_size=2, progress=False)
    return Workload(name=model.name, model=model, train=train, dev=dev, eligible=eligible,
                    teacher=teacher)


def _budget(trials: int, seed: int = 0) -> Budget:
    return Budget(train_steps=1, batch_size=2, search_budget=trials, dev_subset=1, seed=seed)


def _config(**kw) -> OptunaConfig:
    return OptunaConfig(**{"dev_batch_size": 2, "population_size": 4, **kw})


def _study(url: str, outcome) -> optuna.Study:
    storage = open_storage(url)
    return optuna.load_study(study_name=outcome.info["study_name"], storage=storage)


def _history(study: optuna.Study) -> list[tuple]:
    return [(t.number, t.state, dict(t.params), t.values) for t in study.get_trials()]


# ---- selection ---------------------------------------------------------------------------------
def test_chosen_allocation_is_feasible_and_the_best_feasible_trial(workload, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    target = Target(avg_bits=4)
    config = _config(storage=url, warm_starts=3)
    out = search_allocation(workload, target, _budget(10), config)

    avg = account(workload.model.model, out.allocation).avg_bits.value
    assert avg <= 4.0
    assert out.info["best_avg_bits"] == pytest.approx(avg)
    trials = _study(url, out).get_trials()
    assert len(trials) == 10 and all(t.state == TrialState.COMPLETE for t in trials)
    feasible = [t for t in trials if t.user_attrs[AVG_BITS_ATTR] <= 4.0]
    infeasible = [t for t in trials if t.user_attrs[AVG_BITS_ATTR] > 4.0]
    # every feasible trial is scored, no infeasible one is (score_infeasible=False)
    assert all(t.user_attrs[EVALUATED_ATTR] for t in feasible)
    assert all(not t.user_attrs[EVALUATED_ATTR] and t.value == np.inf for t in infeasible)
    assert out.stage.evaluations == len(feasible) and out.stage.trials == 10
    for t in trials:  # the constraint each sampler reads
        assert t.constraints[CONSTRAINT_KEY] == pytest.approx(t.user_attrs[AVG_BITS_ATTR] - 4.0)
    best = min(feasible, key=lambda t: t.value)
    assert out.info["best_proxy"] == best.value
    chosen = {n: b for n, b in out.allocation.layers.items()}
    assert {param_name(n): b for n, b in chosen.items()} == best.params
    assert out.info["uniform_proxy"] >= best.value
    assert out.info["fallback"] is None


def test_proxy_value_matches_prepared_model_kl(workload):
    """Independent reference: prepare_ (QuantLinear) on a copy + a fresh teacher cache."""
    bits = {n: (2, 4, 8)[i % 3] for i, n in enumerate(workload.eligible)}
    spec = Quantizer(scale_method="mse")
    with PTQProxy(workload.model, workload.eligible, workload.dev, quantizer=spec,
                  batch_size=2) as proxy:
        value = proxy.score(bits)
    reference = copy.deepcopy(workload.model)
    teacher = build_teacher_cache(reference, workload.dev, batch_size=2, progress=False)
    prepare_(reference.model, Allocation(workload.name, bits), spec)
    reference.model.eval()
    with torch.no_grad():
        batch = reference.make_batch(workload.dev)
        out = reference.forward(batch)
        expected = float(teacher.kl(batch, out.logits, out.mask))
    assert value == pytest.approx(expected, rel=1e-5, abs=1e-9)
    assert value > 0


def test_proxy_leaves_the_model_untouched(workload):
    net = workload.model.model
    before = {k: v.clone() for k, v in net.state_dict().items()}
    modules = dict(net.named_modules())
    training = net.training
    with PTQProxy(workload.model, workload.eligible, workload.dev, batch_size=2) as proxy:
        proxy.score(dict.fromkeys(workload.eligible, 2))
        assert all(dict(net.named_modules())[n] is not modules[n] for n in workload.eligible)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(dict(net.named_modules())[n] is modules[n] for n in workload.eligible)
    assert net.training == training


def test_parameter_names_carry_module_names(workload, tmp_path):
    url = f"journal:{tmp_path / 'names.log'}"
    out = search_allocation(workload, Target(avg_bits=3), _budget(3), _config(storage=url))
    for t in _study(url, out).get_trials():
        assert set(t.params) == {f"bits:{n}" for n in workload.eligible}
        assert all(isinstance(d, CategoricalDistribution) and d.choices == (2, 4, 8)
                   for d in t.distributions.values())


def test_warm_starts_form_nsga2s_first_generation(workload, tmp_path):
    url = f"journal:{tmp_path / 'gen.log'}"
    out = search_allocation(workload, Target(avg_bits=4), _budget(6),
                            _config(storage=url, warm_starts=4, population_size=4))
    study = _study(url, out)
    sampler = optuna.samplers.NSGAIISampler(population_size=4)
    assert [t.number for t in sampler.get_population(study, 0)] == [0, 1, 2, 3]
    assert [t.number for t in sampler.get_population(study, 1)] == [4, 5]
    assert {t.number for t in sampler.get_parent_population(study, 1)} == {0, 1, 2, 3}


# ---- seeding -------------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", ["nsga2", "tpe"])
def test_seeded_runs_give_identical_studies(workload, tmp_path, sampler):
    config = dict(sampler=sampler, warm_starts=2, tpe_startup_trials=2)
    runs = []
    seeds = (5, 5, 6) if sampler == "nsga2" else (5, 5)
    for i, seed in enumerate(seeds):
        url = f"journal:{tmp_path / f'{sampler}{i}.log'}"
        out = search_allocation(workload, Target(avg_bits=4), _budget(6, seed),
                                _config(storage=url, **config))
        runs.append((_history(_study(url, out)), dict(out.allocation.layers)))
    assert runs[0] == runs[1]
    if len(runs) > 2:
        assert runs[0][0] != runs[2][0]  # another seed samples other allocations


# ---- storages and resume -------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_storage_round_trip_and_resume(workload, tmp_path, kind):
    url = f"sqlite:///{tmp_path / 'r.db'}" if kind == "sqlite" else f"journal:{tmp_path / 'r.log'}"
    config = _config(storage=url, warm_starts=2)
    target = Target(avg_bits=4)
    first = search_allocation(workload, target, _budget(4), config)
    assert first.info["trials_run"] == 4 and first.info["trials_in_study"] == 4
    second = search_allocation(workload, target, _budget(7), config)
    assert second.info["study_name"] == first.info["study_name"]
    assert second.info["trials_run"] == 3 and second.info["trials_in_study"] == 7
    assert second.info["warm_starts"] == 0  # not enqueued again on resume
    assert second.info["best_proxy"] <= first.info["best_proxy"]
    third = search_allocation(workload, target, _budget(7), config)
    assert third.info["trials_run"] == 0 and third.stage.evaluations == 0
    assert dict(third.allocation.layers) == dict(second.allocation.layers)
    assert len(_study(url, third).get_trials()) == 7


def test_resume_after_a_crashed_trial_without_heartbeats(workload, tmp_path):
    url = f"journal:{tmp_path / 'crash.log'}"
    config = _config(storage=url, warm_starts=1)
    out = search_allocation(workload, Target(avg_bits=4), _budget(2), config)
    study = _study(url, out)
    study.ask()  # a worker that died mid-trial: the trial stays RUNNING
    out = search_allocation(workload, Target(avg_bits=4), _budget(4), config)
    states = [t.state for t in _study(url, out).get_trials()]
    assert states.count(TrialState.COMPLETE) == 4 and states.count(TrialState.RUNNING) == 1


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_heartbeat_fails_a_dead_workers_trial_and_requeues_it(workload, tmp_path):
    url = f"sqlite:///{tmp_path / 'hb.db'}"
    config = _config(storage=url, warm_starts=1, heartbeat_interval=1)
    out = search_allocation(workload, Target(avg_bits=4), _budget(1), config)
    storage = open_storage(url, heartbeat_interval=1)
    study = optuna.load_study(study_name=out.info["study_name"], storage=storage)
    dead = study.ask({param_name(n): CategoricalDistribution((2, 4, 8))
                      for n in workload.eligible})
    storage.record_heartbeat(dead._trial_id)
    time.sleep(2.5)  # past the grace period (2 x interval)
    out = search_allocation(workload, Target(avg_bits=4), _budget(3), config)
    trials = _study(url, out).get_trials()
    assert trials[dead.number].state == TrialState.FAIL
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retried) == 1 and retried[0].params == trials[dead.number].params
    assert retried[0].state == TrialState.COMPLETE
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("not a url", "SQLAlchemy database URL"),
        ("nosuchdialect://host/db", "unknown database dialect"),
        ("postgresql://user:secret@127.0.0.1:1/db", "driver"),
        ("sqlite:////nonexistent-dir/sub/x.db", "cannot open the database"),
        ("journal:/nonexistent-dir/sub/x.log", "does not exist"),
        ("journal:", "no file path"),
        ("redis://localhost", "unknown database dialect"),
    ],
)
def test_bad_storage_url_is_a_clear_value_error(url, words):
    with pytest.raises(ValueError, match=words) as info:
        open_storage(url)
    assert "secret" not in str(info.value)


def test_bad_storage_url_through_the_method(workload):
    with pytest.raises(ValueError, match="optuna storage"):
        search_allocation(workload, Target(avg_bits=4), _budget(2), _config(storage="bogus"))


def test_redact_hides_passwords():
    assert "secret" not in redact("postgresql://user:secret@host/db")
    assert redact(None) == "in-memory"


def test_a_study_name_reused_for_another_problem_is_refused(workload, tmp_path):
    url = f"journal:{tmp_path / 'reuse.log'}"
    search_allocation(workload, Target(avg_bits=4), _budget(1),
                      _config(storage=url, study_name="shared"))
    with pytest.raises(ValueError, match="different search problem"):
        search_allocation(workload, Target(avg_bits=4), _budget(1),
                          _config(storage=url, study_name="shared", candidates=(2, 4)))


# ---- fallback and validation -------------------------------------------------------------------
def test_no_trials_falls_back_to_the_best_feasible_uniform(workload):
    out = search_allocation(workload, Target(avg_bits=5), _budget(0), _config())
    assert set(out.allocation.layers.values()) == {4}
    assert "no feasible trial" in out.info["fallback"]
    assert out.stage.trials == 0 and out.stage.kind == "search"


def test_final_qat_learns_lsq_scales_on_the_layers_at_or_below_the_switch():
    model = load_model("tiny-ctc")
    eligible = list(allocation_for(model, 8).quantized)
    work = Workload(name=model.name, model=model, train=_utterances(2, 1),
                    dev=_utterances(1, 2), eligible=eligible,
                    teacher=build_teacher_cache(model, _utterances(2, 1), batch_size=2,
                                                progress=False))
    # no trial: the fallback, every layer at 2 bits (the highest candidate within 3)
    out = run_optuna(work, Target(avg_bits=3), _budget(0),
                     _config(candidates=(2, 4), learnable_scale_max_bits=2))
    assert set(out.allocation.layers.values()) == {2}
    layers = [out.model.model.get_submodule(n) for n in eligible]
    assert layers and all(m.spec.learnable_scale for m in layers)
    assert OptunaConfig().learnable_scale_max_bits is None


def test_target_below_every_candidate_is_refused(workload):
    with pytest.raises(ValueError, match="below the smallest candidate"):
        search_allocation(workload, Target(avg_bits=1.5), _budget(2), _config())


@pytest.mark.parametrize(
    "kw",
    [
        {"candidates": ()},
        {"candidates": (2, 2)},
        {"candidates": (0, 4)},
        {"proxy": "mse"},
        {"sampler": "cmaes"},
        {"objectives": "bits"},
        {"population_size": 1},
        {"warm_starts": -1},
        {"storage": ""},
        {"heartbeat_interval": 5},
        {"storage": "sqlite:///x.db", "worker": 1},
        {"learnable_scale_max_bits": 0},
    ],
)
def test_config_validation(kw):
    with pytest.raises(ValueError, match="optuna"):
        OptunaConfig(**kw)


def test_candidates_are_sorted_tuples():
    assert OptunaConfig(candidates=[8, 2, 4]).candidates == (2, 4, 8)


# ---- warm starts and the Pareto summary (no model) ----------------------------------------------
def _problem(target: float) -> SearchProblem:
    sizes = {f"l{i}": 100 * (1 + i % 3) for i in range(12)}
    return SearchProblem(tuple(sizes), sizes, (2, 4, 8), target)


@pytest.mark.parametrize("target", [2.0, 3.0, 4.5, 6.0, 8.0])
def test_warm_starts_are_feasible_distinct_and_seeded(target):
    problem = _problem(target)
    starts = warm_start_allocations(problem, 8, seed=3, relative_error=lambda n, b: 2.0**-b)
    assert starts[0] == dict.fromkeys(problem.layers, problem.uniform_bits())
    assert all(problem.violation(s) <= 0 for s in starts)
    assert len({tuple(s.values()) for s in starts}) == len(starts)
    assert len(starts) == (1 if target in (2.0, 8.0) else 8)  # else only uniform fits
    assert starts == warm_start_allocations(problem, 8, seed=3, relative_error=lambda n, b: 2.0**-b)
    if target not in (2.0, 8.0):  # room between candidates: starts use it
        assert max(problem.avg_bits(s) for s in starts) > problem.uniform_bits()


def test_pareto_summary_lists_non_dominated_points():
    problem = _problem(4.0)
    dist = {param_name(n): CategoricalDistribution((2, 4, 8)) for n in problem.layers}

    def trial(number, bits, value, evaluated=True):
        t = create_trial(params={param_name(n): b for n, b in bits.items()}, distributions=dist,
                         value=value, user_attrs={EVALUATED_ATTR: evaluated})
        t.number = number
        return t

    two, four = dict.fromkeys(problem.layers, 2), dict.fromkeys(problem.layers, 4)
    mixed = {**two, "l0": 4}
    trials = [trial(0, four, 0.1), trial(1, two, 0.5), trial(2, mixed, 0.6),  # 2 dominated
              trial(3, mixed, 0.3), trial(4, dict.fromkeys(problem.layers, 8), np.inf, False)]
    front = pareto_summary(trials, problem)
    assert [p["trial"] for p in front] == [1, 3, 0]
    assert [p["feasible"] for p in front] == [True, True, True]
    assert select_best(trials, problem).number == 0
