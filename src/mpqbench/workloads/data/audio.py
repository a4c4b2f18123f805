"""Read an audio file as 16 kHz mono float32, with clear errors for bad files.

soundfile (libsndfile) decodes FLAC, WAV, Ogg Vorbis and Ogg Opus; multi-channel audio is
downmixed by averaging the channels and any other sample rate is resampled with soxr
("HQ" quality). torchaudio is deliberately not used: its current wheels need a CUDA torch.

libsndfile is lenient with damaged files: a WAV whose data chunk was cut short, or an Ogg
stream cut at a page boundary, opens and decodes the part that is there. Those cases are
detected here (the WAV data chunk size against the file length; the last Ogg page must be
complete and carry the end-of-stream flag) so a truncated file is refused instead of
silently scoring a partial clip.

Each file is read once into memory, checked and decoded from those bytes; successful decodes
are kept in a content-addressed cache (:mod:`mpqbench.workloads.data.clip_cache`), so a clip
read again by a later cell of the same process is not decoded again.
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from mpqbench.workloads.data.clip_cache import CLIP_CACHE, capacity_bytes, clip_key

#: The sample rate every model in mpqbench consumes.
TARGET_SAMPLE_RATE = 16000

#: Audio file extensions the readers look for (lower case, with the dot).
AUDIO_EXTENSIONS = (".flac", ".wav", ".ogg", ".opus")

# WAV data chunk sizes that streaming writers use for "unknown length".
_WAV_UNKNOWN_SIZES = (0, 0xFFFFFFFF)


def read_audio(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an audio file as a 16 kHz mono float32 array in [-1, 1].

    Args:
        path: a FLAC, WAV, Ogg Vorbis or Ogg Opus file (anything libsndfile decodes).

    Returns:
        Array of shape ``(num_samples,)``, dtype float32, sample rate 16,000 Hz.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file cannot be decoded, is truncated, holds no samples, or holds
            non-finite samples; the message names the file and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    data = path.read_bytes()
    if not data:
        raise ValueError(f"audio file {path} is empty (0 bytes)")
    capacity = capacity_bytes()
    if not capacity:
        return _decode(data, path)
    key = clip_key(data, path.suffix)
    clip = CLIP_CACHE.get(key)
    if clip is None:
        clip = _decode(data, path)
        CLIP_CACHE.put(key, clip, capacity)
    return clip


def _decode(raw: bytes, path: Path) -> np.ndarray:
    """:func:`read_audio`'s decoding and checks of a file's bytes (``path`` names it)."""
    try:
        handle = sf.SoundFile(io.BytesIO(raw))
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise ValueError(f"cannot open audio file {path}: {_libsndfile_reason(exc)}") from exc
    try:
        with handle:
            declared = handle.frames
            sample_rate = handle.samplerate
            fmt = handle.format
            data = handle.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise ValueError(
            f"audio file {path} is truncated or corrupt: decoding failed partway "
            f"({_libsndfile_reason(exc)})"
        ) from exc

    if fmt == "WAV":
        _check_wav_complete(raw, path)
    elif fmt == "OGG":
        _check_ogg_complete(raw, path)
    if data.shape[0] < declared:
        raise ValueError(
            f"audio file {path} is truncated: its header declares {declared} samples but only "
            f"{data.shape[0]} could be decoded"
        )
    if data.shape[0] == 0:
        raise ValueError(f"audio file {path} holds no audio samples")
    if not np.isfinite(data).all():
        raise ValueError(f"audio file {path} holds NaN or infinite samples")

    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if sample_rate != TARGET_SAMPLE_RATE:
        mono = soxr.resample(mono, sample_rate, TARGET_SAMPLE_RATE, quality="HQ")
        if mono.size == 0:  # e.g. one frame at 32 kHz: half a sample at 16 kHz
            raise ValueError(
                f"audio file {path} is too short: {data.shape[0]} samples at {sample_rate} Hz "
                f"are no sample at all at {TARGET_SAMPLE_RATE} Hz"
            )
    return np.ascontiguousarray(mono, dtype=np.float32)


def audio_num_samples(path: str | os.PathLike[str]) -> int:
    """Number of 16 kHz samples :func:`read_audio` would return, from the header (cheap).

    Used to sort clips by length before batching; exact up to resampling rounding.

    Raises:
        ValueError: the file cannot be opened as audio.
    """
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise ValueError(f"cannot open audio file {path}: {_libsndfile_reason(exc)}") from exc
    return round(info.frames * TARGET_SAMPLE_RATE / info.samplerate)


def _libsndfile_reason(exc: BaseException) -> str:
    reason = getattr(exc, "error_string", None) or str(exc)
    reason = reason.strip().rstrip(".")
    if reason.lower().startswith("error :"):
        reason = reason[len("error :") :].strip()
    return reason[:1].lower() + reason[1:] if reason else "unknown libsndfile error"


def _check_wav_complete(raw: bytes, path: Path) -> None:
    """Refuse a RIFF/WAVE file whose data chunk extends past the end of the file."""
    size = len(raw)
    head = raw[:12]
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return  # RF64, W64, ...: leave it to libsndfile
    offset = 12
    while offset + 8 <= size:
        chunk_id, chunk_size = struct.unpack_from("<4sI", raw, offset)
        if chunk_id == b"data":
            if chunk_size in _WAV_UNKNOWN_SIZES:
                return
            available = size - offset - 8
            if chunk_size > available:
                raise ValueError(
                    f"audio file {path} is truncated: its WAV data chunk declares "
                    f"{chunk_size} bytes but only {available} are present"
                )
            return
        offset += 8 + chunk_size + (chunk_size & 1)
    raise ValueError(f"audio file {path} is truncated: no complete WAV data chunk")


def _check_ogg_complete(raw: bytes, path: Path) -> None:
    """Refuse an Ogg file whose pages run past its end or whose last page lacks end-of-stream.

    Walks the page headers from the start (27-byte header + segment table + body).
    """
    size = len(raw)
    offset = 0
    header_type = 0
    while offset < size:
        header = raw[offset:offset + 27]
        if len(header) < 27 or header[:4] != b"OggS":
            raise ValueError(
                f"audio file {path} is truncated or corrupt: no Ogg page at byte {offset}"
            )
        header_type = header[5]
        table = raw[offset + 27:offset + 27 + header[26]]
        if len(table) < header[26]:
            raise ValueError(f"audio file {path} is truncated: its last Ogg page is cut short")
        offset += 27 + len(table) + sum(table)
    if offset > size:
        raise ValueError(f"audio file {path} is truncated: its last Ogg page is cut short")
    if not header_type & 0x04:
        raise ValueError(
            f"audio file {path} is truncated: the Ogg stream has no end-of-stream page"
        )


__all__ = ["AUDIO_EXTENSIONS", "TARGET_SAMPLE_RATE", "audio_num_samples", "read_audio"]
