"""read_audio's content-addressed cache of decoded clips."""

from __future__ import annotations

import os

import numpy as np
import pytest

from librispeech_tree import tone, write_audio
from mpqbench.workloads.data.audio import read_audio
from mpqbench.workloads.data.clip_cache import (
    CACHE_MB_ENV,
    CLIP_CACHE,
    ClipCache,
    capacity_bytes,
    clip_key,
)


@pytest.fixture(autouse=True)
def _empty_cache(monkeypatch):
    monkeypatch.delenv(CACHE_MB_ENV, raising=False)
    CLIP_CACHE.clear()
    yield
    CLIP_CACHE.clear()


def _uncached(path) -> np.ndarray:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_MB_ENV, "0")
        return read_audio(path)


@pytest.mark.parametrize("ext", ["flac", "wav", "opus"])
def test_a_second_read_is_a_hit_equal_to_a_fresh_decode(tmp_path, ext):
    path = write_audio(tmp_path / f"a.{ext}", tone(0.5))
    first = read_audio(path)
    assert (CLIP_CACHE.hits, CLIP_CACHE.misses) == (0, 1)
    second = read_audio(path)
    assert (CLIP_CACHE.hits, CLIP_CACHE.misses) == (1, 1)
    fresh = _uncached(path)
    # the same decoder on the same bytes: equal by construction
    assert np.array_equal(first, fresh) and np.array_equal(second, fresh)
    assert second.dtype == np.float32 and second.flags.writeable


def test_callers_get_copies(tmp_path):
    path = write_audio(tmp_path / "a.wav", tone(0.5))
    clip = read_audio(path)
    clip[:] = 0.0
    again = read_audio(path)
    assert CLIP_CACHE.hits == 1
    assert np.array_equal(again, _uncached(path)) and np.abs(again).max() > 0.1


def test_a_file_rewritten_in_place_is_never_served_stale(tmp_path):
    path = write_audio(tmp_path / "a.wav", tone(0.5, freq=300.0))
    before = read_audio(path)
    stat = path.stat()
    write_audio(path, tone(0.5, freq=700.0))  # same length and size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same modification time too
    assert path.stat().st_size == stat.st_size
    after = read_audio(path)
    assert not np.array_equal(before, after)
    assert np.array_equal(after, _uncached(path))


def test_damaged_files_fail_every_time_and_are_not_stored(tmp_path):
    path = write_audio(tmp_path / "a.wav", tone(0.5))
    path.write_bytes(path.read_bytes()[:-1000])  # data chunk cut short
    for _ in range(2):
        with pytest.raises(ValueError, match="truncated"):
            read_audio(path)
    assert len(CLIP_CACHE) == 0


def test_zero_turns_it_off_and_a_bad_size_is_refused(tmp_path, monkeypatch):
    path = write_audio(tmp_path / "a.wav", tone(0.5))
    monkeypatch.setenv(CACHE_MB_ENV, "0")
    read_audio(path)
    read_audio(path)
    assert len(CLIP_CACHE) == 0 and CLIP_CACHE.hits == 0
    for bad in ("-1", "lots", "nan", "inf"):
        monkeypatch.setenv(CACHE_MB_ENV, bad)
        with pytest.raises(ValueError, match=CACHE_MB_ENV):
            capacity_bytes()
    monkeypatch.setenv(CACHE_MB_ENV, "1.5")
    assert capacity_bytes() == 3 * 2**19


def test_least_recently_used_clips_go_first_within_the_byte_bound():
    cache = ClipCache()
    clips = {name: np.full(100, i, dtype=np.float32) for i, name in enumerate("abcd")}
    keys = {name: clip_key(name.encode(), ".wav") for name in clips}
    capacity = 3 * 400  # three clips of 100 float32
    for name in "abc":
        cache.put(keys[name], clips[name], capacity)
    assert cache.get(keys["a"]) is not None  # a is now the most recent
    cache.put(keys["d"], clips["d"], capacity)  # evicts b, the least recent
    assert cache.get(keys["b"]) is None
    assert [cache.get(keys[n])[0] for n in "acd"] == [0, 2, 3]
    assert len(cache) == 3 and cache.nbytes == capacity
    cache.put(b"big", np.zeros(1000, dtype=np.float32), capacity)  # larger than the bound
    assert cache.get(b"big") is None and len(cache) == 3


def test_the_key_depends_on_bytes_and_suffix_only():
    assert clip_key(b"abc", ".WAV") == clip_key(b"abc", ".wav")
    assert clip_key(b"abc", ".wav") != clip_key(b"abd", ".wav")
    assert clip_key(b"abc", ".wav") != clip_key(b"abc", ".flac")
