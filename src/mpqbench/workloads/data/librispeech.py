"""Reader for the standard LibriSpeech directory layout.

::

    <root>/<split>/<speaker>/<chapter>/<speaker>-<chapter>-<index>.flac
    <root>/<split>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt   # lines "ID TEXT"

Audio may be FLAC, WAV, Ogg Vorbis or Ogg Opus at any sample rate (see
:func:`~mpqbench.workloads.data.audio.read_audio`). Scanning a split reads only directory
listings and transcripts and checks that audio and transcripts pair up one to one; audio
is decoded when an utterance is accessed. Utterances are ordered by id (plain string sort),
so every run sees the same order.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import overload

from mpqbench.workloads.data.audio import AUDIO_EXTENSIONS, audio_num_samples, read_audio
from mpqbench.workloads.data.types import Utterance

_TRANS_SUFFIX = ".trans.txt"


@dataclass(frozen=True)
class UtteranceEntry:
    """A scanned utterance whose audio has not been read yet.

    Attributes:
        id: ``<speaker>-<chapter>-<index>``.
        path: the audio file.
        text: the reference transcript as written in the ``.trans.txt`` file.
        transcript: the ``.trans.txt`` file the text came from.
    """

    id: str
    path: Path
    text: str
    transcript: Path


class LibriSpeechSplit(Sequence[Utterance]):
    """One split of a LibriSpeech-layout corpus, loaded lazily.

    ``split[i]`` reads and resamples the audio of the i-th utterance (by sorted id);
    ``len(split)`` and iteration work as for any sequence.

    Args:
        path: the corpus root (holding ``<split>/``; a ``LibriSpeech/`` folder in between,
            as in the official tarballs, is also accepted), or the split directory itself.
        split: the split name (e.g. ``"test-clean"``); ``None`` when ``path`` is the split
            directory. A path whose own name equals ``split`` is taken as the split directory.

    Raises:
        FileNotFoundError: ``path`` does not exist, or the split directory is missing (the
            message lists the splits that exist).
        ValueError: the split is malformed: an audio file without a transcript line (or
            without an index after ``<speaker>-<chapter>-``), a transcript line without
            audio, an empty reference, a transcript that is not UTF-8 (a leading BOM is
            allowed), a malformed transcript line (file and line number; lines end at
            newlines only), a duplicate id, or no utterances at all.
    """

    def __init__(self, path: str | os.PathLike[str], split: str | None = None) -> None:
        self.directory = _resolve_split_dir(Path(path).expanduser(), split)
        self.name = split if split is not None else self.directory.name
        self._entries: tuple[UtteranceEntry, ...] = tuple(_scan_split(self.directory))

    @classmethod
    def _from_entries(
        cls, directory: Path, name: str, entries: Sequence[UtteranceEntry]
    ) -> LibriSpeechSplit:
        obj = cls.__new__(cls)
        obj.directory = directory
        obj.name = name
        obj._entries = tuple(entries)
        return obj

    @property
    def entries(self) -> tuple[UtteranceEntry, ...]:
        """The scanned utterances (id, audio path, text), in order, without audio."""
        return self._entries

    @property
    def ids(self) -> list[str]:
        """Utterance ids in order."""
        return [e.id for e in self._entries]

    def __len__(self) -> int:
        return len(self._entries)

    @overload
    def __getitem__(self, index: int) -> Utterance: ...

    @overload
    def __getitem__(self, index: slice) -> list[Utterance]: ...

    def __getitem__(self, index: int | slice) -> Utterance | list[Utterance]:
        if isinstance(index, slice):
            return [self._load(e) for e in self._entries[index]]
        return self._load(self._entries[index])

    def __iter__(self) -> Iterator[Utterance]:
        for entry in self._entries:
            yield self._load(entry)

    def num_samples(self, index: int) -> int:
        """Length in 16 kHz samples of utterance ``index``, from the file header (cheap)."""
        return audio_num_samples(self._entries[index].path)

    def subset(self, n: int, seed: int = 0) -> LibriSpeechSplit:
        """A random subset of ``n`` utterances (without replacement), kept in id order.

        Args:
            n: how many utterances; ``n >= len(self)`` returns all of them.
            seed: the sampling seed; the same seed always picks the same utterances.

        Raises:
            ValueError: ``n`` < 1.
        """
        if n < 1:
            raise ValueError(f"subset size must be at least 1, got {n}")
        if n >= len(self._entries):
            return self
        picked = sorted(random.Random(seed).sample(range(len(self._entries)), n))
        return LibriSpeechSplit._from_entries(
            self.directory, self.name, [self._entries[i] for i in picked]
        )

    def __repr__(self) -> str:
        return f"LibriSpeechSplit({str(self.directory)!r}, {len(self)} utterances)"

    @staticmethod
    def _load(entry: UtteranceEntry) -> Utterance:
        return Utterance(id=entry.id, audio=read_audio(entry.path), text=entry.text,
                         path=str(entry.path))


def available_splits(root: str | os.PathLike[str]) -> list[str]:
    """Names of the sub-directories of ``root`` that look like LibriSpeech splits."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir() if d.is_dir() and _looks_like_split(d))


def _looks_like_split(directory: Path) -> bool:
    return any(directory.glob(f"*/*/*{_TRANS_SUFFIX}"))


def _resolve_split_dir(path: Path, split: str | None) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"corpus path does not exist: {path}")
    if not path.is_dir():
        raise FileNotFoundError(f"corpus path is not a directory: {path}")
    if split is None:
        return path
    if "/" in split or "\\" in split or split in ("", ".", ".."):
        raise ValueError(f"split must be a directory name, got {split!r}")
    for candidate in (path / split, path / "LibriSpeech" / split):
        if candidate.is_dir():
            return candidate
    if path.name == split:
        return path
    found = available_splits(path) or available_splits(path / "LibriSpeech")
    listing = ", ".join(found) if found else "none (no <split>/<speaker>/<chapter>/*.trans.txt)"
    raise FileNotFoundError(f"split {split!r} not found under {path}; splits there: {listing}")


def _scan_split(directory: Path) -> list[UtteranceEntry]:
    transcripts: dict[str, tuple[str, Path]] = {}  # id -> (text, trans.txt)
    lines_of: dict[str, int] = {}
    audio: dict[str, Path] = {}
    trans_of: dict[str, Path] = {}  # audio id -> the transcript its line must be in
    chapter_dirs = sorted(d for d in directory.glob("*/*") if d.is_dir())
    for chapter_dir in chapter_dirs:
        speaker, chapter = chapter_dir.parent.name, chapter_dir.name
        prefix = f"{speaker}-{chapter}-"
        trans = chapter_dir / f"{speaker}-{chapter}{_TRANS_SUFFIX}"
        chapter_audio = _chapter_audio(chapter_dir, prefix)
        for utt_id, file in chapter_audio.items():
            if utt_id in audio:
                raise ValueError(f"duplicate utterance id {utt_id!r}: {audio[utt_id]} and {file}")
            audio[utt_id] = file
            trans_of[utt_id] = trans
        if not trans.is_file():
            if chapter_audio:
                first = sorted(chapter_audio)[0]
                raise ValueError(
                    f"utterance {first!r} has no transcript: {trans} does not exist"
                )
            continue
        for line_no, utt_id, text in _parse_transcript(trans, prefix):
            if utt_id in transcripts:
                raise ValueError(
                    f"duplicate utterance id {utt_id!r} in {trans} line {line_no} "
                    f"(first at {transcripts[utt_id][1]} line {lines_of[utt_id]})"
                )
            transcripts[utt_id] = (text, trans)
            lines_of[utt_id] = line_no

    for utt_id in sorted(audio):
        if utt_id not in transcripts:
            raise ValueError(
                f"utterance {utt_id!r} ({audio[utt_id]}) has no line in {trans_of[utt_id]}"
            )
    for utt_id in sorted(transcripts):
        if utt_id not in audio:
            _, trans = transcripts[utt_id]
            raise ValueError(
                f"utterance {utt_id!r} ({trans} line {lines_of[utt_id]}) has no audio file "
                f"{utt_id}{{{','.join(AUDIO_EXTENSIONS)}}} in {trans.parent}"
            )
    if not audio:
        raise ValueError(
            f"no utterances in {directory} (expected <speaker>/<chapter>/ folders with audio "
            f"and a <speaker>-<chapter>{_TRANS_SUFFIX})"
        )
    return [
        UtteranceEntry(id=i, path=audio[i], text=transcripts[i][0], transcript=transcripts[i][1])
        for i in sorted(audio)
    ]


def _chapter_audio(chapter_dir: Path, prefix: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for file in sorted(chapter_dir.iterdir()):
        suffix = file.suffix.lower()
        if suffix not in AUDIO_EXTENSIONS or not file.name.startswith(prefix):
            continue
        utt_id = file.name[: -len(file.suffix)]
        if utt_id == prefix:
            raise ValueError(f"audio file {file} has no utterance index after {prefix!r}")
        if utt_id in found:
            raise ValueError(f"duplicate utterance id {utt_id!r}: {found[utt_id]} and {file}")
        found[utt_id] = file
    return found


def _parse_transcript(trans: Path, prefix: str) -> Iterator[tuple[int, str, str]]:
    id_pattern = re.compile(re.escape(prefix) + r"\S+$")
    try:
        content = trans.read_text(encoding="utf-8-sig")  # a leading BOM is not part of an id
    except UnicodeDecodeError as exc:
        raise ValueError(f"transcript {trans} is not UTF-8 text: {exc}") from exc
    # Lines end at "\n" only (read_text already turned "\r\n" and "\r" into "\n"):
    # str.splitlines() would also break at \x0b, \x1c, \x85, \u2028 ... inside a reference,
    # which misnumbers lines and splits one utterance's text into a bogus second line.
    for line_no, line in enumerate(content.split("\n"), start=1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        utt_id = parts[0]
        if not id_pattern.match(utt_id):
            raise ValueError(
                f"malformed line {line_no} in {trans}: expected 'ID TEXT' with an id starting "
                f"{prefix!r}, got {line.strip()[:60]!r}"
            )
        text = parts[1].strip() if len(parts) > 1 else ""
        if not text:
            raise ValueError(
                f"utterance {utt_id!r} has an empty reference ({trans} line {line_no})"
            )
        yield line_no, utt_id, text


__all__ = ["LibriSpeechSplit", "UtteranceEntry", "available_splits"]
