"""One ``mpqbench search`` worker with slow, observable trials, for the multi-worker tests.

Usage: python optuna_worker.py MARKER_DIR TAG SLEEPS -- SEARCH_ARGS...

Runs ``mpqbench search SEARCH_ARGS`` in this process after wrapping the PTQ proxy's
``score``: before the k-th proxy evaluation (k = 0, 1, ...) it creates the file
``MARKER_DIR/TAG-k`` and then sleeps ``SLEEPS[k]`` seconds (a comma-separated list; the
last value repeats; an entry ``@NAME`` waits, up to 300 s, until ``MARKER_DIR/NAME``
exists) before the real score is computed. The sleep falls inside the trial
(heartbeats running), so a test can see which trial a worker is in and kill it there.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from mpqbench.cli import main as cli_main
from mpqbench.search.ptq_proxy import PTQProxy


def main() -> int:
    split = sys.argv.index("--")
    markers, tag, sleeps_text = sys.argv[1:split]
    sleeps = sleeps_text.split(",")
    marker_dir = Path(markers)
    real_score = PTQProxy.score
    calls = 0

    def slow_score(self, *args, **kwargs):
        nonlocal calls
        (marker_dir / f"{tag}-{calls}").touch()
        pause = sleeps[min(calls, len(sleeps) - 1)]
        if pause.startswith("@"):
            deadline = time.monotonic() + 300
            while not (marker_dir / pause[1:]).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        else:
            time.sleep(float(pause))
        calls += 1
        return real_score(self, *args, **kwargs)

    PTQProxy.score = slow_score
    torch.set_num_threads(1)
    return cli_main(["search", *sys.argv[split + 1 :]])


if __name__ == "__main__":
    sys.exit(main())
