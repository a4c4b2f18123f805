"""Test-wide settings.

Tests use tiny models whose ops are far too small for intra-op threading: with two
threads on a shared 2-core machine each tiny forward costs ~100x more in thread
hand-offs than it does on one. One thread keeps the suite fast and timings stable; the
few tests on the real 37.8M-parameter model raise it locally where they need to.
"""

from __future__ import annotations

import pytest
import torch

from librispeech_tree import make_chapter

torch.set_num_threads(1)

#: Transcripts of the small synthetic corpus of the ``corpus`` fixture.
TEXTS = ["THE CAT SAT", "A DOG RAN HOME", "BIRDS SING IN TREES", "WE WALK TO TOWN"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A LibriSpeech-layout tree with train, dev and test-clean splits of 4 tone clips."""
    root = tmp_path_factory.mktemp("corpus")
    for split, speaker in (("train", "1"), ("dev", "2"), ("test-clean", "3")):
        make_chapter(root / split, speaker, "10", TEXTS, seconds=0.6)
    return root
