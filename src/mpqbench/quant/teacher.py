"""Cached 32-bit teacher distributions and the distillation KL term.

The 32-bit model's output distribution on every training utterance is computed once and
kept as its top-k tokens per position plus the remaining ("tail") probability mass. The
KL term is then the exact KL divergence between the teacher's and the student's
distributions *collapsed* onto those k tokens plus one tail bucket:

    KL_k(p || q) = sum_{v in topk} p_v (log p_v - log q_v) + p_tail (log p_tail - log q_tail)

which equals the full KL(p || q) when k >= vocabulary size and otherwise is a lower bound
of it (log-sum inequality) that is tight when the teacher's tail is small. The default k
keeps CTC vocabularies (~32 symbols) exact and Whisper's (51,864) cheap to store.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from mpqbench.precision import autocast
from mpqbench.workloads.adapter import ModelBatch, SpeechModel
from mpqbench.workloads.data.types import Utterance

log = logging.getLogger(__name__)

DEFAULT_TOP_K = 64


@dataclass
class _Entry:
    index: torch.Tensor  # (L, k) int64 token ids
    logp: torch.Tensor  # (L, k) float32 teacher log-probabilities
    log_tail: torch.Tensor  # (L,) float32 log of the teacher's mass outside the top-k


class TeacherCache:
    """Top-k teacher log-probabilities per utterance id and valid output position."""

    def __init__(self, top_k: int = DEFAULT_TOP_K) -> None:
        if top_k < 1:
            raise ValueError(f"teacher top_k must be >= 1, got {top_k}")
        self.top_k = top_k
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, utt_id: str) -> bool:
        return utt_id in self._entries

    @torch.no_grad()  # not inference_mode: cached tensors later meet autograd in kl()
    def add_batch(self, batch: ModelBatch, logits: torch.Tensor, mask: torch.Tensor) -> None:
        """Store the teacher's outputs for one batch (:class:`ForwardOutput` layout: logits
        ``(N, V)`` of the valid positions, mask ``(B, T)``)."""
        logp = torch.log_softmax(logits.float(), dim=-1)
        k = min(self.top_k, logp.shape[-1])
        top, idx = logp.topk(k, dim=-1)
        mass = top.exp().sum(-1).clamp(max=1.0)
        if k < logp.shape[-1]:
            log_tail = torch.log1p(-mass.clamp(max=1.0 - 1e-7))
        else:
            log_tail = torch.full(mass.shape, float("-inf"), device=mass.device)
        counts = mask.sum(dim=1).tolist()
        pieces = zip(idx.cpu().split(counts), top.cpu().split(counts),
                     log_tail.cpu().split(counts), strict=True)
        for utt_id, (index, top_logp, tail) in zip(batch.ids, pieces, strict=True):
            self._entries[utt_id] = _Entry(index=index, logp=top_logp, log_tail=tail)

    def kl(self, batch: ModelBatch, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean over valid positions of KL_k(teacher || student) for a student batch
        (:class:`ForwardOutput` layout: logits ``(N, V)`` of the valid positions, mask
        ``(B, T)``).

        The rows are normalised with one ``logsumexp`` and the whole batch is one gather,
        so no per-utterance slice of the logits costs a vocabulary-sized pass in the
        backward.

        Raises:
            KeyError: an utterance in the batch has no cached teacher output.
            ValueError: the student's valid positions differ from the teacher's for an id.
        """
        entries = []
        counts = mask.sum(dim=1).tolist()
        for b, utt_id in enumerate(batch.ids):
            entry = self._entries.get(utt_id)
            if entry is None:
                raise KeyError(f"no cached teacher output for utterance {utt_id!r}")
            if counts[b] != entry.index.shape[0]:
                raise ValueError(
                    f"utterance {utt_id!r}: student has {counts[b]} valid positions, "
                    f"teacher cache has {entry.index.shape[0]}"
                )
            entries.append(entry)
        rows = logits.float()
        if rows.shape[0] == 0:
            return rows.new_zeros(())
        device = rows.device
        idx = torch.cat([e.index for e in entries]).to(device)
        p_logp = torch.cat([e.logp for e in entries]).to(device)
        tail = torch.cat([e.log_tail for e in entries]).to(device)
        q_top = rows.gather(-1, idx) - torch.logsumexp(rows, dim=-1, keepdim=True)
        kl = (p_logp.exp() * (p_logp - q_top)).sum(-1)
        has_tail = torch.isfinite(tail)
        if bool(has_tail.any()):
            # log q_tail = log(1 - sum_topk q), computed stably from log-probs.
            q_mass = torch.logsumexp(q_top, dim=-1).exp().clamp(max=1.0 - 1e-7)
            log_q_tail = torch.log1p(-q_mass)
            kl = kl + torch.where(has_tail, tail.exp() * (tail - log_q_tail), 0.0)
        return kl.sum() / rows.shape[0]

    def fingerprint(self) -> str:
        """A short hash of the cached contents (for records and cache keys)."""
        h = hashlib.sha256()
        for utt_id in sorted(self._entries):
            e = self._entries[utt_id]
            h.update(utt_id.encode())
            h.update(e.index.numpy().tobytes())
            h.update(e.logp.numpy().tobytes())
        return h.hexdigest()[:16]


@torch.no_grad()
def build_teacher_cache(
    model: SpeechModel,
    utterances: Sequence[Utterance],
    *,
    batch_size: int = 8,
    top_k: int = DEFAULT_TOP_K,
    progress: bool = True,
    precision: str = "fp32",
) -> TeacherCache:
    """Run the 32-bit model once over ``utterances`` (eval mode) and cache its outputs.

    ``precision``: compute precision of the forward (:func:`mpqbench.precision.autocast`);
    the cached log-probabilities are computed from fp32 logits either way.
    """
    cache = TeacherCache(top_k)
    was_training = model.model.training
    model.model.eval()
    try:
        starts = range(0, len(utterances), batch_size)
        for start in tqdm(starts, desc="teacher outputs", unit="batch", disable=not progress):
            chunk = [utterances[i] for i in range(start, min(start + batch_size, len(utterances)))]
            batch = model.make_batch(chunk)
            with autocast(precision, model.device):
                out = model.forward(batch)
            cache.add_batch(batch, out.logits.float(), out.mask)
    finally:
        model.model.train(was_training)
    log.info("cached teacher outputs for %d utterances (top-%d)", len(cache), top_k)
    return cache


__all__ = ["DEFAULT_TOP_K", "TeacherCache", "build_teacher_cache"]
