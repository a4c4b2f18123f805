"""Training batches trimmed to their longest clip (budget ``trim_window``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mpqbench.method.interface import Budget
from mpqbench.quant.qat import TrainConfig, train
from mpqbench.workloads.data.types import Utterance
from mpqbench.workloads.models.tiny import tiny_ctc, tiny_whisper
from mpqbench.workloads.models.whisper import TRIM_MARGIN_S


def _utts(seconds: list[float]) -> list[Utterance]:
    rng = np.random.default_rng(0)
    return [Utterance(f"u{i}", (0.1 * rng.standard_normal(int(16000 * s))).astype(np.float32),
                      "some words here") for i, s in enumerate(seconds)]


@pytest.fixture(scope="module")
def whisper():
    return tiny_whisper("tiny-whisper")


def test_trimmed_features_are_the_leading_frames_of_the_window(whisper):
    utts = _utts([1.2, 3.4])
    full = whisper.make_batch(utts).inputs["input_features"]
    cut = whisper.make_batch(utts, trim=True).inputs["input_features"]
    seconds = math.ceil(3.4 + TRIM_MARGIN_S)
    assert full.shape[-1] == 100 * whisper.window_s
    assert cut.shape[-1] == 100 * seconds
    assert torch.equal(cut, full[..., : cut.shape[-1]])
    # never beyond the window
    long = whisper.make_batch(_utts([whisper.window_s - 0.5]), trim=True)
    assert long.inputs["input_features"].shape[-1] == 100 * whisper.window_s


def test_trimmed_forward_encodes_only_the_kept_positions_and_restores_the_model(whisper):
    utts = _utts([1.2, 3.4])
    encoder = whisper.model.model.encoder
    table, positions = encoder.embed_positions, whisper.model.config.max_source_positions
    seen = []
    hook = encoder.layers[0].register_forward_hook(lambda m, a, o: seen.append(a[0].shape))
    try:
        out = whisper.forward(whisper.make_batch(utts, trim=True))
    finally:
        hook.remove()
    assert seen == [torch.Size([2, 50 * math.ceil(3.4 + TRIM_MARGIN_S), encoder.config.d_model])]
    assert encoder.embed_positions is table
    assert whisper.model.config.max_source_positions == positions
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert encoder.layers[0].fc1.weight.grad.abs().sum() > 0
    whisper.model.zero_grad(set_to_none=True)
    # the full window still works afterwards, and gives another (untrimmed) result
    full = whisper.forward(whisper.make_batch(utts))
    assert torch.isfinite(full.loss) and not torch.equal(full.loss, out.loss)


def test_a_failing_trimmed_forward_restores_the_model(whisper):
    encoder = whisper.model.model.encoder
    table = encoder.embed_positions
    batch = whisper.make_batch(_utts([1.0]), trim=True)
    batch.inputs["decoder_input_ids"] = batch.inputs["decoder_input_ids"][:, :0]  # invalid
    with pytest.raises(Exception):  # noqa: B017 - whatever transformers raises
        whisper.forward(batch)
    assert encoder.embed_positions is table
    assert whisper.model.config.max_source_positions == table.num_embeddings


def test_ctc_batches_are_already_trimmed():
    model = tiny_ctc("wav2vec2")
    utts = _utts([0.6, 1.1])
    a, b = model.make_batch(utts), model.make_batch(utts, trim=True)
    assert a.inputs.keys() == b.inputs.keys()
    assert all(torch.equal(a.inputs[k], b.inputs[k]) for k in a.inputs)


def test_training_with_trim_window_is_seeded(whisper):
    utts = _utts([1.0, 2.0, 1.5, 2.5])
    state = {k: v.clone() for k, v in whisper.model.state_dict().items()}
    cfg = TrainConfig(lr=1e-3, warmup_frac=0.0)
    losses = []
    for _ in range(2):
        whisper.model.load_state_dict(state)
        result = train(whisper, utts, steps=2, batch_size=2, seed=3, config=cfg,
                       progress=False, trim_window=True)
        losses.append([h["loss"] for h in result.history])
    whisper.model.load_state_dict(state)
    assert losses[0] == losses[1] and all(math.isfinite(v) for v in losses[0])


def test_budget_field_is_recorded_only_when_on():
    assert "trim_window" not in Budget(train_steps=1).to_dict()
    assert Budget(train_steps=1, trim_window=True).to_dict()["trim_window"] is True
    with pytest.raises(ValueError, match="trim_window"):
        Budget(train_steps=1, trim_window=1)


def test_suites_and_cells_carry_trim_window(corpus, tmp_path):
    import dataclasses

    from mpqbench.bench.cell import CellSpec
    from mpqbench.bench.suite import load_suite
    from mpqbench.method import Target

    text = f"""
[suite]
name = "t"
data = "{corpus}"
models = ["tiny-whisper"]
eval_splits = ["test-clean"]
fp32_reference = "finetuned"
[budget]
train_steps = 1
batch_size = 2
trim_window = true
[[systems]]
method = "uniform"
avg_bits = [8]
"""
    path = tmp_path / "t.toml"
    path.write_text(text)
    cell = load_suite(str(path)).compressed()[0]
    assert cell.spec.budget.trim_window is True
    assert cell.spec.reference().budget.trim_window is True  # the 32-bit fine-tune trims too
    path.write_text(text.replace("trim_window = true", "trim_window = 1"))
    with pytest.raises(ValueError, match=r"budget\.trim_window must be true or false"):
        load_suite(str(path))
    spec = CellSpec(model="tiny-ctc", method="uniform", target=Target(avg_bits=4),
                    budget=Budget(train_steps=2))
    trimmed = dataclasses.replace(spec, budget=Budget(train_steps=2, trim_window=True))
    assert trimmed.config_hash() != spec.config_hash()
