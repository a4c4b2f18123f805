"""Collect ``bench_*.py`` files as test modules: ``pytest benchmarks --benchmark-only``.

The project's default ``addopts`` include ``--benchmark-skip``; ``--benchmark-only`` overrides
it. Benchmarks load real models and take minutes on a 2-core CPU, which is why they live
outside ``tests/``; a ``bench_*.py`` file without ``test_*`` functions is a plain script.
"""

from __future__ import annotations

import pytest


def pytest_collect_file(file_path, parent):
    # A file named on the command line is collected by pytest itself; don't add it twice.
    if (
        file_path.suffix == ".py"
        and file_path.name.startswith("bench_")
        and not parent.session.isinitpath(file_path)
    ):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
