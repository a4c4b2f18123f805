"""Test-wide settings.

Tests use tiny models whose ops are far too small for intra-op threading: with two
threads on a shared 2-core machine each tiny forward costs ~100x more in thread
hand-offs than it does on one. One thread keeps the suite fast and timings stable; the
few tests on the real 37.8M-parameter model raise it locally where they need to.
"""

from __future__ import annotations

import torch

torch.set_num_threads(1)
