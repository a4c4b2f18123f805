"""The quantized token embedding and the projection tied to it (one tensor, one quantizer)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mpqbench.quant.allocation import Allocation
from mpqbench.quant.formats import Quantizer
from mpqbench.quant.layers import (
    QuantEmbedding,
    TiedQuantLinear,
    fake_quant_modules,
    frozen_quantized_weights,
    prepare_,
)
from quant_toys import tied_lm, token_ids

#: Float results here depend on which CPU kernels torch runs: .ci/run repeats them on AVX2.
pytestmark = pytest.mark.kernels


@pytest.mark.parametrize("quantizer", [
    Quantizer(), Quantizer(scale_method="mse"), Quantizer(learnable_scale=True),
    Quantizer(granularity="per_tensor")], ids=["max", "mse", "lsq", "per_tensor"])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_lookup_equals_rows_of_the_fake_quantized_table(quantizer, bits):
    model = tied_lm()
    prepare_(model, Allocation("lm", {"embed": bits}), quantizer)
    embed = model.embed
    assert isinstance(embed, QuantEmbedding)
    ids = token_ids()
    with torch.no_grad():
        table = embed.fake_quant_with_scale()[0]
        # exact: a row's values come from that row alone, computed by the same ops
        assert torch.equal(embed(ids), table[ids])


def test_the_tied_projection_is_the_embedding_table_one_parameter_one_quantizer():
    model = tied_lm()
    latent = model.embed.weight
    prepare_(model, Allocation("lm", {"embed": 4, "mix": 8}))
    assert isinstance(model.head, TiedQuantLinear)
    assert model.head.weight is latent and model.embed.weight is latent
    assert set(fake_quant_modules(model)) == {"embed", "mix"}  # the head has no quantizer
    names = [n for n, _ in model.named_parameters()]
    assert names.count("embed.weight") == 1 and "head.weight" not in names
    x = torch.randn(5, 12)
    with torch.no_grad():
        expected = F.linear(x, model.embed.fake_quant_with_scale()[0])
        assert torch.equal(model.head(x), expected)
    # both uses send gradient to the one latent table
    model(token_ids()).square().mean().backward()
    assert latent.grad is not None and latent.grad.abs().sum() > 0


def test_frozen_weights_serve_the_projection_and_keep_the_lookup_exact():
    model = tied_lm()
    prepare_(model, Allocation("lm", {"embed": 3, "mix": 4}))
    ids = token_ids()
    with torch.no_grad():
        expected = model(ids)
        with frozen_quantized_weights(model):
            assert torch.equal(model(ids), expected)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = model(ids)
            with frozen_quantized_weights(model, torch.bfloat16):
                assert torch.equal(model(ids), auto)


def test_the_tied_projection_cannot_get_its_own_bits():
    model = tied_lm()
    with pytest.raises(ValueError, match="shares its weight with a quantized embedding"):
        prepare_(model, Allocation("lm", {"embed": 4, "head": 8}))


def test_embeddings_with_max_norm_are_refused():
    model = tied_lm()
    model.embed.max_norm = 1.0
    with pytest.raises(ValueError, match="max_norm"):
        prepare_(model, Allocation("lm", {"embed": 4}))


def test_the_tied_table_is_counted_once_before_and_after_prepare():
    from mpqbench.quant.accounting import account

    allocation = Allocation("lm", {"embed": 4, "mix": 8})
    model = tied_lm()
    before = account(model, allocation)
    prepare_(model, allocation)
    after = account(model, allocation)
    table, mix_w, mix_b = 40 * 12, 12 * 12, 12
    for acc in (before, after):
        assert acc.n_total.value == table + mix_w + mix_b
        assert acc.n_quantized.value == table + mix_w and acc.n_rest.value == mix_b
        assert acc.cr_paper.value == pytest.approx(
            32 * (table + mix_w + mix_b) / (4 * table + 8 * mix_w + 32 * mix_b))
        assert acc.layers["embed"].n_scales == 40  # one scale per row (token)


def test_convert_and_a_packed_reload_reproduce_the_fake_quant_logits_exactly(tmp_path):
    from mpqbench.quant.accounting import account
    from mpqbench.quant.export import load_packed, read_packed_metadata, save_packed
    from mpqbench.quant.packed_layers import PackedEmbedding, PackedTiedLinear, convert_

    allocation = Allocation("lm", {"embed": 3, "mix": 4})
    model = tied_lm()
    prepare_(model, allocation)
    with torch.no_grad():
        model.embed.weight.add_(0.01)  # "trained": the table differs from a fresh model's
    ids = token_ids()
    with torch.no_grad():
        expected = model(ids)
    info = save_packed(model, allocation, tmp_path / "lm.safetensors")
    meta = read_packed_metadata(tmp_path / "lm.safetensors")
    assert meta["tied"] == {"head": "embed"} and meta["layers"]["embed"]["kind"] == "embedding"
    reloaded = load_packed(tied_lm(seed=1), tmp_path / "lm.safetensors")
    assert isinstance(reloaded.embed, PackedEmbedding)
    assert isinstance(reloaded.head, PackedTiedLinear) and reloaded.head.owner[0] is reloaded.embed
    with torch.no_grad():
        assert torch.equal(reloaded(ids), expected)
    accounted = account(model, allocation)
    convert_(model)
    with torch.no_grad():
        assert torch.equal(model(ids), expected)
    assert isinstance(model.head, PackedTiedLinear)
    after = account(model, allocation)
    assert after.n_total.value == accounted.n_total.value
    assert after.size_packed_bytes.value == accounted.size_packed_bytes.value
    # the table's codes are stored once: the packed tensors are what the accounting counts
    assert info.packed_weight_bytes + info.scale_bytes + info.rest_parameter_bytes == (
        accounted.size_packed_bytes.value)
