"""The cached-teacher KL against torch's own KL divergence."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mpqbench.quant.teacher import TeacherCache
from mpqbench.workloads.adapter import ModelBatch

#: Float results here depend on which CPU kernels torch runs: .ci/run repeats them on AVX2.
pytestmark = pytest.mark.kernels


def batch_and_logits(vocab: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(2, 5, vocab, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    return ModelBatch(ids=["a", "b"], inputs={}), logits, mask  # pass logits[mask] on


def full_kl(teacher_logits, student_logits, mask):
    p = F.log_softmax(teacher_logits, -1)[mask]
    q = F.log_softmax(student_logits, -1)[mask]
    return F.kl_div(q, p, log_target=True, reduction="sum") / mask.sum()


def test_exact_when_top_k_covers_vocabulary():
    batch, t_logits, mask = batch_and_logits(vocab=12)
    _, s_logits, _ = batch_and_logits(vocab=12, seed=1)
    cache = TeacherCache(top_k=12)
    cache.add_batch(batch, t_logits[mask], mask)
    got = cache.kl(batch, s_logits[mask], mask)
    assert got.item() == pytest.approx(full_kl(t_logits, s_logits, mask).item(), rel=1e-5)


def test_top_k_is_a_lower_bound_and_zero_for_the_teacher_itself():
    batch, t_logits, mask = batch_and_logits(vocab=200)
    _, s_logits, _ = batch_and_logits(vocab=200, seed=1)
    cache = TeacherCache(top_k=8)
    cache.add_batch(batch, t_logits[mask], mask)
    approx = cache.kl(batch, s_logits[mask], mask).item()
    assert 0 < approx <= full_kl(t_logits, s_logits, mask).item() + 1e-6
    assert cache.kl(batch, t_logits[mask], mask).item() == pytest.approx(0.0, abs=1e-5)


def test_gradient_flows_to_student_logits():
    batch, t_logits, mask = batch_and_logits(vocab=50)
    cache = TeacherCache(top_k=10)
    cache.add_batch(batch, t_logits[mask], mask)
    s = torch.zeros(2, 5, 50, requires_grad=True)
    cache.kl(batch, s[mask], mask).backward()
    assert s.grad is not None and s.grad[mask].abs().sum() > 0
    assert s.grad[~mask].abs().sum() == 0


def test_mismatched_positions_and_unknown_ids_are_refused():
    batch, t_logits, mask = batch_and_logits(vocab=20)
    cache = TeacherCache(top_k=4)
    cache.add_batch(batch, t_logits[mask], mask)
    other = mask.clone()
    other[1, 3] = True
    with pytest.raises(ValueError, match="'b'"):
        cache.kl(batch, t_logits[other], other)
    with pytest.raises(KeyError, match="'zz'"):
        cache.kl(ModelBatch(ids=["zz", "b"], inputs={}), t_logits[mask], mask)
