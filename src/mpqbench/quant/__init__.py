"""Quantization primitives, quantized layers, allocation, accounting, export, QAT loop.

Public API (implementation modules: ``formats``, ``primitives``, ``packing``,
``allocation``, ``layers``, ``packed_layers``, ``accounting``, ``export``):

- formats: :class:`Quantizer` (how), :class:`QuantSpec` (how + bits, one layer), :func:`check_bits`
- primitives (pure tensor functions): :func:`qrange`, :func:`absmax`, :func:`choose_scale`,
  :func:`quantize`, :func:`dequantize`, :func:`fake_quantize`, :func:`fake_quantize_lsq`,
  :func:`lsq_grad_factor`
- packing: :func:`pack`, :func:`unpack`, :func:`packed_nbytes`, :class:`BitPacker`,
  :data:`PACKERS`
- allocation: :class:`Allocation`, :class:`LayerRule`, :func:`build_allocation`,
  :func:`allocation_for`
- allocator (exact bits under an average-bits target): :func:`allocate_bits`,
  :class:`BitAllocation`
- layers: :class:`QuantLinear`, :class:`QuantConv1d`, :func:`prepare_`,
  :class:`PackedLinear`, :class:`PackedConv1d`, :func:`convert_`
- accounting: :func:`account`, :func:`layer_sizes`, :class:`Accounting`, :class:`Figure`,
  :data:`RULES`
- export: :func:`save_packed`, :func:`load_packed`, :func:`read_packed_metadata`,
  :class:`ExportInfo`
- supernet (weight-sharing mixed-precision search layers): :class:`SupernetLinear`,
  :class:`SupernetConv1d`, :func:`prepare_supernet_`, :func:`extract_`,
  :func:`supernet_modules`, :func:`sample_mixing_`, :func:`set_tau_`, :func:`anneal_tau`,
  :class:`ExpectedBits`, :func:`mix_candidates` (the path the layers take: block-wise
  for max scales, :mod:`~mpqbench.quant.supernet_mix`), :func:`mixed_fake_quantize`
"""

from __future__ import annotations

from mpqbench.quant.accounting import RULES, Accounting, Figure, LayerAccount, account, layer_sizes
from mpqbench.quant.allocation import (
    DEFAULT_GROUPS,
    Allocation,
    LayerRule,
    allocation_for,
    build_allocation,
)
from mpqbench.quant.allocator import BitAllocation, allocate_bits
from mpqbench.quant.export import ExportInfo, load_packed, read_packed_metadata, save_packed
from mpqbench.quant.formats import GRANULARITIES, SCALE_METHODS, Quantizer, QuantSpec, check_bits
from mpqbench.quant.layers import (
    QuantConv1d,
    QuantLinear,
    fake_quant_modules,
    prepare_,
)
from mpqbench.quant.packed_layers import PackedConv1d, PackedLinear, convert_, packed_modules
from mpqbench.quant.packing import PACKERS, BitPacker, pack, packed_nbytes, unpack
from mpqbench.quant.primitives import (
    absmax,
    choose_scale,
    dequantize,
    fake_quantize,
    fake_quantize_lsq,
    lsq_grad_factor,
    qrange,
    quantize,
)
from mpqbench.quant.supernet import (
    ExpectedBits,
    SupernetConv1d,
    SupernetLinear,
    anneal_tau,
    extract_,
    mix_candidates,
    mixed_fake_quantize,
    prepare_supernet_,
    sample_mixing_,
    set_tau_,
    supernet_modules,
)

__all__ = [
    "DEFAULT_GROUPS",
    "GRANULARITIES",
    "PACKERS",
    "RULES",
    "SCALE_METHODS",
    "Accounting",
    "Allocation",
    "BitAllocation",
    "BitPacker",
    "ExpectedBits",
    "ExportInfo",
    "Figure",
    "LayerAccount",
    "LayerRule",
    "PackedConv1d",
    "PackedLinear",
    "QuantConv1d",
    "QuantLinear",
    "QuantSpec",
    "Quantizer",
    "SupernetConv1d",
    "SupernetLinear",
    "absmax",
    "account",
    "allocate_bits",
    "allocation_for",
    "anneal_tau",
    "build_allocation",
    "check_bits",
    "choose_scale",
    "convert_",
    "dequantize",
    "extract_",
    "fake_quant_modules",
    "fake_quantize",
    "fake_quantize_lsq",
    "layer_sizes",
    "load_packed",
    "lsq_grad_factor",
    "mix_candidates",
    "mixed_fake_quantize",
    "pack",
    "packed_modules",
    "packed_nbytes",
    "prepare_",
    "prepare_supernet_",
    "qrange",
    "quantize",
    "read_packed_metadata",
    "sample_mixing_",
    "save_packed",
    "set_tau_",
    "supernet_modules",
    "unpack",
]
