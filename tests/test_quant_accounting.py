"""Accounting against hand-computed numbers; tied weights once; rules named."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from mpqbench.quant.accounting import RULES, account, kept_fp32_parameters, layer_sizes
from mpqbench.quant.allocation import Allocation
from mpqbench.quant.formats import Quantizer
from mpqbench.quant.layers import prepare_
from mpqbench.quant.packed_layers import convert_

#: Float results here depend on which CPU kernels torch runs: .ci/run repeats them on AVX2.
pytestmark = pytest.mark.kernels


class Toy(nn.Module):
    """emb 10x4 (40, tied to head), lin1 4->8 (32 + bias 8), lin2 8->4 no bias (32)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.lin1 = nn.Linear(4, 8)
        self.lin2 = nn.Linear(8, 4, bias=False)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.lin2(torch.relu(self.lin1(self.emb(ids)))))


def _values(acc) -> dict[str, float]:
    return {k: f.value for k, f in acc.figures().items()}


def test_hand_computed_small_model():
    # N_total = 40 (emb = head, once) + 32 + 8 + 32 = 112
    # quantized: lin1 4 bits, lin2 2 bits -> sum b*N = 128 + 64 = 192, N_q = 64
    # N_rest = 40 (emb) + 8 (lin1 bias) = 48
    # CR = 32*112 / (192 + 32*48) = 3584 / 1728
    # bytes: lin1 16 + 8 scales*4, lin2 8 + 4*4, rest 48*4 = 192 -> 264
    alloc = Allocation("toy", {"lin1": 4, "lin2": 2, "head": None})
    acc = account(Toy(), alloc)
    v = _values(acc)
    assert v["n_total"] == 112 and v["n_quantized"] == 64 and v["n_rest"] == 48
    assert v["avg_bits"] == 3.0
    assert v["cr_paper"] == pytest.approx(3584 / 1728)
    assert v["cr_quantized_layers"] == pytest.approx(32 * 64 / 192)
    assert v["size_fp32_bytes"] == 448
    assert v["scale_overhead_bytes"] == 48
    assert v["size_packed_bytes"] == 264
    assert v["cr_with_overhead"] == pytest.approx(448 / 264)
    assert acc.layers["lin1"].to_dict() == {
        "bits": 4, "n_weight": 32, "n_scales": 8, "packed_bytes": 16, "scale_bytes": 4,
    }
    per_tensor = account(Toy(), alloc, granularity="per_tensor")
    assert per_tensor.scale_overhead_bytes.value == 8


def test_tied_weight_quantized_on_one_side_is_stored_twice():
    # head (tied to the fp32 embedding) at 8 bits: N_l = 40 joins the quantized sum, and
    # the embedding copy stays in N_rest: CR = 3584 / (192 + 320 + 32*48)
    alloc = Allocation("toy", {"lin1": 4, "lin2": 2, "head": 8})
    v = _values(account(Toy(), alloc))
    assert v["n_total"] == 112 and v["n_quantized"] == 104 and v["n_rest"] == 48
    assert v["cr_paper"] == pytest.approx(3584 / 2048)


def test_nothing_quantized_is_cr_one():
    v = _values(account(Toy(), Allocation("toy", {"lin1": None})))
    assert v["cr_paper"] == 1.0 and v["avg_bits"] == 32.0 and v["cr_quantized_layers"] == 1.0
    assert v["size_packed_bytes"] == v["size_fp32_bytes"] == 448


def test_weight_norm_conv_counts_g_and_v():
    conv = nn.utils.parametrizations.weight_norm(nn.Conv1d(4, 4, 3), name="weight", dim=2)
    model = nn.Sequential(conv)
    # params: g (1,1,3) = 3, v 4*4*3 = 48, bias 4 -> N_total 55; quantized: v's 48 at 4 bits,
    # g and v are not stored any more, the bias is: CR = 32*55 / (4*48 + 32*4)
    v = _values(account(model, Allocation("m", {"0": 4})))
    assert v["n_total"] == 55 and v["n_rest"] == 4
    assert v["cr_paper"] == pytest.approx(1760 / 320)


@pytest.mark.parametrize(
    "spec", [Quantizer(), Quantizer(learnable_scale=True)], ids=["fixed", "learnable"]
)
def test_same_figures_before_prepare_after_prepare_and_after_convert(spec):
    alloc = Allocation("toy", {"lin1": 4, "lin2": 2, "head": None})
    model = Toy()
    before = account(model, alloc).to_dict()
    prepare_(model, alloc, spec)
    assert account(model, alloc).to_dict() == before  # learnable scales are not parameters
    convert_(model)
    assert account(model, alloc).to_dict() == before


def test_every_figure_names_its_rule_and_is_json():
    acc = account(Toy(), Allocation("toy", {"lin1": 3}))
    d = json.loads(json.dumps(acc.to_dict()))
    for name, fig in acc.figures().items():
        assert d[name] == {"value": fig.value, "rule": fig.rule}
        assert fig.rule in RULES and d["rules"][fig.rule] == RULES[fig.rule]
    assert "32*N_total" in d["rules"]["cr_paper"]
    assert d["layers"]["lin1"]["bits"] == 3


def test_layer_sizes_and_errors():
    model = Toy()
    assert layer_sizes(model, ["lin1", "head"]) == {"lin1": 32, "head": 40}
    with pytest.raises(ValueError, match="no module 'nope'"):
        account(model, Allocation("toy", {"nope": 4}))
    # the embedding is quantizable, and its tied head is its tensor, counted once
    tied = account(model, Allocation("toy", {"emb": 4}))
    assert tied.n_quantized.value == 40 and tied.n_total.value == 40 + 40 + 32
    model.norm = nn.LayerNorm(4)
    with pytest.raises(ValueError, match="'norm' is a LayerNorm"):
        account(model, Allocation("toy", {"norm": 4}))
    with pytest.raises(ValueError, match="no module 'nope'"):
        layer_sizes(model, ["nope"])


def test_kept_fp32_lists_what_stays_32_bit_with_the_tied_table_once():
    from quant_toys import tied_lm

    model = nn.Sequential()
    model.lm = tied_lm()
    model.norm = nn.LayerNorm(12)
    model.pos = nn.Module()
    model.pos.position_embedding = nn.Embedding(5, 12)
    only_mix = Allocation("toy", {"lm.mix": 4})
    kept = kept_fp32_parameters(model, only_mix)
    assert list(kept) == ["norms", "biases", "positional_embeddings", "embeddings"]
    assert kept["norms"] == {"parameters": 24, "tensors": 2,
                             "examples": ["norm.weight", "norm.bias"]}
    assert kept["biases"]["parameters"] == 12  # mix.bias; the tied head has none
    assert kept["embeddings"]["parameters"] == 40 * 12  # the tied table, once
    with_table = Allocation("toy", {"lm.mix": 4, "lm.embed": 4})
    for state in ("before", "after prepare_"):
        kept = kept_fp32_parameters(model, with_table)
        assert "embeddings" not in kept, state
        total = sum(e["parameters"] for e in kept.values())
        assert total == account(model, with_table).n_rest.value, state
        if state == "before":
            prepare_(model, with_table)
