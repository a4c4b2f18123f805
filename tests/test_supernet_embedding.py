"""The supernet's token embedding and the projection tied to it: one tensor, one alpha, one
draw per step shared by the lookup and the projection, exact eval and extraction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mpqbench.quant.supernet as supernet
from mpqbench.quant.allocation import allocation_for
from mpqbench.quant.formats import Quantizer
from mpqbench.quant.layers import (
    QuantEmbedding,
    TiedQuantLinear,
    fake_quant_modules,
    prepare_,
)
from mpqbench.quant.primitives import choose_scale, fake_quantize
from mpqbench.quant.supernet import (
    SupernetEmbedding,
    SupernetLinear,
    TiedSupernetLinear,
    architecture_parameters,
    extract_,
    gumbel_softmax_weights,
    mix_candidates,
    mixed_fake_quantize,
    prepare_supernet_,
    sample_mixing_,
    supernet_modules,
)
from quant_toys import rounding_tolerance, tied_lm, token_ids

CANDIDATES = (2, 4, 8)
SPECS = {
    "max-channel": Quantizer(),
    "mse-channel": Quantizer(scale_method="mse"),
    "max-tensor": Quantizer(granularity="per_tensor"),
}


def searched_lm(spec=None, *, names=("embed", "mix"), hard=False, keep=True, seed=0):
    model = tied_lm(seed)
    prepare_supernet_(model, list(names), CANDIDATES, spec, hard=hard, keep_candidates=keep)
    return model


def set_winners(model, winners):
    for name, m in supernet_modules(model).items():
        m.alpha.data = torch.full((3,), -3.0)
        m.alpha.data[CANDIDATES.index(winners[name])] = 3.0


# ---- structure ------------------------------------------------------------------------------


def test_one_tensor_one_alpha_the_tied_projection_has_none():
    model = tied_lm()
    latent = model.embed.weight
    before = {n for n, _ in model.named_parameters()}
    prepare_supernet_(model, ["embed", "mix"], CANDIDATES)
    assert isinstance(model.embed, SupernetEmbedding) and isinstance(model.mix, SupernetLinear)
    assert isinstance(model.head, TiedSupernetLinear) and model.head.owner[0] is model.embed
    assert model.embed.weight is latent and model.head.weight is latent
    assert list(supernet_modules(model)) == ["embed", "mix"]  # the head is not listed
    assert architecture_parameters(model) == [model.embed.alpha, model.mix.alpha]
    assert list(model.head.parameters()) == []
    after = {n for n, _ in model.named_parameters()}
    assert after - before == {"embed.alpha", "mix.alpha"} and "head.weight" not in after


def test_a_tied_linear_cannot_be_searched_on_its_own_and_other_refusals():
    with pytest.raises(ValueError, match="'head' shares its weight with the embedding 'embed'"):
        prepare_supernet_(tied_lm(), ["embed", "head"])
    model = tied_lm()
    prepare_supernet_(model, ["head"])  # the embedding not searched: a plain shared linear
    assert isinstance(model.head, SupernetLinear) and model.head.weight is model.embed.weight
    model = tied_lm()
    model.embed.max_norm = 1.0
    with pytest.raises(ValueError, match="max_norm"):
        prepare_supernet_(model, ["embed"])
    model = searched_lm()
    with pytest.raises(ValueError, match="already quantized"):
        prepare_supernet_(model, ["head"])
    with pytest.raises(ValueError, match="already quantized"):
        prepare_supernet_(model, ["embed"])


# ---- eval and extraction: exact -------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
@pytest.mark.parametrize("bits", CANDIDATES)
def test_eval_equals_the_extracted_network_and_prepare_of_its_allocation(spec, bits):
    ids = token_ids()
    model = searched_lm(spec)
    latent = model.embed.weight
    set_winners(model, {"embed": bits, "mix": 8})
    model.eval()
    with torch.no_grad():
        evaluated = model(ids)
    allocation = extract_(model, model_name="lm")
    assert dict(allocation.layers) == {"embed": bits, "mix": 8}  # the embedding only
    assert isinstance(model.embed, QuantEmbedding) and model.embed.bits == bits
    assert isinstance(model.head, TiedQuantLinear) and model.head.owner[0] is model.embed
    assert model.embed.weight is latent and model.head.weight is latent  # one tensor
    reference = tied_lm()
    prepare_(reference, allocation, spec)
    with torch.no_grad():
        extracted = model(ids)
        # the same ops on the same values: exact
        assert torch.equal(extracted, evaluated)
        assert torch.equal(extracted, reference(ids))
    assert [n for n, _ in model.named_parameters()] == [
        n for n, _ in reference.named_parameters()]
    assert {n: type(m) for n, m in model.named_modules()} == {
        n: type(m) for n, m in reference.named_modules()}
    assert set(fake_quant_modules(model)) == {"embed", "mix"}


def test_extract_honours_an_override_for_the_embedding():
    model = searched_lm()
    set_winners(model, {"embed": 8, "mix": 8})
    allocation = extract_(model, bits={"embed": 2})
    assert allocation.layers["embed"] == 2 and model.embed.bits == 2
    assert model.head.owner[0].bits == 2
    with pytest.raises(ValueError, match="no supernet layer named"):
        extract_(searched_lm(), bits={"head": 4})


# ---- training-mode arithmetic ---------------------------------------------------------------


@pytest.mark.kernels
@pytest.mark.parametrize("keep", [True, False], ids=["keep", "recompute"])
@pytest.mark.parametrize("candidates", [(2, 4, 8), (1, 3, 8)], ids=["2-4-8", "1-3-8"])
@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
def test_lookup_equals_gathering_from_the_mixed_table(spec, candidates, keep):
    model = tied_lm()
    prepare_supernet_(model, ["embed"], candidates, spec, keep_candidates=keep)
    embed = model.embed
    embed.train()
    ids = token_ids()
    torch.manual_seed(2)
    sample_mixing_([embed])
    y = embed.draw_mixing()
    got = embed(ids)
    table = mix_candidates(embed.weight.detach(), y, candidates, spec.granularity,
                           spec.scale_method)
    if spec.granularity == "per_tensor":
        # the lookup gathers from this very computation: exact
        assert torch.equal(got, table[ids])
    else:
        # The rows' (K, M*D) mix and the table's (K, N) mix run the same K-term sums
        # y_i q_i through one matrix-vector product each, whose kernel may group the terms
        # (or fuse multiply-adds) differently for different sizes: each element may differ
        # by a few roundings of sum_i y_i |q_i| <= max|W| (sum y = 1, |q_i| <= max|W|).
        atol = rounding_tolerance(torch.float32, len(candidates)) * embed.weight.abs().max()
        torch.testing.assert_close(got, table[ids], rtol=0, atol=float(atol.detach()))


def hook_outputs(model):
    seen = {}
    model.embed.register_forward_hook(lambda m, i, o: seen.__setitem__("lookup", (i[0], o)))
    model.head.register_forward_hook(lambda m, i, o: seen.__setitem__("projection", (i[0], o)))
    return seen


def candidate_of(model, seen):
    """Which candidate the lookup and the projection used (hard sampling: exactly one)."""
    w = model.embed.weight.detach()
    ids, rows = seen["lookup"]
    h, logits = seen["projection"]
    used = {}
    for b in CANDIDATES:
        q = fake_quantize(w, choose_scale(w, b), b)
        if torch.equal(rows, q[ids]):
            used.setdefault("lookup", []).append(b)
        if torch.equal(logits, F.linear(h, q)):
            used.setdefault("projection", []).append(b)
    assert len(used.get("lookup", [])) == 1 and len(used.get("projection", [])) == 1, used
    return used["lookup"][0], used["projection"][0]


@pytest.mark.parametrize("scheduled", [True, False], ids=["sample_mixing_", "self-drawn"])
def test_hard_sampling_the_lookup_and_the_projection_use_the_same_candidate(scheduled):
    model = searched_lm(names=("embed",), hard=True)
    model.train()
    seen = hook_outputs(model)
    ids = token_ids()
    drawn = []
    torch.manual_seed(0)
    with torch.no_grad():  # one-hot y: both sides are exactly one candidate's values
        for _ in range(12):  # consecutive steps: each gets a new draw
            if scheduled:
                sample_mixing_([model.embed])
            model(ids)
            lookup, projection = candidate_of(model, seen)
            assert lookup == projection
            drawn.append(lookup)
    assert len(set(drawn)) > 1  # a new draw every step, not one frozen draw


@pytest.mark.kernels
@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
def test_alpha_gradient_is_that_of_one_draw_used_twice(spec):
    """dL/dalpha equals the gradient of one y feeding both uses: the sum of each use's part."""
    model = searched_lm(spec, names=("embed",))
    model.train()
    ids = token_ids()
    assert (ids == model.embed.padding_idx).any()  # a padding row sends no gradient
    torch.manual_seed(1)
    sample_mixing_([model.embed])
    noise = model.embed._draw.noise
    model(ids).square().mean().backward()
    got_alpha, got_w = model.embed.alpha.grad.clone(), model.embed.weight.grad.clone()

    def reference(lookup_y_grad, projection_y_grad):
        w = model.embed.weight.detach().clone().requires_grad_()
        alpha = model.embed.alpha.detach().clone().requires_grad_()
        y, _ = gumbel_softmax_weights(alpha, model.embed.tau, False, noise=noise)
        table = mixed_fake_quantize(w, y, CANDIDATES, spec.granularity, spec.scale_method)
        fixed = mixed_fake_quantize(w, y.detach(), CANDIDATES, spec.granularity,
                                    spec.scale_method)
        rows = F.embedding(ids, table if lookup_y_grad else fixed, padding_idx=0)
        head = table if projection_y_grad else fixed
        out = F.linear(torch.tanh(model.mix(rows)), head)
        out.square().mean().backward()
        return alpha.grad, w.grad

    both, w_grad = reference(True, True)
    lookup_only, _ = reference(True, False)
    projection_only, _ = reference(False, True)
    assert lookup_only.abs().sum() > 0 and projection_only.abs().sum() > 0
    torch.testing.assert_close(lookup_only + projection_only, both, rtol=1e-5, atol=1e-7)
    # the supernet's rows are mixed per row, the reference's from the table: allclose
    torch.testing.assert_close(got_alpha, both, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(got_w, w_grad, rtol=1e-4, atol=1e-7)


def test_keep_candidates_false_gives_the_same_values_and_gradients():
    grads = []
    for keep in (True, False):
        model = searched_lm(keep=keep)
        model.train()
        torch.manual_seed(3)
        sample_mixing_(supernet_modules(model).values())
        out = model(token_ids())
        out.square().mean().backward()
        grads.append((out.detach(), model.embed.alpha.grad, model.embed.weight.grad))
    # recompute runs the same quantization ops in the backward: exact
    for a, b in zip(*grads, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
def test_the_full_table_is_mixed_once_per_draw(monkeypatch, granularity):
    calls = []

    def counting(real):
        def count(w, *args, **kwargs):
            calls.append(tuple(w.shape))
            return real(w, *args, **kwargs)
        return count

    # the block path (max scales) and the vectorised one, whichever the layer takes
    for name in ("block_mix", "mixed_fake_quantize"):
        monkeypatch.setattr(supernet, name, counting(getattr(supernet, name)))
    model = searched_lm(Quantizer(granularity=granularity), names=("embed",))
    model.train()
    ids = token_ids()
    for _ in range(2):
        calls.clear()
        model(ids).sum().backward()
        tables = [s for s in calls if s == (40, 12)]
        assert len(tables) == 1  # per-tensor: the projection reuses the lookup's table
        assert len(calls) == (2 if granularity == "per_channel" else 1)  # + the rows' mix


def test_a_kept_table_never_outlives_its_backward_or_an_update():
    model = searched_lm(Quantizer(granularity="per_tensor"), names=("embed",))
    model.train()
    ids = token_ids()
    # a lookup-only step, then a projection-only step: the kept table's graph was freed
    model.embed(ids).sum().backward()
    assert model.embed._draw.table is None
    model.head(torch.randn(2, 12)).sum().backward()
    # an in-place update between the two uses: the projection recomputes
    with torch.no_grad():
        rows = model.embed(ids)
        model.embed.weight.mul_(2.0)
        table = model.head.table()
        w = model.embed.weight
        y = model.embed.draw_mixing()
        assert torch.equal(table, mix_candidates(w, y, CANDIDATES, "per_tensor"))
        assert not torch.equal(rows, table[ids])


def test_frozen_weights_send_gradient_to_alpha_only():
    model = tied_lm()
    for p in model.parameters():
        p.requires_grad_(False)
    prepare_supernet_(model, ["embed", "mix"], CANDIDATES)
    model.train()
    model(token_ids()).square().mean().backward()
    assert model.embed.alpha.grad is not None and model.embed.alpha.grad.abs().sum() > 0
    assert model.embed.weight.grad is None


def test_bf16_autocast_keeps_the_mixture_in_fp32():
    model = searched_lm()
    model.train()
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rows = model.embed(token_ids())
        logits = model(token_ids())
    assert rows.dtype == torch.float32 and logits.dtype == torch.bfloat16
    logits.float().square().mean().backward()
    assert torch.isfinite(model.embed.alpha.grad).all() and model.embed.alpha.grad.abs().sum() > 0


# ---- the methods on a tiny Whisper with the embedding searched ------------------------------


TEXTS = ["THE CAT SAT", "A DOG RAN HOME"]
EMBED = "model.decoder.embed_tokens"


def whisper_workload():
    from mpqbench.method import Workload
    from mpqbench.quant.teacher import build_teacher_cache
    from mpqbench.workloads.data.types import Utterance
    from mpqbench.workloads.models.registry import load_model

    model = load_model("tiny-whisper")
    rng = np.random.default_rng(0)
    data = [Utterance(id=f"1-1-{i:04d}", text=TEXTS[i % 2],
                      audio=(0.1 * rng.standard_normal(4800 + 400 * i)).astype(np.float32))
            for i in range(2)]
    eligible = list(allocation_for(model, 8, groups=("blocks", "embeddings")).quantized)
    assert EMBED in eligible
    teacher = build_teacher_cache(model, data, batch_size=2, progress=False)
    return Workload(name=model.name, model=model, train=data, dev=data, eligible=eligible,
                    teacher=teacher)


@pytest.mark.kernels
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_one_stage_searches_the_whisper_embedding(precision):
    from mpqbench.method import Budget, Target, run_method
    from mpqbench.quant.accounting import account
    from mpqbench.search.one_stage import OneStageConfig

    wl = whisper_workload()
    module = wl.model.model
    latent = module.model.decoder.embed_tokens.weight
    result = run_method("one_stage", wl, Target(avg_bits=4.0),
                        Budget(train_steps=2, batch_size=2, precision=precision),
                        OneStageConfig(pass2_frac=0.5, hard=precision == "bf16"))
    assert EMBED in result.allocation.layers and "proj_out" not in result.allocation.layers
    assert len(result.info["logits"][EMBED]) == 3
    embed = module.model.decoder.embed_tokens
    assert isinstance(embed, QuantEmbedding) and embed.weight is latent
    assert isinstance(module.proj_out, TiedQuantLinear) and module.proj_out.owner[0] is embed
    assert embed.bits == result.allocation.layers[EMBED]
    assert account(module, result.allocation).avg_bits.value <= 4.0
    assert math.isfinite(result.info["final_loss"]["loss"])


@pytest.mark.kernels
def test_two_stage_dnas_searches_the_whisper_embedding_and_restores_the_model():
    from torch import nn

    from mpqbench.baselines.two_stage import TwoStageConfig, dnas_stage
    from mpqbench.method import Budget

    wl = whisper_workload()
    module = wl.model.model
    types = {n: type(m) for n, m in module.named_modules()}
    state = {k: v.clone() for k, v in module.state_dict().items()}
    stage = dnas_stage(wl, Budget(train_steps=1, batch_size=2, search_budget=2),
                       TwoStageConfig(stage1="dnas", arch_lr=0.5), 4.0)
    assert set(stage.costs) == set(wl.eligible)
    assert max(stage.info["probabilities"][EMBED]) - min(
        stage.info["probabilities"][EMBED]) > 1e-4  # its logits learned
    # weights frozen; the embedding and the tied projection swapped back
    assert {n: type(m) for n, m in module.named_modules()} == types
    assert type(module.proj_out) is nn.Linear
    assert module.proj_out.weight is module.model.decoder.embed_tokens.weight
    assert all(torch.equal(v, state[k]) for k, v in module.state_dict().items())
