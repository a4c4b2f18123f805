"""Build small synthetic LibriSpeech-layout corpora on disk for tests."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import soundfile as sf

_FORMATS = {
    "flac": ("FLAC", "PCM_16"),
    "wav": ("WAV", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "opus": ("OGG", "OPUS"),
}


def tone(seconds: float, rate: int = 16000, freq: float = 440.0, amp: float = 0.3) -> np.ndarray:
    """A sine tone, float32."""
    t = np.arange(round(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_audio(path: Path, audio: np.ndarray, rate: int = 16000) -> Path:
    """Write ``audio`` (1-D mono or 2-D ``(frames, channels)``) in the format of its suffix."""
    fmt, subtype = _FORMATS[path.suffix.lstrip(".")]
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, rate, format=fmt, subtype=subtype)
    return path


def make_chapter(
    split_dir: Path,
    speaker: str,
    chapter: str,
    texts: Iterable[str],
    *,
    ext: str = "flac",
    rate: int = 16000,
    seconds: float = 0.5,
) -> list[str]:
    """Write one chapter folder (audio + trans.txt); returns the utterance ids."""
    chapter_dir = split_dir / speaker / chapter
    chapter_dir.mkdir(parents=True, exist_ok=True)
    ids, lines = [], []
    for k, text in enumerate(texts):
        utt_id = f"{speaker}-{chapter}-{k:04d}"
        write_audio(chapter_dir / f"{utt_id}.{ext}", tone(seconds + 0.1 * k, rate), rate)
        ids.append(utt_id)
        lines.append(f"{utt_id} {text}")
    (chapter_dir / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return ids


def make_corpus(root: Path, split: str = "test-clean") -> list[str]:
    """A two-speaker, three-chapter split mixing FLAC, WAV and Opus; returns sorted ids."""
    split_dir = root / split
    ids = make_chapter(split_dir, "19", "198", ["HELLO WORLD", "THE CAT SAT ON THE MAT"])
    ids += make_chapter(split_dir, "19", "227", ["MISTER SMITH PAID TWENTY DOLLARS"], ext="wav")
    ids += make_chapter(
        split_dir, "103", "1240", ["A B C", "ONE TWO THREE", "GOOD MORNING"], ext="opus"
    )
    return sorted(ids)
