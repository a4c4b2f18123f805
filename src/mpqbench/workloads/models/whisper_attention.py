"""Whisper attention for one-token decoding steps under CPU autocast.

Greedy decoding feeds the decoder one token per step, so each cross-attention call is one
query over every encoder position (1,000 at the default suite's 20 s window). torch's CPU
``scaled_dot_product_attention`` (flash kernel) is slow at that shape in bf16. Measured
with ``python benchmarks/bench_decoding_kernels.py`` on a 2-core AMD EPYC (torch 2.13),
batch 16, 6 heads, 1,000 keys, 64 dims: SDPA 10.7 ms a call; two batched matmuls and a
softmax in fp32 from the bf16 keys and values 6.5 ms, and 4.0 ms once the keys and values
are fp32 -- which a layer's cross-attention cache lets us convert once per clip batch
instead of once per step. Largest error against fp32 SDPA on the same inputs: 2.8e-4
(bf16 SDPA) and 2.4e-4 (this path, whose output is rounded to bf16).
:func:`single_query_attention` takes that path for a single bf16/fp16 query on a CPU with no
mask and no dropout, and hands every other call (training, the encoder, CUDA, fp32) to
transformers' own SDPA function.

:func:`use_single_query_attention` registers it with transformers' ``AttentionInterface``
(the documented way to add an attention function) and selects it on a model that uses SDPA.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

#: The name the function is registered under.
SINGLE_QUERY_ATTENTION = "mpqbench_single_query_sdpa"

_LOW_PRECISION = (torch.bfloat16, torch.float16)


def single_query_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: object,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: ``(B, H, Q, D)`` query, ``(B, H, K, D)``
    key and value; returns ``(B, Q, H, D)`` and no weights.

    One query, low precision, CPU, no mask, no dropout: ``softmax(q k^T * scaling) v`` in
    fp32, cast back to the query's dtype. Anything else: ``sdpa_attention_forward``.
    """
    fast = (
        query.shape[2] == 1
        and attention_mask is None
        and not dropout
        and query.device.type == "cpu"
        and query.dtype in _LOW_PRECISION
        and key.dtype == query.dtype
        and value.dtype == query.dtype
        and not kwargs.get("output_attentions", False)
    )
    if not fast:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
            **kwargs,
        )
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    key32, value32 = _fp32_keys_values(module, key, value)
    # keys times the query, (B, H, K, 1): a transposed key would be copied at every call
    scores = torch.matmul(key32, query.float().transpose(-1, -2))
    if scale != 1.0:
        scores = scores * scale
    weights = scores.softmax(dim=-2).transpose(-1, -2)  # (B, H, 1, K)
    out = torch.matmul(weights, value32).to(query.dtype)
    return out.transpose(1, 2).contiguous(), None


def _fp32_keys_values(
    module: nn.Module | None, key: torch.Tensor, value: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 copies of ``key`` and ``value``, kept on ``module`` while those tensors live.

    A cross-attention layer gets the same cached key/value tensors at every decoding step;
    converting them once instead of per step is most of this path's gain. The copies are
    reused only for the very same tensors, unmodified (same object, same version counter),
    and are dropped as soon as the key tensor is freed.
    """
    memo = getattr(module, "_mpqbench_fp32_kv", None) if module is not None else None
    if memo is not None:
        key_ref, value_ref, versions, key32, value32 = memo
        if (key_ref() is key and value_ref() is value
                and versions == (key._version, value._version)):
            return key32, value32
    key32, value32 = key.float(), value.float()
    if module is not None:
        def forget(_ref: object, module: nn.Module = module) -> None:
            module.__dict__.pop("_mpqbench_fp32_kv", None)

        module.__dict__["_mpqbench_fp32_kv"] = (
            weakref.ref(key, forget), weakref.ref(value), (key._version, value._version),
            key32, value32,
        )
    return key32, value32


def use_single_query_attention(model: nn.Module) -> bool:
    """Select :func:`single_query_attention` on a transformers ``model`` that uses SDPA.

    Returns:
        True if selected; False (model unchanged) when the model uses another attention
        implementation (eager, flash-attention, ...), which is left as the user chose it.
    """
    config = getattr(model, "config", None)
    current = getattr(config, "_attn_implementation", None)
    if current == SINGLE_QUERY_ATTENTION:
        return True
    if current != "sdpa":
        return False
    AttentionInterface.register(SINGLE_QUERY_ATTENTION, single_query_attention)
    model.set_attn_implementation(SINGLE_QUERY_ATTENTION)
    return True


__all__ = ["SINGLE_QUERY_ATTENTION", "single_query_attention", "use_single_query_attention"]
