"""Hand-made cell records for report/compare tests, derived from real ones.

``tests/data/cell_records/`` holds records of one real tiny run (see make_cell_records.py
there). The factory deep-copies them and replaces what a test controls: method, label,
target, bits, CR, allocation, stages, and the per-utterance alignments. Significance and
the lossless flag are then computed with the harness's own ``significance`` function from
the alignments, exactly as ``run_cell`` does, so every record is schema-valid and internally
consistent.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mpqbench._atomic import atomic_write_json
from mpqbench.bench.cell import significance

FIXTURES = Path(__file__).resolve().parent / "data" / "cell_records"
SPLITS = ("test-clean", "test-other")
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
         "juliet", "kilo", "lima")


def real_records() -> tuple[dict[str, Any], dict[str, Any]]:
    """The real (fp32, uniform 4-bit) records of the fixture run."""
    load = lambda name: json.loads((FIXTURES / name).read_text())  # noqa: E731
    return load("tiny-ctc__fp32.json"), load("tiny-ctc__uniform_4bit.json")


def _row(utt: str, ref_words: Sequence[str], ops: str) -> dict[str, Any]:
    hyp, k = [], 0
    for op in ops:
        if op == "C":
            hyp.append(ref_words[k])
        elif op == "S":
            hyp.append("zzz")
        elif op == "I":
            hyp.append("yyy")
            continue
        k += 1
    return {"id": utt, "ref": " ".join(ref_words), "hyp": " ".join(hyp), "ops": ops,
            "n": len(ref_words), "s": ops.count("S"), "d": ops.count("D"),
            "i": ops.count("I"), "capped": False}


def _split(template: Mapping[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    totals = {k: sum(r[k] for r in rows) for k in ("n", "s", "d", "i")}
    totals["errors"] = totals["s"] + totals["d"] + totals["i"]
    totals["wer"] = totals["errors"] / totals["n"]
    out = copy.deepcopy(dict(template))
    out.update(utterances=rows, totals=totals, wer=totals["wer"], num_utterances=len(rows),
               num_capped=0)
    return out


def reference_ops(n_utts: int = 60, words: int = 10, error_rate: float = 0.04,
                  seed: int = 0) -> dict[str, tuple[list[str], str]]:
    """utterance id -> (reference words, 32-bit ops) with a few seeded substitutions."""
    rng = random.Random(seed)
    out = {}
    for k in range(n_utts):
        ref = [rng.choice(WORDS) for _ in range(words)]
        ops = "".join("S" if rng.random() < error_rate else "C" for _ in ref)
        out[f"u{k:03d}"] = (ref, ops)
    return out


def degrade_ops(ops: str, rate: float, rng: random.Random) -> str:
    """Turn each correct word into a substitution with probability ``rate``."""
    return "".join("S" if (op == "C" and rng.random() < rate) else op for op in ops)


def _hash(config: Mapping[str, Any]) -> str:
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def make_reference(model: str = "tiny-ctc", *, n_utts: int = 60, seed: int = 0,
                   splits: Iterable[str] = SPLITS) -> dict[str, Any]:
    """A 32-bit reference record with synthetic alignments (about 4 % WER)."""
    fp32, _ = real_records()
    rec = copy.deepcopy(fp32)
    template = fp32["splits"]["test-clean"]
    rec["splits"] = {}
    for j, split in enumerate(splits):
        refs = reference_ops(n_utts=n_utts, seed=seed + 100 * j)
        rec["splits"][split] = _split(template, [_row(u, r, o) for u, (r, o) in refs.items()])
    rec["config"]["model"] = model
    rec["config"]["eval_splits"] = list(rec["splits"])
    rec["config_hash"] = _hash(rec["config"])
    rec["suite"] = {"name": "synthetic", "results_name": "synthetic", "label": "fp32",
                    "file": "synthetic.toml"}
    return rec


def make_cell(
    reference: Mapping[str, Any],
    *,
    method: str,
    target_bits: float,
    avg_bits: float,
    cr: float,
    label: str | None = None,
    seed: int = 0,
    degrade: float | Mapping[str, float] = 0.0,
    allocation: Mapping[str, int | None] | None = None,
    stages: Sequence[tuple[str, str, float]] = (("qat", "qat", 10.0),),
    device: str = "cpu: Test CPU (2 threads)",
    rng_seed: int = 1,
) -> dict[str, Any]:
    """A compressed cell against ``reference``.

    Args:
        reference: the 32-bit record (from :func:`make_reference`).
        method, label, target_bits, seed: identity of the cell (label defaults to method).
        avg_bits, cr: the stored accounting figures.
        degrade: share of the reference's correct words this system gets wrong (per split
            when a mapping); significance against the reference follows from it.
        allocation: layer -> bits (default: every fixture layer at ``round(avg_bits)``).
        stages: (name, kind, seconds) per stage.
        device: the stages' device label.
        rng_seed: seed of the degradation.
    """
    _, real = real_records()
    rec = copy.deepcopy(real)
    rng = random.Random(rng_seed)
    rec["config"]["model"] = reference["config"]["model"]
    rec["config"]["method"] = method
    rec["config"]["target"] = {"avg_bits": target_bits, "compression_ratio": None}
    rec["config"]["budget"]["seed"] = seed
    rec["config"]["eval_splits"] = list(reference["splits"])
    rec["config"]["params"] = {"label": label} if label and label != method else {}
    rec["config_hash"] = _hash(rec["config"])
    layers = allocation or dict.fromkeys(real["allocation"]["layers"], round(avg_bits))
    rec["allocation"]["layers"] = dict(layers)
    rec["avg_bits"] = float(avg_bits)
    rec["compression_ratio"] = {"value": float(cr), "rule": "cr_paper"}
    rec["accounting"]["avg_bits"]["value"] = float(avg_bits)
    rec["accounting"]["cr_paper"]["value"] = float(cr)
    rec["stages"] = [{"name": n, "kind": k, "seconds": float(s), "device": device,
                      "steps": 1, "trials": 0, "evaluations": 0} for n, k, s in stages]
    rec["compression_seconds"] = float(sum(s for _, _, s in stages))
    rec["shared_stages"] = [{"name": "teacher", "seconds": 0.0, "device": device}]
    rec["splits"] = {}
    for split, ref_split in reference["splits"].items():
        rate = degrade[split] if isinstance(degrade, Mapping) else degrade
        rows = [_row(u["id"], u["ref"].split(), degrade_ops(u["ops"], rate, rng))
                for u in ref_split["utterances"]]
        rec["splits"][split] = _split(ref_split, rows)
    rec["significance"] = {s: significance(reference["splits"][s], rec["splits"][s])
                           for s in rec["splits"]}
    rec["lossless"] = not any(v["significantly_worse"] for v in rec["significance"].values())
    rec["suite"] = {"name": "synthetic", "results_name": "synthetic",
                    "label": label or method, "file": "synthetic.toml"}
    return rec


def write_records(folder: Path, records: Iterable[Mapping[str, Any]]) -> Path:
    """Write records as a runner would (``<folder>/<key>.json``); returns ``folder``."""
    for rec in records:
        cfg = rec["config"]
        target = cfg["target"]["avg_bits"] if cfg.get("target") else "fp32"
        name = f"{cfg['model']}__{rec['suite']['label']}__{target}__{rec['config_hash']}.json"
        atomic_write_json(folder / name, {k: v for k, v in rec.items() if k != "_file"})
    return folder


def degrade_record(record: Mapping[str, Any], rate: float, rng_seed: int = 2) -> dict[str, Any]:
    """A copy of ``record`` whose hypotheses get a share ``rate`` of their correct words wrong
    (alignments, hypotheses and totals rewritten together; stored significance untouched)."""
    rng = random.Random(rng_seed)
    out = copy.deepcopy(dict(record))
    for name, split in out["splits"].items():
        rows = [_row(u["id"], u["ref"].split(), degrade_ops(u["ops"], rate, rng))
                for u in split["utterances"]]
        out["splits"][name] = _split(split, rows)
    return out


def add_errors(record: Mapping[str, Any], split: str, utterances: int) -> dict[str, Any]:
    """A copy of ``record`` with one more substitution in each of the first ``utterances``
    utterances of ``split`` that still have a correct word."""
    out = copy.deepcopy(dict(record))
    rows, left = [], utterances
    for u in out["splits"][split]["utterances"]:
        ops = u["ops"]
        if left and "C" in ops:
            k = ops.index("C")
            ops, left = ops[:k] + "S" + ops[k + 1:], left - 1
        rows.append(_row(u["id"], u["ref"].split(), ops))
    out["splits"][split] = _split(out["splits"][split], rows)
    return out
