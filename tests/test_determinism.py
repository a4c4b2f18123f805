"""Deterministic CPU kernels inside the training loop (mpqbench.determinism).

The behavioural test reproduces what made two runs of a QAT cell differ on 2 threads: the
backward of a lookup with repeated indices (Whisper's decoder positional embedding, the
same positions for every row of a batch). Without the context 40 repetitions gave 38
different gradients on a 2-core CPU; inside it, one.
"""

from __future__ import annotations

import pytest
import torch
import torch.utils.deterministic

import mpqbench.quant.qat as qat
from mpqbench.determinism import deterministic_kernels
from mpqbench.workloads.models.registry import load_model
from test_qat_loop import make_utterances


def _settings():
    return (torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.utils.deterministic.fill_uninitialized_memory)


def test_cpu_block_is_deterministic_then_restored():
    before = _settings()
    with deterministic_kernels("cpu"):
        assert _settings() == (True, True, False)
    assert _settings() == before
    with pytest.raises(RuntimeError, match="boom"), deterministic_kernels("cpu"):
        raise RuntimeError("boom")
    assert _settings() == before


def test_other_devices_are_left_alone():
    before = _settings()
    with deterministic_kernels("cuda"):  # a device name only: nothing runs on it
        assert _settings() == before


def test_repeated_index_backward_is_bit_identical_on_two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        weight = torch.zeros(448, 384, requires_grad=True)
        positions = torch.arange(30).unsqueeze(0).repeat(16, 1)
        upstream = torch.randn(16, 30, 384, generator=torch.Generator().manual_seed(0)) * 1e4
        grads = set()
        for _ in range(20):
            weight.grad = None
            with deterministic_kernels("cpu"):
                weight[positions].backward(upstream)
            grads.add(weight.grad.numpy().tobytes())
        assert len(grads) == 1
    finally:
        torch.set_num_threads(threads)


def test_the_training_loop_runs_inside_it(monkeypatch):
    seen, flags = [], []
    real = qat.deterministic_kernels

    def spy(device):
        seen.append(torch.device(device).type)
        return real(device)

    monkeypatch.setattr(qat, "deterministic_kernels", spy)
    model = load_model("tiny-ctc")
    qat.train(model, make_utterances(), steps=2, batch_size=2, seed=0,
              config=qat.TrainConfig(), progress=False,
              on_step=lambda _: flags.append(torch.are_deterministic_algorithms_enabled()))
    assert seen == ["cpu"] and flags == [True, True]
    assert not torch.are_deterministic_algorithms_enabled()
