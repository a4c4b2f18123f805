"""Generate the embedded speech corpus of mpqbench, deterministically, from committed text.

Usage::

    python scripts/make_corpus.py --out src/mpqbench/corpus/embedded [--overwrite]
    python scripts/make_corpus.py --check-tools

The sentences in ``scripts/corpus_text/{train,dev,test-clean,test-other}.txt`` (one per
line) are spoken by Debian's text-to-speech engines (flite, espeak-ng, festival), one
utterance per sentence, and the 5 LibriVox read-speech utterances of Debian's
``pocketsphinx-testdata`` form the ``real`` split. Output is the standard LibriSpeech layout
``<split>/<speaker>/<chapter>/<speaker>-<chapter>-<idx4>.opus`` plus one
``<speaker>-<chapter>.trans.txt`` per chapter, and ``manifest.json`` at the root.

Speaker id = one TTS voice; chapter id = one acoustic condition (1 clean, 2 pink noise at
15 dB SNR; the real split is speaker 900, chapter 1). Utterance indices are numbered across
all splits, so every id is unique in the whole corpus. Voices and conditions are assigned to
sentences by a seeded hash order and round-robin over a fixed list of (voice, condition)
cells, so each split is balanced over its cells.

Processing of each TTS utterance: synthesis to WAV, float32 mono, resampling to 16 kHz with
soxr (quality "HQ"), trimming of leading/trailing silence to at most 0.2 s, peak level
normalised to -6 dBFS, then (for a noise condition) seeded pink noise added at the stated
SNR (speech power over the trimmed clip), then Ogg Opus encoding through libsndfile at a
fixed bitrate. libsndfile draws the Ogg stream serial number from the clock, so the serial
is rewritten to a value derived from the utterance id (page CRCs recomputed): re-running on
the same machine with the same package versions gives byte-identical files.

Needs (Debian/Ubuntu; this script installs nothing)::

    apt-get install -y flite espeak-ng festival festvox-us-slt-hts festvox-kallpc16k \\
        pocketsphinx-testdata

and the Python packages numpy, soundfile (libsndfile >= 1.1 with Opus), soxr, tqdm and
mpqbench itself (``pip install -e .``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import logging
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from corpus_audio import (
    PEAK_LEVEL,
    SAMPLE_RATE,
    TRIM_PAD_S,
    add_noise,
    encode_flac,
    encode_opus,
    normalize_peak,
    opus_vendor,
    to_16k,
    trim_silence,
)
from tqdm import tqdm

from mpqbench._atomic import atomic_write_bytes, atomic_write_json, atomic_write_text

LOG = logging.getLogger("make_corpus")

GENERATOR_VERSION = "3"
SEED = 20250611
OPUS_BITRATE_BPS = 32000
SPLITS = ("train", "dev", "test-clean", "test-other")
REAL_SPLIT = "real"
APT_PACKAGES = (
    "flite",
    "espeak-ng",
    "festival",
    "festvox-us-slt-hts",
    "festvox-kallpc16k",
    "pocketsphinx-testdata",
)
APT_HINT = "apt-get update && apt-get install -y " + " ".join(APT_PACKAGES)
LIBRIVOX_DIR = Path("/usr/share/pocketsphinx/test/data/librivox")
REAL_SPEAKER, REAL_CHAPTER = 900, 1
TEXT_DIR = Path(__file__).resolve().parent / "corpus_text"

LICENSES = {
    "text": "sentences written for mpqbench (scripts/corpus_text), project licence (MIT)",
    "flite": "flite and its voices (slt, rms, awb, kal16): CMU/BSD-style free licence",
    "festival": "festival voices cmu_us_slt_arctic_hts and kal_diphone: free (BSD-style)",
    "espeak-ng": "espeak-ng (GPL-3+); its synthesised output carries no licence restriction",
    "real": (
        "5 LibriVox recordings (public domain) of Sense and Sensibility, chapter 1, "
        "as packaged in Debian pocketsphinx-testdata (packaging BSD-2, CMU)"
    ),
}


@dataclass(frozen=True)
class Voice:
    """A TTS voice, one LibriSpeech speaker id."""

    key: str
    speaker: int
    engine: str
    name: str


@dataclass(frozen=True)
class Condition:
    """An acoustic condition, one LibriSpeech chapter id (``snr_db`` None = clean)."""

    key: str
    chapter: int
    snr_db: float | None


VOICES = {
    v.key: v
    for v in (
        Voice("flite-slt", 101, "flite", "slt"),
        Voice("flite-rms", 102, "flite", "rms"),
        Voice("flite-awb", 103, "flite", "awb"),
        Voice("flite-kal16", 104, "flite", "kal16"),
        Voice("festival-slt-hts", 201, "festival", "cmu_us_slt_arctic_hts"),
        Voice("festival-kal", 202, "festival", "kal_diphone"),
        Voice("espeak-en-us", 301, "espeak-ng", "en-us"),
        Voice("espeak-en-gb-x-rp", 303, "espeak-ng", "en-gb-x-rp"),
        Voice("espeak-en-us+m3", 304, "espeak-ng", "en-us+m3"),
        Voice("espeak-en-us+f3", 305, "espeak-ng", "en-us+f3"),
    )
}
CONDITIONS = {
    c.key: c
    for c in (
        Condition("clean", 1, None),
        Condition("pink-15dB", 2, 15.0),
    )
}

Cell = tuple[str, str]  # (voice key, condition key)
# Measured with scripts/calibrate_corpus.py (32-bit whisper-tiny.en, greedy, Whisper English
# normaliser) on two builds with different sentence-to-voice assignments (21-77 utterances
# per cell each), clean: festival-slt-hts 7.8 / 4.9%, flite-rms 7.7 / 8.3%, flite-awb
# 10.0 / 13.5%, flite-slt 10.3 / 7.4%, flite-kal16 15.8 / 23.5%, festival-kal 18.8 / 19.9%,
# espeak-ng en-gb-x-rp 22.9 / 31.8%, en-us 24.0 / 24.0%, en-us+m3 25.4 / 24.0%, en-us+f3
# 27.0 / 34.4%, en-gb 29.8% (dropped: hardest); pink noise at 15 dB: festival-slt-hts
# 8.3%, flite-rms 12.5%, flite-awb 23.4%, flite-slt 29.0%. flite awb and slt (clean) go to
# "other": with them test-clean measured 9.0%, too near the 10% ceiling.
CLEAN_CELLS: tuple[Cell, ...] = (
    ("festival-slt-hts", "clean"),
    ("flite-rms", "clean"),
)
OTHER_CELLS: tuple[Cell, ...] = (
    ("espeak-en-us", "clean"),
    ("espeak-en-gb-x-rp", "clean"),
    ("espeak-en-us+m3", "clean"),
    ("espeak-en-us+f3", "clean"),
    ("festival-kal", "clean"),
    ("flite-kal16", "clean"),
    ("flite-slt", "clean"),
    ("flite-awb", "clean"),
    ("flite-slt", "pink-15dB"),
    ("flite-rms", "pink-15dB"),
    ("flite-awb", "pink-15dB"),
    ("festival-slt-hts", "pink-15dB"),
)
#: Per split, the groups of cells; sentence k (in seeded hash order) goes to group
#: ``k % len(groups)`` and, within it, to cell ``(k // len(groups)) % len(group)``.
SPLIT_PLANS: dict[str, tuple[tuple[Cell, ...], ...]] = {
    "train": (CLEAN_CELLS, OTHER_CELLS),
    "dev": (CLEAN_CELLS, OTHER_CELLS),
    "test-clean": (CLEAN_CELLS,),
    "test-other": (OTHER_CELLS,),
}


class ToolMissingError(RuntimeError):
    """A TTS engine, voice or data package is not installed."""


@dataclass(frozen=True)
class Job:
    """One TTS utterance to produce."""

    split: str
    utt_id: str
    text: str
    voice: Voice
    condition: Condition

    @property
    def rel_dir(self) -> str:
        return f"{self.split}/{self.voice.speaker}/{self.condition.chapter}"


# --------------------------------------------------------------------------- planning


def read_sentences(text_dir: Path, split: str) -> list[str]:
    """Read one split's sentences (one per non-empty line).

    Raises:
        FileNotFoundError: the text file is missing.
        ValueError: a sentence is repeated within the split.
    """
    path = text_dir / f"{split}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"sentence file {path} does not exist")
    sentences = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    sentences = [s for s in sentences if s]
    if len(set(sentences)) != len(sentences):
        raise ValueError(f"{path}: a sentence appears twice")
    return sentences


def _hash_int(*parts: object) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little")


def plan_jobs(sentences: dict[str, list[str]]) -> list[Job]:
    """Assign a voice and condition to every sentence and number the utterances.

    Args:
        sentences: split name -> its sentences, for every split in ``SPLITS``.

    Returns:
        Jobs in split order then sentence-file order; the utterance index counts up per
        (speaker, chapter) across all splits, so ids are unique corpus-wide.

    Raises:
        ValueError: a sentence occurs in two splits.
    """
    seen: dict[str, str] = {}
    for split in SPLITS:
        for s in sentences[split]:
            if s in seen:
                raise ValueError(f"sentence in both {seen[s]} and {split}: {s!r}")
            seen[s] = split
    jobs: list[Job] = []
    counters: dict[tuple[int, int], int] = {}
    for split in SPLITS:
        groups = SPLIT_PLANS[split]
        order = sorted(range(len(sentences[split])), key=lambda i, sp=split: _hash_int(SEED, sp, i))
        cell_of: dict[int, Cell] = {}
        for k, i in enumerate(order):
            group = groups[k % len(groups)]
            cell_of[i] = group[(k // len(groups)) % len(group)]
        for i, text in enumerate(sentences[split]):
            voice_key, cond_key = cell_of[i]
            voice, cond = VOICES[voice_key], CONDITIONS[cond_key]
            n = counters.get((voice.speaker, cond.chapter), 0)
            counters[(voice.speaker, cond.chapter)] = n + 1
            utt_id = f"{voice.speaker}-{cond.chapter}-{n:04d}"
            jobs.append(Job(split, utt_id, text, voice, cond))
    return jobs


# --------------------------------------------------------------------------- synthesis


def _tts_command(voice: Voice, text_file: Path, wav_file: Path) -> list[str]:
    if voice.engine == "flite":
        return ["flite", "-voice", voice.name, "-f", str(text_file), "-o", str(wav_file)]
    if voice.engine == "espeak-ng":
        return ["espeak-ng", "-v", voice.name, "-f", str(text_file), "-w", str(wav_file)]
    if voice.engine == "festival":
        return ["text2wave", "-eval", f"(voice_{voice.name})", str(text_file), "-o", str(wav_file)]
    raise ValueError(f"unknown TTS engine {voice.engine!r}")


def synthesize(voice: Voice, text: str, workdir: Path) -> tuple[np.ndarray, int]:
    """Speak ``text`` with ``voice``; return (float32 mono audio, sample rate).

    Raises:
        ToolMissingError: the engine or voice is not installed.
        RuntimeError: the engine failed or wrote no audio.
    """
    text_file = workdir / "in.txt"
    wav_file = workdir / "out.wav"
    text_file.write_text(text + "\n", encoding="utf-8")
    wav_file.unlink(missing_ok=True)
    cmd = _tts_command(voice, text_file, wav_file)
    if shutil.which(cmd[0]) is None:
        raise ToolMissingError(f"{cmd[0]} ({voice.engine}) is not installed; run: {APT_HINT}")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    err = (proc.stderr + proc.stdout).strip()
    if voice.engine == "festival" and ("unbound variable" in err or "SIOD ERROR" in err):
        raise ToolMissingError(
            f"festival voice {voice.name} is not installed ({err[:200]}); run: {APT_HINT}"
        )
    if voice.engine == "flite" and "not found" in err.lower():
        raise ToolMissingError(f"flite voice {voice.name} is not available: {err[:200]}")
    if proc.returncode != 0 or not wav_file.is_file() or wav_file.stat().st_size <= 44:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}): {err[:300]}")
    audio, sr = sf.read(wav_file, dtype="float32", always_2d=True)
    return audio.mean(axis=1).astype(np.float32), int(sr)


# --------------------------------------------------------------------------- per utterance


def render(job: Job, workdir: Path, bitrate_bps: int) -> tuple[bytes, float]:
    """Synthesize, condition and encode one utterance; return (file bytes, duration s).

    ``bitrate_bps`` 0 writes lossless FLAC instead of Opus (to measure the codec's effect).
    """
    audio, sr = synthesize(job.voice, job.text, workdir)
    audio = normalize_peak(trim_silence(to_16k(audio, sr)))
    if job.condition.snr_db is not None:
        audio = add_noise(audio, job.condition.snr_db, _hash_int(SEED, "noise", job.utt_id))
        peak = float(np.max(np.abs(audio)))
        if peak > 0.98:
            audio = (audio * (0.98 / peak)).astype(np.float32)
    data = encode_opus(audio, job.utt_id, bitrate_bps) if bitrate_bps else encode_flac(audio)
    return data, len(audio) / SAMPLE_RATE


def _render_many(jobs: list[Job], bitrate_bps: int, workers: int) -> list[tuple[bytes, float]]:
    results: list[tuple[bytes, float] | None] = [None] * len(jobs)
    with tempfile.TemporaryDirectory(prefix="make_corpus.") as tmp:
        dirs = [Path(tmp) / f"w{i}" for i in range(len(jobs))]

        def work(i: int) -> tuple[int, tuple[bytes, float]]:
            dirs[i].mkdir()
            try:
                return i, render(jobs[i], dirs[i], bitrate_bps)
            finally:
                shutil.rmtree(dirs[i], ignore_errors=True)

        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(work, i) for i in range(len(jobs))]
            with tqdm(total=len(jobs), desc="synthesizing", unit="utt") as bar:
                for fut in concurrent.futures.as_completed(futures):
                    i, res = fut.result()
                    results[i] = res
                    bar.update(1)
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


# --------------------------------------------------------------------------- real split


def read_librivox(librivox_dir: Path = LIBRIVOX_DIR) -> list[tuple[str, str, np.ndarray]]:
    """The pocketsphinx-testdata LibriVox utterances: (source name, transcript, 16 kHz audio).

    Raises:
        ToolMissingError: pocketsphinx-testdata is not installed.
        ValueError: its transcription file does not list a wav file.
    """
    trans = librivox_dir / "transcription"
    if not trans.is_file():
        raise ToolMissingError(f"{trans} not found (pocketsphinx-testdata); run: {APT_HINT}")
    out = []
    for line in trans.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        body, _, name = line.rpartition("(")
        name = name.rstrip(")").strip()
        text = " ".join(w for w in body.split() if w not in ("<s>", "</s>"))
        wav = librivox_dir / f"{name}.wav"
        if not wav.is_file():
            raise ValueError(f"{trans} lists {name} but {wav} does not exist")
        audio, sr = sf.read(wav, dtype="float32", always_2d=True)
        out.append((name, text, to_16k(audio.mean(axis=1).astype(np.float32), int(sr))))
    return sorted(out)


# --------------------------------------------------------------------------- versions


def _first_line(cmd: list[str], containing: str = "") -> str | None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    lines = [ln for ln in lines if containing in ln] or lines
    return lines[0] if lines else None


def tool_versions() -> dict[str, object]:
    """Versions of every tool and library that shapes the output bytes."""
    debian: dict[str, str | None] = {}
    for pkg in APT_PACKAGES:
        v = _first_line(["dpkg-query", "-W", "-f=${Version}\n", pkg])
        debian[pkg] = v if v and "no packages" not in v.lower() else None
    return {
        "debian_packages": debian,
        "flite": _first_line(["flite", "--version"], containing="version"),
        "espeak-ng": _first_line(["espeak-ng", "--version"]),
        "festival": _first_line(["festival", "--version"]),
        "libsndfile": sf.__libsndfile_version__,
        "soundfile": sf.__version__,
        "soxr": soxr.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def check_tools() -> list[str]:
    """Synthesize a short phrase with every voice; return a list of problems (empty = ok)."""
    problems = []
    with tempfile.TemporaryDirectory(prefix="make_corpus.check.") as tmp:
        for voice in VOICES.values():
            try:
                audio, sr = synthesize(voice, "This is a test.", Path(tmp))
                LOG.info("%-18s ok: %.2f s at %d Hz", voice.key, len(audio) / sr, sr)
            except (ToolMissingError, RuntimeError) as exc:
                problems.append(f"{voice.key}: {exc}")
    try:
        n = len(read_librivox())
        LOG.info("pocketsphinx-testdata ok: %d LibriVox utterances", n)
    except (ToolMissingError, ValueError) as exc:
        problems.append(f"real split: {exc}")
    try:
        encode_opus(np.zeros(SAMPLE_RATE, dtype=np.float32), "0-0-0000", OPUS_BITRATE_BPS)
    except Exception as exc:  # libsndfile without Opus raises a soundfile/RuntimeError
        problems.append(f"libsndfile {sf.__libsndfile_version__} cannot write Ogg Opus: {exc}")
    return problems


# --------------------------------------------------------------------------- driver


def _file_entry(rel: str, data: bytes, **fields: object) -> dict[str, object]:
    return {"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), **fields}


def generate(out: Path, text_dir: Path, bitrate_bps: int, workers: int) -> dict[str, object]:
    """Write the whole corpus under ``out`` (which must not exist); return the manifest."""
    sentences = {split: read_sentences(text_dir, split) for split in SPLITS}
    jobs = plan_jobs(sentences)
    LOG.info("planned %d TTS utterances (%s)", len(jobs),
             ", ".join(f"{s} {len(sentences[s])}" for s in SPLITS))
    rendered = _render_many(jobs, bitrate_bps, workers)

    files: list[dict[str, object]] = []
    transcripts: dict[str, list[str]] = {}
    for job, (data, duration) in zip(jobs, rendered, strict=True):
        rel = f"{job.rel_dir}/{job.utt_id}.{'opus' if bitrate_bps else 'flac'}"
        atomic_write_bytes(out / rel, data)
        trans = f"{job.rel_dir}/{job.voice.speaker}-{job.condition.chapter}.trans.txt"
        transcripts.setdefault(trans, []).append(f"{job.utt_id} {job.text}")
        files.append(_file_entry(
            rel, data, split=job.split, id=job.utt_id, engine=job.voice.engine,
            voice=job.voice.name, voice_key=job.voice.key, condition=job.condition.key,
            snr_db=job.condition.snr_db, noise="pink" if job.condition.snr_db else None,
            duration_s=round(duration, 4), text=job.text,
        ))
    for n, (name, text, audio) in enumerate(read_librivox()):
        utt_id = f"{REAL_SPEAKER}-{REAL_CHAPTER}-{n:04d}"
        rel_dir = f"{REAL_SPLIT}/{REAL_SPEAKER}/{REAL_CHAPTER}"
        data = encode_flac(audio)
        atomic_write_bytes(out / f"{rel_dir}/{utt_id}.flac", data)
        trans = f"{rel_dir}/{REAL_SPEAKER}-{REAL_CHAPTER}.trans.txt"
        transcripts.setdefault(trans, []).append(f"{utt_id} {text}")
        files.append(_file_entry(
            f"{rel_dir}/{utt_id}.flac", data, split=REAL_SPLIT, id=utt_id, engine="human",
            voice="librivox", voice_key="librivox", condition="real", snr_db=None, noise=None,
            duration_s=round(len(audio) / SAMPLE_RATE, 4), text=text, source=name,
        ))
    for rel, lines in sorted(transcripts.items()):
        atomic_write_text(out / rel, "\n".join(sorted(lines)) + "\n")

    splits: dict[str, dict[str, object]] = {}
    for split in (*SPLITS, REAL_SPLIT):
        mine = [f for f in files if f["split"] == split]
        splits[split] = {
            "utterances": len(mine),
            "audio_bytes": sum(int(f["bytes"]) for f in mine),  # type: ignore[call-overload]
            "duration_s": round(sum(float(f["duration_s"]) for f in mine), 2),  # type: ignore[arg-type]
        }
    opus_files = [d for (d, _) in rendered]
    manifest = {
        "format": "mpqbench-embedded-corpus",
        "generator": {
            "script": "scripts/make_corpus.py",
            "version": GENERATOR_VERSION,
            "seed": SEED,
            "sample_rate": SAMPLE_RATE,
            "codec": {"tts": "Ogg Opus" if bitrate_bps else "FLAC PCM_16",
                      "real": "FLAC PCM_16"},
            "opus_bitrate_bps": bitrate_bps,
            "opus_encoder": opus_vendor(opus_files[0]) if opus_files else None,
            "trim_pad_s": TRIM_PAD_S,
            "peak_level": PEAK_LEVEL,
            "tools": tool_versions(),
        },
        "reference_text": "as written in scripts/corpus_text (case and punctuation kept)",
        "licenses": LICENSES,
        "voices": {v.key: {"speaker": v.speaker, "engine": v.engine, "voice": v.name}
                   for v in VOICES.values()},
        "conditions": {c.key: {"chapter": c.chapter, "snr_db": c.snr_db}
                       for c in CONDITIONS.values()},
        "splits": splits,
        "total_audio_bytes": sum(int(f["bytes"]) for f in files),  # type: ignore[call-overload]
        "files": sorted(files, key=lambda f: (str(f["split"]), str(f["id"]))),
    }
    atomic_write_json(out / "manifest.json", manifest)
    atomic_write_text(out / "README.md", corpus_readme(manifest))
    return manifest


def corpus_readme(manifest: dict[str, object]) -> str:
    """The README.md written beside the corpus: provenance, licences, split sizes."""
    gen = manifest["generator"]
    lines = [
        "# mpqbench embedded corpus",
        "",
        "Generated by `scripts/make_corpus.py` (see `scripts/make_corpus.md`); do not edit by",
        "hand. Standard LibriSpeech layout: `<split>/<speaker>/<chapter>/` with audio files",
        "and `<speaker>-<chapter>.trans.txt`. Speaker = TTS voice, chapter = condition",
        "(1 clean, 2 pink noise at 15 dB SNR); `manifest.json` lists every file with its",
        "sha256, engine, voice, condition, duration and sentence.",
        "",
        f"TTS audio: 16 kHz mono Ogg Opus at {gen['opus_bitrate_bps']} bit/s "  # type: ignore[index]
        "(the `real` split: FLAC).",
        "Reference text: the sentence as written (case and punctuation kept); score with",
        "Whisper's English normaliser on both sides.",
        "",
        "| split | utterances | duration (s) | bytes |",
        "|---|---|---|---|",
    ]
    for split, info in manifest["splits"].items():  # type: ignore[union-attr]
        lines.append(f"| {split} | {info['utterances']} | {info['duration_s']} | "
                     f"{info['audio_bytes']} |")
    lines += ["", "## Licences", ""]
    lines += [f"- {k}: {v}" for k, v in LICENSES.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="corpus root to write (e.g. "
                        "src/mpqbench/corpus/embedded)")
    parser.add_argument("--text-dir", type=Path, default=TEXT_DIR,
                        help="folder with <split>.txt sentence files (default: %(default)s)")
    parser.add_argument("--bitrate", type=int, default=OPUS_BITRATE_BPS,
                        help="Opus bitrate in bit/s; 0 = lossless FLAC, for measuring the "
                        "codec's effect only (default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=2, help="parallel TTS processes")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing corpus at --out (one holding manifest.json)")
    parser.add_argument("--check-tools", action="store_true",
                        help="only check that every TTS voice and data package works")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    problems = check_tools()
    if problems:
        for p in problems:
            LOG.error("%s", p)
        LOG.error("missing tools; install them with: %s", APT_HINT)
        return 2
    if args.check_tools:
        LOG.info("all tools present")
        return 0
    if args.out is None:
        parser.error("--out is required (unless --check-tools)")
    out: Path = args.out
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            LOG.error("%s exists and is not empty; pass --overwrite to replace it", out)
            return 2
        if not (out / "manifest.json").is_file():
            LOG.error("refusing to replace %s: it holds no manifest.json (not a corpus)", out)
            return 2
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        manifest = generate(partial, args.text_dir, args.bitrate, args.jobs)
    except (ToolMissingError, FileNotFoundError, ValueError) as exc:
        LOG.error("%s", exc)
        shutil.rmtree(partial, ignore_errors=True)
        return 2
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
    for split, info in manifest["splits"].items():  # type: ignore[union-attr]
        LOG.info("%-10s %4d utterances %8.1f s %9d bytes", split, info["utterances"],
                 info["duration_s"], info["audio_bytes"])
    LOG.info("total audio %.2f MB in %s", manifest["total_audio_bytes"] / 1e6, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
