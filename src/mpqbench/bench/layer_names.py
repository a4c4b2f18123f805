"""Readable short names and model order for quantized layer names.

Records store allocations as JSON objects with sorted keys, so the model's module order is
lost ("layers.10" sorts before "layers.2", decoder before encoder). Plots and tables put it
back with :func:`model_order` and label layers with :func:`short_names`, e.g.
``model.encoder.layers.3.fc1`` -> ``enc3.fc1``,
``wav2vec2.encoder.layers.0.attention.q_proj`` -> ``enc0.q``,
``model.decoder.layers.1.encoder_attn.k_proj`` -> ``dec1.xattn.k``,
``model.decoder.embed_tokens.rows.2`` (a row group of the token embedding) -> ``embed.r2``.
Names that no rule knows keep a shortened form of their own, so nothing is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["layer_block", "layer_kind", "model_order", "short_name", "short_names"]

_BLOCK = re.compile(r"(?:^|\.)(encoder|decoder)\.layers?\.(\d+)\.(.+)$")
_SUBLAYER = {
    "q_proj": "q", "k_proj": "k", "v_proj": "v", "out_proj": "out",
    "intermediate_dense": "fc1", "output_dense": "fc2", "fc1": "fc1", "fc2": "fc2",
}
_SUB_RANK = {"q": 0, "k": 1, "v": 2, "out": 3, "xattn.q": 4, "xattn.k": 5, "xattn.v": 6,
             "xattn.out": 7, "fc1": 8, "fc2": 9}
_CNN = re.compile(r"conv_layers\.(\d+)\.conv$")
_ROW_GROUP = re.compile(r"embed_tokens\.rows\.(\d+)$")


def _block_parts(name: str) -> tuple[str, int, str] | None:
    m = _BLOCK.search(name)
    if m is None:
        return None
    side, index, rest = m.group(1), int(m.group(2)), m.group(3).split(".")
    leaf = _SUBLAYER.get(rest[-1], rest[-1])
    cross = any(p in ("encoder_attn", "cross_attn", "crossattention") for p in rest[:-1])
    return ("enc" if side == "encoder" else "dec"), index, ("xattn." + leaf if cross else leaf)


def short_name(name: str) -> str:
    """A short readable label for one layer name (see the module docstring).

    Args:
        name: a module name as stored in an allocation.

    Returns:
        e.g. ``"enc3.fc1"``, ``"dec0.xattn.q"``, ``"cnn2"``, ``"pos_conv"``, ``"head"``;
        the last two dotted parts for names no rule knows.
    """
    parts = _block_parts(name)
    if parts is not None:
        side, index, leaf = parts
        return f"{side}{index}.{leaf}"
    m = _CNN.search(name)
    if m is not None:
        return f"cnn{m.group(1)}"
    if name.endswith("pos_conv_embed.conv"):
        return "pos_conv"
    if name.endswith("feature_projection.projection"):
        return "feat_proj"
    if name.split(".")[-1] in ("lm_head", "proj_out"):
        return "head"
    if name.endswith("embed_tokens"):
        return "embed"
    m = _ROW_GROUP.search(name)
    if m is not None:
        return f"embed.r{m.group(1)}"
    if re.search(r"encoder\.conv\d+$", name):
        return name.split(".")[-1]
    return ".".join(name.split(".")[-2:])


def short_names(names: Iterable[str]) -> dict[str, str]:
    """Short labels for several layers, unique among themselves.

    Args:
        names: layer names.

    Returns:
        name -> label; where two names would share a label both keep their full name.
    """
    names = list(names)
    labels = {n: short_name(n) for n in names}
    seen: dict[str, int] = {}
    for label in labels.values():
        seen[label] = seen.get(label, 0) + 1
    return {n: (lab if seen[lab] == 1 else n) for n, lab in labels.items()}


def _natural(text: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(t)) if t.isdigit() else (1, t) for t in re.split(r"(\d+)", text) if t)


def _order_key(name: str) -> tuple[object, ...]:
    parts = _block_parts(name)
    if parts is not None:
        side, index, leaf = parts
        return (2 if side == "enc" else 3, index, _SUB_RANK.get(leaf, 10), _natural(name))
    label = short_name(name)
    if label.startswith("cnn") or label.startswith("conv") or label == "feat_proj":
        section = 0
    elif label == "pos_conv":
        section = 1
    elif label in ("head", "embed") or label.startswith("embed.r"):
        section = 4
    else:
        section = 5
    return (section, 0, 0, _natural(name))


def model_order(names: Iterable[str]) -> list[str]:
    """Layer names in the order a forward pass meets them (best effort).

    Feature encoder, positional convolution, encoder blocks, decoder blocks, output head;
    within a block self-attention q, k, v, out, cross-attention, then the feed-forward
    layers; numbers compare as numbers. Unknown names go last in natural order.
    """
    return sorted(names, key=_order_key)


def layer_kind(name: str) -> str:
    """The layer's role without its block index, e.g. ``"enc.fc1"`` or ``"dec.xattn.q"``."""
    parts = _block_parts(name)
    if parts is None:
        return short_name(name)
    side, _, leaf = parts
    return f"{side}.{leaf}"


def layer_block(name: str) -> str:
    """The layer's block, e.g. ``"enc3"`` or ``"dec0"``; the short name outside blocks."""
    parts = _block_parts(name)
    if parts is None:
        return short_name(name)
    side, index, _ = parts
    return f"{side}{index}"
