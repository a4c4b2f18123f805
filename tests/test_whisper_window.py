"""Shrinking Whisper's encoder window."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mpqbench.workloads.data.types import Utterance
from mpqbench.workloads.models.registry import load_model


def test_window_keeps_leading_positions_and_shrinks_features():
    model = load_model("tiny-whisper")
    full = model.model.model.encoder.embed_positions.weight.detach().clone()
    model.set_window_(10)
    enc = model.model.model.encoder
    assert enc.embed_positions.num_embeddings == 500
    assert torch.equal(enc.embed_positions.weight, full[:500])
    audio = (0.1 * np.random.default_rng(0).standard_normal(16000 * 3)).astype(np.float32)
    assert model.features([audio]).shape[-1] == 1000
    batch = model.make_batch([Utterance(id="1-1-0000", audio=audio, text="Hello there.")])
    out = model.forward(batch)
    assert torch.isfinite(out.loss)
    assert len(model.transcribe([audio], max_new_tokens=4)) == 1


def test_window_refuses_bad_values():
    model = load_model("tiny-whisper")
    for bad in (0, 31, 2.5):
        with pytest.raises(ValueError, match="window"):
            model.set_window_(bad)
    model.set_window_(20)
    with pytest.raises(ValueError, match=r"1\.\.20"):
        model.set_window_(25)
