"""Fuzz the audio reader (issue 6, item 4): clear errors naming the file, or correct audio.

Inputs: random bytes under every audio suffix; valid FLAC/WAV/Ogg Vorbis/Ogg Opus files
truncated, with flipped or spliced bytes, or behind a junk prefix; hand-built WAV headers
with huge or zero channel counts, rates, sizes and bit depths. ``read_audio`` and
``audio_num_samples`` must either succeed (finite float32 mono audio; a truncated file
that still decodes must decode to exactly the original samples) or raise a plain
``ValueError`` naming the file.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import soundfile as sf
from hypothesis import event, given
from hypothesis import strategies as st

from fuzz_support import FUZZ, clear_error_or_success, damaged_bytes
from librispeech_tree import tone
from mpqbench.workloads.data.audio import AUDIO_EXTENSIONS, audio_num_samples, read_audio

_FORMATS = {  # suffix -> (format, subtype, rate, channels)
    ".flac": ("FLAC", "PCM_16", 16000, 1),
    ".wav": ("WAV", "PCM_16", 22050, 2),
    ".ogg": ("OGG", "VORBIS", 16000, 1),
    ".opus": ("OGG", "OPUS", 48000, 1),
}


def _encode(suffix: str) -> bytes:
    fmt, subtype, rate, channels = _FORMATS[suffix]
    audio = tone(0.25, rate)
    if channels == 2:
        audio = np.stack([audio, 0.5 * audio], axis=1)
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def _with_trailing_chunk(wav: bytes) -> bytes:
    """A WAV with a LIST chunk after the data chunk (as many editors write)."""
    extra = b"LIST" + struct.pack("<I", 12) + b"INFOISFT\x00\x00\x00\x00"
    body = wav[12:] + extra
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


_VALID = {suffix: _encode(suffix) for suffix in _FORMATS}
_VALID[".wav-list"] = _with_trailing_chunk(_VALID[".wav"])


def _reference(data: bytes) -> np.ndarray:
    """Decode a known-good file the plain way, for comparing what the reader returns."""
    path_like = io.BytesIO(data)
    samples, rate = sf.read(path_like, dtype="float32", always_2d=True)
    import soxr

    mono = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    return soxr.resample(mono, rate, 16000, quality="HQ") if rate != 16000 else mono


_REFERENCE = {key: _reference(data) for key, data in _VALID.items()}

_U32 = st.sampled_from([0, 1, 2, 3, 8, 16, 44, 1000, 16000, 2**31 - 1, 2**31, 2**32 - 1])
_U16 = st.sampled_from([0, 1, 2, 3, 8, 16, 24, 32, 64, 255, 2**15, 2**16 - 1])


@st.composite
def _wav_headers(draw: st.DrawFn) -> bytes:
    """A RIFF/WAVE file built field by field, with huge and zero values allowed."""
    fmt_tag = draw(st.sampled_from([1, 3, 0, 2, 0xFFFE, 0xFFFF]))
    channels, bits = draw(_U16), draw(_U16)
    rate = draw(_U32 | st.integers(0, 2**32 - 1))
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, draw(_U32), draw(_U16), bits)
    fmt_size = draw(st.sampled_from([16, len(fmt), 0, 2**32 - 1, 18]))
    payload = draw(st.binary(max_size=512))
    data_size = draw(st.sampled_from([len(payload), 0, 2**32 - 1, len(payload) + 1]) | _U32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", fmt_size) + fmt
    body += b"data" + struct.pack("<I", data_size) + payload
    riff_size = draw(st.sampled_from([len(body), 0, 2**32 - 1]))
    return b"RIFF" + struct.pack("<I", riff_size) + body


@st.composite
def _audio_files(draw: st.DrawFn) -> tuple[str, bytes, str | None]:
    """(suffix, bytes, key of the valid file it was truncated from or None)."""
    how = draw(st.sampled_from(["random", "damaged", "truncated", "wav-header", "valid"]))
    suffix = draw(st.sampled_from(AUDIO_EXTENSIONS))
    if how == "random":
        return suffix, draw(st.binary(max_size=600)), None
    if how == "wav-header":
        return ".wav", draw(_wav_headers()), None
    key = draw(st.sampled_from(sorted(_VALID)))
    valid = _VALID[key]
    suffix = key.split("-")[0]
    if how == "valid":
        return suffix, valid, key
    if how == "truncated":
        return suffix, valid[: draw(st.integers(0, len(valid) - 1))], key
    return suffix, draw(damaged_bytes(valid)), None


@FUZZ
@given(case=_audio_files())
def test_audio_files_decode_correctly_or_fail_naming_the_file(case, tmp_path):
    suffix, data, truncated_from = case
    path = tmp_path / "ü dir" / f"19-198-0000{suffix}"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)

    with clear_error_or_success(str(path)) as caught:
        audio = read_audio(path)
    event(f"read_audio {'refused' if caught else 'read'} ({'cut' if truncated_from else 'other'})")
    if not caught:
        assert audio.dtype == np.float32 and audio.ndim == 1 and audio.size > 0
        assert np.isfinite(audio).all()
        if truncated_from is not None:
            # a cut that the reader accepts must have lost nothing (e.g. a trailing chunk)
            np.testing.assert_array_equal(audio, _REFERENCE[truncated_from])

    with clear_error_or_success(str(path)) as caught_header:
        n = audio_num_samples(path)
    if not caught_header:
        assert isinstance(n, int) and n >= 0
        if not caught:
            assert abs(n - audio.size) <= 1, (n, audio.size)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.flac"):
        read_audio(tmp_path / "missing.flac")
    with pytest.raises(ValueError, match=r"missing\.flac"):
        audio_num_samples(tmp_path / "missing.flac")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.wav"):
        read_audio(tmp_path / "empty.wav")
    with pytest.raises(ValueError, match=r"empty\.wav"):
        audio_num_samples(tmp_path / "empty.wav")
