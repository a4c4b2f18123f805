"""The single-query attention path of Whisper decoding (against torch's own SDPA)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mpqbench.workloads.models.tiny import tiny_whisper
from mpqbench.workloads.models.whisper_attention import (
    SINGLE_QUERY_ATTENTION,
    single_query_attention,
)

#: Float results here depend on which CPU kernels torch runs: .ci/run repeats them on AVX2.
pytestmark = pytest.mark.kernels


def _qkv(q_len: int, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shape = (3, 4, 50, 16)
    q = torch.randn(3, 4, q_len, 16, generator=g)
    k, v = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    return q.to(dtype), k.to(dtype), v.to(dtype)


@pytest.mark.parametrize("scaling", [None, 1.0, 0.3])
def test_one_bf16_query_matches_fp32_attention(scaling):
    q, k, v = _qkv(1, torch.bfloat16)
    out, weights = single_query_attention(None, q, k, v, None, scaling=scaling)
    assert weights is None and out.dtype == torch.bfloat16 and out.shape == (3, 1, 4, 16)
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), scale=scaling)
    # computed in fp32 from the same bf16 inputs: only the final rounding to bf16 differs
    torch.testing.assert_close(out.float(), ref.transpose(1, 2), rtol=2**-8, atol=2**-8)


@pytest.mark.parametrize(("q_len", "dtype", "mask"), [
    (4, torch.bfloat16, False), (1, torch.float32, False), (1, torch.bfloat16, True)])
def test_every_other_call_is_transformers_sdpa(q_len, dtype, mask):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    q, k, v = _qkv(q_len, dtype)
    m = torch.zeros(3, 1, q_len, 50, dtype=dtype) if mask else None
    module = torch.nn.Module()
    module.is_causal = False
    got = single_query_attention(module, q, k, v, m, scaling=0.25)[0]
    want = sdpa_attention_forward(module, q, k, v, m, scaling=0.25)[0]
    assert torch.equal(got, want)  # the same function ran


def test_bf16_greedy_decoding_takes_the_single_query_path(monkeypatch):
    from transformers import AttentionInterface

    model = tiny_whisper("tiny-whisper")
    assert model.model.config._attn_implementation == SINGLE_QUERY_ATTENTION
    calls = []

    def counting(module, query, key, value, attention_mask, **kwargs):
        calls.append((query.shape[2], key.shape[2], query.dtype, attention_mask is None))
        return single_query_attention(module, query, key, value, attention_mask, **kwargs)

    monkeypatch.setitem(AttentionInterface._global_mapping, SINGLE_QUERY_ATTENTION, counting)
    clip = (torch.randn(16000 * 2, generator=torch.Generator().manual_seed(0)) * 0.1).numpy()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.transcribe([clip, clip[:16000]], max_new_tokens=4)
    encoder_positions = model.window_s * 50
    cross = [c for c in calls if c[:2] == (1, encoder_positions)]
    assert cross and all(dtype == torch.bfloat16 and unmasked for *_, dtype, unmasked in cross)


def test_fp32_copies_are_reused_only_for_the_same_unchanged_tensors():
    q, k, v = _qkv(1, torch.bfloat16)
    module = torch.nn.Module()
    first = single_query_attention(module, q, k, v, None, scaling=0.25)[0]
    memo = module.__dict__["_mpqbench_fp32_kv"]
    assert torch.equal(single_query_attention(module, q, k, v, None, scaling=0.25)[0], first)
    assert module.__dict__["_mpqbench_fp32_kv"] is memo  # reused, not converted again
    k.mul_(2)  # in place: the version counter moves, so the copy is not reused
    changed = single_query_attention(module, q, k, v, None, scaling=0.25)[0]
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), scale=0.25)
    torch.testing.assert_close(changed.float(), ref.transpose(1, 2), rtol=2**-8, atol=2**-8)
    other_k = k.clone()
    single_query_attention(module, q, other_k, v, None, scaling=0.25)
    del k, other_k  # the memo holds no strong reference to the keys: freed, it is dropped
    import gc

    gc.collect()
    assert "_mpqbench_fp32_kv" not in module.__dict__
