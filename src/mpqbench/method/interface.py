"""The one interface every compression method implements, and the method registry.

A method is a function ``(workload, target, budget, config) -> MethodResult`` registered
once with :func:`register_method` next to its kw-only config dataclass. Methods never read
files or parse CLI arguments; the harness never looks inside a method (DESIGN.md section 2).
Adding a method is one new file plus one line in :data:`METHOD_MODULES`.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from mpqbench.precision import check_precision
from mpqbench.quant.allocation import Allocation
from mpqbench.workloads.adapter import SpeechModel
from mpqbench.workloads.data.types import Utterance

#: Modules that define methods; importing one registers its methods.
METHOD_MODULES = (
    "mpqbench.baselines.fp32",
    "mpqbench.baselines.uniform",
    "mpqbench.search.one_stage",
    "mpqbench.baselines.two_stage",
    "mpqbench.search.optuna_search",
)


@dataclass(frozen=True, kw_only=True)
class Budget:
    """The budget every method gets, identical across methods in a comparison.

    Attributes:
        train_steps: parameter-estimation (QAT) optimizer steps every method spends.
        batch_size: utterances per step.
        search_budget: precision-learning spend on top of train_steps: supernet/DNAS steps for
            two-stage stage 1, trials for Optuna, calibration batches for sensitivity methods.
        dev_subset: number of dev utterances used by cheap proxies (search scoring).
        seed: seeds data order, initialisation of architecture logits, samplers.
        precision: compute precision of every training forward, the teacher cache and the
            precision-learning passes (:mod:`mpqbench.precision`): ``fp32``, ``bf16``, or
            ``fp16`` on CUDA.
        trim_window: train on batches padded only to their longest clip plus a margin
            (:meth:`~mpqbench.workloads.adapter.SpeechModel.make_batch` ``trim``) instead of
            the model's fixed window; teacher outputs, search proxies and evaluation keep
            the window. Only fixed-window models (Whisper) are affected.
    """

    train_steps: int = field(metadata={"help": "QAT optimizer steps (same for every method)"})
    batch_size: int = field(default=8, metadata={"help": "utterances per step"})
    search_budget: int = field(default=0, metadata={"help": "precision-learning steps/trials"})
    dev_subset: int = field(default=32, metadata={"help": "dev utterances for search proxies"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    precision: str = field(default="fp32", metadata={
        "help": "training compute precision: fp32, bf16 (autocast), fp16 (CUDA only)"})
    trim_window: bool = field(default=False, metadata={
        "help": "train on batches trimmed to their longest clip (fixed-window models)"})

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if not isinstance(self.trim_window, bool):
            raise ValueError(f"budget.trim_window must be true or false, got {self.trim_window!r}")
        for name in ("train_steps", "search_budget"):
            if getattr(self, name) < 0:
                raise ValueError(f"budget.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("batch_size", "dev_subset"):
            if getattr(self, name) < 1:
                raise ValueError(f"budget.{name} must be >= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict; ``precision`` and ``trim_window`` only when they are not at
        their defaults (which every record made before the fields existed used, so their
        hashes hold)."""
        out = dataclasses.asdict(self)
        if out["precision"] == "fp32":
            del out["precision"]
        if not out["trim_window"]:
            del out["trim_window"]
        return out


@dataclass(frozen=True, kw_only=True)
class Target:
    """A compression target: average bits over the quantized layers, or a compression ratio.

    Exactly one of ``avg_bits`` / ``compression_ratio`` is set. A compression-ratio target is
    turned into average bits with the paper's rule (DESIGN.md section 4) by
    :meth:`avg_bits_for`.
    """

    avg_bits: float | None = None
    compression_ratio: float | None = None

    def __post_init__(self) -> None:
        if (self.avg_bits is None) == (self.compression_ratio is None):
            raise ValueError("target: give exactly one of avg_bits or compression_ratio")
        if self.avg_bits is not None and not (1.0 <= self.avg_bits <= 32.0):
            raise ValueError(f"target.avg_bits must be in [1, 32], got {self.avg_bits}")
        if self.compression_ratio is not None and not (self.compression_ratio >= 1.0):
            raise ValueError(
                f"target.compression_ratio must be >= 1, got {self.compression_ratio}"
            )

    def avg_bits_for(self, n_total: int, n_quantized: int) -> float:
        """Average bits over the quantized layers that meets this target.

        Args:
            n_total: every parameter of the model (tied weights once).
            n_quantized: parameters of the quantized layers' weights.
        Raises:
            ValueError: the compression ratio cannot be reached even at 1 bit.
        """
        if self.avg_bits is not None:
            return float(self.avg_bits)
        assert self.compression_ratio is not None
        n_rest = n_total - n_quantized
        bits = (32.0 * n_total / self.compression_ratio - 32.0 * n_rest) / n_quantized
        if bits < 1.0 or math.isnan(bits):
            raise ValueError(
                f"target compression ratio {self.compression_ratio} is out of reach: it needs "
                f"{bits:.2f} average bits over the quantized layers (minimum 1)"
            )
        return min(bits, 32.0)

    def label(self) -> str:
        if self.avg_bits is not None:
            return f"{self.avg_bits:g}bit"
        return f"cr{self.compression_ratio:g}"

    def to_dict(self) -> dict[str, float | None]:
        return dataclasses.asdict(self)


class TeacherSource(Protocol):
    """Cached 32-bit output distributions, keyed by utterance id (see quant.teacher)."""

    def kl(self, batch: Any, logits: Any, mask: Any) -> Any: ...


@dataclass
class Workload:
    """What a method works on: a fresh 32-bit model, its data, and the teacher.

    Attributes:
        name: model name (registry name or path).
        model: a fresh 32-bit model; the method may modify it in place.
        train: training utterances (indexable).
        dev: dev utterances for proxies, already cut to ``budget.dev_subset``.
        eligible: module names that may be quantized (the layer selection); everything else
            stays 32-bit.
        teacher: cached 32-bit outputs on ``train`` for the KL term.
        device: where training runs.
        checkpoint_dir: where the shared QAT loop checkpoints each training stage (one
            subdirectory per stage) and resumes from; None (the default) disables it.
        progress: show progress bars for the method's long stages (training loops,
            sensitivity passes, search trials).
    """

    name: str
    model: SpeechModel
    train: Sequence[Utterance]
    dev: Sequence[Utterance]
    eligible: list[str]
    teacher: TeacherSource
    device: str = "cpu"
    checkpoint_dir: Path | None = None
    progress: bool = True


#: What a stage spends. ``qat``: parameter estimation -- optimizer steps on the model's
#: weights, which must add up to ``Budget.train_steps`` over a method's stages (the one-stage
#: supernet stage trains weights and logits jointly and counts here). ``search``: precision
#: learning that does not estimate the final weights (frozen-weight DNAS, sensitivity
#: passes, Optuna trials), reported beside the budget, not in it.
STAGE_KINDS = ("qat", "search")


@dataclass
class StageTiming:
    """One stage of compression: wall clock (device-synchronised), what it spent.

    Attributes:
        name: the stage's label (free text, e.g. ``"supernet"``, ``"pass2"``).
        seconds: wall clock.
        device: the device label (``mpqbench.timing.device_label``).
        steps: optimizer steps (or search steps for ``kind="search"``).
        trials: search trials.
        evaluations: proxy evaluations.
        kind: one of :data:`STAGE_KINDS`; ``qat`` steps count against ``train_steps``.
    """

    name: str
    seconds: float
    device: str
    steps: int = 0
    trials: int = 0
    evaluations: int = 0
    kind: str = "qat"

    def __post_init__(self) -> None:
        if self.kind not in STAGE_KINDS:
            raise ValueError(f"stage kind must be one of {STAGE_KINDS}, got {self.kind!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class MethodResult:
    """What every method returns.

    Attributes:
        model: the compressed model (fake-quantized, trained), ready to evaluate.
        allocation: the per-layer bits.
        stages: per-stage timings; compression time is their sum.
        info: method-specific, JSON-serialisable extras (learned logits, sensitivities, ...).
    """

    model: SpeechModel
    allocation: Allocation
    stages: list[StageTiming]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def compression_seconds(self) -> float:
        return sum(s.seconds for s in self.stages)

    @property
    def qat_steps(self) -> int:
        """Parameter-estimation steps: the steps of every ``kind="qat"`` stage."""
        return sum(s.steps for s in self.stages if s.kind == "qat")


C = TypeVar("C")


@dataclass(frozen=True)
class MethodEntry(Generic[C]):
    """A registered method: its name, config dataclass and entry point.

    ``reference`` marks the uncompressed reference system (``fp32``): it takes no target
    (``None``), leaves every layer 32-bit, and is what compressed systems are tested
    against; suites add it themselves and do not list it as a system.
    """

    name: str
    config_cls: type[C]
    run: Callable[[Workload, Target | None, Budget, C], MethodResult]
    reference: bool = False


_METHODS: dict[str, MethodEntry[Any]] = {}


def register_method(name: str, config_cls: type[C], *, reference: bool = False):
    """Decorator binding a method's config dataclass to its implementation under ``name``
    (``reference=True`` for the uncompressed reference system, see :class:`MethodEntry`)."""

    def deco(fn: Callable[[Workload, Any, Budget, C], MethodResult]):
        if name in _METHODS and _METHODS[name].run is not fn:
            raise RuntimeError(f"method {name!r} registered twice")
        _METHODS[name] = MethodEntry(name, config_cls, fn, reference)
        return fn

    return deco


def _load_all() -> None:
    for module in METHOD_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # a real missing dependency inside the module
                raise


def available_methods() -> list[str]:
    """Registered method names (the reference ``fp32`` included), sorted."""
    _load_all()
    return sorted(_METHODS)


def compression_methods() -> list[str]:
    """Registered methods that compress (every one but the reference), sorted."""
    return [n for n in available_methods() if not _METHODS[n].reference]


def get_method(name: str) -> MethodEntry[Any]:
    """Look a method up by name.

    Raises:
        ValueError: unknown name; the message lists the registered methods.
    """
    _load_all()
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; registered: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def make_config(name: str, params: Mapping[str, Any] | None = None) -> Any:
    """Build method ``name``'s config from a mapping, refusing unknown fields by name."""
    entry = get_method(name)
    params = dict(params or {})
    known = {f.name for f in dataclasses.fields(entry.config_cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(
            f"method {name!r}: unknown config field(s) {unknown}; known: {sorted(known)}"
        )
    defaults = {f.name: f for f in dataclasses.fields(entry.config_cls)}
    for key, value in list(params.items()):
        default = field_default(defaults[key])
        if isinstance(value, Mapping) and dataclasses.is_dataclass(default):
            sub_known = {f.name for f in dataclasses.fields(default)}
            bad = sorted(set(value) - sub_known)
            if bad:
                raise ValueError(
                    f"method {name!r}: unknown field(s) {bad} in {key!r}; "
                    f"known: {sorted(sub_known)}"
                )
            params[key] = dataclasses.replace(default, **value)
    return entry.config_cls(**params)


def field_default(f: dataclasses.Field[Any]) -> Any:
    """A dataclass field's default (its factory called), ``dataclasses.MISSING`` if none."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def run_method(
    name: str, workload: Workload, target: Target, budget: Budget, config: Any = None
) -> MethodResult:
    """Run a registered method with its config (default config when None)."""
    entry = get_method(name)
    if config is None:
        config = entry.config_cls()
    if not isinstance(config, entry.config_cls):
        raise ValueError(f"method {name!r} takes a {entry.config_cls.__name__} config")
    return entry.run(workload, target, budget, config)


__all__ = [
    "METHOD_MODULES",
    "STAGE_KINDS",
    "Budget",
    "MethodEntry",
    "MethodResult",
    "StageTiming",
    "Target",
    "TeacherSource",
    "Workload",
    "available_methods",
    "compression_methods",
    "field_default",
    "get_method",
    "make_config",
    "register_method",
    "run_method",
]
