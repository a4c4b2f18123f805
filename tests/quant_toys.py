"""Small models for the quantization tests (not a test module)."""

from __future__ import annotations

import torch
from torch import nn


class Stack(nn.Module):
    """Linear and Conv1d layers, one weight-normalised grouped conv, one tied pair."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 16, 3, padding=1)
        self.reflect = nn.Conv1d(16, 16, 3, padding=1, padding_mode="reflect", bias=False)
        self.pos = nn.utils.parametrizations.weight_norm(
            nn.Conv1d(16, 16, 5, padding=2, groups=4), name="weight", dim=2
        )
        self.lin = nn.Linear(16, 32)
        self.out = nn.Linear(32, 16, bias=False)
        self.tied = nn.Linear(32, 16, bias=False)
        self.tied.weight = self.out.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))
        h = self.reflect(h) + self.pos(h)
        h = torch.tanh(self.lin(h.transpose(1, 2)))
        return self.out(h) + self.tied(h)


#: Every quantizable layer of :class:`Stack` (``tied`` shares ``out``'s weight).
STACK_LAYERS = ["conv", "reflect", "pos", "lin", "out"]


def stack(seed: int = 0) -> Stack:
    torch.manual_seed(seed)
    return Stack()


def stack_input() -> torch.Tensor:
    return torch.randn(3, 4, 12, generator=torch.Generator().manual_seed(5))


def rounding_tolerance(dtype: torch.dtype, terms: int) -> float:
    """Tolerance for two float computations of the same value that sum in different orders.

    A sum of ``terms`` products reordered changes by at most about ``terms`` units of
    rounding (``eps``) relative to the magnitudes summed; this returns ``4 * terms * eps``
    of ``dtype``, a bound with margin for the O(1)-magnitude activations of the toy models.
    """
    return 4 * terms * torch.finfo(dtype).eps


class TiedLM(nn.Module):
    """A token embedding tied to an output projection, as in Whisper's decoder."""

    def __init__(self, vocab: int = 40, dim: int = 12) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim, padding_idx=0)
        self.mix = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.mix(self.embed(ids))))


def tied_lm(seed: int = 0) -> TiedLM:
    torch.manual_seed(seed)
    return TiedLM()


def token_ids() -> torch.Tensor:
    """(3, 7) ids with repeats and the padding id."""
    return torch.randint(0, 40, (3, 7), generator=torch.Generator().manual_seed(3))
