"""read_audio: formats, downmix, resampling, and refusal of damaged files."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from librispeech_tree import tone, write_audio
from mpqbench.workloads.data.audio import audio_num_samples, read_audio


def _dominant_freq(x: np.ndarray, rate: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


@pytest.mark.parametrize("ext", ["flac", "wav"])
def test_lossless_16k_mono_round_trips(tmp_path, ext):
    x = tone(1.0)
    path = write_audio(tmp_path / f"a.{ext}", x)
    y = read_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1 and y.shape == x.shape
    np.testing.assert_allclose(y, x, atol=1 / 2**15)


@pytest.mark.parametrize("ext", ["opus", "ogg"])
def test_lossy_ogg_codecs_decode_to_the_same_tone(tmp_path, ext):
    x = tone(1.0, freq=500.0)
    y = read_audio(write_audio(tmp_path / f"a.{ext}", x))
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - len(x)) <= 160  # codec padding at most 10 ms
    assert _dominant_freq(y) == pytest.approx(500.0, abs=2.0)
    assert np.sqrt(np.mean(y**2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.1)


def test_8k_is_resampled_to_16k(tmp_path):
    rate, freq = 8000, 300.0
    y = read_audio(write_audio(tmp_path / "a.wav", tone(1.0, rate, freq), rate))
    assert len(y) == 16000
    expected = tone(1.0, 16000, freq)
    # Away from the edges the resampled signal is the same sine sampled at 16 kHz.
    np.testing.assert_allclose(y[800:-800], expected[800:-800], atol=2e-3)


def test_44k1_stereo_is_downmixed_and_resampled(tmp_path):
    rate = 44100
    left, right = tone(1.0, rate, 300.0), tone(1.0, rate, 700.0, amp=0.2)
    path = write_audio(tmp_path / "a.flac", np.stack([left, right], axis=1), rate)
    y = read_audio(path)
    assert len(y) == 16000
    expected = (tone(1.0, 16000, 300.0) + tone(1.0, 16000, 700.0, amp=0.2)) / 2
    np.testing.assert_allclose(y[800:-800], expected[800:-800], atol=2e-3)
    assert audio_num_samples(path) == len(y)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.flac"):
        read_audio(tmp_path / "nope.flac")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.flac"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.flac.*empty"):
        read_audio(path)


def test_not_audio(tmp_path):
    path = tmp_path / "junk.flac"
    path.write_bytes(b"this is not audio at all" * 20)
    with pytest.raises(ValueError, match=r"cannot open audio file .*junk\.flac"):
        read_audio(path)


def test_no_samples(tmp_path):
    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 16000, format="WAV", subtype="PCM_16")
    with pytest.raises(ValueError, match=r"silent\.wav holds no audio samples"):
        read_audio(path)


def test_non_finite_samples(tmp_path):
    x = tone(0.2)
    x[100] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, x, 16000, format="WAV", subtype="FLOAT")
    with pytest.raises(ValueError, match=r"nan\.wav holds NaN"):
        read_audio(path)


@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.5, 0.9, 0.99])
@pytest.mark.parametrize("ext", ["flac", "wav", "opus", "ogg"])
def test_truncated_file_is_refused_with_its_name(tmp_path, ext, fraction):
    full = write_audio(tmp_path / f"full.{ext}", tone(2.0) + 0.01 * np.random.default_rng(0)
                       .standard_normal(32000).astype(np.float32))
    data = full.read_bytes()
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ValueError, match=rf"cut\.{ext}"):
        read_audio(cut)


def test_ogg_cut_exactly_at_a_page_boundary_is_refused(tmp_path):
    full = write_audio(tmp_path / "full.opus", tone(3.0))
    data = full.read_bytes()
    pages = [i for i in range(len(data)) if data[i : i + 4] == b"OggS"]
    assert len(pages) >= 3
    cut = tmp_path / "cut.opus"
    cut.write_bytes(data[: pages[-1]])  # drop the final (end-of-stream) page entirely
    with pytest.raises(ValueError, match=r"cut\.opus is truncated.*end-of-stream"):
        read_audio(cut)
