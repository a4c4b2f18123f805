"""A token embedding split into row groups, so each group can take its own bit-width.

A tied token embedding (Whisper's ``embed_tokens``, also its output projection ``proj_out``)
is one tensor, so a per-layer precision search gives it one bit-width. Its rows are not
equally used: in a byte-level BPE vocabulary a lower id is an earlier merge, i.e. a more
frequent string in the tokenizer's training text, and the embedded corpus's train split
uses 1,841 of whisper-tiny.en's 51,864 tokens (docs/FINDINGS.md, "The embedding's rows").
:func:`split_rows_` replaces the table by contiguous id ranges, one ``nn.Embedding`` per
range (``<path>.rows.<i>``), so the layers a method allocates are the row groups.

The split model computes the same function as the original: a lookup gathers each id's
row from its group (the same values), and the projection multiplies by the groups' tables
concatenated in id order (the same matrix). Each group's table is read through the group
module, so a group that a later floor swaps for a quantized twin is multiplied by its
quantized table: :func:`group_table` reads ``quantized_weight()`` (fake-quant and supernet
embeddings), ``dequantized_weight()`` (packed embeddings) or else ``weight``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from mpqbench.workloads.models.tied_linear import TiedLinearBase, set_submodule

__all__ = ["RowGroupedEmbedding", "RowGroupedProjection", "check_row_cuts", "group_table",
           "split_rows_"]


def check_row_cuts(cuts: Sequence[int], num_rows: int | None, *,
                   what: str = "row groups") -> tuple[int, ...]:
    """Validate interior cut points of a ``num_rows`` table (None: any size) and return
    them as a tuple.

    Raises:
        ValueError: not a list of ints, a cut not strictly increasing, or outside
            ``1 .. num_rows - 1``; or no cut at all.
    """
    if isinstance(cuts, (str, bytes)) or not isinstance(cuts, Sequence):
        raise ValueError(f"{what}: give a list of token ids, got {cuts!r}")
    cuts = tuple(cuts)
    if not cuts:
        raise ValueError(f"{what}: give at least one cut point (an id where a group starts)")
    top = "" if num_rows is None else f"..{num_rows - 1}"
    for c in cuts:
        if (isinstance(c, bool) or not isinstance(c, int) or c < 1
                or (num_rows is not None and c >= num_rows)):
            raise ValueError(f"{what}: cut points must be integers in 1{top}, got {c!r}")
    if any(b <= a for a, b in itertools.pairwise(cuts)):
        raise ValueError(f"{what}: cut points must be strictly increasing, got {list(cuts)}")
    return cuts


def group_table(module: nn.Module) -> torch.Tensor:
    """The ``[rows, dim]`` table a row group presents (see the module docstring)."""
    for attr in ("quantized_weight", "dequantized_weight"):
        fn = getattr(module, attr, None)
        if callable(fn):
            return fn()
    return module.weight


class RowGroupedEmbedding(nn.Module):
    """A token embedding as contiguous row groups: ``rows[i]`` holds ids
    ``starts[i] .. starts[i+1] - 1`` (an ``nn.Embedding`` of those rows).

    ``padding_idx`` (an id whose row gets no gradient; Whisper's is ``<|endoftext|>``)
    becomes the padding index, shifted, of the group that holds it.
    """

    def __init__(self, tables: Sequence[torch.Tensor], starts: Sequence[int],
                 padding_idx: int | None = None) -> None:
        super().__init__()
        self.starts = tuple(int(s) for s in starts)
        ends = (*self.starts[1:], self.starts[-1] + tables[-1].shape[0])
        self.padding_idx = padding_idx
        self.rows = nn.ModuleList(
            nn.Embedding.from_pretrained(
                t, freeze=False,
                padding_idx=padding_idx - a if padding_idx is not None and a <= padding_idx < b
                else None)
            for t, a, b in zip(tables, self.starts, ends, strict=True))
        self.num_embeddings = self.starts[-1] + tables[-1].shape[0]
        self.embedding_dim = int(tables[0].shape[1])
        self._frozen_table: torch.Tensor | None = None

    @property
    def weight(self) -> torch.Tensor:
        """The whole table in id order (the groups' tables concatenated)."""
        return self.table()

    def table(self) -> torch.Tensor:
        """The groups' tables (quantized where a group is) concatenated in id order.

        Between :meth:`freeze_table` and :meth:`unfreeze_table`, and with autograd off, the
        table concatenated at the freeze (the same values: nothing trains in between)."""
        if self._frozen_table is not None and not torch.is_grad_enabled():
            return self._frozen_table
        return torch.cat([group_table(m) for m in self.rows], dim=0)

    def freeze_table(self) -> None:
        """Concatenate the table once, for inference: greedy decoding projects onto it at
        every emitted token, and each ``cat`` copies the whole table. Called by
        ``mpqbench.quant.layers.frozen_quantized_weights`` after the groups froze theirs."""
        with torch.no_grad():
            self._frozen_table = None
            self._frozen_table = self.table().detach()

    def unfreeze_table(self) -> None:
        """Drop the copy made by :meth:`freeze_table`."""
        self._frozen_table = None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        if flat.numel() == 0:
            return self.rows[0](ids)
        group = torch.bucketize(flat, torch.tensor(self.starts[1:], device=flat.device),
                                right=True)
        parts, order = [], []
        for i, (start, module) in enumerate(zip(self.starts, self.rows, strict=True)):
            where = (group == i).nonzero().reshape(-1)
            if where.numel() == 0:
                continue
            parts.append(module(flat[where] - start))
            order.append(where)
        rows = torch.cat(parts, dim=0)
        index = torch.cat(order)
        out = rows.new_empty((flat.numel(), self.embedding_dim))
        out = out.index_copy(0, index, rows)
        return out.reshape(*ids.shape, self.embedding_dim)

    def extra_repr(self) -> str:
        return f"num_embeddings={self.num_embeddings}, starts={list(self.starts)}"


class RowGroupedProjection(TiedLinearBase):
    """A linear layer tied to a :class:`RowGroupedEmbedding`: ``x @ table.T + bias``, with
    the table read from the groups at every call (quantized where they are)."""

    def table(self) -> torch.Tensor:
        return self.owner[0].table()

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"tied to {len(self.owner[0].rows)} row groups")


def split_rows_(model: nn.Module, embedding: str, projection: str | None,
                cuts: Sequence[int]) -> RowGroupedEmbedding:
    """Replace the embedding at path ``embedding`` by row groups cut at ``cuts``, in place,
    and the linear at ``projection`` (tied to it, or None) by a :class:`RowGroupedProjection`.

    Returns:
        The new :class:`RowGroupedEmbedding`. Its group tables are new Parameters (copies of
        the rows); the old table Parameter is no longer in the model.

    Raises:
        ValueError: the path is not an ``nn.Embedding``, it has ``max_norm``, sparse
            gradients or ``scale_grad_by_freq``, the projection does not share its table,
            or bad cuts.
    """
    old = model.get_submodule(embedding)
    if type(old) is not nn.Embedding:
        raise ValueError(f"{embedding!r} is a {type(old).__name__}, not a plain nn.Embedding "
                         "(split the rows before quantizing)")
    if old.max_norm is not None or old.sparse or old.scale_grad_by_freq:
        raise ValueError(f"{embedding!r}: only embeddings without max_norm, sparse gradients "
                         "and scale_grad_by_freq are split into row groups")
    cuts = check_row_cuts(cuts, old.num_embeddings, what=f"{embedding} row groups")
    lin = None
    if projection is not None:
        lin = model.get_submodule(projection)
        if not isinstance(lin, nn.Linear) or lin.weight is not old.weight:
            raise ValueError(f"{projection!r} is not a linear sharing {embedding!r}'s table")
    starts = (0, *cuts)
    ends = (*cuts, old.num_embeddings)
    with torch.no_grad():
        tables = [old.weight[a:b].detach().clone() for a, b in zip(starts, ends, strict=True)]
    new = RowGroupedEmbedding(tables, starts, old.padding_idx).to(old.weight.device)
    new.train(old.training)
    set_submodule(model, embedding, new)
    if lin is not None:
        proj = RowGroupedProjection(new, lin.bias)
        proj.train(lin.training)
        set_submodule(model, projection, proj)
    return new

