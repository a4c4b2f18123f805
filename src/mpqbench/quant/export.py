"""Packed export to safetensors, and the loader that rebuilds the packed model.

File layout (``format = "mpqbench.packed"``, ``format_version = "1"``):

Tensors (all little-endian, as safetensors stores them):

===================== ================ ======= ===========================================
key                   shape            dtype   content
===================== ================ ======= ===========================================
``<layer>.qweight``   [ceil(N*b/8)]    uint8   codes packed by ``packing.pack``: offset
                                               binary, row-major over the weight
                                               ``[out, in(, k)]``, LSB-first, zero padded
``<layer>.scale``     [out, 1(, 1)]    float32 per-channel scale (``[1, 1(, 1)]`` per
                                               tensor); weight = codes * scale
``<layer>.bias``      [out]            float32 the layer's fp32 bias, when it has one
every other key       as in the model  as is   the rest of ``model.state_dict()``
                                               (fp32 parameters, persistent buffers)
===================== ================ ======= ===========================================

Tensors that share storage (tied weights) are written once; the other names are listed
in the ``aliases`` metadata and re-tied from the kept copy on load.

Metadata (string -> string; JSON values): ``format``, ``format_version``, ``model`` (the
allocation's model name), ``allocation`` (the :class:`Allocation` JSON), ``layers``
(``{name: {"bits", "shape", "kind": "linear"|"conv1d", "granularity"}}``), ``aliases``
(``{alias: kept_name}``).

The loader reads tensors with safetensors only (no pickle) into a skeleton model of the
same architecture, swaps in :class:`PackedLinear`/:class:`PackedConv1d` and reproduces the
fake-quant model's outputs bit for bit.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from mpqbench._atomic import atomic_path
from mpqbench.quant._unwrap import unwrap_module
from mpqbench.quant.accounting import account
from mpqbench.quant.allocation import Allocation
from mpqbench.quant.layers import (
    FAKE_QUANT_TYPES,
    QuantConv1d,
    QuantEmbedding,
    QuantLinear,
    TiedQuantLinear,
    replace_modules_,
)
from mpqbench.quant.packed_layers import (
    PACKED_TYPES,
    PackedConv1d,
    PackedEmbedding,
    PackedLinear,
    PackedTiedLinear,
)

logger = logging.getLogger(__name__)

PACKED_FORMAT = "mpqbench.packed"
PACKED_FORMAT_VERSION = 1


@dataclass(frozen=True)
class ExportInfo:
    """What :func:`save_packed` wrote, measured from the file.

    Attributes:
        path: the file.
        file_bytes: its size on disk.
        header_bytes: 8-byte length prefix + JSON header (tensor index and metadata).
        packed_weight_bytes: all ``qweight`` tensors.
        scale_bytes: all ``scale`` tensors.
        rest_parameter_bytes: every other stored parameter (fp32, tied ones once).
        buffer_bytes: persistent buffers (not parameters, so not in the accounting).
        accounted_bytes: ``accounting.account(...).size_packed_bytes`` for the same model.
    """

    path: str
    file_bytes: int
    header_bytes: int
    packed_weight_bytes: int
    scale_bytes: int
    rest_parameter_bytes: int
    buffer_bytes: int
    accounted_bytes: int

    @property
    def relative_to_accounting(self) -> float:
        """``file_bytes / accounted_bytes - 1``."""
        return self.file_bytes / self.accounted_bytes - 1.0

    def to_dict(self) -> dict[str, Any]:
        d = dict(vars(self))
        d["relative_to_accounting"] = self.relative_to_accounting
        return d


def _packed_layers(model: nn.Module, allocation: Allocation) -> dict[str, nn.Module]:
    modules = dict(model.named_modules())
    quantized = allocation.quantized
    out: dict[str, nn.Module] = {}
    for name, bits in quantized.items():
        mod = modules[name]
        if isinstance(mod, QuantLinear):
            mod = PackedLinear.from_quant(mod, cache=False)
        elif isinstance(mod, QuantConv1d):
            mod = PackedConv1d.from_quant(mod, cache=False)
        elif isinstance(mod, QuantEmbedding):
            mod = PackedEmbedding.from_quant(mod, cache=False)
        elif not isinstance(mod, PACKED_TYPES):
            raise ValueError(
                f"layer {name!r} is a plain {type(mod).__name__}: prepare_ the model with this "
                "allocation (and train it) before exporting"
            )
        if mod.bits != bits:
            raise ValueError(f"layer {name!r} has {mod.bits} bits but the allocation says {bits}")
        out[name] = mod
    stray = [
        n for n, m in modules.items()
        if isinstance(m, FAKE_QUANT_TYPES + PACKED_TYPES) and n not in quantized
    ]
    if stray:
        raise ValueError(f"quantized layer(s) {stray} are not in the allocation")
    return out


def _kind(module: nn.Module) -> str:
    if isinstance(module, (PackedConv1d, nn.Conv1d)):
        return "conv1d"
    if isinstance(module, (PackedEmbedding, nn.Embedding)):
        return "embedding"
    return "linear"


def _tied_names(model: nn.Module, packed: dict[str, nn.Module]) -> dict[str, str]:
    """Tied projection name -> the quantized embedding it reads (``TiedQuantLinear`` or
    ``PackedTiedLinear``)."""
    owner_name = {id(model.get_submodule(n)): n for n in packed}
    return {
        name: owner_name[id(m.owner[0])]
        for name, m in model.named_modules()
        if isinstance(m, (TiedQuantLinear, PackedTiedLinear)) and id(m.owner[0]) in owner_name
    }


def _storage_key(t: torch.Tensor) -> tuple:
    return (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), t.shape, t.stride())


def save_packed(model: Any, allocation: Allocation, path: str | os.PathLike[str]) -> ExportInfo:
    """Write packed weights, scales, the fp32 rest and metadata to one safetensors file.

    Args:
        model: a prepared (fake-quant) or converted model, or a SpeechModel wrapping one; it
            is not modified.
        allocation: the allocation it was prepared with.
        path: the file; written atomically (a reader never sees half a file).

    Returns:
        :class:`ExportInfo` with the measured sizes and the accounting's figure.

    Raises:
        ValueError: a layer the allocation quantizes is not fake-quantized/packed, bits
            disagree, or the model has quantized layers the allocation lacks.
    """
    module = unwrap_module(model)
    allocation.check_model(module)
    packed = _packed_layers(module, allocation)
    paths: dict[int, list[str]] = {}
    for p, m in module.named_modules(remove_duplicate=False):
        paths.setdefault(id(m), []).append(p)
    skip = tuple(f"{p}." for name in packed for p in paths[id(module.get_submodule(name))])
    param_ids = {id(p) for p in module.parameters()}
    param_keys = set()
    state = module.state_dict(keep_vars=True)
    tensors: dict[str, torch.Tensor] = {}
    for key, t in state.items():
        if key.startswith(skip):
            continue
        tensors[key] = t
        if id(t) in param_ids:
            param_keys.add(key)
    layers_meta: dict[str, Any] = {}
    for name, pm in packed.items():
        for local, t in pm.state_dict(keep_vars=True).items():
            tensors[f"{name}.{local}"] = t
        if pm.bias is not None:
            param_keys.add(f"{name}.bias")
        layers_meta[name] = {
            "bits": pm.bits,
            "shape": list(pm.weight_shape),
            "kind": _kind(pm),
            "granularity": pm.granularity,
        }
    kept: dict[tuple, str] = {}
    aliases: dict[str, str] = {}
    out: dict[str, torch.Tensor] = {}
    for key, t in tensors.items():
        t = t.detach()
        sk = _storage_key(t)
        if sk in kept:
            aliases[key] = kept[sk]
            continue
        kept[sk] = key
        out[key] = t.cpu().contiguous()
    metadata = {
        "format": PACKED_FORMAT,
        "format_version": str(PACKED_FORMAT_VERSION),
        "model": allocation.model,
        "allocation": allocation.to_json(indent=None),
        "layers": json.dumps(layers_meta),
        "aliases": json.dumps(aliases),
        "tied": json.dumps(_tied_names(module, packed)),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(out, tmp, metadata=metadata)
    file_bytes = path.stat().st_size
    with open(path, "rb") as fh:
        (header_len,) = struct.unpack("<Q", fh.read(8))

    def nbytes(keys) -> int:
        return sum(out[k].numel() * out[k].element_size() for k in keys)

    qkeys = [k for k in out if k.endswith(".qweight") and k[: -len(".qweight")] in packed]
    skeys = [k for k in out if k.endswith(".scale") and k[: -len(".scale")] in packed]
    rest = [k for k in out if k in param_keys]
    buffers = [k for k in out if k not in param_keys and k not in qkeys and k not in skeys]
    info = ExportInfo(
        path=str(path),
        file_bytes=file_bytes,
        header_bytes=8 + header_len,
        packed_weight_bytes=nbytes(qkeys),
        scale_bytes=nbytes(skeys),
        rest_parameter_bytes=nbytes(rest),
        buffer_bytes=nbytes(buffers),
        accounted_bytes=int(account(module, allocation).size_packed_bytes.value),
    )
    logger.info("save_packed: %s, %d bytes (accounting %d)", path, file_bytes, info.accounted_bytes)
    return info


def _meta_json(meta: dict[str, str], field: str, path: Path) -> Any:
    if field not in meta:
        raise ValueError(f"{path}: metadata field {field!r} is missing")
    try:
        return json.loads(meta[field])
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: metadata field {field!r} is not valid JSON: {exc}") from None


def read_packed_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Validated metadata of a packed file: allocation, layers, aliases, model.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a safetensors file, wrong format/version, or a malformed field; the
            message names the file and the field.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such packed model file")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"{path}: not a readable safetensors file: {exc}") from None
    if meta.get("format") != PACKED_FORMAT:
        raise ValueError(
            f"{path}: metadata field 'format' is {meta.get('format')!r}, "
            f"expected {PACKED_FORMAT!r}"
        )
    if meta.get("format_version") != str(PACKED_FORMAT_VERSION):
        raise ValueError(
            f"{path}: metadata field 'format_version' is {meta.get('format_version')!r}; "
            f"this version reads {PACKED_FORMAT_VERSION}"
        )
    allocation = Allocation.from_dict(
        _meta_json(meta, "allocation", path), source=f"{path} (metadata 'allocation')"
    )
    layers = _meta_json(meta, "layers", path)
    aliases = _meta_json(meta, "aliases", path)
    tied = _meta_json(meta, "tied", path) if "tied" in meta else {}
    if not all(isinstance(v, dict) for v in (layers, aliases, tied)):
        raise ValueError(f"{path}: metadata fields 'layers', 'aliases' and 'tied' must be "
                         "objects")
    for linear, embedding in tied.items():
        if layers.get(embedding, {}).get("kind") != "embedding":
            raise ValueError(f"{path}: metadata 'tied' entry {linear!r} names {embedding!r}, "
                             "not a quantized embedding of the file")
    for name, info in layers.items():
        if not isinstance(info, dict) or {"bits", "shape", "kind"} - set(info):
            raise ValueError(f"{path}: metadata 'layers' entry {name!r} is malformed")
        if allocation.layers.get(name) != info["bits"]:
            raise ValueError(f"{path}: layer {name!r} bits disagree with the allocation")
    return {"model": meta.get("model"), "allocation": allocation, "layers": layers,
            "aliases": aliases, "tied": tied}


def load_packed(model_skeleton: Any, path: str | os.PathLike[str], *, cache: bool = True) -> Any:
    """Rebuild a packed model from :func:`save_packed`'s file, in place on a skeleton.

    Args:
        model_skeleton: a model of the same architecture (e.g. freshly loaded from the
            registry, 32-bit), or a SpeechModel wrapping one. Its quantized layers are
            replaced by packed layers and every other tensor is overwritten from the file;
            tensors land on the skeleton's device.
        path: the safetensors file.
        cache: passed to the packed layers (see ``packed_layers``).

    Returns:
        ``model_skeleton`` (the same object).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a malformed file, a layer the skeleton lacks or whose shape differs,
            or tensors that do not match the skeleton; the message names the file.
    """
    path = Path(path)
    meta = read_packed_metadata(path)
    module = unwrap_module(model_skeleton)
    allocation: Allocation = meta["allocation"]
    allocation.check_model(module, source=str(path))
    device = next(iter(module.parameters()), torch.empty(0)).device
    state: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt", device=str(device)) as fh:
        for key in fh.keys():  # noqa: SIM118 (safe_open is not a dict)
            state[key] = fh.get_tensor(key)
    replacements: dict[str, nn.Module] = {}
    for name, info in meta["layers"].items():
        old = module.get_submodule(name)
        expected = _kind(old)
        if (not isinstance(old, (nn.Linear, nn.Conv1d, nn.Embedding, *PACKED_TYPES))
                or info["kind"] != expected):
            raise ValueError(
                f"{path}: layer {name!r} is a {info['kind']} in the file but a "
                f"{type(old).__name__} in the model"
            )
        shape = tuple(info["shape"])
        have = tuple(old.weight_shape if isinstance(old, PACKED_TYPES) else old.weight.shape)
        if have != shape:
            raise ValueError(f"{path}: layer {name!r} has shape {shape} but the model {have}")
        for field in ("qweight", "scale"):
            if f"{name}.{field}" not in state:
                raise ValueError(f"{path}: tensor {name}.{field!s} is missing")
        args = (state[f"{name}.qweight"], state[f"{name}.scale"], info["bits"], shape)
        try:
            if info["kind"] == "embedding":
                replacements[name] = PackedEmbedding(*args, padding_idx=old.padding_idx,
                                                     cache=False)
            elif info["kind"] == "conv1d":
                replacements[name] = PackedConv1d(*args, state.get(f"{name}.bias"),
                                                  geometry=old, cache=False)
            else:
                replacements[name] = PackedLinear(*args, state.get(f"{name}.bias"), cache=False)
        except ValueError as exc:
            raise ValueError(f"{path}: layer {name!r}: {exc}") from None
    tied: dict[str, nn.Module] = {}
    for linear, embedding in meta["tied"].items():
        old = module.get_submodule(linear) if _has_module(module, linear) else None
        table = module.get_submodule(embedding).weight
        if not isinstance(old, nn.Linear) or old.weight is not table:
            raise ValueError(f"{path}: {linear!r} is tied to {embedding!r} in the file but is "
                             "not a linear sharing that table in the model")
        tied[linear] = PackedTiedLinear(replacements[embedding], old.bias)
    replace_modules_(module, {**replacements, **tied})
    for alias, kept in meta["aliases"].items():
        if kept not in state:
            raise ValueError(f"{path}: alias {alias!r} points to missing tensor {kept!r}")
        state[alias] = state[kept]
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: tensors do not match the model: {exc}") from None
    for pm in replacements.values():
        pm.cache = cache
        pm._refresh_cache()
    logger.info("load_packed: %s, %d packed layers", path, len(replacements))
    return model_skeleton


def _has_module(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


__all__ = [
    "PACKED_FORMAT",
    "PACKED_FORMAT_VERSION",
    "ExportInfo",
    "load_packed",
    "read_packed_metadata",
    "save_packed",
]
