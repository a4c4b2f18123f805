"""Training and evaluation precision: bf16 autocast for matmuls, fp32 for the quantizers,
weights, optimizer state and losses; fp32 (the default) keeps every cell hash."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from mpqbench.bench.cell import CellSpec
from mpqbench.method import Budget, Target
from mpqbench.precision import autocast, check_precision
from mpqbench.quant.allocation import Allocation, allocation_for
from mpqbench.quant.formats import Quantizer
from mpqbench.quant.layers import QuantLinear, prepare_
from mpqbench.quant.qat import TrainConfig, train
from mpqbench.quant.teacher import build_teacher_cache
from mpqbench.workloads.data.types import Utterance
from mpqbench.workloads.evaluate import evaluate
from mpqbench.workloads.models.registry import load_model
from quant_toys import stack, stack_input

#: Float results here depend on which CPU kernels torch runs: .ci/run repeats them on AVX2.
pytestmark = pytest.mark.kernels

TEXTS = ["THE CAT SAT", "A DOG RAN HOME", "BIRDS SING", "WE WALK TO TOWN"]


def utterances(n: int, seed: int = 0) -> list[Utterance]:
    rng = np.random.default_rng(seed)
    return [Utterance(id=f"{seed}-1-{i:04d}", text=TEXTS[i % len(TEXTS)],
                      audio=(0.1 * rng.standard_normal(4800 + 400 * i)).astype(np.float32))
            for i in range(n)]


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("quantizer", [Quantizer(), Quantizer(learnable_scale=True),
                                       Quantizer(scale_method="mse")], ids=["max", "lsq", "mse"])
def test_integer_codes_do_not_depend_on_the_forward_precision(bits, quantizer):
    torch.manual_seed(bits)
    layer = QuantLinear.from_float(nn.Linear(48, 32), quantizer.at(bits))
    x = torch.randn(4, 48)
    codes32, scale32 = layer.codes_and_scale()
    with autocast("bf16", "cpu"):
        out = layer(x)
        codes16, scale16 = layer.codes_and_scale()
    assert out.dtype == torch.bfloat16  # the matmul ran in bf16 ...
    assert layer.quantized_weight().dtype == torch.float32  # ... on an fp32 quantizer
    assert torch.equal(codes16, codes32) and torch.equal(scale16, scale32)


def test_bf16_training_keeps_fp32_weights_optimizer_and_losses():
    model = load_model("tiny-whisper")
    data = utterances(4)
    teacher = build_teacher_cache(model, data, batch_size=2, progress=False, precision="bf16")
    prepare_(model.model, allocation_for(model, 4))
    result = train(model, data, steps=3, batch_size=2, seed=0, config=TrainConfig(lr=1e-3),
                   teacher=teacher, progress=False, precision="bf16")
    assert result.steps == 3 and len(result.history) == 3
    assert all(np.isfinite(h["loss"]) and "kl" in h for h in result.history)
    assert all(p.dtype == torch.float32 for p in model.model.parameters())


def test_teacher_cache_is_fp32_whatever_the_forward_precision():
    model = load_model("tiny-ctc")
    data = utterances(3)
    cache = build_teacher_cache(model, data, batch_size=3, progress=False, precision="bf16")
    entry = next(iter(cache._entries.values()))
    assert entry.logp.dtype == torch.float32


@pytest.mark.parametrize("name", ["tiny-ctc", "tiny-whisper"])
def test_bf16_evaluation_decodes_every_utterance(name):
    # Whisper's log-mel front end runs inside transcribe: it must stay fp32 under autocast
    model = load_model(name)
    data = utterances(3)
    result = evaluate(model, data, batch_size=2, max_new_tokens=4, progress=False,
                      precision="bf16")
    assert len(result.rows) == 3
    with autocast("bf16", "cpu"):
        inputs = model.make_batch(data).inputs
    assert all(t.dtype != torch.bfloat16 for t in inputs.values())


def test_precision_is_validated_and_fp32_keeps_hashes():
    assert check_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="CUDA"):
        check_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        Budget(train_steps=1, precision="int8")
    budget = Budget(train_steps=2)
    assert "precision" not in budget.to_dict()  # records made before the field: same hash
    spec = CellSpec(model="tiny-ctc", method="uniform", target=Target(avg_bits=4),
                    budget=budget)
    bf16 = dataclasses.replace(spec, budget=dataclasses.replace(budget, precision="bf16"))
    assert bf16.config_hash() != spec.config_hash()
    assert bf16.to_dict()["budget"]["precision"] == "bf16"
    assert dataclasses.replace(spec, eval_precision="fp32").config_hash() == spec.config_hash()
    assert dataclasses.replace(spec, eval_precision="bf16").config_hash() != spec.config_hash()
    with pytest.raises(ValueError, match="eval_precision"):
        dataclasses.replace(spec, eval_precision="fp8")


def test_fp32_and_bf16_stack_outputs_agree_to_bf16_rounding():
    model = stack()
    prepare_(model, Allocation("stack", {"lin": 4, "out": 4}))
    with torch.no_grad():
        ref = model(stack_input())
        with autocast("bf16", "cpu"):
            low = model(stack_input())
    # bf16 keeps 8 significant bits: a few units of 2^-8 relative to the O(1) outputs
    torch.testing.assert_close(low.float(), ref, rtol=0.05, atol=0.05)


def test_a_bf16_cell_records_its_precisions(corpus):
    from mpqbench.bench.cell import run_cell

    budget = Budget(train_steps=1, batch_size=2, dev_subset=2, precision="bf16")
    spec = CellSpec(model="tiny-ctc", data=str(corpus), method="uniform",
                    target=Target(avg_bits=8), budget=budget, eval_splits=("test-clean",),
                    eval_precision="bf16")
    ref = run_cell(spec.reference(), progress=False)
    assert ref["precision"] == {"train": "fp32", "eval": "bf16", "cuda_matmul_tf32": None}
    record = run_cell(spec, reference=ref, progress=False)
    assert record["precision"] == {"train": "bf16", "eval": "bf16", "cuda_matmul_tf32": None}
    assert record["config"]["budget"]["precision"] == "bf16"


def test_suites_take_a_training_and_an_evaluation_precision(corpus, tmp_path):
    from mpqbench.bench.suite import load_suite

    text = f"""
[suite]
name = "p"
data = "{corpus}"
models = ["tiny-ctc"]
eval_splits = ["test-clean"]
eval_precision = "bf16"
[budget]
train_steps = 1
batch_size = 2
precision = "bf16"
[[systems]]
method = "uniform"
avg_bits = [8]
"""
    path = tmp_path / "p.toml"
    path.write_text(text)
    suite = load_suite(str(path))
    cell = suite.compressed()[0]
    assert cell.spec.budget.precision == "bf16" and cell.spec.eval_precision == "bf16"
    path.write_text(text.replace('precision = "bf16"\n[[', 'precision = 16\n[['))
    with pytest.raises(ValueError, match=r"budget\.precision must be a string"):
        load_suite(str(path))


def test_precision_learning_proxies_run_in_bf16_close_to_fp32():
    from mpqbench.baselines.sensitivity import kl_sensitivities
    from mpqbench.search.ptq_proxy import PTQProxy

    model = load_model("tiny-ctc")
    dev = utterances(4, seed=3)
    layers = list(allocation_for(model, 4).quantized)
    scores = {}
    for precision in ("fp32", "bf16"):
        with PTQProxy(model, layers, dev, batch_size=2, precision=precision) as proxy:
            scores[precision] = proxy.score(dict.fromkeys(layers, 2))
    assert np.isfinite(scores["bf16"]) and scores["bf16"] > 0
    assert scores["bf16"] == pytest.approx(scores["fp32"], rel=0.2)
    batches = [model.make_batch(dev[:2])]
    costs, _ = kl_sensitivities(model, layers[:2], (2, 8), batches, Quantizer(),
                                precision="bf16")
    assert all(np.isfinite(v) for row in costs.values() for v in row.values())


@pytest.mark.parametrize("keep", [True, False], ids=["kept", "recomputed"])
def test_the_supernet_mixture_stays_fp32_under_autocast(keep):
    from mpqbench.quant.supernet import mixed_fake_quantize

    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 5, generator=g, requires_grad=True)
    y = torch.softmax(torch.randn(3, generator=g), 0).requires_grad_(True)
    ref = mixed_fake_quantize(w, y, (2, 4, 8), keep_candidates=keep)
    x = torch.randn(4, 5, generator=g)
    with autocast("bf16", "cpu"):
        mixed = mixed_fake_quantize(w, y, (2, 4, 8), keep_candidates=keep)
        out = torch.nn.functional.linear(x, mixed)  # bf16, so its gradient arrives in bf16
    assert mixed.dtype == torch.float32 and torch.equal(mixed, ref)
    assert out.dtype == torch.bfloat16
    out.float().square().sum().backward()  # the one_stage supernet's backward (failed before)
    assert w.grad.dtype == torch.float32 and y.grad.dtype == torch.float32
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
