"""Two-stage sensitivities of the tied token embedding: the KL probe quantizes lookup and
projection as one table (as prepare_ does), the Hessian trace treats the tied tensor as one
layer counted once, and both leave the model and its tie as they were."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from mpqbench.baselines.sensitivity import kl_sensitivities
from mpqbench.baselines.two_stage import TwoStageConfig, hessian_stage
from mpqbench.method import Budget, Workload
from mpqbench.quant.allocation import Allocation, allocation_for
from mpqbench.quant.formats import Quantizer
from mpqbench.quant.layers import prepare_
from mpqbench.quant.teacher import build_teacher_cache
from mpqbench.workloads.data.types import Utterance
from mpqbench.workloads.models.registry import load_model

#: Float results here depend on which CPU kernels torch runs: .ci/run repeats them on AVX2.
pytestmark = pytest.mark.kernels

TEXTS = ["THE CAT SAT", "A DOG RAN HOME", "BIRDS SING", "WE WALK TO TOWN"]
EMBED, PROJ = "model.decoder.embed_tokens", "proj_out"


def utterances(n, seed):
    rng = np.random.default_rng(seed)
    return [Utterance(id=f"{seed}-1-{i:04d}", text=TEXTS[i % len(TEXTS)],
                      audio=(0.1 * rng.standard_normal(4800 + 400 * i)).astype(np.float32))
            for i in range(n)]


def whisper_workload():
    model = load_model("tiny-whisper")
    train, dev = utterances(4, 1), utterances(4, 2)
    eligible = list(allocation_for(model, 8, groups=("blocks", "embeddings")).quantized)
    assert EMBED in eligible and PROJ not in eligible
    teacher = build_teacher_cache(model, train, batch_size=4, progress=False)
    return Workload(name=model.name, model=model, train=train, dev=dev, eligible=eligible,
                    teacher=teacher)


def assert_tied(module):
    assert module.get_submodule(PROJ).weight is module.get_submodule(EMBED).weight


@pytest.mark.parametrize("spec", [Quantizer(), Quantizer(granularity="per_tensor")],
                         ids=["per-channel", "per-tensor"])
def test_kl_probe_of_the_embedding_equals_prepare_of_the_embedding_alone(spec):
    workload = whisper_workload()
    module = workload.model.model
    state = {k: v.clone() for k, v in module.state_dict().items()}
    types = {n: type(m) for n, m in module.named_modules()}
    batches = [workload.model.make_batch(workload.dev)]
    costs, _ = kl_sensitivities(workload.model, [EMBED], (2, 4), batches, spec)
    assert_tied(module)
    assert {n: type(m) for n, m in module.named_modules()} == types
    assert all(torch.equal(module.state_dict()[k], v) for k, v in state.items())
    module.eval()
    with torch.no_grad():
        ref = torch.log_softmax(workload.model.forward(batches[0]).logits.double(), -1)
    for bits in (2, 4):
        reference = copy.deepcopy(workload.model)
        prepare_(reference.model, Allocation(workload.name, {EMBED: bits}), spec)
        reference.model.eval()
        with torch.no_grad():
            logq = torch.log_softmax(reference.forward(batches[0]).logits.double(), -1)
        expected = float((ref.exp() * (ref - logq)).sum()) / ref.shape[0]
        assert costs[EMBED][bits] == pytest.approx(expected, rel=1e-6, abs=1e-12)
    assert costs[EMBED][2] > costs[EMBED][4] > 0


def test_hessian_trace_counts_the_tied_table_once_on_both_hvp_paths():
    workload = whisper_workload()
    module = workload.model.model
    budget = Budget(train_steps=1, batch_size=2, search_budget=2, seed=0)
    stages = {hvp: hessian_stage(workload, budget, TwoStageConfig(stage1="hessian", hvp=hvp))
              for hvp in ("autograd", "finite_difference")}
    assert_tied(module)
    for hvp, stage in stages.items():
        traces = stage.info["hutchinson"]["traces"]
        assert set(traces) == set(workload.eligible), hvp  # the embedding, not proj_out
        assert set(stage.costs[EMBED]) == {2, 4, 8}
    auto = stages["autograd"].info["hutchinson"]["traces"][EMBED]
    fd = stages["finite_difference"].info["hutchinson"]["traces"][EMBED]
    # the same Rademacher probes on one tensor whose gradient sums lookup and projection:
    # the two paths differ only by the finite difference's O(h^2) and rounding error
    assert fd == pytest.approx(auto, rel=0.01, abs=1e-6)
