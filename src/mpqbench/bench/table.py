"""Records -> a tidy pandas table: one row per (cell, evaluated split).

Everything here reads records (``results/<suite>/records/*.json``, written by the runner)
and nothing runs a model. WER and the S/D/I totals are summed from the per-utterance rows
stored in each record (and checked against the stored totals, so a hand-edited or corrupt
record is refused, not silently reported); p-values, bootstrap intervals and lossless flags
are the ones the harness derived from those same raw rows when the cell ran.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "CR_RULES",
    "TABLE_COLUMNS",
    "candidates_of",
    "load_records",
    "record_cr",
    "records_dir_of",
    "records_table",
    "split_counts",
    "target_label",
]

#: Compression-ratio rules a table can be built with (definitions:
#: :data:`mpqbench.quant.accounting.RULES`). ``cr_paper`` counts every quantized layer (the
#: whole model, token embedding included, under the default groups); ``cr_blocks_only``
#: counts only the transformer-block layers as quantized, the figure of records made before
#: whole-model quantization.
CR_RULES: tuple[str, ...] = ("cr_paper", "cr_blocks_only")

#: Key under which :func:`load_records` stores the file a record came from.
SOURCE_KEY = "_file"

#: Columns of :func:`records_table`, in order.
TABLE_COLUMNS = (
    "suite", "results_name", "label", "method", "model", "target", "target_avg_bits",
    "target_cr", "seed", "groups", "avg_bits", "cr", "cr_rule", "split", "wer", "n", "s", "d", "i",
    "errors", "num_utterances", "num_capped", "p_value", "log10_p", "z", "better", "boot_diff_pts",
    "boot_ci_low_pts", "boot_ci_high_pts", "significantly_worse", "lossless", "lossless_dev",
    "verdict_split", "frontier", "compression_seconds", "search_seconds", "qat_seconds",
    "teacher_seconds", "stages",
    "device", "candidates", "packed_file_bytes", "packed_over_accounted", "reload_identical",
    "reload_utterances", "config_hash", "git_commit", "git_dirty", "record_file",
)

_REQUIRED = ("config", "config_hash", "avg_bits", "compression_ratio", "splits", "lossless",
             "stages", "compression_seconds")


def records_dir_of(path: str | Path) -> Path:
    """The records directory for ``path``: ``path/records`` when it exists, else ``path``.

    So both a suite's results directory (``results/smoke``) and its records directory
    (``results/smoke/records``) may be given.

    Raises:
        FileNotFoundError: ``path`` is not a directory.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"records directory {path} does not exist")
    sub = path / "records"
    return sub if sub.is_dir() else path


def _where(record: Mapping[str, Any], index: int) -> str:
    return str(record.get(SOURCE_KEY, f"<record {index}>"))


def _check_record(record: Any, where: str) -> None:
    if not isinstance(record, dict):
        raise ValueError(f"record {where}: expected a JSON object, got {type(record).__name__}")
    if record.get("kind", "cell") != "cell":
        raise ValueError(f"record {where}: kind {record.get('kind')!r} is not a cell record")
    for key in _REQUIRED:
        if key not in record:
            raise ValueError(f"record {where}: missing field {key!r}")
    for key in ("method", "model", "budget"):
        if key not in record["config"]:
            raise ValueError(f"record {where}: missing field 'config.{key}'")
    if not isinstance(record["splits"], dict) or not record["splits"]:
        raise ValueError(f"record {where}: 'splits' must be a non-empty object")


def load_records(path: str | Path) -> list[dict[str, Any]]:
    """Read every ``*.json`` record under a records directory (sorted by file name).

    Args:
        path: a records directory, or a suite results directory holding ``records/``.

    Returns:
        The records; each carries the file it came from under ``"_file"``. An empty list
        when the directory holds no records.

    Raises:
        FileNotFoundError: the directory does not exist.
        ValueError: a file that is not valid JSON or lacks a record field (the file and the
            field are named).
    """
    folder = records_dir_of(path)
    records = []
    for file in sorted(folder.glob("*.json")):
        try:
            record = json.loads(file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"record {file} is corrupt: not valid JSON ({exc})") from None
        _check_record(record, str(file))
        record[SOURCE_KEY] = str(file)
        records.append(record)
    return records


def target_label(config: Mapping[str, Any]) -> str:
    """``"4bit"``, ``"cr8"`` or ``"fp32"`` for a record's config (as cell keys spell it)."""
    target = config.get("target")
    if not target:
        return "fp32"
    if target.get("avg_bits") is not None:
        return f"{target['avg_bits']:g}bit"
    return f"cr{target['compression_ratio']:g}"


def split_counts(split: Mapping[str, Any], where: str = "<record>") -> dict[str, int]:
    """S, D, I, reference words and errors of one split, summed from its utterance rows.

    Raises:
        ValueError: missing rows, or sums that disagree with the stored totals.
    """
    rows = split.get("utterances")
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"record {where}: a split has no per-utterance rows")
    try:
        out = {k: sum(int(r[k]) for r in rows) for k in ("n", "s", "d", "i")}
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"record {where}: malformed utterance row ({exc!r})") from None
    out["errors"] = out["s"] + out["d"] + out["i"]
    stored = split.get("totals") or {}
    for key in ("n", "s", "d", "i"):
        if key in stored and int(stored[key]) != out[key]:
            raise ValueError(
                f"record {where}: stored total {key}={stored[key]} disagrees with the "
                f"per-utterance rows ({out[key]}); the record is corrupt"
            )
    return out


def _stage_seconds(stages: Iterable[Mapping[str, Any]], kind: str) -> float:
    return float(sum(s["seconds"] for s in stages if s.get("kind", "qat") == kind))


def device_of(record: Mapping[str, Any]) -> str:
    """The device label of a record: its stages' devices, else its environment's."""
    labels = sorted({s["device"] for s in record.get("stages", []) if s.get("device")})
    if labels:
        return "; ".join(labels)
    dev = (record.get("environment") or {}).get("device") or {}
    if not dev:
        return "unknown"
    text = f"{dev.get('type', '?')}: {dev.get('name', '?')}"
    if dev.get("type") == "cpu" and dev.get("torch_threads"):
        text += f" ({dev['torch_threads']} threads)"
    return text


def _nan(value: Any) -> float:
    return math.nan if value is None else float(value)


def candidates_of(record: Mapping[str, Any]) -> str:
    """The candidate bit-widths of a record's method (``"2,4,8"``), ``""`` when it has none."""
    cands = (record.get("method_config") or {}).get("candidates")
    return ",".join(str(int(b)) for b in cands) if cands else ""


def _log10_p(test: Mapping[str, Any]) -> float:
    """The test's exact ``log10_p``; from ``p_value`` for records older than that field."""
    if test.get("log10_p") is not None:
        return float(test["log10_p"])
    p = test.get("p_value")
    return math.log10(p) if p is not None and p > 0 else math.nan


def record_cr(record: Mapping[str, Any], rule: str = "cr_paper") -> float:
    """A record's compression ratio by ``rule`` (one of :data:`CR_RULES`).

    Records made before ``compression_ratios`` existed quantized only what their
    ``config.groups`` name; with groups ``["blocks"]`` (their default) both rules agree.

    Raises:
        ValueError: an unknown rule, or a record that does not hold the figure.
    """
    if rule not in CR_RULES:
        raise ValueError(f"unknown compression-ratio rule {rule!r}; rules are {list(CR_RULES)}")
    ratios = record.get("compression_ratios")
    if ratios is not None and rule in ratios:
        return float(ratios[rule])
    main = record["compression_ratio"]
    groups = list(record["config"].get("groups") or ["blocks"])
    if rule == main.get("rule", "cr_paper") or (rule == "cr_blocks_only"
                                                and groups == ["blocks"]):
        return float(main["value"])
    raise ValueError(f"{_where(record, 0)}: the record has no {rule!r} figure (groups "
                     f"{groups}); rerun the cell to compute it")


def records_table(records: Iterable[Mapping[str, Any]], *,
                  cr_rule: str = "cr_paper") -> pd.DataFrame:
    """One row per (cell, split); columns :data:`TABLE_COLUMNS`.

    ``cr`` is the compression ratio by ``cr_rule`` (:func:`record_cr`), named in
    ``cr_rule``; ``packed_*`` and ``reload_*`` come from the cell's packed export check
    (NaN / None for the 32-bit reference and records made before it existed).

    WER in the table is a fraction (0.05 = 5 %); seconds are wall clock. The 32-bit
    reference rows have no significance test (``p_value`` NaN, ``significantly_worse``
    False). ``lossless`` is the cell's flag (no split significantly worse than 32-bit; the
    dev split, when evaluated beside others, is left out of it and judged in
    ``lossless_dev``, None where dev was not evaluated; ``verdict_split`` says whether the
    row's split counts for ``lossless``). ``frontier`` is the key of the
    frontier search that ran the cell (None for a fixed-target cell).

    Raises:
        ValueError: a record that lacks a field or whose totals disagree with its rows.
    """
    rows = []
    for index, record in enumerate(records):
        where = _where(record, index)
        _check_record(record, where)
        cfg = record["config"]
        target = cfg.get("target") or {}
        suite = record.get("suite") or {}
        stages = record["stages"]
        git = (record.get("environment") or {}).get("git") or {}
        teacher = sum(s.get("seconds", 0.0) for s in record.get("shared_stages", []))
        export = record.get("export") or {}
        reload = export.get("reload") or {}
        cr = record_cr(record, cr_rule)
        for split_name, split in record["splits"].items():
            counts = split_counts(split, where)
            sig = (record.get("significance") or {}).get(split_name)
            test = sig["mapsswe"] if sig else {}
            boot = sig["bootstrap"] if sig else {}
            rows.append({
                "suite": suite.get("name"),
                "results_name": suite.get("results_name"),
                "label": suite.get("label") or cfg["method"],
                "method": cfg["method"],
                "model": cfg["model"],
                "target": target_label(cfg),
                "target_avg_bits": _nan(target.get("avg_bits")),
                "target_cr": _nan(target.get("compression_ratio")),
                "seed": int(cfg["budget"].get("seed", 0)),
                "groups": "+".join(cfg.get("groups") or ["blocks"]),
                "avg_bits": float(record["avg_bits"]),
                "cr": cr,
                "cr_rule": cr_rule,
                "split": split_name,
                "wer": counts["errors"] / counts["n"] if counts["n"] else math.nan,
                **counts,
                "num_utterances": len(split["utterances"]),
                "num_capped": int(split.get("num_capped", 0)),
                "p_value": _nan(test.get("p_value")),
                "log10_p": _log10_p(test),
                "z": _nan(test.get("z")),
                "better": test.get("better"),
                "boot_diff_pts": _nan(boot.get("diff_pts")),
                "boot_ci_low_pts": _nan(boot.get("ci_low_pts")),
                "boot_ci_high_pts": _nan(boot.get("ci_high_pts")),
                "significantly_worse": bool(sig["significantly_worse"]) if sig else False,
                "lossless": bool(record["lossless"]),
                "lossless_dev": record.get("lossless_dev"),
                "verdict_split": ("lossless_dev" not in record
                                  or split_name != cfg.get("dev_split", "dev")),
                "frontier": suite.get("frontier"),
                "compression_seconds": float(record["compression_seconds"]),
                "search_seconds": _stage_seconds(stages, "search"),
                "qat_seconds": _stage_seconds(stages, "qat"),
                "teacher_seconds": float(teacher),
                "stages": "+".join(s["name"] for s in stages),
                "device": device_of(record),
                "candidates": candidates_of(record),
                "packed_file_bytes": _nan(export.get("file_bytes")),
                "packed_over_accounted": _nan(export.get("file_over_accounted")),
                "reload_identical": _nan(reload.get("identical")),
                "reload_utterances": _nan(reload.get("utterances")),
                "config_hash": record["config_hash"],
                "git_commit": git.get("commit"),
                "git_dirty": git.get("dirty"),
                "record_file": record.get(SOURCE_KEY),
            })
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
