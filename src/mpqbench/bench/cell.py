"""One benchmark cell: (model, data, method, target, budget) -> one JSON-ready record.

The cell loads the workload, builds the 32-bit teacher cache (timed as its own stage,
outside the method's compression time, because every method shares it), runs the method
through the registry, evaluates every requested split, tests significance against the
32-bit reference (NIST MAPSSWE + paired bootstrap), and accounts bits and compression.

The 32-bit reference is either the model as loaded (``fp32_reference="pretrained"``, the
default) or that model fine-tuned in 32 bits by the shared loop under the same budget
(``"finetuned"``: same train split, steps, batch size, seed, task loss + KL to the teacher).
The second is the fair reference when the QAT data is closer to the test data than the
model's pre-training data (the embedded corpus's TTS voices): every compressed system is
then fine-tuned on that data, and only a reference that saw the same steps separates the
cost of quantization from the gain of adaptation. The paper's reference is likewise a
model fine-tuned on the task data.
The harness and ``mpqbench quantize`` both call :func:`run_cell`; neither knows a
method's internals.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mpqbench.bench.packed_check import DEFAULT_CHECK_UTTERANCES, export_and_check
from mpqbench.bench.records import (
    RECORD_SCHEMA,
    environment_block,
    precision_block,
    split_record,
)
from mpqbench.bench.stats import (
    MapssweResult,
    bootstrap_wer_diff,
    counts_from_ops,
    is_lossless,
    mapsswe,
    significantly_worse,
)
from mpqbench.bench.workload import eligible_layers, make_workload, open_model
from mpqbench.method import Budget, Target, field_default, get_method, make_config
from mpqbench.precision import check_precision, compute_dtype
from mpqbench.quant.accounting import Figure, account, kept_fp32_parameters
from mpqbench.quant.allocation import Allocation
from mpqbench.quant.layers import frozen_quantized_weights
from mpqbench.quant.teacher import DEFAULT_TOP_K, TeacherCache, build_teacher_cache
from mpqbench.timing import device_label, stage_timer
from mpqbench.workloads.data.embedded import EMBEDDED, embedded_manifest_sha256, open_split
from mpqbench.workloads.evaluate import evaluate
from mpqbench.workloads.metrics.alignment import DEFAULT_ALIGNMENT, check_alignment
from mpqbench.workloads.models.row_groups import check_row_cuts

log = logging.getLogger(__name__)

#: The method name of the uncompressed reference system.
FP32 = "fp32"
#: What the 32-bit reference is: the model as loaded, or fine-tuned under the cell's budget.
FP32_REFERENCES: tuple[str, ...] = ("pretrained", "finetuned")


@dataclass(frozen=True, kw_only=True)
class CellSpec:
    """Everything that defines a cell's result (its hash keys resume and comparison).

    Attributes:
        model: registry name or local checkpoint directory.
        data: "embedded" or a LibriSpeech-layout root.
        method: registered method name, or "fp32" for the uncompressed reference.
        params: the method's config fields (nested mappings for nested configs).
        target: compression target (None for fp32).
        budget: the shared budget.
        eval_splits: splits to evaluate.
        train_split, dev_split: where training data and proxy data come from.
        groups: layer groups eligible for quantization; rules: ``"PATTERN=BITS"`` overrides
            (``BITS`` may be ``none`` to keep a layer 32-bit).
        eval_batch_size, max_new_tokens: decoding settings.
        whisper_window_s: shrink a Whisper model's encoder window to this many seconds
            (``WhisperSpeechModel.set_window_``; the fp32 reference uses the same window).
        eval_limit: evaluate a fixed seeded subset of this many utterances per split (None:
            the whole split).
        teacher_top_k: top-k of the cached teacher distribution.
        fp32_reference: ``"pretrained"`` (None means the same) or ``"finetuned"``: see the
            module docstring. An fp32 cell whose budget has ``train_steps > 0`` is the
            fine-tuned reference.
        alignment: WER alignment weighting, ``"unit"`` (None means the same) or
            ``"sclite"`` (substitution 4, insertion 3, deletion 3; see
            :mod:`mpqbench.workloads.metrics.alignment`). The fp32 reference uses the same.
        eval_precision: compute precision of decoding (``"fp32"`` when None, ``"bf16"``;
            :mod:`mpqbench.precision`); training precision is ``budget.precision``. The
            fp32 reference is evaluated in the same precision.
        max_tokens_per_s: duration cap of seq2seq decoding: a clip stops after
            ``ceil(max_tokens_per_s * seconds)`` tokens (None: only ``max_new_tokens``).
        embedding_row_groups: split the token embedding into row groups starting at 0 and
            at each of these token ids (``WhisperSpeechModel.split_embedding_rows_``), so
            the method allocates each group its own bit-width (None: one tensor). The
            32-bit reference is the same function either way and does not split.
    """

    model: str
    data: str = EMBEDDED
    method: str
    params: Mapping[str, Any] = field(default_factory=dict)
    target: Target | None = None
    budget: Budget
    eval_splits: tuple[str, ...] = ("test-clean", "test-other")
    train_split: str = "train"
    dev_split: str = "dev"
    groups: tuple[str, ...] = ("blocks", "embeddings")
    rules: tuple[str, ...] = ()
    eval_batch_size: int = 16
    max_new_tokens: int | None = None
    eval_limit: int | None = None
    whisper_window_s: int | None = None
    teacher_top_k: int = DEFAULT_TOP_K
    fp32_reference: str | None = None
    alignment: str | None = None
    eval_precision: str | None = None
    max_tokens_per_s: float | None = None
    embedding_row_groups: tuple[int, ...] | None = None

    @classmethod
    def default(cls, name: str) -> Any:
        """The default of field ``name`` (the one place suites and the CLI take it from).

        Raises:
            KeyError: no such field, or one without a default.
        """
        value = field_default(cls.__dataclass_fields__[name])
        if value is dataclasses.MISSING:
            raise KeyError(f"CellSpec.{name} has no default")
        return value

    def __post_init__(self) -> None:
        # Optional settings added after records existed: their default is stored as None,
        # which the hash leaves out, so existing cells keep their hashes.
        self._optional("alignment", DEFAULT_ALIGNMENT, check_alignment)
        self._optional("eval_precision", "fp32", check_precision)
        if self.fp32_reference not in (None, *FP32_REFERENCES):
            raise ValueError(
                f"cell: fp32_reference must be one of {FP32_REFERENCES}, "
                f"got {self.fp32_reference!r}"
            )
        if self.fp32_reference == "pretrained":  # the default: stored as None (stable hashes)
            object.__setattr__(self, "fp32_reference", None)
        if self.method != FP32 and self.target is None:
            raise ValueError(f"cell: method {self.method!r} needs a target")
        if not self.eval_splits:
            raise ValueError("cell: eval_splits is empty")
        rate = self.max_tokens_per_s
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float))
                                 or not rate > 0):
            raise ValueError(f"cell: max_tokens_per_s must be a number > 0, got {rate!r}")
        cuts = self.embedding_row_groups
        if cuts is not None:
            try:
                cuts = check_row_cuts(cuts, None, what="cell: embedding_row_groups")
            except (TypeError, ValueError) as exc:
                raise ValueError(str(exc)) from None
            object.__setattr__(self, "embedding_row_groups", cuts)

    def _optional(self, name: str, default: str, check: Callable[[str], str]) -> None:
        value = getattr(self, name)
        if value is None:
            return
        try:
            check(value)
        except ValueError as exc:
            raise ValueError(f"cell: {name}: {exc}") from None
        if value == default:
            object.__setattr__(self, name, None)

    @property
    def alignment_name(self) -> str:
        """The alignment weighting actually used (``"unit"`` when unset)."""
        return self.alignment or DEFAULT_ALIGNMENT

    @property
    def eval_precision_name(self) -> str:
        """The decoding precision actually used (``"fp32"`` when unset)."""
        return self.eval_precision or "fp32"

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["target"] = self.target.to_dict() if self.target else None
        out["budget"] = self.budget.to_dict()
        out["params"] = json.loads(json.dumps(dict(self.params), sort_keys=True, default=str))
        return out

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> CellSpec:
        """Rebuild a cell from a record's ``config`` (the inverse of :meth:`to_dict`).

        Raises:
            ValueError: a field is missing, unknown or invalid.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"cell config: unknown fields {unknown}")
        kwargs = dict(config)
        try:
            kwargs["budget"] = Budget(**config["budget"])
            target = config.get("target")
            kwargs["target"] = Target(**target) if target else None
            for name in ("eval_splits", "groups", "rules", "embedding_row_groups"):
                if kwargs.get(name) is not None:
                    kwargs[name] = tuple(kwargs[name])
            return cls(**kwargs)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"cell config: {exc}") from None

    def config_hash(self) -> str:
        """sha256 (first 16 hex digits) of the canonical JSON of :meth:`to_dict`.

        Top-level fields that are None (optional settings left unset) are left out, so
        adding a new optional field does not change the hash of existing cells.
        """
        fields = {k: v for k, v in self.to_dict().items() if v is not None}
        text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def reference(self) -> CellSpec:
        """The fp32 cell this cell is compared with (same model, data, splits, decoding).

        Pretrained reference: budget, rules and method settings do not change a 32-bit
        system, so they are reset to fixed values and every cell of a model shares one
        reference, whatever its seed. Fine-tuned reference: the cell's train steps, batch
        size, seed, precision and window trimming are kept (one reference per seed, paired
        with that seed's cells); the search budget and dev subset, which a 32-bit fine-tune
        does not use, are reset.
        """
        if self.fp32_reference == "finetuned":
            budget = Budget(train_steps=self.budget.train_steps,
                            batch_size=self.budget.batch_size, search_budget=0,
                            dev_subset=1, seed=self.budget.seed,
                            precision=self.budget.precision,
                            trim_window=self.budget.trim_window)
            top_k = self.teacher_top_k
        else:
            budget = Budget(train_steps=0, batch_size=1, dev_subset=1, seed=0)
            top_k = DEFAULT_TOP_K
        return dataclasses.replace(
            self, method=FP32, params={}, target=None, rules=(), budget=budget,
            teacher_top_k=top_k, embedding_row_groups=None,
        )


def _paired_test(
    reference: Mapping[str, Any], system: Mapping[str, Any]
) -> tuple[dict[str, Any], MapssweResult]:
    align_a = reference.get("alignment", DEFAULT_ALIGNMENT)
    align_b = system.get("alignment", DEFAULT_ALIGNMENT)
    if align_a != align_b:
        raise ValueError(
            f"significance: the reference was aligned with {align_a!r} costs and the system "
            f"with {align_b!r}; both must use the same alignment"
        )
    ops_a = {u["id"]: u["ops"] for u in reference["utterances"]}
    ops_b = {u["id"]: u["ops"] for u in system["utterances"]}
    test = mapsswe(ops_a, ops_b)
    boot = bootstrap_wer_diff(
        {k: counts_from_ops(v) for k, v in ops_a.items()},
        {k: counts_from_ops(v) for k, v in ops_b.items()},
    )
    block = {
        "mapsswe": test.to_dict(),
        "bootstrap": dataclasses.asdict(boot),
        "significantly_worse": significantly_worse(test),
    }
    return block, test


def significance(reference: Mapping[str, Any], system: Mapping[str, Any]) -> dict[str, Any]:
    """MAPSSWE and bootstrap of ``system`` (B) against ``reference`` (A) on one split.

    Raises:
        ValueError: the two splits were scored with different alignment weightings
            (a split record without the field was scored with unit costs).
    """
    return _paired_test(reference, system)[0]


def judge_against_reference(
    reference: Mapping[str, Any], splits: Mapping[str, Mapping[str, Any]],
    *, verdict: Sequence[str] | None = None,
) -> tuple[dict[str, dict[str, Any]], bool]:
    """Significance of every split of a system against the 32-bit reference record, and
    the lossless verdict (:func:`mpqbench.bench.stats.is_lossless`, the one rule).

    Args:
        reference: the fp32 cell's record.
        splits: split name -> the system's split record (as :func:`split_record` makes).
        verdict: the splits the lossless verdict is judged on (default: all of them).

    Returns:
        ``(significance per split, lossless)``.

    Raises:
        ValueError: a split the reference lacks, or mismatched alignments.
    """
    blocks: dict[str, dict[str, Any]] = {}
    tests: dict[str, MapssweResult] = {}
    for name, split in splits.items():
        if name not in reference["splits"]:
            raise ValueError(f"the 32-bit reference record has no split {name!r}")
        blocks[name], tests[name] = _paired_test(reference["splits"][name], split)
    judged = list(tests) if verdict is None else list(verdict)
    unknown = [k for k in judged if k not in tests]
    if unknown or not judged:
        raise ValueError(f"judge_against_reference: verdict splits {judged} must be a "
                         f"non-empty subset of the evaluated splits {list(tests)}")
    return blocks, is_lossless({k: tests[k] for k in judged})


def run_cell(
    spec: CellSpec,
    *,
    reference: Mapping[str, Any] | None = None,
    device: str = "cpu",
    progress: bool = True,
    teacher_cache: dict[tuple[Any, ...], TeacherCache] | None = None,
    checkpoint_dir: Path | None = None,
    export_path: Path | None = None,
    check_utterances: int = DEFAULT_CHECK_UTTERANCES,
) -> dict[str, Any]:
    """Run one cell and return its record.

    A compressed cell also exports its model packed and checks the file
    (:func:`mpqbench.bench.packed_check.export_and_check`: measured size beside the
    accounted size, and a reload that must decode ``check_utterances`` utterances of the
    first evaluation split to the same text); the record's ``export`` block holds the
    result.

    Args:
        spec: the cell.
        reference: the fp32 cell's record (needed for significance unless spec is fp32).
        device: "cpu" or "cuda".
        progress: progress bars.
        teacher_cache: an in-process memo of teacher caches shared between cells.
        checkpoint_dir: where the method's QAT stages checkpoint and resume (see
            :func:`mpqbench.method.fixed_bits.qat_fixed_bits`); None disables checkpoints.
            It must belong to this cell only: a rerun resumes from what it holds.
        export_path: where the packed model is kept (None: a temporary file, deleted
            after the check).
        check_utterances: utterances decoded by both the fake-quant and the reloaded
            packed model (0 skips the export check).

    Raises:
        ValueError: bad configuration (unknown method/field, split, ...) before any training.
    """
    config = make_config(spec.method, spec.params)
    splits = {name: open_split(spec.data, name) for name in spec.eval_splits}
    if spec.eval_limit is not None:
        splits = {k: v.subset(min(spec.eval_limit, len(v)), seed=0) for k, v in splits.items()}
    model = open_model(spec.model, device=device, whisper_window_s=spec.whisper_window_s,
                       embedding_row_groups=spec.embedding_row_groups)
    eligible = eligible_layers(model, spec.groups, spec.rules)
    workload = make_workload(
        model, eligible, data=spec.data, train_split=spec.train_split,
        dev_split=spec.dev_split, dev_subset=spec.budget.dev_subset, seed=spec.budget.seed,
        teacher=TeacherCache(spec.teacher_top_k), device=device, checkpoint_dir=checkpoint_dir,
        progress=progress,
    )
    teacher_stage = None
    if spec.budget.train_steps > 0:  # without training there is nothing to distil
        key = (spec.model, spec.data, spec.train_split, spec.teacher_top_k, device,
               spec.budget.precision)
        memo = teacher_cache if teacher_cache is not None else {}
        with stage_timer(device) as watch:
            if key not in memo or len(memo[key]) == 0:
                memo[key] = build_teacher_cache(
                    model, workload.train, batch_size=spec.budget.batch_size,
                    top_k=spec.teacher_top_k, progress=progress,
                    precision=spec.budget.precision,
                )
        teacher_stage = {"name": "teacher", "seconds": watch.seconds,
                         "device": device_label(device)}
        workload = dataclasses.replace(workload, teacher=memo[key])
    result = get_method(spec.method).run(workload, spec.target, spec.budget, config)
    model, allocation = result.model, result.allocation
    stages = [s.to_dict() for s in result.stages]
    info = result.info

    accounting = account(model.model, allocation)
    blocks = set(model.layer_groups()["blocks"])
    blocks_only = account(model.model, Allocation(
        allocation.model, {n: b for n, b in allocation.layers.items() if n in blocks}))
    ratios = [accounting.cr_paper, Figure(blocks_only.cr_paper.value, "cr_blocks_only")]
    evaluations = {}
    with frozen_quantized_weights(model.model, compute_dtype(spec.eval_precision_name)):
        for name, split in splits.items():
            res = evaluate(model, split, batch_size=spec.eval_batch_size,
                           max_new_tokens=spec.max_new_tokens,
                           max_tokens_per_s=spec.max_tokens_per_s, progress=progress,
                           alignment=spec.alignment_name,
                           precision=spec.eval_precision_name)
            evaluations[name] = split_record(res)
    export = None
    if spec.method != FP32 and allocation.quantized and check_utterances > 0:
        first = next(iter(splits.values()))
        export = export_and_check(
            model, allocation, accounting,
            skeleton=lambda: open_model(spec.model, device=device,
                                        whisper_window_s=spec.whisper_window_s,
                                        embedding_row_groups=spec.embedding_row_groups),
            utterances=list(first.subset(min(check_utterances, len(first)), seed=0)),
            precision=spec.eval_precision_name, path=export_path,
            max_new_tokens=spec.max_new_tokens, max_tokens_per_s=spec.max_tokens_per_s)
    record: dict[str, Any] = {
        "schema": RECORD_SCHEMA,
        "kind": "cell",
        "config": spec.to_dict(),
        "config_hash": spec.config_hash(),
        "alignment": spec.alignment_name,
        "precision": precision_block(spec.budget.precision, spec.eval_precision_name, device),
        "method_config": dataclasses.asdict(config),
        "data_manifest_sha256": embedded_manifest_sha256() if spec.data == EMBEDDED else None,
        "allocation": allocation.to_dict(),
        "accounting": accounting.to_dict(),
        "avg_bits": accounting.avg_bits.value,
        "compression_ratio": {"value": accounting.cr_paper.value, "rule": "cr_paper"},
        "compression_ratios": {f.rule: f.value for f in ratios},
        "kept_fp32": kept_fp32_parameters(model.model, allocation),
        "export": export,
        "stages": stages,
        "compression_seconds": sum(s["seconds"] for s in stages),
        "shared_stages": [teacher_stage] if teacher_stage else [],
        "info": info,
        "splits": evaluations,
        "environment": environment_block(device),
    }
    if spec.method != FP32:
        if reference is None:
            raise ValueError("run_cell: a compressed cell needs the fp32 reference record")
        verdict = verdict_splits(spec, evaluations)
        record["significance"], record["lossless"] = judge_against_reference(
            reference, evaluations, verdict=verdict)
        if spec.dev_split in evaluations and spec.dev_split not in verdict:
            record["lossless_dev"] = not record["significance"][spec.dev_split][
                "significantly_worse"]
    else:
        record["lossless"] = True
    return record


def verdict_splits(spec: CellSpec, splits: Mapping[str, Any]) -> list[str]:
    """The splits a record's ``lossless`` flag is judged on: every evaluated split but the
    dev split (dev chooses settings, e.g. a frontier's targets; the verdict is a test
    verdict), or the dev split alone when nothing else was evaluated."""
    rest = [k for k in splits if k != spec.dev_split]
    return rest or list(splits)


def summary_line(record: Mapping[str, Any]) -> str:
    """One line: method, bits, CR, WER per split, lossless."""
    cfg = record["config"]
    wers = ", ".join(f"{k} {100 * v['wer']:.2f}%" for k, v in record["splits"].items())
    cr = record["compression_ratio"]["value"]
    return (
        f"{cfg['method']}: avg {record['avg_bits']:.2f} bits, CR {cr:.2f}x, {wers}, "
        f"lossless={record['lossless']}"
        + (f" (dev: {record['lossless_dev']})" if "lossless_dev" in record else "")
        + f", compression {record['compression_seconds']:.1f} s"
    )


__all__ = [
    "FP32",
    "FP32_REFERENCES",
    "CellSpec",
    "judge_against_reference",
    "run_cell",
    "significance",
    "summary_line",
    "verdict_splits",
]
