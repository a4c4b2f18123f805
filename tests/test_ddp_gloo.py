"""Multi-process training: 2 gloo ranks under torchrun equal one process on the same batch.

The 2-rank run (``tests/ddp_worker.py`` under ``torchrun --standalone --nproc-per-node 2``,
CPU, gloo, a free port chosen by the rendezvous) and the single-process reference (this
process, same code) train tiny-whisper on the same global batch of 5 clips (3 + 2 over
the ranks, with different label-token counts, so a rank-mean of rank-means would be
wrong): uniform 4-bit QAT, and the one-stage supernet method (architecture logits, Gumbel
noise, bit-budget term, extraction, pass 2). The workers also check the explicit gradient
average on parameters unused on one rank or on all, that only rank 0 writes checkpoints,
and that ranks which would resume from different checkpoints refuse to.

Tolerances. Uniform QAT agrees to ~1e-6 everywhere. In the one-stage run single weights
can differ by up to ~lr: float rounding differences of another batch split can move a
2-bit rounding decision or the Adam update of a near-zero gradient, and such steps are
discrete. So the supernet's weights are compared by the relative size of the difference
against the training update, ||w_2 - w_1|| / ||w_1 - w_0|| (measured 2.8e-5; limit 0.02),
the logits to 1e-5 (measured 9.7e-8; a layer's top two logits are >= 4.5e-4 apart), the
allocation exactly. With deliberately broken versions of the loop the test fails: an
unweighted mean of the ranks' mean losses gives a relative update error of 1.17, logits
off by 0.10, another allocation and uniform weights off by 4.7e-3; a sum instead of a mean
of the gradients gives 0.61, logits off by 0.15 and twice the recorded gradient norm (the
uniform weights agree there: AdamW and norm clipping are scale-invariant, which is why
the recorded gradient norms are compared).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import ddp_worker
from mpqbench import distributed
from mpqbench.workloads.models.registry import load_model

WORKER = Path(__file__).with_name("ddp_worker.py")


def test_shard_bounds_tile_the_global_batch_in_rank_order():
    for n in range(2, 12):
        for world in range(1, n + 1):
            bounds = [distributed.shard_bounds(n, world, r) for r in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
            sizes = [hi - lo for lo, hi in bounds]
            assert max(sizes) - min(sizes) <= 1 and sorted(sizes, reverse=True) == sizes
    with pytest.raises(ValueError, match="batch size of at least 4"):
        distributed.shard_bounds(3, 4, 0)
    with pytest.raises(ValueError, match="outside"):
        distributed.shard_bounds(8, 2, 2)


def test_single_process_defaults():
    assert not distributed.is_distributed()
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.is_rank0()
    assert distributed.all_reduce_sum([1.5, 2.0], torch.device("cpu")) == [1.5, 2.0]
    p = torch.zeros(2, requires_grad=True)
    p.grad = torch.ones(2)
    distributed.average_gradients_([p])
    assert p.grad.tolist() == [1.0, 1.0]


@pytest.mark.parametrize("name", ["tiny-whisper", "tiny-ctc"])
def test_count_weighted_rank_losses_equal_the_global_batch_loss(name):
    """The counts are right for the real adapters: sum_r c_r L_r / sum_r c_r of the two
    ranks' losses is the loss of the whole batch (eval mode: no dropout or SpecAugment)."""
    model = load_model(name)
    if name == "tiny-whisper":
        model.set_window_(2)
    model.model.eval()
    data = ddp_worker.utterances()[: ddp_worker.GLOBAL_BATCH]
    with torch.no_grad():
        full = float(model.forward(model.make_batch(data)).loss)
        shares = []
        for r in (0, 1):
            lo, hi = distributed.shard_bounds(len(data), 2, r)
            out = model.forward(model.make_batch(data[lo:hi]))
            shares.append((distributed.task_loss_count(model, out.mask, hi - lo),
                           float(out.loss)))
    weighted = sum(c * v for c, v in shares) / sum(c for c, _ in shares)
    assert weighted == pytest.approx(full, rel=1e-5)
    naive = sum(v for _, v in shares) / 2  # a mean of the ranks' means is another number
    assert abs(naive - full) > 1e-4 * abs(full)
    if name == "tiny-ctc":
        model.ctc_loss_reduction = "sum"
        assert distributed.task_loss_count(model, out.mask, 2) is None
        model.family = "other"
        with pytest.raises(ValueError, match="loss_count"):
            distributed.task_loss_count(model, out.mask, 2)


def _relative_update_error(got, ref, init) -> float:
    """max over tensors of ||got - ref|| / ||ref - init|| (tensors training moved)."""
    worst = 0.0
    for k, r in ref.items():
        if k not in init or init[k].shape != r.shape:
            continue
        moved = (r.double() - init[k].double()).norm()
        if moved > 0:
            worst = max(worst, float((got[k].double() - r.double()).norm() / moved))
    return worst


def test_two_gloo_ranks_equal_one_process_on_the_same_global_batch(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", str(WORKER), str(tmp_path)]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        reference = ddp_worker.run_all()  # one process, overlapping the 2-rank run
        log, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, log[-3000:]
    print(f"2-rank run + reference: {time.monotonic() - started:.1f} s")

    ranks = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1)]
    infos = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    # The replicas are identical: averaged gradients, synchronised logits and RNG.
    assert ranks[0].keys() == ranks[1].keys() == reference["tensors"].keys()
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])
    checkpoints = [info.pop("checkpoints") for info in infos]
    assert infos[0] == infos[1] and infos[0]["world_size"] == 2
    # Only rank 0 writes checkpoints; ranks that would resume from different ones refuse.
    assert checkpoints[0]["files"] == ["step-000001.pt", "step-000002.pt"]
    assert checkpoints[1]["files"] == []
    for c in checkpoints:
        assert "ranks disagree on" in c["resume_error"] and "from 0 to 2" in c["resume_error"]
    assert reference["info"]["world_size"] == 1
    # DDP semantics of the explicit gradient average (unused somewhere / everywhere).
    assert infos[0]["gradient_average"] == {"a": [2.0, 3.0], "b": [2.0, 3.0], "c": None}

    got, ref = ranks[0], reference["tensors"]
    info, ref_info = infos[0], reference["info"]

    # Uniform QAT: every weight and every step's global losses and gradient norm.
    for k in (k for k in ref if k.startswith("uniform/")):
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=1e-5, msg=k)
    assert len(info["uniform"]["history"]) == 4
    for mine, theirs in zip(info["uniform"]["history"], ref_info["uniform"]["history"],
                            strict=True):
        assert mine.keys() == theirs.keys() == {"task", "kl", "grad_norm", "loss"}
        for key in mine:
            assert mine[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-7), key

    # One-stage supernet: logits, expected bits, allocation, weights, final losses.
    one, ref_one = info["one_stage"], ref_info["one_stage"]
    assert one["allocation"] == ref_one["allocation"]
    assert len(set(one["allocation"]["layers"].values())) > 1  # a mixed allocation
    assert one["logits"].keys() == ref_one["logits"].keys()
    logit_error = max(abs(a - b) for name, row in one["logits"].items()
                      for a, b in zip(row, ref_one["logits"][name], strict=True))
    assert logit_error < 1e-5, logit_error
    for (s1, e1), (s2, e2) in zip(one["expected"], ref_one["expected"], strict=True):
        assert s1 == s2 and e1 == pytest.approx(e2, abs=1e-6)
    for key, value in ref_one["final_loss"].items():
        assert one["final_loss"][key] == pytest.approx(value, rel=1e-3), key
    init = {f"one_stage/{k}": v for k, v in ddp_worker.workload().model.model.state_dict().items()}
    error = _relative_update_error(got, {k: v for k, v in ref.items()
                                         if k.startswith("one_stage/")}, init)
    print(f"one-stage: logits within {logit_error:.2e}, relative update error {error:.2e}")
    assert error < 0.02, f"one-stage weights: relative update error {error:.4f}"
