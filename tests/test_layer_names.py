"""Short layer labels and model order for reports."""

from __future__ import annotations

import pytest

from mpqbench.bench.layer_names import layer_block, layer_kind, model_order, short_name, short_names


@pytest.mark.parametrize(("name", "label"), [
    ("model.encoder.layers.3.fc1", "enc3.fc1"),
    ("model.encoder.layers.0.self_attn.q_proj", "enc0.q"),
    ("model.decoder.layers.1.self_attn.out_proj", "dec1.out"),
    ("model.decoder.layers.1.encoder_attn.k_proj", "dec1.xattn.k"),
    ("wav2vec2.encoder.layers.11.attention.v_proj", "enc11.v"),
    ("hubert.encoder.layers.23.feed_forward.intermediate_dense", "enc23.fc1"),
    ("hubert.encoder.layers.23.feed_forward.output_dense", "enc23.fc2"),
    ("wav2vec2.feature_extractor.conv_layers.4.conv", "cnn4"),
    ("wav2vec2.feature_projection.projection", "feat_proj"),
    ("wav2vec2.encoder.pos_conv_embed.conv", "pos_conv"),
    ("lm_head", "head"),
    ("proj_out", "head"),
    ("model.encoder.conv2", "conv2"),
    ("model.decoder.embed_tokens", "embed"),
    ("model.decoder.embed_tokens.rows.2", "embed.r2"),
    ("some.unknown.module.dense", "module.dense"),
])
def test_short_name(name, label):
    assert short_name(name) == label


def test_short_names_fall_back_to_full_names_on_collision():
    names = ["a.x.dense", "b.x.dense", "model.encoder.layers.0.fc1"]
    assert short_names(names) == {"a.x.dense": "a.x.dense", "b.x.dense": "b.x.dense",
                                  "model.encoder.layers.0.fc1": "enc0.fc1"}


def test_model_order_restores_forward_order_from_sorted_keys():
    names = [
        "proj_out",
        "model.decoder.layers.0.encoder_attn.q_proj",
        "model.decoder.layers.0.fc1",
        "model.decoder.layers.0.self_attn.k_proj",
        "model.encoder.layers.10.fc2",
        "model.encoder.layers.2.self_attn.out_proj",
        "model.encoder.layers.2.self_attn.q_proj",
        "model.encoder.conv1",
    ]
    assert [short_name(n) for n in model_order(sorted(names))] == [
        "conv1", "enc2.q", "enc2.out", "enc10.fc2", "dec0.k", "dec0.xattn.q", "dec0.fc1", "head",
    ]


def test_kind_and_block():
    name = "model.decoder.layers.1.encoder_attn.k_proj"
    assert (layer_kind(name), layer_block(name)) == ("dec.xattn.k", "dec1")
    assert (layer_kind("lm_head"), layer_block("lm_head")) == ("head", "head")


def test_embedding_row_groups_go_last_in_id_order():
    names = [f"model.decoder.embed_tokens.rows.{i}" for i in (10, 2, 0)]
    names.append("model.encoder.layers.0.fc1")
    assert [short_name(n) for n in model_order(names)] == [
        "enc0.fc1", "embed.r0", "embed.r2", "embed.r10"]
    assert layer_kind(names[0]) == "embed.r10"
