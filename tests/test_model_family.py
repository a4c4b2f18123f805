"""model_family: a model's family from the registry or a checkpoint's config, loading nothing."""

from __future__ import annotations

import json

import pytest

from mpqbench.workloads.models.registry import MODEL_REGISTRY, model_family


def test_registered_models_have_their_registered_family():
    for name, spec in MODEL_REGISTRY.items():
        assert model_family(name) == spec.family
    assert model_family("tiny-whisper") == "whisper" and model_family("tiny-ctc") == "ctc"


@pytest.mark.parametrize(("config", "family"), [
    ({"model_type": "whisper"}, "whisper"),
    ({"model_type": "wav2vec2"}, "ctc"),
    ({"model_type": "hubert"}, "ctc"),
    ({"model_type": "bert"}, None),
    ({}, None),
    ([1, 2], None),
])
def test_a_local_directory_by_its_config(tmp_path, config, family):
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert model_family(str(tmp_path)) == family


def test_unknown_names_and_unreadable_configs_have_none(tmp_path):
    assert model_family("no-such-model") is None
    assert model_family(str(tmp_path)) is None  # no config.json
    (tmp_path / "config.json").write_text("{not json")
    assert model_family(str(tmp_path)) is None
