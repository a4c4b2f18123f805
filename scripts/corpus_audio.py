"""Signal processing and encoding primitives of the embedded-corpus generator.

Pure functions on 16 kHz mono float32 numpy arrays and on encoded bytes; used by
``make_corpus.py`` beside this file and tested in ``tests/test_corpus_manifest.py``.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16000
TRIM_PAD_S = 0.2
TRIM_THRESHOLD_DB = -40.0
PEAK_LEVEL = 0.5


def to_16k(audio: np.ndarray, sr: int) -> np.ndarray:
    """Resample mono float32 audio to 16 kHz with soxr (HQ)."""
    if sr == SAMPLE_RATE:
        return audio.astype(np.float32, copy=False)
    return soxr.resample(audio, sr, SAMPLE_RATE, quality="HQ").astype(np.float32)


def trim_silence(audio: np.ndarray, pad_s: float = TRIM_PAD_S) -> np.ndarray:
    """Cut leading/trailing silence, keeping at most ``pad_s`` around the active region.

    A 10 ms frame is active when its RMS is within ``TRIM_THRESHOLD_DB`` of the loudest
    frame's. All-silent input is returned unchanged.
    """
    frame = SAMPLE_RATE // 100
    n = len(audio) // frame
    if n == 0:
        return audio
    rms = np.sqrt(np.mean(audio[: n * frame].reshape(n, frame).astype(np.float64) ** 2, axis=1))
    if rms.max() <= 0:
        return audio
    active = np.flatnonzero(rms >= rms.max() * 10 ** (TRIM_THRESHOLD_DB / 20))
    pad = round(pad_s * SAMPLE_RATE)
    start = max(0, active[0] * frame - pad)
    end = min(len(audio), (active[-1] + 1) * frame + pad)
    return audio[start:end]


def pink_noise(num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS pink (1/f power) noise: white Gaussian noise shaped in the frequency domain."""
    white = rng.standard_normal(num_samples)
    spectrum = np.fft.rfft(white)
    freqs = np.arange(spectrum.shape[0], dtype=np.float64)
    spectrum[0] = 0.0
    spectrum[1:] /= np.sqrt(freqs[1:])
    noise = np.fft.irfft(spectrum, n=num_samples)
    return noise / np.sqrt(np.mean(noise**2))


def add_noise(speech: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """Add seeded pink noise at ``snr_db`` (speech power over the whole clip)."""
    rng = np.random.default_rng(seed)
    noise = pink_noise(len(speech), rng)
    p_speech = float(np.mean(speech.astype(np.float64) ** 2))
    noise *= np.sqrt(p_speech / 10 ** (snr_db / 10))
    return (speech + noise).astype(np.float32)


def normalize_peak(audio: np.ndarray, peak: float = PEAK_LEVEL) -> np.ndarray:
    """Scale so that the largest absolute sample equals ``peak``."""
    m = float(np.max(np.abs(audio)))
    return audio if m == 0 else (audio * (peak / m)).astype(np.float32)


def _ogg_crc_table() -> list[int]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
            r &= 0xFFFFFFFF
        table.append(r)
    return table


_OGG_CRC = _ogg_crc_table()


def ogg_crc(data: bytes) -> int:
    """The Ogg page checksum (CRC-32, polynomial 0x04C11DB7, no reflection, init 0)."""
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC[(crc >> 24) ^ b]
    return crc


def set_ogg_serial(data: bytes, serial: int) -> bytes:
    """Rewrite the stream serial number of every Ogg page and recompute the page CRCs.

    Raises:
        ValueError: ``data`` is not a well-formed single-stream Ogg file.
    """
    out = bytearray(data)
    pos = 0
    while pos < len(out):
        if out[pos : pos + 4] != b"OggS" or pos + 27 > len(out):
            raise ValueError(f"no Ogg page at byte {pos}")
        nseg = out[pos + 26]
        length = 27 + nseg + sum(out[pos + 27 : pos + 27 + nseg])
        page = bytearray(out[pos : pos + length])
        stored = struct.unpack_from("<I", page, 22)[0]
        page[22:26] = b"\0\0\0\0"
        if ogg_crc(bytes(page)) != stored:
            raise ValueError(f"bad Ogg page checksum at byte {pos}")
        struct.pack_into("<I", page, 14, serial)
        struct.pack_into("<I", page, 22, ogg_crc(bytes(page)))
        out[pos : pos + length] = page
        pos += length
    return bytes(out)


def opus_compression_level(bitrate_bps: int) -> float:
    """libsndfile's Opus encoder maps compression level c to 6 + (1 - c) * 250 kbit/s."""
    return 1.0 - (bitrate_bps - 6000) / 250000


def encode_opus(audio: np.ndarray, utt_id: str, bitrate_bps: int) -> bytes:
    """Encode 16 kHz mono float32 audio as Ogg Opus, deterministically.

    libsndfile draws the Ogg stream serial number from the clock; it is replaced by the
    CRC-32 of ``utt_id`` so that equal input gives equal bytes.
    """
    buf = io.BytesIO()
    clipped = np.clip(audio, -1.0, 1.0)
    sf.write(
        buf,
        clipped,
        SAMPLE_RATE,
        format="OGG",
        subtype="OPUS",
        compression_level=opus_compression_level(bitrate_bps),
    )
    return set_ogg_serial(buf.getvalue(), zlib.crc32(utt_id.encode("ascii")))


def encode_flac(audio: np.ndarray) -> bytes:
    """Encode 16 kHz mono audio as 16-bit FLAC."""
    buf = io.BytesIO()
    sf.write(buf, audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return buf.getvalue()



def opus_vendor(data: bytes) -> str | None:
    """The encoder vendor string (e.g. ``libopus 1.4``) from an Ogg Opus file's OpusTags."""
    i = data.find(b"OpusTags")
    if i < 0:
        return None
    (n,) = struct.unpack_from("<I", data, i + 8)
    return data[i + 12 : i + 12 + n].decode("utf-8", "replace")
