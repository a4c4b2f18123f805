"""scripts/rerun_kernel_tests.py: when the test command's forced-AVX2 rerun can differ."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from mpqbench.precision import cpu_flags

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "rerun_kernel_tests.py"


@pytest.fixture(scope="module")
def rerun():
    spec = importlib.util.spec_from_file_location("rerun_kernel_tests", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: X\nflags\t\t: {flags}\n\n"
                    f"processor\t: 1\nflags\t\t: {flags}\n")
    return path


@pytest.mark.parametrize(("flags", "differs"), [
    ("fpu sse2 avx avx2 fma", False),                                   # AMD EPYC, AVX2 only
    ("fpu sse2 avx avx2 fma avx512f avx512bw avx512_bf16", True),      # AVX-512 with bf16
    ("fpu avx2 avx_vnni", True),                                        # AVX-VNNI (no AVX-512)
    ("fpu avx2 avx512f amx_tile amx_bf16", True),                       # AMX
    ("fpu sse2", False),                                                # below AVX2
])
def test_rerun_only_where_a_cap_changes_a_kernel(rerun, tmp_path, flags, differs):
    parsed = cpu_flags(_cpuinfo(tmp_path, flags))
    assert parsed == set(flags.split())
    assert rerun.rerun_differs(parsed) is differs


def test_unknown_flags_always_rerun(rerun, tmp_path):
    assert cpu_flags(tmp_path / "missing") is None
    empty = tmp_path / "empty"
    empty.write_text("processor\t: 0\n")
    assert cpu_flags(empty) is None
    assert rerun.rerun_differs(None) is True
