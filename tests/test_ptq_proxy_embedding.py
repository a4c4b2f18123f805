"""The PTQ proxy scores the tied token embedding: lookup and projection read one quantized
table inside the context, the score equals prepare_'s model, and the tie is put back."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from mpqbench.quant.allocation import Allocation, allocation_for
from mpqbench.quant.formats import Quantizer
from mpqbench.quant.layers import prepare_
from mpqbench.quant.teacher import build_teacher_cache
from mpqbench.search.ptq_proxy import PTQProxy
from mpqbench.workloads.data.types import Utterance
from mpqbench.workloads.models.registry import load_model

TEXTS = ["THE CAT SAT", "A DOG RAN HOME", "BIRDS SING"]
EMBED, PROJ = "model.decoder.embed_tokens", "proj_out"


def _utterances(n: int, seed: int) -> list[Utterance]:
    rng = np.random.default_rng(seed)
    return [Utterance(id=f"{seed}-1-{i:04d}", text=TEXTS[i % len(TEXTS)],
                      audio=(0.1 * rng.standard_normal(6400 + 800 * i)).astype(np.float32))
            for i in range(n)]


@pytest.fixture(scope="module")
def whisper():
    model = load_model("tiny-whisper")
    layers = list(allocation_for(model, 8, groups=("blocks", "embeddings")).quantized)
    assert EMBED in layers and PROJ not in layers
    assert model.model.get_submodule(PROJ).weight is model.model.get_submodule(EMBED).weight
    return model, layers, _utterances(3, 0)


@pytest.mark.parametrize("spec", [Quantizer(), Quantizer(scale_method="mse"),
                                  Quantizer(granularity="per_tensor")],
                         ids=["max-channel", "mse-channel", "max-tensor"])
@pytest.mark.parametrize("embed_bits", [2, 4, None])
def test_score_equals_the_prepared_model_with_the_embedding(whisper, spec, embed_bits):
    """Independent reference: prepare_ (QuantEmbedding + TiedQuantLinear) on a copy."""
    model, layers, dev = whisper
    bits = {n: (4, 8, 3)[i % 3] for i, n in enumerate(layers)}
    bits[EMBED] = embed_bits
    with PTQProxy(model, layers, dev, quantizer=spec, batch_size=3) as proxy:
        value = proxy.score(bits)
    reference = copy.deepcopy(model)
    teacher = build_teacher_cache(reference, dev, batch_size=3, progress=False)
    prepare_(reference.model, Allocation(model.name, bits), spec)
    reference.model.eval()
    with torch.no_grad():
        batch = reference.make_batch(dev)
        out = reference.forward(batch)
        expected = float(teacher.kl(batch, out.logits, out.mask))
    assert value == pytest.approx(expected, rel=1e-5, abs=1e-9)
    assert value > 0


def test_inside_the_context_lookup_and_projection_read_one_table(whisper):
    model, layers, dev = whisper
    net = model.model
    with PTQProxy(model, layers, dev, batch_size=3) as proxy:
        proxy.apply({EMBED: 2})
        embed, proj = net.get_submodule(EMBED), net.get_submodule(PROJ)
        assert proj.weight is embed.weight
        assert torch.equal(embed.weight, proxy.quantized_weight(EMBED, 2))
        assert proxy.relative_error(EMBED, 2) > 0
        proxy.apply({EMBED: None})
        assert torch.equal(embed.weight, proxy._fp32[EMBED])


def test_the_model_and_its_tie_are_restored(whisper):
    model, layers, dev = whisper
    net = model.model
    before = {k: v.clone() for k, v in net.state_dict().items()}
    modules = dict(net.named_modules())
    with PTQProxy(model, layers, dev, batch_size=3) as proxy:
        proxy.score(dict.fromkeys(layers, 2))
        assert net.get_submodule(PROJ) is not modules[PROJ]
    assert net.get_submodule(EMBED) is modules[EMBED]
    assert net.get_submodule(PROJ) is modules[PROJ]
    assert net.get_submodule(PROJ).weight is net.get_submodule(EMBED).weight
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_tied_linear_scored_beside_its_embedding_is_refused(whisper):
    model, layers, dev = whisper
    proxy = PTQProxy(model, [*layers, PROJ], dev, batch_size=3)
    with pytest.raises(ValueError, match="'proj_out' shares its weight with the embedding"):
        proxy.__enter__()
    net = model.model
    assert net.get_submodule(PROJ).weight is net.get_submodule(EMBED).weight
