"""CI regression gate: the smoke suite against the baseline committed in results/smoke/.

Runs ``mpqbench run smoke`` into a temporary results root (CPU, as the baseline was made),
then ``mpqbench compare results/smoke/records <tmp>/smoke/records`` with the default WER
and CR rules (MAPSSWE at alpha 0.05, any CR fall) and a looser time tolerance than the
default 2.0x (see TIME_TOLERANCE: CI machines are noisy and differ from the machine that
made the baseline). Regenerate the baseline (``mpqbench run smoke --overwrite``, then commit
results/smoke/records) whenever the smoke suite or a method's defaults change on purpose:
changed configs change the cell hashes, and a baseline cell missing from the new run fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mpqbench.cli import main

BASELINE = Path(__file__).resolve().parent.parent / "results" / "smoke" / "records"
#: Time tolerance of this gate, where it applies: ``compare`` checks times only between cells
#: of the same device (label, thread count, CPU kernel set). The committed baseline ran on
#: an Intel Xeon with 2 threads and this suite runs with 1 (conftest), so in CI the times
#: are printed, not checked; on the baseline's own kind of machine 4.0x applies. Measured:
#: two identical runs of a 9-cell tiny-ctc suite on the shared 2-core development machine
#: gave compression times 2.30x and 2.69x apart for two cells (WER, CR and allocations
#: identical); on an AVX2 AMD EPYC inside the full suite one cell ran more than 4x the
#: Xeon baseline's time, which failed this gate before times across devices were exempt.
TIME_TOLERANCE = "4.0"


@pytest.mark.slow
@pytest.mark.skipif(
    not any(BASELINE.glob("*.json")),
    reason="no committed smoke baseline yet (results/smoke/records/*.json); generate it with "
           "'mpqbench run smoke --device cpu' and commit the records",
)
def test_smoke_suite_matches_committed_baseline(tmp_path, capsys):
    assert main(["run", "smoke", "--results", str(tmp_path), "--device", "cpu",
                 "--no-progress"]) == 0
    code = main(["compare", str(BASELINE), str(tmp_path / "smoke" / "records"),
                 "--time-tolerance", TIME_TOLERANCE])
    out = capsys.readouterr().out
    assert code == 0, f"smoke run regressed against results/smoke:\n{out}"
