"""Bit accounting: average bits, compression ratios and sizes, each with the rule behind it.

Every number is a :class:`Figure` ``(value, rule)``; :data:`RULES` maps each rule name to its
definition, and :meth:`Accounting.to_dict` writes both, so a record always states which rule
produced a number (DESIGN.md section 4).

Counting conventions:

- **N_total**: elements of every parameter of the model, each ``Parameter`` object once (tied
  weights count once). A weight-normalised conv counts its g and v. Learnable quantizer scales
  are quantizer state, not model parameters: they are left out of N_total and charged as
  scale overhead instead. A packed layer (after ``convert_``) counts its weight's elements,
  so N_total is the same before and after ``prepare_``/``convert_``.
- **N_l**: elements of quantized layer l's (effective) weight. Its bias stays fp32 and is
  part of N_rest.
- **N_rest**: elements of parameters that stay 32-bit: every parameter except those held
  *only* as the weight (or weight parametrization: g, v) of quantized layers. A quantized
  embedding and the projection tied to it (``TiedQuantLinear``: Whisper's ``proj_out``) are
  one tensor with one set of codes, counted once, in the embedding's N_l. A weight that a
  quantized layer shares with a 32-bit module (e.g. Whisper's output projection quantized
  while the token embedding is not) is stored twice -- packed for the layer, fp32 for the
  other user -- and is counted in both N_l and N_rest.
- **Size with overhead**: packed weights take ``ceil(b_l * N_l / 8)`` bytes (the packing pads
  each tensor to whole bytes), plus ``S_l * scale_bytes`` for the scales (S_l = output
  channels per channel, 1 per tensor; fp32 scales, 4 bytes, as the exporter stores them),
  plus 4 bytes per N_rest element. Persistent buffers and the safetensors header are not
  parameters and are not included (``export.save_packed`` reports them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mpqbench.quant._unwrap import unwrap_module
from mpqbench.quant.allocation import Allocation
from mpqbench.quant.layers import FAKE_QUANT_TYPES
from mpqbench.quant.packed_layers import PACKED_TYPES

#: Rule name -> definition, for every figure :func:`account` returns.
RULES: dict[str, str] = {
    "n_total": "unique parameter elements of the model, tied weights once, quantizer scales "
    "excluded; a packed layer counts its weight elements",
    "n_quantized": "sum_l N_l: weight elements of the quantized layers (biases excluded)",
    "n_rest": "parameter elements kept 32-bit: all but those held only as quantized weights",
    "avg_bits": "sum_l b_l*N_l / sum_l N_l over quantized layers (32 when none is quantized)",
    "cr_paper": "32*N_total / (sum_l b_l*N_l + 32*N_rest)  [Xu et al. 2025]",
    "cr_quantized_layers": "32*sum_l N_l / sum_l b_l*N_l (1 when none is quantized)",
    "size_fp32_bytes": "4*N_total",
    "size_packed_bytes": "sum_l (ceil(b_l*N_l/8) + S_l*scale_bytes) + 4*N_rest, "
    "S_l = scales of layer l (output channels, or 1 per tensor)",
    "scale_overhead_bytes": "sum_l S_l*scale_bytes",
    "cr_with_overhead": "size_fp32_bytes / size_packed_bytes",
    "cr_blocks_only": "cr_paper with only the transformer-block layers counted as quantized "
    "(every other parameter, the token embedding included, at 32 bits): the figure of "
    "records made before whole-model quantization",
}

#: Categories of :func:`kept_fp32_parameters`, in report order.
KEPT_CATEGORIES: tuple[str, ...] = (
    "norms", "biases", "positional_embeddings", "embeddings", "conv", "linear", "other",
)


@dataclass(frozen=True)
class Figure:
    """A number and the name of the rule that produced it (see :data:`RULES`)."""

    value: float
    rule: str

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"unknown accounting rule {self.rule!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "rule": self.rule}


@dataclass(frozen=True)
class LayerAccount:
    """One quantized layer: bits b_l, weight elements N_l, scales S_l, packed bytes."""

    bits: int
    n_weight: int
    n_scales: int
    packed_bytes: int
    scale_bytes: int

    def to_dict(self) -> dict[str, int]:
        return {
            "bits": self.bits,
            "n_weight": self.n_weight,
            "n_scales": self.n_scales,
            "packed_bytes": self.packed_bytes,
            "scale_bytes": self.scale_bytes,
        }


@dataclass(frozen=True)
class Accounting:
    """All figures for one (model, allocation)."""

    n_total: Figure
    n_quantized: Figure
    n_rest: Figure
    avg_bits: Figure
    cr_paper: Figure
    cr_quantized_layers: Figure
    size_fp32_bytes: Figure
    size_packed_bytes: Figure
    scale_overhead_bytes: Figure
    cr_with_overhead: Figure
    layers: dict[str, LayerAccount]

    def figures(self) -> dict[str, Figure]:
        """Every :class:`Figure`, by field name."""
        return {k: v for k, v in vars(self).items() if isinstance(v, Figure)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: each figure as {value, rule}, per-layer accounts, rule definitions."""
        out: dict[str, Any] = {k: f.to_dict() for k, f in self.figures().items()}
        out["layers"] = {n: la.to_dict() for n, la in self.layers.items()}
        out["rules"] = {f.rule: RULES[f.rule] for f in self.figures().values()}
        return out


def _weight_shape(name: str, module: nn.Module) -> tuple[int, ...]:
    if isinstance(module, PACKED_TYPES):
        return tuple(module.weight_shape)
    if isinstance(module, (nn.Linear, nn.Conv1d, nn.Embedding)):
        return tuple(module.weight.shape)
    raise ValueError(
        f"layer {name!r} is a {type(module).__name__}; only Linear/Conv1d/Embedding layers "
        "are quantized"
    )


def layer_sizes(model: nn.Module, names: list[str] | tuple[str, ...]) -> dict[str, int]:
    """N_l (weight elements) of each named layer, e.g. for bit-budget terms in a search.

    Raises:
        ValueError: a name the model lacks, or a layer that is not Linear/Conv1d/Embedding.
    """
    model = unwrap_module(model)
    modules = dict(model.named_modules())
    out = {}
    for name in names:
        if name not in modules:
            raise ValueError(f"the model has no module {name!r}")
        out[name] = math.prod(_weight_shape(name, modules[name]))
    return out


def _scales_and_bytes(module: nn.Module, shape, granularity: str, scale_bytes: int):
    if isinstance(module, PACKED_TYPES):
        return module.scale.numel(), module.scale.element_size()
    if isinstance(module, FAKE_QUANT_TYPES):
        granularity = module.spec.granularity
        scale_bytes = module.weight.element_size()
    return (shape[0] if granularity == "per_channel" else 1), scale_bytes


def account(
    model: nn.Module,
    allocation: Allocation,
    *,
    granularity: str = "per_channel",
    scale_bytes: int = 4,
) -> Accounting:
    """Count parameters and bits of ``model`` under ``allocation`` (rules in :data:`RULES`).

    Args:
        model: the fp32, prepared or converted model (or a SpeechModel; its ``.model``).
        allocation: layer -> bits; ``None`` entries count as 32-bit.
        granularity: scale granularity assumed for layers not yet fake-quantized (prepared
            and packed layers report their own).
        scale_bytes: bytes per scale for such layers (fp32: 4).

    Returns:
        An :class:`Accounting`.

    Raises:
        ValueError: the allocation names a module the model lacks, or one that is not a
            Linear/Conv1d/Embedding.
    """
    model = unwrap_module(model)
    allocation.check_model(model)
    modules = dict(model.named_modules())
    quantized = allocation.quantized
    qpaths = _quantized_paths(model, allocation)

    layers: dict[str, LayerAccount] = {}
    for name, bits in quantized.items():
        module = modules[name]
        shape = _weight_shape(name, module)
        n = math.prod(shape)
        n_scales, s_bytes = _scales_and_bytes(module, shape, granularity, scale_bytes)
        layers[name] = LayerAccount(bits, n, n_scales, math.ceil(bits * n / 8), s_bytes)

    n_total = n_rest = 0
    occurrences: dict[int, list[str]] = {}
    params: dict[int, torch.Tensor] = {}
    for pname, p in model.named_parameters(remove_duplicate=False):
        occurrences.setdefault(id(p), []).append(pname)
        params[id(p)] = p
    for pid, names in occurrences.items():
        kinds = {_classify(pname, qpaths) for pname in names}
        if kinds == {"scale"}:
            continue
        numel = params[pid].numel()
        n_total += numel
        if "rest" in kinds:
            n_rest += numel
    packed_seen: set[int] = set()
    for mod in modules.values():
        if isinstance(mod, PACKED_TYPES) and id(mod) not in packed_seen:
            packed_seen.add(id(mod))
            n_total += math.prod(mod.weight_shape)

    n_q = sum(la.n_weight for la in layers.values())
    bit_sum = sum(la.bits * la.n_weight for la in layers.values())
    overhead = sum(la.n_scales * la.scale_bytes for la in layers.values())
    packed = sum(la.packed_bytes for la in layers.values()) + overhead + 4 * n_rest
    fp32 = 4 * n_total
    return Accounting(
        n_total=Figure(n_total, "n_total"),
        n_quantized=Figure(n_q, "n_quantized"),
        n_rest=Figure(n_rest, "n_rest"),
        avg_bits=Figure(bit_sum / n_q if n_q else 32.0, "avg_bits"),
        cr_paper=Figure(32 * n_total / (bit_sum + 32 * n_rest), "cr_paper"),
        cr_quantized_layers=Figure(32 * n_q / bit_sum if n_q else 1.0, "cr_quantized_layers"),
        size_fp32_bytes=Figure(fp32, "size_fp32_bytes"),
        size_packed_bytes=Figure(packed, "size_packed_bytes"),
        scale_overhead_bytes=Figure(overhead, "scale_overhead_bytes"),
        cr_with_overhead=Figure(fp32 / packed, "cr_with_overhead"),
        layers=layers,
    )


def _quantized_paths(model: nn.Module, allocation: Allocation) -> set[str]:
    """Every module path of a quantized layer (a module at several paths: all of them)."""
    modules = dict(model.named_modules())
    quantized = allocation.quantized
    qids = {id(modules[n]) for n in quantized}
    qpaths = {p for p, m in model.named_modules(remove_duplicate=False) if id(m) in qids}
    # Before prepare_, a projection tied to a quantized embedding still holds the table as
    # its own weight: it is the embedding's tensor (prepare_ ties it), not a 32-bit copy.
    tables = {id(modules[n].weight) for n in quantized if isinstance(modules[n], nn.Embedding)}
    qpaths |= {p for p, m in model.named_modules(remove_duplicate=False)
               if isinstance(m, nn.Linear) and id(m.weight) in tables}
    return qpaths


def _kept_category(pname: str, owner: nn.Module) -> str:
    local = pname.rpartition(".")[2]
    if isinstance(owner, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.RMSNorm)):
        return "norms"
    if local == "bias":
        return "biases"
    if isinstance(owner, nn.Embedding) or "position" in pname:
        return "positional_embeddings" if "position" in pname else "embeddings"
    if isinstance(owner, nn.Conv1d) or ".parametrizations.weight." in pname:
        return "conv"
    if isinstance(owner, nn.Linear):
        return "linear"
    return "other"


def kept_fp32_parameters(model: nn.Module, allocation: Allocation) -> dict[str, dict[str, Any]]:
    """What stays 32-bit under ``allocation``, by category (:data:`KEPT_CATEGORIES`).

    Every parameter that is not the weight of a quantized layer (the N_rest of
    :func:`account`, tied tensors once) is put in one category by the module that owns it:
    ``norms`` (layer/group/batch/RMS norms), ``biases``, ``positional_embeddings``,
    ``embeddings`` (token embeddings left unquantized), ``conv`` and ``linear`` (weights of
    layers left out of the allocation), ``other``.

    Returns:
        category -> ``{"parameters": elements, "tensors": count, "examples": first 3
        names}``, categories with no parameter left out, in :data:`KEPT_CATEGORIES` order.
    """
    model = unwrap_module(model)
    allocation.check_model(model)
    qpaths = _quantized_paths(model, allocation)
    out: dict[str, dict[str, Any]] = {}
    seen: set[int] = set()
    for pname, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen or _classify(pname, qpaths) != "rest":
            continue
        seen.add(id(p))
        owner_name = pname.rpartition(".")[0]
        owner = model.get_submodule(owner_name) if owner_name else model
        entry = out.setdefault(_kept_category(pname, owner),
                               {"parameters": 0, "tensors": 0, "examples": []})
        entry["parameters"] += p.numel()
        entry["tensors"] += 1
        if len(entry["examples"]) < 3:
            entry["examples"].append(pname)
    return {k: out[k] for k in KEPT_CATEGORIES if k in out}


def _classify(pname: str, qpaths: set[str]) -> str:
    """``weight`` / ``scale`` of a quantized layer, or ``rest``."""
    parts = pname.split(".")
    for i in range(len(parts) - 1, 0, -1):
        owner = ".".join(parts[:i])
        if owner in qpaths:
            local = ".".join(parts[i:])
            if local == "weight" or local.startswith("parametrizations.weight."):
                return "weight"
            return "scale" if local == "scale" else "rest"
    return "rest"


__all__ = [
    "KEPT_CATEGORIES",
    "RULES",
    "Accounting",
    "Figure",
    "LayerAccount",
    "account",
    "kept_fp32_parameters",
    "layer_sizes",
]
