"""Fuzz the LibriSpeech reader and its ``*.trans.txt`` parser (issue 6, item 4).

Each case builds one split on disk: odd speaker/chapter/utterance names, audio files that
may lack transcript lines, and a transcript written from structured lines (ids, separators,
texts with unicode whitespace and line-break look-alikes, blank lines, duplicates, unknown
ids, CR/CRLF endings, a BOM, UTF-16/Latin-1 encodings) or from random or damaged bytes.
Scanning must either succeed with exactly the (id, text) pairs the structure says, or raise
a plain ``ValueError``/``FileNotFoundError`` naming a file or directory of the split.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from fuzz_support import FUZZ, clear_error_or_success, damaged_bytes
from mpqbench.workloads.data.librispeech import LibriSpeechSplit

_NAME_CHARS = st.characters(codec="utf-8", exclude_characters="/\x00", exclude_categories=("Cs",))
_DIR_NAMES = st.sampled_from(["19", "198", "103", "1-2", "ü", "a b", "0" * 40, "19"]) | st.text(
    _NAME_CHARS, min_size=1, max_size=5
).filter(lambda s: s not in (".", "..") and len(s.encode()) < 200)
_NICE_SUFFIXES = st.sampled_from(["0000", "0001", "0002", "0003", "0004"])
_UTT_SUFFIXES = _NICE_SUFFIXES | _NICE_SUFFIXES | st.sampled_from(["9" * 30, "x", "é", ""]) | (
    st.text(_NAME_CHARS, min_size=0, max_size=4).filter(lambda s: len(s.encode()) < 200)
)
_NICE_TEXTS = st.sampled_from(["HELLO WORLD", "A", "THE CAT SAT", "MISTER SMITH'S"])
_TEXTS = _NICE_TEXTS | _NICE_TEXTS | st.sampled_from(
    ["  PADDED  ", "TAB\tINSIDE", "", "   ", "UNI\u2028LINE", "NEL\x85X", "FF\x0cX", "GS\x1dX",
     "É À", "\u3000WIDE", "X" * 5000]
) | st.text(st.characters(codec="utf-8", exclude_characters="\n\r", exclude_categories=("Cs",)),
            max_size=20)
_SEPARATORS = st.sampled_from([" ", "\t", "   ", " \t "])


@dataclass
class _Line:
    utt: str | None  # the id written, or None for a blank/whitespace line
    text: str
    sep: str


@st.composite
def _splits(draw: st.DrawFn):
    speaker, chapter = draw(_DIR_NAMES), draw(_DIR_NAMES)
    prefix = f"{speaker}-{chapter}-"
    suffixes = draw(st.lists(_UTT_SUFFIXES, min_size=draw(st.sampled_from([0, 1, 1, 1])),
                             max_size=4, unique=True))
    audio_ids = [prefix + s for s in suffixes]
    ext = draw(st.sampled_from([".flac", ".wav", ".opus", ".FLAC"]))
    lines: list[_Line] = []
    for utt in audio_ids:
        for _ in range(draw(st.sampled_from([1] * 12 + [0, 2]))):  # one line; or missing/dup
            lines.append(_Line(utt, draw(_TEXTS), draw(_SEPARATORS)))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
        kind = draw(st.sampled_from(["blank", "blank", "unknown", "foreign", "noid"]))
        if kind == "blank":
            lines.append(_Line(None, draw(st.sampled_from(["", " ", "\t", "\u3000"])), ""))
        elif kind == "unknown":
            lines.append(_Line(prefix + "nosuch", "TEXT", " "))
        elif kind == "foreign":
            lines.append(_Line("1-1-0001", "TEXT", " "))
        else:
            lines.append(_Line("", draw(_TEXTS), ""))
    lines = draw(st.permutations(lines))
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = newline.join(
        (line.utt or "") + line.sep + line.text if line.utt is not None else line.text
        for line in lines
    ) + draw(st.sampled_from(["", newline]))
    encoding = draw(st.sampled_from(["utf-8"] * 5 + ["utf-8-sig", "utf-16", "latin-1"]))
    try:
        raw = text.encode(encoding)
    except UnicodeEncodeError:
        encoding, raw = "utf-8", text.encode("utf-8")
    how = draw(st.sampled_from(["structured"] * 6 + ["damaged", "random", "no-transcript"]))
    if how == "damaged":
        raw = draw(damaged_bytes(raw))
    elif how == "random":
        raw = draw(st.binary(max_size=300))
    return speaker, chapter, ext, audio_ids, lines, encoding, raw, how


def _expected(prefix, audio_ids, lines, encoding, raw, how):
    """The (id -> text) the split must hold, or None when it must be refused."""
    if how != "structured" or not audio_ids:
        return None  # (damaged or random bytes are checked only for a clear error)
    if encoding not in ("utf-8", "utf-8-sig") and raw != raw.decode("latin-1").encode("utf-8"):
        return None  # UTF-16, or Latin-1 that is not plain ASCII
    if any(any(c.isspace() for c in utt) for utt in audio_ids):
        return None  # an id with whitespace cannot be written as "ID TEXT"
    if prefix in audio_ids:
        return None  # "19-198-.flac": no utterance index
    found: dict[str, str] = {}
    for line in lines:
        if line.utt is None or (line.utt == "" and not line.text.strip()):
            continue  # a blank or whitespace-only line
        if line.utt not in audio_ids or line.utt in found:
            return None  # unknown id, id of another chapter, missing id, or duplicate
        if not line.text.strip():
            return None  # empty reference
        found[line.utt] = line.text.strip()
    if set(found) != set(audio_ids):
        return None
    return found


_counter = itertools.count()


@FUZZ
@given(case=_splits())
def test_split_scan_is_exact_or_fails_naming_the_file(case, tmp_path, flac_bytes):
    speaker, chapter, ext, audio_ids, lines, encoding, raw, how = case
    split = tmp_path / f"case{next(_counter)}" / "test-clean"
    chapter_dir = split / speaker / chapter
    chapter_dir.mkdir(parents=True)
    for utt in audio_ids:
        (chapter_dir / f"{utt}{ext}").write_bytes(flac_bytes)
    trans = chapter_dir / f"{speaker}-{chapter}.trans.txt"
    if how != "no-transcript":
        trans.write_bytes(raw)
    expected = _expected(f"{speaker}-{chapter}-", audio_ids, lines, encoding, raw, how)

    with clear_error_or_success(str(split)) as caught:
        result = LibriSpeechSplit(split.parent, "test-clean")
    event(f"{how}: {'refused' if caught else 'read'}")
    if caught:
        assert expected is None or how != "structured", f"valid split refused: {caught[0]}"
        return
    if how == "structured":
        assert expected is not None, f"an invalid split was read: {raw[:300]!r}"
    got = {e.id: e.text for e in result.entries}
    if expected is not None:
        assert got == expected
    assert result.ids == sorted(got), "utterances are not in id order"
    for entry in result.entries:
        assert entry.path.parent == chapter_dir and entry.transcript == trans
        assert entry.text == entry.text.strip() and entry.text


@pytest.fixture(scope="module")
def flac_bytes(tmp_path_factory):
    from librispeech_tree import tone, write_audio

    return write_audio(tmp_path_factory.mktemp("a") / "t.flac", tone(0.1)).read_bytes()


def test_bom_and_line_break_look_alikes(tmp_path, flac_bytes):
    chapter = tmp_path / "test-clean" / "19" / "198"
    chapter.mkdir(parents=True)
    (chapter / "19-198-0000.flac").write_bytes(flac_bytes)
    (chapter / "19-198-0001.flac").write_bytes(flac_bytes)
    (chapter / "19-198.trans.txt").write_bytes(
        "19-198-0000 A\u2028B\r\n19-198-0001 C\x85D\r\n".encode("utf-8-sig")
    )
    split = LibriSpeechSplit(tmp_path, "test-clean")
    assert [(e.id, e.text) for e in split.entries] == [
        ("19-198-0000", "A\u2028B"), ("19-198-0001", "C\x85D")
    ]


def test_missing_line_names_the_right_transcript(tmp_path, flac_bytes):
    chapter = tmp_path / "test-clean" / "1-2" / "3"  # a speaker name with a dash
    chapter.mkdir(parents=True)
    (chapter / "1-2-3-0000.flac").write_bytes(flac_bytes)
    (chapter / "1-2-3-0001.flac").write_bytes(flac_bytes)
    (chapter / "1-2-3.trans.txt").write_text("1-2-3-0000 HELLO\n")
    with pytest.raises(ValueError, match=r"'1-2-3-0001' .* has no line in .*/1-2-3\.trans\.txt"):
        LibriSpeechSplit(tmp_path, "test-clean")
