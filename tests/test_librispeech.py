"""LibriSpeechSplit: layout, lazy loading, ordering, subsets, and every malformed-input case."""

from __future__ import annotations

import numpy as np
import pytest

from librispeech_tree import make_chapter, make_corpus, tone, write_audio
from mpqbench.workloads.data import LibriSpeechSplit, Utterance, available_splits, open_split


def test_scan_reads_ids_texts_and_audio_in_sorted_order(tmp_path):
    ids = make_corpus(tmp_path)
    split = LibriSpeechSplit(tmp_path, "test-clean")
    assert len(split) == 6
    assert split.ids == ids == sorted(ids)
    assert split.name == "test-clean"
    by_id = {u.id: u for u in split}
    assert by_id["19-198-0001"].text == "THE CAT SAT ON THE MAT"
    assert by_id["19-227-0000"].text == "MISTER SMITH PAID TWENTY DOLLARS"
    for k, utt in enumerate(split):
        assert isinstance(utt, Utterance)
        assert utt.id == ids[k]
        assert utt.audio.dtype == np.float32 and utt.audio.ndim == 1
        assert utt.path.endswith(utt.id + "." + utt.path.rsplit(".", 1)[1])
    # Opus files were written at 16 kHz with 0.5 + 0.1 k seconds.
    assert split[0].id == "103-1240-0000"
    assert abs(len(split[0].audio) - 8000) <= 160
    assert [u.id for u in split[1:3]] == ids[1:3]
    assert split[-1].id == ids[-1]
    assert split.num_samples(ids.index("19-198-0001")) == 9600


def test_split_dir_itself_and_librispeech_subfolder_are_accepted(tmp_path):
    make_corpus(tmp_path / "LibriSpeech", "dev-clean")
    nested = LibriSpeechSplit(tmp_path, "dev-clean")
    direct = LibriSpeechSplit(tmp_path / "LibriSpeech" / "dev-clean")
    named = LibriSpeechSplit(tmp_path / "LibriSpeech" / "dev-clean", "dev-clean")
    assert nested.ids == direct.ids == named.ids
    assert direct.name == "dev-clean"
    assert open_split(str(tmp_path / "LibriSpeech"), "dev-clean").ids == nested.ids


def test_missing_split_lists_existing_splits(tmp_path):
    make_corpus(tmp_path, "test-clean")
    make_corpus(tmp_path, "dev")
    (tmp_path / "notes").mkdir()
    assert available_splits(tmp_path) == ["dev", "test-clean"]
    expected = r"'test-other' not found.*splits there: dev, test-clean"
    with pytest.raises(FileNotFoundError, match=expected):
        LibriSpeechSplit(tmp_path, "test-other")


def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_split(str(tmp_path / "absent"), "test-clean")


def test_audio_is_read_lazily_and_a_bad_file_is_named_on_access(tmp_path):
    ids = make_corpus(tmp_path)
    bad = tmp_path / "test-clean" / "19" / "198" / "19-198-0000.flac"
    bad.write_bytes(bad.read_bytes()[:200])
    split = LibriSpeechSplit(tmp_path, "test-clean")  # scanning does not decode
    assert len(split) == len(ids)
    with pytest.raises(ValueError, match=r"19-198-0000\.flac"):
        split[ids.index("19-198-0000")]


def test_audio_without_transcript_line(tmp_path):
    make_corpus(tmp_path)
    write_audio(tmp_path / "test-clean/19/198/19-198-0007.flac", tone(0.3))
    with pytest.raises(ValueError, match=r"'19-198-0007'.*has no line in .*19-198\.trans\.txt"):
        LibriSpeechSplit(tmp_path, "test-clean")


def test_chapter_without_transcript_file(tmp_path):
    make_corpus(tmp_path)
    (tmp_path / "test-clean/19/227/19-227.trans.txt").unlink()
    with pytest.raises(ValueError, match=r"'19-227-0000' has no transcript.*19-227\.trans\.txt"):
        LibriSpeechSplit(tmp_path, "test-clean")


def test_transcript_line_without_audio(tmp_path):
    make_corpus(tmp_path)
    trans = tmp_path / "test-clean/103/1240/103-1240.trans.txt"
    trans.write_text(trans.read_text() + "103-1240-0009 A MISSING CLIP\n")
    with pytest.raises(ValueError, match=r"'103-1240-0009'.*line 4\) has no audio file"):
        LibriSpeechSplit(tmp_path, "test-clean")


def test_empty_reference_is_refused_with_its_id(tmp_path):
    make_corpus(tmp_path)
    trans = tmp_path / "test-clean/19/198/19-198.trans.txt"
    trans.write_text("19-198-0000 HELLO WORLD\n19-198-0001   \n")
    with pytest.raises(ValueError, match=r"'19-198-0001' has an empty reference.*line 2"):
        LibriSpeechSplit(tmp_path, "test-clean")


@pytest.mark.parametrize(
    "bad_line", ["HELLO WORLD", "19-199-0001 WRONG CHAPTER", "19-198 NO INDEX"]
)
def test_malformed_line_names_file_and_line(tmp_path, bad_line):
    make_corpus(tmp_path)
    trans = tmp_path / "test-clean/19/198/19-198.trans.txt"
    trans.write_text(f"19-198-0000 HELLO WORLD\n\n{bad_line}\n")
    with pytest.raises(ValueError, match=r"malformed line 3 in .*19-198\.trans\.txt"):
        LibriSpeechSplit(tmp_path, "test-clean")


def test_duplicate_transcript_id(tmp_path):
    make_corpus(tmp_path)
    trans = tmp_path / "test-clean/19/198/19-198.trans.txt"
    trans.write_text(trans.read_text() + "19-198-0000 AGAIN\n")
    with pytest.raises(ValueError, match=r"duplicate utterance id '19-198-0000'.*line 3"):
        LibriSpeechSplit(tmp_path, "test-clean")


def test_duplicate_audio_id_in_two_formats(tmp_path):
    make_corpus(tmp_path)
    write_audio(tmp_path / "test-clean/19/198/19-198-0000.wav", tone(0.3))
    with pytest.raises(ValueError, match=r"duplicate utterance id '19-198-0000'"):
        LibriSpeechSplit(tmp_path, "test-clean")


def test_empty_split(tmp_path):
    (tmp_path / "test-clean" / "19" / "198").mkdir(parents=True)
    with pytest.raises(ValueError, match="no utterances"):
        LibriSpeechSplit(tmp_path / "test-clean")


def test_mixed_rates_and_channels_in_one_split(tmp_path):
    split_dir = tmp_path / "other"
    make_chapter(split_dir, "7", "8", ["LOW RATE"], ext="wav", rate=8000)
    chapter = split_dir / "9" / "10"
    write_audio(chapter / "9-10-0000.flac", np.stack([tone(1.0, 44100)] * 2, axis=1), 44100)
    (chapter / "9-10.trans.txt").write_text("9-10-0000 STEREO CD RATE\n")
    split = LibriSpeechSplit(split_dir)
    lengths = {u.id: len(u.audio) for u in split}
    assert lengths == {"7-8-0000": 8000, "9-10-0000": 16000}


def test_subset_is_deterministic_sorted_and_lazy(tmp_path):
    split_dir = tmp_path / "train"
    for chapter in range(4):
        make_chapter(split_dir, "5", str(chapter), [f"WORD {k}" for k in range(5)], seconds=0.1)
    split = LibriSpeechSplit(split_dir)
    assert len(split) == 20
    a, b, c = split.subset(7, seed=1), split.subset(7, seed=1), split.subset(7, seed=2)
    assert a.ids == b.ids and a.ids != c.ids
    assert len(a) == 7 and a.ids == sorted(a.ids) and set(a.ids) <= set(split.ids)
    assert split.subset(100).ids == split.ids
    assert a[0].id == a.ids[0]
    with pytest.raises(ValueError, match="at least 1"):
        split.subset(0)
