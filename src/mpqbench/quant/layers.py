"""Fake-quantized layers and ``prepare_``, which swaps them into a model in place.

:class:`QuantLinear` / :class:`QuantConv1d` are drop-in subclasses of ``nn.Linear`` /
``nn.Conv1d`` holding the *same* latent fp32 weight ``Parameter`` as the layer they replace
(optimizers and weight sharing survive; device and dtype are unchanged), the layer's
:class:`QuantSpec`, and -- with ``learnable_scale`` -- a ``scale`` Parameter (keep-dim,
``[out, 1]`` / ``[out, 1, 1]`` per channel, all ones-shaped per tensor). Every forward
fake-quantizes the weight (STE); the bias stays fp32. Without a learnable scale the scale
is recomputed from the current weight on each forward (``mse`` costs one pass per grid
point, ``max`` one reduction).

Speed: every QAT forward fake-quantizes every layer. With the ``max`` scale the codes are
in range by construction, so the quantizer skips the clamp and the STE mask (scale: abs,
amax, divide, guard; quantizer: reciprocal, multiply, round, multiply; backward: pass
through). torch's ``fake_quantize_per_channel_affine`` (a device synchronisation per call)
and ``torch.compile`` of scale + quantizer were slower and are not used (measured:
docs/FINDINGS.md, "Fake-quantization speed").

Exactness: ``convert_`` packs what the forward computes -- :meth:`fake_quant_with_scale`
returns the fake-quantized weight together with the very scale tensor it used, the codes
are ``round(weight_q / scale)`` (exact: weight_q = codes * scale with |codes| <= 127), and
``codes * scale == weight_q`` is checked bit for bit -- so the packed model reproduces the
fake-quant outputs whichever kernels (CPU, CUDA) produced them, when both run in the same
autograd mode (inference): with autograd recording, torch may take another matmul path for
a weight that requires grad, which rounds differently.

Parametrized weights: a layer whose ``weight`` is produced by a parametrization (wav2vec2's
positional convolution uses ``torch.nn.utils.parametrizations.weight_norm``) keeps that
parametrization -- the same ``original0``/``original1`` (g, v) Parameter objects -- and the
quantizer acts on the *effective* weight ``g * v / ||v||``. ``convert_`` stores that
effective weight packed; g and v are not kept.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear
from torch.nn.utils import parametrize

from mpqbench.quant._unwrap import unwrap_module
from mpqbench.quant.allocation import Allocation
from mpqbench.quant.formats import Quantizer, QuantSpec
from mpqbench.quant.primitives import (
    choose_scale,
    dequantize,
    fake_quantize,
    fake_quantize_lsq,
    lsq_grad_factor,
)
from mpqbench.workloads.models.tied_linear import TiedLinearBase, set_submodule

logger = logging.getLogger(__name__)


class _FakeQuantMixin:
    """Shared state and arithmetic of the fake-quantized layers."""

    spec: QuantSpec
    weight: torch.Tensor
    scale: nn.Parameter | None

    def _init_quant(self, spec: QuantSpec) -> None:
        self.spec = spec
        if spec.learnable_scale:
            with torch.no_grad():
                w = self.weight.detach()
                init = choose_scale(w, spec.bits, spec.granularity, spec.scale_method)
            self.scale = nn.Parameter(init)
        else:
            self.register_parameter("scale", None)  # type: ignore[attr-defined]

    @property
    def bits(self) -> int:
        """The layer's bit-width."""
        return self.spec.bits

    def fake_quant_with_scale(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(fake-quantized weight, the scale it used)``; the weight is differentiable.

        The single place a fake-quant layer's quantized weight is computed: ``forward`` and
        ``convert_`` both call it.
        """
        spec, w = self.spec, self.weight
        if self.scale is not None:
            scale = self.scale.clamp_min(torch.finfo(self.scale.dtype).tiny)
            return fake_quantize_lsq(w, scale, spec.bits), scale.detach()
        scale = choose_scale(w.detach(), spec.bits, spec.granularity, spec.scale_method)
        in_range = spec.scale_method == "max"
        return fake_quantize(w, scale, spec.bits, in_range=in_range), scale

    def quantized_weight(self) -> torch.Tensor:
        """The fake-quantized weight used by forward (differentiable via STE / LSQ).

        Inside :func:`frozen_quantized_weights` and with autograd off, the weight computed
        on entry (the same values, not recomputed per forward)."""
        frozen = getattr(self, "_frozen_weight", None)
        if frozen is not None and not torch.is_grad_enabled():
            return frozen
        return self.fake_quant_with_scale()[0]

    def current_scale(self) -> torch.Tensor:
        """The scale the next forward uses (detached, keep-dim)."""
        with torch.no_grad():
            return self.fake_quant_with_scale()[1].detach()

    def codes_and_scale(self) -> tuple[torch.Tensor, torch.Tensor]:
        """int8 codes and scale with ``codes * scale`` bitwise equal to the forward's weight.

        Raises:
            RuntimeError: the invariant does not hold (a bug, not a user error).
        """
        with torch.no_grad():
            wq, scale = self.fake_quant_with_scale()
            wq, scale = wq.detach(), scale.detach()
            codes = torch.round(wq / scale).to(torch.int8)
            if not torch.equal(dequantize(codes, scale), wq):
                raise RuntimeError("codes * scale differs from the fake-quantized weight")
        return codes, scale

    def codes(self) -> torch.Tensor:
        """int8 codes of the current weight (what ``convert_`` packs)."""
        return self.codes_and_scale()[0]

    def extra_repr(self) -> str:
        base = super().extra_repr()  # type: ignore[misc]
        spec = self.spec
        scale = "learnable" if spec.learnable_scale else spec.scale_method
        return f"{base}, bits={spec.bits}, {spec.granularity}, scale={scale}"


def _adopt(new: nn.Module, old: nn.Module) -> None:
    """Give ``new`` (built on the meta device) the Parameters of ``old``: same objects."""
    if parametrize.is_parametrized(old):
        other = [n for n in old.parametrizations if n != "weight"]
        if other:
            raise ValueError(f"only the weight may be parametrized, found {other}")
        for p in old.parametrizations["weight"]:
            parametrize.register_parametrization(new, "weight", p, unsafe=True)
        new.parametrizations = old.parametrizations
    else:
        new.weight = old.weight
    if hasattr(old, "bias"):
        new.bias = old.bias
    new.train(old.training)


@contextlib.contextmanager
def frozen_quantized_weights(
    module: nn.Module, dtype: torch.dtype | None = None
) -> Iterator[None]:
    """Fake-quantize every fake-quant layer's weight of ``module`` once, for inference.

    Greedy decoding runs the decoder once per emitted token, and each run would quantize
    every decoder weight again; inside this context a forward with autograd off uses the
    weight quantized on entry instead. The values are those every forward would compute
    (the weights do not change while nothing trains), so outputs are unchanged; a forward
    with autograd on ignores the frozen copy. Nested use is not supported. A module that
    assembles its table from such layers (``freeze_table()``/``unfreeze_table()``, e.g. a
    row-grouped token embedding) caches the assembled table too, after they froze.

    Args:
        module: the model (or any module holding fake-quant layers).
        dtype: store the frozen weights in this dtype (default: the weight's own). Give
            the autocast dtype when every forward inside runs under that autocast: autocast
            would round the fp32 weight to it at every call, so storing the rounded copy
            once gives the same matmul inputs without the per-call cast. A forward outside
            that autocast then fails on the dtype mismatch.
    """
    layers = [m for m in module.modules() if isinstance(m, _FakeQuantMixin)]
    # modules that assemble a table from frozen parts (a row-grouped embedding) cache it
    # after the parts froze: ``freeze_table()`` / ``unfreeze_table()``
    tables = [m for m in module.modules()
              if callable(getattr(m, "freeze_table", None))
              and callable(getattr(m, "unfreeze_table", None))]
    try:
        with torch.no_grad():
            for m in layers:
                weight = m.fake_quant_with_scale()[0].detach()
                m._frozen_weight = weight if dtype is None else weight.to(dtype)
            for m in tables:
                m.freeze_table()
        yield
    finally:
        for m in tables:
            m.unfreeze_table()
        for m in layers:
            m._frozen_weight = None


class QuantLinear(_FakeQuantMixin, nn.Linear):
    """``nn.Linear`` whose forward uses the fake-quantized weight.

    Build with :meth:`from_float`; do not call the constructor directly.
    """

    @classmethod
    def from_float(cls, linear: nn.Linear, spec: QuantSpec) -> QuantLinear:
        """Wrap ``linear``'s Parameters (shared, not copied) with quantizer ``spec``."""
        new = cls(linear.in_features, linear.out_features, linear.bias is not None, device="meta")
        _adopt(new, linear)
        new._init_quant(spec)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.quantized_weight(), self.bias)


class QuantConv1d(_FakeQuantMixin, nn.Conv1d):
    """``nn.Conv1d`` whose forward uses the fake-quantized (effective) weight.

    Build with :meth:`from_float`; do not call the constructor directly.
    """

    @classmethod
    def from_float(cls, conv: nn.Conv1d, spec: QuantSpec) -> QuantConv1d:
        """Wrap ``conv``'s Parameters (and weight parametrization) with quantizer ``spec``."""
        new = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
            device="meta",
        )
        _adopt(new, conv)
        new._init_quant(spec)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.quantized_weight(), self.bias)


class QuantEmbedding(_FakeQuantMixin, nn.Embedding):
    """``nn.Embedding`` whose lookup reads rows of the fake-quantized table.

    The table is ``[num_embeddings, dim]``; ``per_channel`` means one scale per row (per
    token), the same layout as a linear layer's output channels, so a table tied to an
    output projection (:class:`TiedQuantLinear`) has one set of codes and scales. With
    per-row scales a row's fake-quantized values depend on that row alone, so the lookup
    quantizes only the rows it gathers (the same arithmetic on the same values: equal, bit
    for bit, to gathering from the fake-quantized table; tested); ``per_tensor`` quantizes
    the whole table. ``max_norm`` (an in-place renorm of the table) and sparse gradients
    are refused.

    Build with :meth:`from_float`; do not call the constructor directly.
    """

    @classmethod
    def from_float(cls, embedding: nn.Embedding, spec: QuantSpec) -> QuantEmbedding:
        """Wrap ``embedding``'s table Parameter (shared, not copied) with quantizer ``spec``.

        Raises:
            ValueError: the embedding uses ``max_norm`` or sparse gradients.
        """
        if embedding.max_norm is not None or embedding.sparse:
            raise ValueError("only embeddings without max_norm and without sparse gradients "
                             "are quantized")
        new = cls(embedding.num_embeddings, embedding.embedding_dim,
                  padding_idx=embedding.padding_idx,
                  scale_grad_by_freq=embedding.scale_grad_by_freq, device="meta")
        _adopt(new, embedding)
        new._init_quant(spec)
        return new

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        if spec.granularity != "per_channel":
            table = self.quantized_weight()
            if table.dtype != self.weight.dtype:  # a frozen copy in an autocast dtype
                table = self.fake_quant_with_scale()[0]
            return self._lookup(ids, table)
        rows = self._lookup(ids, self.weight).reshape(-1, self.embedding_dim)
        if self.scale is not None:
            scale = self.scale.clamp_min(torch.finfo(self.scale.dtype).tiny)
            scale = scale.reshape(-1)[ids.reshape(-1)].unsqueeze(-1)
            # n weights per scale entry is the row length either way: the same LSQ factor
            out = fake_quantize_lsq(rows, scale, spec.bits,
                                    grad_factor=lsq_grad_factor(self.weight, self.scale,
                                                                spec.bits))
        else:
            scale = choose_scale(rows.detach(), spec.bits, "per_channel", spec.scale_method)
            out = fake_quantize(rows, scale, spec.bits, in_range=spec.scale_method == "max")
        return out.reshape(*ids.shape, self.embedding_dim)

    def _lookup(self, ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, table, self.padding_idx, None, 2.0, self.scale_grad_by_freq)


class _TiedToFakeQuantTable(TiedLinearBase):
    """A tied projection whose owner computes the table (``owner.quantized_weight()``) and
    holds the latent Parameter (``owner.weight``); see its subclasses."""

    @classmethod
    def from_float(cls, linear: nn.Module, owner: nn.Module) -> Any:
        """Tie ``linear`` (whose weight is ``owner``'s table Parameter) to ``owner``.

        Raises:
            ValueError: the linear's weight is not the embedding's table.
        """
        if linear.weight is not owner.weight:
            raise ValueError(f"{cls.__name__}: the linear's weight is not the embedding's "
                             "table")
        return cls(owner, linear.bias)

    def table(self) -> torch.Tensor:
        return self.owner[0].quantized_weight()

    @property
    def weight(self) -> torch.Tensor:
        """The shared latent table (the Parameter the embedding owns)."""
        return self.owner[0].weight


class TiedQuantLinear(_TiedToFakeQuantTable):
    """The projection tied to a :class:`QuantEmbedding`: multiplies by its fake-quantized
    table. It has no quantizer of its own and registers no weight, so the tied tensor stays
    one Parameter with one set of codes and scales, counted once, as the embedding's.
    Build with :meth:`from_float` (``linear``, its ``QuantEmbedding`` owner)."""


FAKE_QUANT_TYPES: tuple[type[nn.Module], ...] = (QuantLinear, QuantConv1d, QuantEmbedding)


def _module_paths(model: nn.Module) -> dict[int, list[str]]:
    paths: dict[int, list[str]] = {}
    for name, mod in model.named_modules(remove_duplicate=False):
        paths.setdefault(id(mod), []).append(name)
    return paths


def replace_modules_(model: nn.Module, replacements: dict[str, nn.Module]) -> None:
    """Put ``replacements[name]`` at ``name`` and at every other path of the same module."""
    paths = _module_paths(model)
    for name, new in replacements.items():
        old = model.get_submodule(name)
        for path in paths[id(old)]:
            if path == "":
                raise ValueError("cannot replace the root module itself")
            set_submodule(model, path, new)


def _quantizable(name: str, module: nn.Module) -> type[nn.Module]:
    if isinstance(module, FAKE_QUANT_TYPES):
        raise ValueError(f"module {name!r} is already fake-quantized (prepare_ called twice?)")
    if type(module) is NonDynamicallyQuantizableLinear:
        raise ValueError(
            f"module {name!r} is an nn.MultiheadAttention out_proj, whose weight the attention "
            "reads directly; it cannot be swapped"
        )
    if isinstance(module, nn.Linear):
        return QuantLinear
    if isinstance(module, nn.Conv1d):
        return QuantConv1d
    if isinstance(module, nn.Embedding):
        return QuantEmbedding
    raise ValueError(
        f"module {name!r} is a {type(module).__name__}; only nn.Linear, nn.Conv1d and "
        "nn.Embedding are quantized"
    )


def prepare_(model: Any, allocation: Allocation, quantizer: Quantizer | None = None) -> Any:
    """Swap every layer the allocation quantizes for its fake-quantized twin, in place.

    Args:
        model: an ``nn.Module``, or a SpeechModel (its ``.model`` is modified).
        allocation: layer name -> bits; ``None`` entries are left untouched.
        quantizer: granularity, scale method and learnable-scale setting shared by all
            layers (each layer's bits come from the allocation). Default ``Quantizer()``
            (per channel, max scale, fixed).

    Returns:
        ``model`` (modified in place; the same object that was passed). The latent weight
        Parameters are the same objects as before, so an optimizer built earlier still
        updates them.

    Raises:
        ValueError: the allocation names a module the model lacks, a module that is not an
            ``nn.Linear``/``nn.Conv1d``, one that is already fake-quantized, or a
            ``quantizer`` that is not a :class:`Quantizer`.
    """
    quantizer = quantizer or Quantizer()
    if not isinstance(quantizer, Quantizer):
        raise ValueError(f"prepare_ takes a Quantizer (no bits: the allocation gives each "
                         f"layer's), got {type(quantizer).__name__}")
    module = unwrap_module(model)
    name_of = getattr(model, "name", None)
    if isinstance(name_of, str) and name_of != allocation.model:
        logger.warning("allocation made for %r applied to %r", allocation.model, name_of)
    allocation.check_model(module)
    twins = fake_quant_twins(
        module, {name: quantizer.at(bits) for name, bits in allocation.quantized.items()})
    replace_modules_(module, twins)
    tied = sum(isinstance(m, TiedQuantLinear) for m in twins.values())
    logger.info("prepare_: %d layers fake-quantized%s", len(twins) - tied,
                f" ({tied} tied to an embedding)" if tied else "")
    return model


def fake_quant_twins(module: nn.Module, specs: Mapping[str, QuantSpec]) -> dict[str, nn.Module]:
    """Path -> fake-quantized twin of each named layer at its spec, plus a
    :class:`TiedQuantLinear` for every linear whose weight is a named embedding's table
    (so the tied tensor stays one, as after :func:`prepare_`). Nothing is swapped: pass the
    result to :func:`replace_modules_` (and the modules now at those paths back, to undo).

    Raises:
        ValueError: a named module that cannot be quantized (see :func:`prepare_`), or a
            named linear tied to a named embedding (the embedding decides its bits).
    """
    replacements: dict[str, nn.Module] = {}
    for name, spec in specs.items():
        layer = module.get_submodule(name)
        cls = _quantizable(name, layer)
        replacements[name] = cls.from_float(layer, spec)
    return {**replacements, **_tied_linears(module, set(specs), replacements)}


def _tied_linears(module: nn.Module, named: set[str],
                  replacements: dict[str, nn.Module]) -> dict[str, TiedQuantLinear]:
    """Linear layers whose weight is a quantized embedding's table, tied to it.

    Raises:
        ValueError: such a linear is itself among the ``named`` layers (one tensor, one
            bit-width: the embedding decides it).
    """
    owners = {id(new.weight): new for new in replacements.values()
              if isinstance(new, QuantEmbedding)}
    tied: dict[str, TiedQuantLinear] = {}
    for name, sub, owner in linears_tied_to(module, owners):
        if name in named:
            raise ValueError(
                f"allocation: {name!r} shares its weight with a quantized embedding; "
                "quantize the embedding only (the tied layer follows it)")
        tied[name] = TiedQuantLinear.from_float(sub, owner)
    return tied


def linears_tied_to(module: nn.Module, owners: Mapping[int, Any]
                    ) -> list[tuple[str, nn.Linear, Any]]:
    """``(name, linear, owner)`` for every linear of ``module`` whose weight Parameter's
    ``id`` is a key of ``owners`` (e.g. Whisper's ``proj_out``, which is the token
    embedding's table), in module order."""
    if not owners:
        return []
    return [(name, sub, owners[id(sub.weight)]) for name, sub in module.named_modules()
            if isinstance(sub, nn.Linear) and id(sub.weight) in owners]


def fake_quant_modules(model: Any) -> dict[str, _FakeQuantMixin]:
    """Name -> fake-quantized module, in model order (shared modules listed once)."""
    items = unwrap_module(model).named_modules()
    return {n: m for n, m in items if isinstance(m, FAKE_QUANT_TYPES)}


__all__ = [
    "FAKE_QUANT_TYPES",
    "QuantConv1d",
    "QuantEmbedding",
    "QuantLinear",
    "TiedLinearBase",
    "TiedQuantLinear",
    "fake_quant_modules",
    "fake_quant_twins",
    "frozen_quantized_weights",
    "linears_tied_to",
    "prepare_",
    "replace_modules_",
]
