"""The shared QAT loop: data order, schedule, determinism, exact resume, divergence."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from mpqbench.errors import TrainingDiverged
from mpqbench.quant.checkpoint import list_checkpoints, load_latest_checkpoint
from mpqbench.quant.qat import SeparateGroup, TrainConfig, batch_indices, lr_factor, train
from mpqbench.quant.teacher import build_teacher_cache
from mpqbench.workloads.data.types import Utterance
from mpqbench.workloads.models.registry import load_model

#: Float results here depend on which CPU kernels torch runs: .ci/run repeats them on AVX2.
pytestmark = pytest.mark.kernels

WORDS = ["THE CAT SAT", "A DOG RAN HOME", "BIRDS SING", "WE WALK TO TOWN", "IT IS COLD",
         "RAIN FELL ALL DAY"]


def make_utterances(n: int = 6, seed: int = 0) -> list[Utterance]:
    rng = np.random.default_rng(seed)
    return [
        Utterance(
            id=f"1-1-{i:04d}",
            audio=(0.1 * rng.standard_normal(4000 + 800 * i)).astype(np.float32),
            text=WORDS[i % len(WORDS)],
        )
        for i in range(n)
    ]


def final_weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.model.state_dict().items()}


def run(tmp_path=None, steps=4, eta=1.0, every=0, seed=3, on_step=None, lr=1e-3,
        separate=False, min_interval=0.0):
    torch.manual_seed(0)
    model = load_model("tiny-ctc")
    data = make_utterances()
    teacher = build_teacher_cache(model, data, batch_size=3, progress=False)
    cfg = TrainConfig(lr=lr, eta=eta, checkpoint_every=every,
                      checkpoint_min_interval_s=min_interval)
    groups = [SeparateGroup(params=[model.model.lm_head.bias], lr=0.05, clip=0.1,
                            lr_factor=lambda step, total: 1.0 - step / (2 * total),
                            name="head")] if separate else []
    res = train(model, data, steps=steps, batch_size=2, seed=seed, config=cfg, teacher=teacher,
                checkpoint_dir=tmp_path, on_step=on_step, progress=False,
                separate_groups=groups)
    return model, res


def test_batch_indices_are_epochs_of_permutations():
    n, bs = 7, 3
    stream = [i for s in range(7) for i in batch_indices(n, bs, s, seed=5)]
    for epoch in range(3):
        assert sorted(stream[epoch * n : (epoch + 1) * n]) == list(range(n))
    assert batch_indices(n, bs, 4, seed=5) == batch_indices(n, bs, 4, seed=5)
    assert stream[:n] != [i for s in range(3) for i in batch_indices(n, bs, s, seed=6)][:n]


def test_lr_schedule_warms_up_then_decays_to_floor():
    total = 100
    values = [lr_factor(s, total, 0.1, 0.05) for s in range(total)]
    assert values[0] == pytest.approx(0.1)
    assert values[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(values[10:]))
    assert values[-1] == pytest.approx(0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * 89 / 90)))


def test_stream_offset_continues_the_batches_and_the_schedule(monkeypatch):
    """A stage at offset k of a longer run reads batches k, k+1, ... and that run's lr."""
    import mpqbench.quant.qat as qat

    positions: list[int] = []
    real = qat.batch_indices

    def spy(n, batch_size, step, seed):
        positions.append(step)
        return real(n, batch_size, step, seed)

    lrs: list[float] = []
    real_step = torch.optim.AdamW.step

    def step(self, *args, **kwargs):
        lrs.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(qat, "batch_indices", spy)
    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    model = load_model("tiny-ctc")
    cfg = TrainConfig(lr=1e-3, warmup_frac=0.2, min_lr_frac=0.0)
    train(model, make_utterances(), steps=3, batch_size=2, seed=1, config=cfg,
          stream_offset=7, schedule_steps=10, progress=False)
    assert positions == [7, 8, 9]
    assert lrs == pytest.approx([1e-3 * lr_factor(s, 10, 0.2, 0.0) for s in (7, 8, 9)],
                                rel=1e-12)
    positions.clear()
    lrs.clear()
    train(model, make_utterances(), steps=2, batch_size=2, seed=1, config=cfg,
          stream_offset=3, progress=False)  # schedule: offset + steps
    assert positions == [3, 4]
    assert lrs == pytest.approx([1e-3 * lr_factor(s, 5, 0.2, 0.0) for s in (3, 4)], rel=1e-12)
    for bad in ({"stream_offset": -1}, {"stream_offset": 2, "schedule_steps": 4}):
        with pytest.raises(ValueError, match=r"stream_offset|schedule_steps"):
            train(model, make_utterances(), steps=3, batch_size=2, seed=1, config=cfg,
                  progress=False, **bad)


def test_training_is_deterministic_and_changes_weights():
    m1, r1 = run()
    m2, _ = run()
    fresh = load_model("tiny-ctc")
    w1, w2 = final_weights(m1), final_weights(m2)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert any(not torch.equal(w1[k], v) for k, v in fresh.model.state_dict().items())
    assert r1.steps == 4 and len(r1.history) == 4
    assert all(math.isfinite(h["loss"]) and h["kl"] >= 0 for h in r1.history)


def test_resume_after_interruption_equals_uninterrupted(tmp_path):
    reference, _ = run(steps=6)

    def crash_at_5(step):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, steps=6, every=2, on_step=crash_at_5)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000002.pt", "step-000004.pt"]
    resumed, res = run(tmp_path, steps=6, every=2)
    assert res.resumed_from == 4 and res.steps == 2 and len(res.history) == 6
    ref, got = final_weights(reference), final_weights(resumed)
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_separate_group_has_its_own_clip_and_changes_only_by_its_settings():
    separate, res = run(steps=3, separate=True)
    plain, _ = run(steps=3)
    assert all(h["head_grad_norm"] > 0 and h["grad_norm"] > 0 for h in res.history)
    assert not torch.equal(plain.model.lm_head.bias, separate.model.lm_head.bias)


def test_separate_group_resume_equals_uninterrupted(tmp_path):
    reference, _ = run(steps=6, separate=True)

    def crash_at_5(step):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, steps=6, every=2, on_step=crash_at_5, separate=True)
    resumed, res = run(tmp_path, steps=6, every=2, separate=True)
    assert res.resumed_from == 4
    ref, got = final_weights(reference), final_weights(resumed)
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    with pytest.raises(ValueError, match="separate optimizers"):
        run(tmp_path, steps=6, every=2)  # its checkpoints, resumed without the group


def test_separate_groups_refuse_shared_or_missing_parameters():
    model = load_model("tiny-ctc")
    bias = model.model.lm_head.bias
    cfg = TrainConfig(checkpoint_every=0)
    for groups, extra in [([SeparateGroup(params=[], lr=0.1)], []),
                          ([SeparateGroup(params=[bias, bias], lr=0.1)], []),
                          ([SeparateGroup(params=[bias], lr=0.1)], [{"params": [bias]}])]:
        with pytest.raises(ValueError, match="separate group"):
            train(model, make_utterances(), steps=1, batch_size=2, seed=0, config=cfg,
                  separate_groups=groups, extra_param_groups=extra, progress=False)
    with pytest.raises(ValueError, match="clip"):
        SeparateGroup(params=[bias], lr=0.1, clip=-1.0)


def test_checkpoints_are_apart_by_their_minimum_interval_and_not_timed(tmp_path, monkeypatch):
    # A fake clock that reads 10 s more before each step, and 100 s more across each
    # checkpoint write: with a checkpoint due every step but at most one per 25 s, the
    # saves land after steps 3 and 6, and the loop's seconds leave their 200 s out.
    import mpqbench.quant.qat as qat

    clock = [0.0]
    monkeypatch.setattr(qat.time, "perf_counter", lambda: clock[0])
    real_save = qat.save_checkpoint

    def slow_save(*args, **kwargs):
        clock[0] += 100.0
        return real_save(*args, **kwargs)

    monkeypatch.setattr(qat, "save_checkpoint", slow_save)

    def tick(step):
        clock[0] += 10.0

    _, result = run(tmp_path, steps=8, every=1, on_step=tick, min_interval=25.0)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000003.pt", "step-000006.pt"]
    assert result.checkpoint_seconds == 200.0
    assert result.seconds == 80.0


def test_no_checkpoint_before_the_minimum_interval(tmp_path):
    run(tmp_path, steps=5, every=1, min_interval=3600.0)
    assert list_checkpoints(tmp_path) == []
    run(tmp_path / "eager", steps=5, every=1, min_interval=0.0)
    assert len(list_checkpoints(tmp_path / "eager")) == 2  # steps 3 and 4 kept of 1-4


def test_checkpoint_min_interval_is_validated():
    with pytest.raises(ValueError, match="checkpoint_min_interval_s"):
        TrainConfig(checkpoint_min_interval_s=-1.0)


def test_corrupt_checkpoint_falls_back_to_previous(tmp_path):
    run(tmp_path, steps=5, every=2)
    newest = list_checkpoints(tmp_path)[-1]
    newest.write_bytes(newest.read_bytes()[:100])
    step, _ = load_latest_checkpoint(tmp_path)
    assert step == 2


def test_nan_loss_stops_with_clear_error_and_writes_nothing(tmp_path):
    def poison(step):
        if step == 1:
            with torch.no_grad():
                next(iter(model_holder[0].model.parameters())).fill_(float("nan"))

    model_holder = []
    model = load_model("tiny-ctc")
    model_holder.append(model)
    data = make_utterances()
    cfg = TrainConfig(lr=1e-3, eta=0.0, checkpoint_every=1, checkpoint_min_interval_s=0)
    with pytest.raises(TrainingDiverged, match="step 1"):
        train(model, data, steps=4, batch_size=2, seed=0, config=cfg, on_step=poison,
              checkpoint_dir=tmp_path, progress=False)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000001.pt"]


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=0.0)
    with pytest.raises(ValueError, match="warmup_frac"):
        TrainConfig(warmup_frac=1.5)
