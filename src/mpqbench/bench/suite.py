"""Benchmark suites: TOML files naming models x systems x targets x seeds and one budget.

Format (every key is checked; unknown keys are refused)::

    [suite]
    name = "default"                  # results go to results/<name>/
    description = "..."
    data = "embedded"                 # or a LibriSpeech-layout root
    eval_splits = ["test-clean", "test-other"]
    models = ["whisper-tiny.en"]
    seeds = [0]
    groups = ["blocks", "embeddings"] # layer groups to quantize (the default: every
                                      # transformer-block linear and the token embedding
                                      # where the model has one; "conv" adds Whisper's
                                      # front-end convs)
    rules = []                        # "PATTERN=BITS" overrides
    eval_batch_size = 16
    max_new_tokens = 128              # optional
    max_tokens_per_s = 10             # optional: stop a clip after ceil(10 * seconds) tokens
    eval_limit = 40                   # optional: a fixed subset of each split
    whisper_window_s = 10             # optional: Whisper encoder window (default 30 s);
                                      # applies to the suite's Whisper models only
    fp32_reference = "finetuned"      # optional: "pretrained" (default) or "finetuned"
    alignment = "sclite"              # optional: WER alignment, "unit" (default) or "sclite"
    eval_precision = "auto"           # optional: decoding precision, "fp32" (default), "bf16"
                                      # or "auto" (bf16 where the device multiplies bf16
                                      # natively, else fp32: mpqbench.precision)

    [budget]                          # the ONE budget every method gets
    train_steps = 60
    batch_size = 8
    search_budget = 40
    dev_subset = 32
    precision = "auto"                # optional: training precision, "fp32" (default),
                                      # "bf16", "fp16" (CUDA) or "auto" (as eval_precision)

    [[systems]]                       # one per method configuration
    method = "one_stage"
    label = "one_stage"               # optional; defaults to the method name
    avg_bits = [4, 3]                 # targets (or cr = [8.0], or frontier = {...})
    params = { candidates = [2, 4, 8] }
    embedding_row_groups = [8192]     # optional: the token embedding as row groups cut at
                                      # these ids, each allocated its own bits (the suite's
                                      # Whisper models only)

    [[systems]]                       # a lossless-frontier search (bench.frontier)
    method = "uniform"
    frontier = { low = 3, high = 8, resolution = 1 }

A 32-bit reference cell (method ``fp32``) is added per model (per model and seed with
``fp32_reference = "finetuned"``: the model fine-tuned in 32 bits under the suite's budget,
see :mod:`mpqbench.bench.cell`); every compressed cell is tested against its reference.

A system with ``frontier = { low, high, resolution }`` instead of fixed targets is a
bracketing search (:mod:`mpqbench.bench.frontier`) per model and seed: its cells are
ordinary cells at grid targets, chosen one after another by the runner from the dev
verdicts of the cells run so far. A suite with a frontier system evaluates every cell
(references and fixed targets included) on its dev split first, then on ``eval_splits``:
dev decides the frontier, and a record's ``lossless`` flag is the verdict on the other
splits only.
Validation happens before any model is loaded: the file and the field
are named in every error.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mpqbench._names import safe_name
from mpqbench.bench.cell import FP32, CellSpec
from mpqbench.bench.frontier import FrontierSpec, frontier_grid
from mpqbench.method import Budget, Target, compression_methods, make_config
from mpqbench.precision import AUTO, PRECISIONS, resolve_precision
from mpqbench.quant.allocation import LayerRule
from mpqbench.workloads.adapter import LAYER_GROUPS
from mpqbench.workloads.metrics.alignment import ALIGNMENTS
from mpqbench.workloads.models.registry import MODEL_REGISTRY, model_family
from mpqbench.workloads.models.row_groups import check_row_cuts

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SUITES_DIR = Path(__file__).resolve().parent.parent / "suites"

_SUITE_KEYS = {
    "name", "description", "data", "eval_splits", "models", "seeds", "groups", "rules",
    "eval_batch_size", "max_new_tokens", "train_split", "dev_split", "eval_limit",
    "whisper_window_s", "fp32_reference", "alignment", "eval_precision", "max_tokens_per_s",
}
_SYSTEM_KEYS = {"method", "label", "avg_bits", "cr", "frontier", "params",
                "embedding_row_groups"}
_FRONTIER_KEYS = {"low", "high", "resolution"}
_FRONTIER_OPTIONAL = {"start"}
#: Seeds must fit every RNG a cell seeds (numpy's and torch's take 0..2**32-1 safely).
_MAX_SEED = 2**32 - 1
#: Whisper's encoder window is 30 s; a suite may shrink it.
_MAX_WHISPER_WINDOW_S = 30


@dataclass(frozen=True)
class Cell:
    """A cell of a suite: its spec and a readable label."""

    label: str
    spec: CellSpec

    @property
    def key(self) -> str:
        """File-name-safe unique key: label, model, target, seed, config hash."""
        spec = self.spec
        target = spec.target.label() if spec.target else "fp32"
        model = safe_name(spec.model, limit=40)
        return f"{model}__{self.label}__{target}__s{spec.budget.seed}__{spec.config_hash()}"


@dataclass(frozen=True)
class FrontierSearch:
    """One system's lossless-frontier search for one model and seed.

    Attributes:
        label: the system's label.
        spec: range and resolution over the average-bits target.
        template: the spec of the search's cells (at target ``high``); :meth:`cell` sets
            the target.
    """

    label: str
    spec: FrontierSpec
    template: CellSpec

    @property
    def key(self) -> str:
        """File-name-safe key: label, model, seed, range and resolution."""
        t, s = self.template, self.spec
        model = safe_name(t.model, limit=40)
        return (f"{model}__{self.label}__frontier-{s.low:g}-{s.high:g}-r{s.resolution:g}"
                f"__s{t.budget.seed}")

    def cell(self, avg_bits: float) -> Cell:
        """The cell at ``avg_bits`` (a grid point of :attr:`spec`)."""
        return Cell(self.label, dataclasses.replace(self.template,
                                                    target=Target(avg_bits=avg_bits)))

    def grid_cells(self) -> list[Cell]:
        """A cell per grid target (only some of them run)."""
        return [self.cell(bits) for bits in frontier_grid(self.spec)]


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    path: Path
    cells: tuple[Cell, ...]
    budget: Budget
    frontiers: tuple[FrontierSearch, ...] = ()
    #: What a precision of "auto" in the file became ("bf16" or "fp32"); None when the file
    #: names no "auto" precision.
    auto_precision: str | None = None

    def references(self) -> list[Cell]:
        return [c for c in self.cells if c.spec.method == FP32]

    def config_hashes(self) -> set[str]:
        """The config hashes of every cell the suite can run: fixed cells and every grid
        cell of its frontier searches."""
        cells = [*self.cells, *(c for f in self.frontiers for c in f.grid_cells())]
        return {c.spec.config_hash() for c in cells}

    def other_resolution(self) -> Suite | None:
        """The same file with ``"auto"`` resolved the other way (bf16 <-> fp32), or None
        when it names no ``"auto"`` precision."""
        if self.auto_precision is None:
            return None
        other = "fp32" if self.auto_precision == "bf16" else "bf16"
        return load_suite(str(self.path), auto_precision=other)

    def compressed(self) -> list[Cell]:
        """The fixed-target compressed cells (frontier cells are chosen while running)."""
        return [c for c in self.cells if c.spec.method != FP32]


def resolve_suite_path(name_or_path: str) -> Path:
    """A suite file: an existing path, or the name of a suite shipped with mpqbench.

    Raises:
        ValueError: neither (the message lists the shipped suites).
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = SUITES_DIR / f"{name_or_path}.toml"
    if shipped.is_file():
        return shipped
    names = sorted(p.stem for p in SUITES_DIR.glob("*.toml"))
    raise ValueError(f"no suite {name_or_path!r}: not a file, and shipped suites are {names}")


def load_suite(name_or_path: str, *, auto_precision: str | None = None) -> Suite:
    """Parse and validate a suite file without loading any model.

    Args:
        name_or_path: a shipped suite's name or a suite file.
        auto_precision: what a precision of ``"auto"`` (``budget.precision``,
            ``suite.eval_precision``) stands for, ``"bf16"`` or ``"fp32"``; None resolves it
            for this machine (:func:`mpqbench.precision.resolve_precision` on CUDA when torch
            sees a CUDA device, else on the CPU). It decides the cells' config hashes.

    Raises:
        ValueError: malformed TOML, unknown or missing keys, unknown model or method,
            bad method parameters, a target outside a method's candidate bits; the message
            names the file and the field.
    """
    if auto_precision not in (None, "bf16", "fp32"):
        raise ValueError(f"auto_precision must be 'bf16', 'fp32' or None, got "
                         f"{auto_precision!r}")
    path = resolve_suite_path(name_or_path)
    where = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{where}: not UTF-8 text ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{where}: malformed TOML: {exc}") from exc
    except RecursionError:
        raise ValueError(f"{where}: malformed TOML: arrays or tables nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal over Python's 4300-digit limit
        raise ValueError(f"{where}: malformed TOML: {exc}") from None
    _only(raw, {"suite", "budget", "systems"}, where, "top level")
    suite = _table(raw, "suite", where)
    _only(suite, _SUITE_KEYS, where, "[suite]")
    name = _plain_name(_get(suite, "name", str, where, "suite.name"), where, "suite.name")
    description = _get(suite, "description", str, where, "suite.description", default="")
    data = _get(suite, "data", str, where, "suite.data", default=CellSpec.default("data"))
    if not data:
        raise ValueError(f"{where}: suite.data must not be empty")
    models = _strings(suite, "models", where)
    for i, model in enumerate(models):
        if model not in MODEL_REGISTRY and not Path(model).expanduser().is_dir():
            raise ValueError(
                f"{where}: suite.models[{i}] = {model!r} is neither a registered model "
                f"({', '.join(sorted(MODEL_REGISTRY))}) nor a local directory"
            )
    seeds = suite.get("seeds", [0])
    if (
        not isinstance(seeds, list) or not seeds
        or not all(type(s) is int and 0 <= s <= _MAX_SEED for s in seeds)
    ):
        raise ValueError(
            f"{where}: suite.seeds must be a non-empty list of integers in 0..{_MAX_SEED}, "
            f"got {seeds!r}"
        )
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{where}: suite.seeds lists a seed twice: {seeds}")
    budget_raw = dict(_table(raw, "budget", where))
    auto_used = budget_raw.get("precision") == AUTO or suite.get("eval_precision") == AUTO
    if auto_used and auto_precision is None:
        auto_precision = resolve_precision(AUTO, "cuda" if torch.cuda.is_available() else "cpu")
    if budget_raw.get("precision") == AUTO:
        budget_raw["precision"] = auto_precision
    try:
        _only(budget_raw, {f.name for f in dataclasses.fields(Budget)} - {"seed"}, where,
              "[budget]")
        for key, value in budget_raw.items():
            kind, noun = {"precision": (str, "a string"),
                          "trim_window": (bool, "true or false")}.get(key, (int, "an integer"))
            if type(value) is not kind:
                raise ValueError(f"budget.{key} must be {noun}, got {value!r}")
        budget = Budget(**budget_raw, seed=seeds[0])
    except TypeError as exc:
        raise ValueError(f"{where}: [budget]: {exc}") from exc
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc
    eval_splits = _strings(suite, "eval_splits", where,
                           default=list(CellSpec.default("eval_splits")))
    for i, split in enumerate(eval_splits):
        _plain_name(split, where, f"suite.eval_splits[{i}]")
    systems = raw.get("systems", [])
    if not isinstance(systems, list):
        raise ValueError(f"{where}: systems must be an array of tables ([[systems]])")
    has_frontier = any(isinstance(s, Mapping) and "frontier" in s for s in systems)
    dev_split = _plain_name(_get(suite, "dev_split", str, where, "suite.dev_split",
                                 default=CellSpec.default("dev_split")),
                            where, "suite.dev_split")
    if has_frontier and dev_split not in eval_splits:
        eval_splits = [dev_split, *eval_splits]  # the frontier decides on dev
    groups = _strings(suite, "groups", where, default=list(CellSpec.default("groups")))
    for i, group in enumerate(groups):
        if group not in LAYER_GROUPS:
            raise ValueError(
                f"{where}: suite.groups[{i}] = {group!r} is not a layer group; "
                f"groups are {list(LAYER_GROUPS)}"
            )
    rules = _strings(suite, "rules", where, default=[], allow_empty=True, unique=False)
    for i, rule in enumerate(rules):
        try:
            LayerRule.parse(rule)
        except ValueError as exc:
            raise ValueError(f"{where}: suite.rules[{i}]: {exc}") from None
    common = {
        "data": data,
        "eval_splits": tuple(eval_splits),
        "groups": tuple(groups),
        "rules": tuple(rules),
        "eval_batch_size": _int(suite, "eval_batch_size", where,
                                default=CellSpec.default("eval_batch_size")),
        "max_new_tokens": _int(suite, "max_new_tokens", where, default=None),
        "max_tokens_per_s": _positive_number(suite, "max_tokens_per_s", where),
        "eval_limit": _int(suite, "eval_limit", where, default=None),
        "whisper_window_s": _int(suite, "whisper_window_s", where, default=None,
                                 high=_MAX_WHISPER_WINDOW_S),
        "train_split": _plain_name(
            _get(suite, "train_split", str, where, "suite.train_split",
                 default=CellSpec.default("train_split")),
            where, "suite.train_split"),
        "dev_split": dev_split,
        "fp32_reference": _get(suite, "fp32_reference", str, where, "suite.fp32_reference",
                               default=None),
        "alignment": _choice(suite, "alignment", ALIGNMENTS, where),
        "eval_precision": _choice(suite, "eval_precision", (*PRECISIONS, AUTO), where),
    }
    if common["eval_precision"] == AUTO:
        common["eval_precision"] = auto_precision
    families = {m: model_family(m) for m in models}
    if common["whisper_window_s"] is not None:
        _check_whisper_setting(families, where, "suite.whisper_window_s")
    cells: list[Cell] = []
    frontiers: list[FrontierSearch] = []
    seen: set[str] = set()
    for model in models:
        for seed in seeds:
            try:
                ref = CellSpec(model=model, method=FP32, budget=dataclasses.replace(
                    budget, seed=seed), **_for_model(common, families[model])).reference()
            except ValueError as exc:
                raise ValueError(f"{where}: [suite]: {exc}") from exc
            if ref.config_hash() not in seen:
                seen.add(ref.config_hash())
                cells.append(Cell(FP32, ref))
    labels: set[str] = set()
    methods = compression_methods()  # the fp32 reference is added per model, not listed
    for i, system in enumerate(systems):
        field = f"systems[{i}]"
        if not isinstance(system, Mapping):
            raise ValueError(f"{where}: {field} must be a table")
        _only(system, _SYSTEM_KEYS, where, field)
        method = _get(system, "method", str, where, f"{field}.method")
        if method not in methods:
            raise ValueError(
                f"{where}: {field}.method = {method!r} is not a method; known: {methods}"
            )
        label = _plain_name(_get(system, "label", str, where, f"{field}.label", default=method),
                            where, f"{field}.label")
        if label in labels or label == FP32:
            raise ValueError(f"{where}: {field}.label {label!r} is used twice (or reserved)")
        labels.add(label)
        params = _get(system, "params", Mapping, where, f"{field}.params", default={})
        try:
            config = make_config(method, params)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{where}: {field}.params: {exc}") from exc
        system_common = dict(common)
        if "embedding_row_groups" in system:
            try:
                system_common["embedding_row_groups"] = check_row_cuts(
                    system["embedding_row_groups"], None,
                    what=f"{field}.embedding_row_groups")
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            _check_whisper_setting(families, where, f"{field}.embedding_row_groups")
        if "frontier" in system:
            spec = _frontier(system, where, field, config)
            for model in models:
                for seed in seeds:
                    template = CellSpec(
                        model=model, method=method, params=params,
                        target=Target(avg_bits=spec.high),
                        budget=dataclasses.replace(budget, seed=seed),
                        **_for_model(system_common, families[model]),
                    )
                    frontiers.append(FrontierSearch(label, spec, template))
            continue
        targets = _targets(system, where, field, config)
        for model in models:
            for seed in seeds:
                for target in targets:
                    spec = CellSpec(
                        model=model, method=method, params=params, target=target,
                        budget=dataclasses.replace(budget, seed=seed),
                        **_for_model(system_common, families[model]),
                    )
                    cells.append(Cell(label, spec))
    return Suite(name=name, description=description, path=path,
                 cells=tuple(cells), budget=budget, frontiers=tuple(frontiers),
                 auto_precision=auto_precision if auto_used else None)


#: Cell settings that only a Whisper model has a use for.
_WHISPER_SETTINGS = ("whisper_window_s", "embedding_row_groups")


def _for_model(common: Mapping[str, Any], family: str | None) -> dict[str, Any]:
    """``common`` for a model of ``family`` (:func:`model_family`): the Whisper-only settings
    are dropped (left at their defaults, so they do not enter the cell hash) for a model
    known not to be Whisper, so a suite of both families can set them for its Whisper
    models."""
    if family is None or family == "whisper":
        return dict(common)
    return {k: v for k, v in common.items() if k not in _WHISPER_SETTINGS}


def _check_whisper_setting(families: Mapping[str, str | None], where: str, field: str) -> None:
    """Refuse a Whisper-only setting in a suite whose models are all known not to be
    Whisper."""
    if all(f is not None and f != "whisper" for f in families.values()):
        raise ValueError(
            f"{where}: {field} applies to Whisper models, and suite.models "
            f"{list(families)} has none"
        )


def _frontier(system: Mapping[str, Any], where: str, field: str, config: Any) -> FrontierSpec:
    """``systems[i].frontier``: a table of low, high and resolution (average bits) and,
    optionally, where the search starts (``start = "ends"`` or ``"middle"``)."""
    if "avg_bits" in system or "cr" in system:
        raise ValueError(f"{where}: {field} needs exactly one of avg_bits = [...], cr = [...] "
                         "or frontier = {...}")
    raw = system["frontier"]
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: {field}.frontier must be a table "
                         "{ low = ..., high = ..., resolution = ... }")
    _only(raw, _FRONTIER_KEYS | _FRONTIER_OPTIONAL, where, f"{field}.frontier")
    missing = sorted(_FRONTIER_KEYS - set(raw))
    if missing:
        raise ValueError(f"{where}: {field}.frontier is missing {missing}")
    try:
        spec = FrontierSpec(low=raw["low"], high=raw["high"], resolution=raw["resolution"],
                            start=raw.get("start", "ends"))
    except ValueError as exc:
        raise ValueError(f"{where}: {field}.frontier: {exc}") from None
    candidates = getattr(config, "candidates", None)
    lo, hi = (min(candidates), max(candidates)) if candidates else (1, 8)
    if not (lo <= spec.low and spec.high <= hi):
        raise ValueError(f"{where}: {field}.frontier spans {spec.low:g}..{spec.high:g} bits, "
                         f"outside the method's reachable {lo}..{hi} bits")
    return spec


def _targets(system: Mapping[str, Any], where: str, field: str, config: Any) -> list[Target]:
    has_bits, has_cr = "avg_bits" in system, "cr" in system
    if has_bits == has_cr:
        raise ValueError(f"{where}: {field} needs exactly one of avg_bits = [...], cr = [...] "
                         "or frontier = {...}")
    key = "avg_bits" if has_bits else "cr"
    values = system[key]
    if not isinstance(values, list) or not values:
        raise ValueError(f"{where}: {field}.{key} must be a non-empty list of numbers")
    candidates = getattr(config, "candidates", None)
    out = []
    for j, value in enumerate(values):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ValueError(f"{where}: {field}.{key}[{j}] = {value!r} is not a number")
        if not math.isfinite(value):
            raise ValueError(f"{where}: {field}.{key}[{j}] = {value!r} is not a finite number")
        try:
            target = Target(avg_bits=value) if has_bits else Target(compression_ratio=value)
        except ValueError as exc:
            raise ValueError(f"{where}: {field}.{key}[{j}]: {exc}") from exc
        if has_bits and candidates and not min(candidates) <= value <= max(candidates):
            raise ValueError(
                f"{where}: {field}.avg_bits[{j}] = {value} is outside the method's candidate "
                f"bits {tuple(candidates)} (reachable: {min(candidates)}..{max(candidates)})"
            )
        if has_bits and not candidates and not 1 <= value <= 8:
            raise ValueError(f"{where}: {field}.avg_bits[{j}] = {value} is outside 1..8 bits")
        out.append(target)
    if len(set(values)) != len(values):
        raise ValueError(f"{where}: {field}.{key} lists a target twice: {values}")
    return out


def _table(raw: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = raw.get(key)
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: missing [{key}] table")
    return value


def _only(table: Mapping[str, Any], allowed: set[str], where: str, what: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown} in {what}; allowed: {sorted(allowed)}")


def _plain_name(value: str, where: str, field: str) -> str:
    """A name used in paths (suite, split, label): non-empty, no separators, not . or .."""
    if not value or value in (".", "..") or any(c in value for c in "/\\\0"):
        raise ValueError(
            f"{where}: {field} must be a plain name (no '/', '\\', NUL; not '.' or '..'), "
            f"got {value!r}"
        )
    return value


def _strings(table: Mapping[str, Any], key: str, where: str, default: Any = dataclasses.MISSING,
             *, allow_empty: bool = False, unique: bool = True) -> list[str]:
    """``suite.<key>``: a list of non-empty strings (non-empty and without repeats by default)."""
    field = f"suite.{key}"
    values = _get(table, key, list, where, field, default=default)
    if not values and not allow_empty:
        raise ValueError(f"{where}: {field} must not be empty")
    for i, value in enumerate(values):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{where}: {field}[{i}] must be a non-empty string, got {value!r}")
    if unique and len(set(values)) != len(values):
        raise ValueError(f"{where}: {field} lists a value twice: {values}")
    return values


def _int(table: Mapping[str, Any], key: str, where: str, *, default: int | None,
         high: int | None = None) -> int | None:
    """``suite.<key>``: an optional integer >= 1 (and <= ``high``)."""
    if key not in table:
        return default
    value = table[key]
    if type(value) is not int or value < 1 or (high is not None and value > high):
        bound = f"1..{high}" if high is not None else ">= 1"
        raise ValueError(f"{where}: suite.{key} must be an integer {bound}, got {value!r}")
    return value


def _positive_number(table: Mapping[str, Any], key: str, where: str) -> float | None:
    """``suite.<key>``: an optional number > 0 (None when absent)."""
    if key not in table:
        return None
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{where}: suite.{key} must be a number > 0, got {value!r}")
    return float(value)


def _choice(suite: Mapping[str, Any], key: str, choices: tuple[str, ...],
            where: str) -> str | None:
    """An optional string field that must be one of ``choices`` (None when absent)."""
    value = _get(suite, key, str, where, f"suite.{key}", default=None)
    if value is not None and value not in choices:
        raise ValueError(f"{where}: suite.{key} = {value!r} is not one of {choices}")
    return value


def _get(table: Mapping[str, Any], key: str, kind: type, where: str, field: str,
         default: Any = dataclasses.MISSING) -> Any:
    if key not in table:
        if default is dataclasses.MISSING:
            raise ValueError(f"{where}: missing {field}")
        return default
    value = table[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{where}: {field} must be a {kind.__name__}, got {value!r}")
    return value


__all__ = ["SUITES_DIR", "Cell", "FrontierSearch", "Suite", "load_suite",
           "resolve_suite_path"]
