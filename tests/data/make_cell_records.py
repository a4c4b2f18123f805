"""Regenerate tests/data/cell_records/*.json: real records of one tiny run (fixtures).

A 32-bit reference and a 4-bit uniform cell of the random-initialised ``tiny-ctc`` model on
a 4-utterance synthetic LibriSpeech tree, two eval splits. tests/record_factory.py derives
its hand-made records from these, so their layout always follows what ``run_cell`` writes.
Run from the repository root: ``python tests/data/make_cell_records.py``.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from librispeech_tree import make_chapter  # noqa: E402
from mpqbench._atomic import atomic_write_json  # noqa: E402
from mpqbench.bench.cell import CellSpec, run_cell  # noqa: E402
from mpqbench.method import Budget, Target  # noqa: E402

TEXTS = ["THE CAT SAT", "A DOG RAN HOME", "BIRDS SING IN TREES", "WE WALK TO TOWN"]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for split, speaker in (("train", "1"), ("dev", "2"), ("test-clean", "3"),
                               ("test-other", "4")):
            make_chapter(root / split, speaker, "10", TEXTS, seconds=0.6)
        spec = CellSpec(model="tiny-ctc", data="librispeech-tree", method="uniform",
                        target=Target(avg_bits=4), max_new_tokens=8,
                        budget=Budget(train_steps=1, batch_size=2, dev_subset=2, seed=0))
        # The data lives in a temporary directory; the stored config names it
        # "librispeech-tree" (config_hash stays the hash of the run's real config).
        real = dataclasses.replace(spec, data=str(root))
        reference = run_cell(real.reference(), progress=False)
        record = run_cell(real, reference=reference, progress=False)
    for rec, name in ((reference, "fp32"), (record, "uniform_4bit")):
        rec["config"]["data"] = spec.data
        rec["suite"] = {"name": "fixture", "results_name": "fixture",
                        "label": rec["config"]["method"], "file": "fixture.toml"}
        atomic_write_json(HERE / "cell_records" / f"tiny-ctc__{name}.json", rec)


if __name__ == "__main__":
    main()
