"""CI regression gate: the smoke suite against the baseline committed in results/smoke/.

Runs ``mpqbench run smoke`` into a temporary results root (CPU, as the baseline was made),
then ``mpqbench compare results/smoke/records <tmp>/smoke/records`` with the default
tolerances (MAPSSWE at alpha 0.05 for WER, any CR fall, compression time up to 2.0x and
more than 1 s: loose, because CI machines are noisy and may be slower than the machine that
made the baseline). Regenerate the baseline (``mpqbench run smoke --overwrite``, then commit
results/smoke/records) whenever the smoke suite or a method's defaults change on purpose:
changed configs change the cell hashes, and a baseline cell missing from the new run fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mpqbench.cli import main

BASELINE = Path(__file__).resolve().parent.parent / "results" / "smoke" / "records"


@pytest.mark.slow
@pytest.mark.skipif(
    not any(BASELINE.glob("*.json")),
    reason="no committed smoke baseline yet (results/smoke/records/*.json); generate it with "
           "'mpqbench run smoke --device cpu' and commit the records",
)
def test_smoke_suite_matches_committed_baseline(tmp_path, capsys):
    assert main(["run", "smoke", "--results", str(tmp_path), "--device", "cpu",
                 "--no-progress"]) == 0
    code = main(["compare", str(BASELINE), str(tmp_path / "smoke" / "records")])
    out = capsys.readouterr().out
    assert code == 0, f"smoke run regressed against results/smoke:\n{out}"
