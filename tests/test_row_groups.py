"""The token embedding split into row groups: the same function, each group its own layer
(own bits, own supernet logits, own packed tensor), and the settings that ask for it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mpqbench.quant.allocation import Allocation, allocation_for
from mpqbench.quant.layers import QuantEmbedding, frozen_quantized_weights, prepare_
from mpqbench.workloads.data.types import Utterance
from mpqbench.workloads.models.registry import load_model
from mpqbench.workloads.models.row_groups import (
    RowGroupedEmbedding,
    RowGroupedProjection,
    check_row_cuts,
    split_rows_,
)

#: Float results here depend on which CPU kernels torch runs: .ci/run repeats them on AVX2.
pytestmark = pytest.mark.kernels

CUTS = (2048, 8192, 50256)
ROWS = [f"model.decoder.embed_tokens.rows.{i}" for i in range(4)]
TEXTS = ["THE CAT SAT", "A DOG RAN HOME"]


def utterances(n: int = 2) -> list[Utterance]:
    rng = np.random.default_rng(0)
    return [Utterance(id=f"1-1-{i:04d}", text=TEXTS[i % 2],
                      audio=(0.1 * rng.standard_normal(4800 + 400 * i)).astype(np.float32))
            for i in range(n)]


def split_whisper(cuts=CUTS):
    return load_model("tiny-whisper").split_embedding_rows_(cuts)


def all_ids() -> torch.Tensor:
    """Ids from every group, the group edges included, in a 2-d batch."""
    ids = torch.tensor([0, 1, 2047, 2048, 2049, 8191, 8192, 30000, 50255, 50256, 50257, 51863])
    return ids.reshape(3, 4)


def test_check_row_cuts_accepts_increasing_ids_and_names_every_bad_value():
    assert check_row_cuts([1, 5], 10) == (1, 5)
    assert check_row_cuts((3,), None) == (3,)
    for bad, match in [([], "at least one"), ([5, 5], "strictly increasing"),
                       ([6, 2], "strictly increasing"), ([0], "1..9"), ([10], "1..9"),
                       ([True], "integers"), ([2.0], "integers"), ("12", "list"),
                       (7, "list")]:
        with pytest.raises(ValueError, match=match):
            check_row_cuts(bad, 10, what="cuts")


def test_the_split_model_computes_the_same_function_and_lists_its_groups():
    plain, split = load_model("tiny-whisper"), split_whisper()
    assert plain.layer_groups()["embeddings"] == ["model.decoder.embed_tokens"]
    assert split.layer_groups()["embeddings"] == ROWS
    emb = split.model.model.decoder.embed_tokens
    assert isinstance(emb, RowGroupedEmbedding) and emb.starts == (0, *CUTS)
    assert isinstance(split.model.proj_out, RowGroupedProjection)
    assert [m.num_embeddings for m in emb.rows] == [2048, 6144, 42064, 1608]
    # <|endoftext|> (Whisper's padding id, 50256) is the last group's first row
    assert [m.padding_idx for m in emb.rows] == [None, None, None, 0]
    # the same parameter count: the table is counted once, in its groups
    assert sum(p.numel() for p in plain.model.parameters()) == sum(
        p.numel() for p in split.model.parameters())
    table = plain.model.model.decoder.embed_tokens.weight
    ids = all_ids()
    with torch.no_grad():
        # the lookup gathers the same rows and the projection multiplies by the same matrix
        assert torch.equal(emb(ids), table[ids])
        assert torch.equal(emb.weight, table)
        batch = plain.make_batch(utterances())
        a, b = plain.forward(batch), split.forward(batch)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.loss, b.loss)


def test_each_group_takes_its_own_bits_and_equal_bits_equal_the_unsplit_table():
    plain, split = load_model("tiny-whisper"), split_whisper()
    blocks = plain.layer_groups()["blocks"]
    prepare_(plain, Allocation(plain.name, {"model.decoder.embed_tokens": 4,
                                            **dict.fromkeys(blocks, 4)}))
    bits = dict(zip(ROWS, (8, 4, 2, 3), strict=True))
    prepare_(split, Allocation(split.name, {**bits, **dict.fromkeys(blocks, 4)}))
    emb = split.model.model.decoder.embed_tokens
    assert [m.bits for m in emb.rows] == [8, 4, 2, 3]
    assert all(isinstance(m, QuantEmbedding) for m in emb.rows)
    latent = torch.cat([m.weight for m in emb.rows]).detach()
    ids = all_ids()
    with torch.no_grad():
        table = emb.table()
        # independent reference: torch's own per-channel fake-quant op, group by group
        for (a, b), m in zip(zip(emb.starts, (*emb.starts[1:], 51864), strict=True),
                             emb.rows, strict=True):
            w = latent[a:b]
            qmax = 2 ** (m.bits - 1) - 1
            scale = (w.abs().amax(dim=1) / qmax).clamp_min(torch.finfo(w.dtype).tiny)
            ref = torch.fake_quantize_per_channel_affine(
                w, scale, torch.zeros(b - a, dtype=torch.int32), 0, -qmax, qmax)
            torch.testing.assert_close(table[a:b], ref, rtol=0, atol=1e-7)
        assert torch.equal(emb(ids), table[ids])
        x = torch.randn(3, emb.embedding_dim)
        assert torch.equal(split.model.proj_out(x), x @ table.T)
    # all groups at 4 bits: the unsplit 4-bit model's logits, exactly (per-row scales)
    same = split_whisper()
    prepare_(same, Allocation(same.name, {**dict.fromkeys(ROWS, 4),
                                          **dict.fromkeys(blocks, 4)}))
    batch = plain.make_batch(utterances())
    with torch.no_grad():
        assert torch.equal(plain.forward(batch).logits, same.forward(batch).logits)


def test_frozen_weights_cache_the_grouped_table_with_the_same_values():
    split = split_whisper()
    blocks = split.layer_groups()["blocks"]
    prepare_(split, Allocation(split.name, {**dict(zip(ROWS, (8, 4, 2, 3), strict=True)),
                                            **dict.fromkeys(blocks, 4)}))
    emb = split.model.model.decoder.embed_tokens
    batch = split.make_batch(utterances())
    with torch.no_grad():
        table, logits = emb.table(), split.forward(batch).logits
    with frozen_quantized_weights(split.model):
        with torch.no_grad():
            cached = emb.table()
            assert cached is emb.table()  # concatenated once, not per call
            assert torch.equal(cached, table)
            assert torch.equal(split.forward(batch).logits, logits)
        assert emb.table() is not cached  # autograd on: read from the groups
    assert emb._frozen_table is None
    with torch.no_grad():
        assert emb.table() is not emb.table()


def test_training_reaches_every_group_except_the_padding_row():
    split = split_whisper()
    prepare_(split, Allocation(split.name, dict.fromkeys(ROWS, 4)))
    out = split.forward(split.make_batch(utterances()))
    out.loss.backward()
    rows = split.model.model.decoder.embed_tokens.rows
    assert all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0 for m in rows)


def test_refusals_name_the_problem():
    model = load_model("tiny-whisper")
    with pytest.raises(ValueError, match="strictly increasing"):
        model.split_embedding_rows_([10, 5])
    with pytest.raises(ValueError, match=r"1\.\.51863"):
        model.split_embedding_rows_([51864])
    model.split_embedding_rows_([100])
    with pytest.raises(ValueError, match=r"not a plain nn\.Embedding"):
        model.split_embedding_rows_([100])
    quantized = load_model("tiny-whisper")
    prepare_(quantized, Allocation(quantized.name, {"model.decoder.embed_tokens": 4}))
    with pytest.raises(ValueError, match=r"not a plain nn\.Embedding"):
        quantized.split_embedding_rows_([100])
    torch_model = torch.nn.Module()
    torch_model.emb = torch.nn.Embedding(10, 4)
    torch_model.head = torch.nn.Linear(4, 10, bias=False)
    with pytest.raises(ValueError, match="not a linear sharing"):
        split_rows_(torch_model, "emb", "head", [5])


def test_a_packed_reload_onto_a_split_skeleton_reproduces_the_logits(tmp_path):
    from mpqbench.quant.export import load_packed, save_packed
    from mpqbench.quant.packed_layers import PackedEmbedding

    split = split_whisper()
    allocation = Allocation(split.name, dict(zip(ROWS, (8, 4, 2, 3), strict=True)))
    prepare_(split, allocation)
    batch = split.make_batch(utterances())
    with torch.no_grad():
        expected = split.forward(batch).logits
    save_packed(split, allocation, tmp_path / "m.safetensors")
    reloaded = load_packed(split_whisper(), tmp_path / "m.safetensors")
    rows = reloaded.model.model.decoder.embed_tokens.rows
    assert all(isinstance(m, PackedEmbedding) for m in rows)
    with torch.no_grad():
        assert torch.equal(reloaded.forward(batch).logits, expected)


def test_one_stage_gives_each_group_its_own_logits():
    from mpqbench.method import Budget, Target, Workload, run_method
    from mpqbench.quant.teacher import build_teacher_cache
    from mpqbench.search.one_stage import OneStageConfig

    model = split_whisper()
    data = utterances()
    eligible = list(allocation_for(model, 8, groups=("blocks", "embeddings")).quantized)
    assert set(ROWS) <= set(eligible)
    wl = Workload(name=model.name, model=model, train=data, dev=data, eligible=eligible,
                  teacher=build_teacher_cache(model, data, batch_size=2, progress=False))
    result = run_method("one_stage", wl, Target(avg_bits=4.0),
                        Budget(train_steps=2, batch_size=2), OneStageConfig(pass2_frac=0.5))
    assert set(ROWS) <= set(result.allocation.layers)
    assert all(len(result.info["logits"][r]) == 3 for r in ROWS)
    rows = model.model.model.decoder.embed_tokens.rows
    assert [m.bits for m in rows] == [result.allocation.layers[r] for r in ROWS]


def test_cells_and_suites_carry_the_cuts_and_the_reference_does_not(tmp_path):
    from mpqbench.bench.cell import CellSpec
    from mpqbench.bench.suite import load_suite
    from mpqbench.method import Budget, Target

    base = CellSpec(model="tiny-whisper", method="uniform", target=Target(avg_bits=4),
                    budget=Budget(train_steps=1, batch_size=1))
    split = dataclasses.replace(base, embedding_row_groups=[2048, 8192])
    assert split.embedding_row_groups == (2048, 8192)
    assert split.config_hash() != base.config_hash()
    assert "embedding_row_groups" not in {k for k, v in base.to_dict().items() if v is not None}
    assert CellSpec.from_dict(split.to_dict()) == split
    assert split.reference() == base.reference()
    with pytest.raises(ValueError, match=r"embedding_row_groups.*strictly increasing"):
        dataclasses.replace(base, embedding_row_groups=[5, 5])
    text = """
[suite]
name = "rg"
models = ["tiny-whisper"]
[budget]
train_steps = 1
batch_size = 1
[[systems]]
method = "uniform"
avg_bits = [4]
embedding_row_groups = [2048, 8192]
[[systems]]
method = "uniform"
label = "plain"
avg_bits = [4]
"""
    path = tmp_path / "rg.toml"
    path.write_text(text)
    cells = {c.label: c.spec for c in load_suite(str(path)).cells}
    assert cells["uniform"].embedding_row_groups == (2048, 8192)
    assert cells["plain"].embedding_row_groups is None
    path.write_text(text.replace("[2048, 8192]", "[8192, 2048]"))
    with pytest.raises(ValueError, match=r"rg\.toml.*systems\[0\]\.embedding_row_groups"):
        load_suite(str(path))


def test_the_ptq_proxy_scores_row_groups_as_the_prepared_model_computes():
    """optuna's trial score on a split model: the KL of the model ``prepare_`` makes with
    the same per-group bits (independent path: fake-quant layers, a fresh teacher)."""
    import copy

    from mpqbench.quant.teacher import build_teacher_cache
    from mpqbench.search.ptq_proxy import PTQProxy

    model = split_whisper()
    data = utterances()
    eligible = list(allocation_for(model, 8, groups=("blocks", "embeddings")).quantized)
    bits = {n: (2, 4, 8)[i % 3] for i, n in enumerate(eligible)}
    bits.update(zip(ROWS, (8, 4, 2, 3), strict=True))
    with PTQProxy(model, eligible, data, batch_size=2) as proxy:
        value = proxy.score(bits)
    reference = copy.deepcopy(model)
    teacher = build_teacher_cache(reference, data, batch_size=2, progress=False)
    prepare_(reference, Allocation(model.name, bits))
    reference.model.eval()
    with torch.no_grad():
        batch = reference.make_batch(data)
        out = reference.forward(batch)
        expected = float(teacher.kl(batch, out.logits, out.mask))
    assert value == pytest.approx(expected, rel=1e-5, abs=1e-9)
    assert value > 0


def test_two_stage_kl_sensitivities_give_each_group_its_own_bits():
    """default-full's two_stage-kl runs on row groups (the Hessian stage 1 ran on them in
    results/ablation): each group is probed and gets a bit-width of its own."""
    from mpqbench.baselines.two_stage import TwoStageConfig
    from mpqbench.method import Budget, Target, Workload, run_method
    from mpqbench.quant.teacher import build_teacher_cache

    model = split_whisper()
    data = utterances()
    eligible = list(allocation_for(model, 8, groups=("blocks", "embeddings")).quantized)
    wl = Workload(name=model.name, model=model, train=data, dev=data, eligible=eligible,
                  teacher=build_teacher_cache(model, data, batch_size=2, progress=False))
    result = run_method("two_stage", wl, Target(avg_bits=5.0),
                        Budget(train_steps=1, batch_size=2, search_budget=1),
                        TwoStageConfig(stage1="kl", candidates=(2, 8)))
    assert set(ROWS) <= set(result.allocation.layers)
    assert all(result.allocation.layers[r] in (2, 8) for r in ROWS)
    assert set(ROWS) <= set(result.info["costs"])
