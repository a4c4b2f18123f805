"""A linear layer whose weight is an embedding table it does not own, and the verb that
puts a module at a dotted path.

Whisper's output projection ``proj_out`` is tied to its token embedding: one tensor for
lookup and projection. Where a later step replaces the embedding (a row-grouped one here,
quantized twins in ``mpqbench.quant``), the projection becomes a :class:`TiedLinearBase`
that reads its owner's table at every call, so the tied tensor stays one tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TiedLinearBase", "set_submodule"]


class TiedLinearBase(nn.Module):
    """A linear layer whose weight is an embedding table it does not own (Whisper's
    ``proj_out``, tied to the token embedding): ``x @ table.T + bias``. Subclasses say
    which table: :meth:`table`. The owner is not a submodule (it lives at its own path)."""

    def __init__(self, owner: nn.Module, bias: nn.Parameter | None) -> None:
        super().__init__()
        self.owner = [owner]  # a list: not registered as a submodule
        self.bias = bias

    def table(self) -> torch.Tensor:
        """The ``[num_embeddings, dim]`` matrix the projection multiplies by."""
        raise NotImplementedError

    @property
    def weight(self) -> torch.Tensor:
        """The table (read-only use: code that inspects ``module.weight``)."""
        return self.table()

    @property
    def in_features(self) -> int:
        return self.owner[0].embedding_dim

    @property
    def out_features(self) -> int:
        return self.owner[0].num_embeddings

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.table(), self.bias)

    def extra_repr(self) -> str:
        owner = self.owner[0]
        bits = getattr(owner, "bits", None)
        tail = "" if bits is None else f" ({bits} bits)"
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"tied to a {type(owner).__name__}{tail}")


def set_submodule(model: nn.Module, path: str, new: nn.Module) -> None:
    """Put ``new`` at the dotted ``path`` of ``model`` (its parent must exist)."""
    parent_name, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
