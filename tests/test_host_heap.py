"""The host heap setting: mode parsing, the command line's use of it, and what it does.

What it does is checked by counting page faults, not by timing: in a fresh process, 64 MiB
tensors are made, written and freed in turn. Under glibc's defaults each one is a new mmap
whose every page faults in; under ``keep`` the heap first grows (a freed block is a little
short of what the next aligned request needs, until freed neighbours coalesce: about ten
blocks here), then serves every block from freed pages. The test counts the last eight.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from mpqbench.bench.environment import device_info
from mpqbench.cli import main
from mpqbench.host_heap import (
    ENV_VAR,
    KEEP_TRIM_THRESHOLD,
    configure_host_heap,
    host_heap_setting,
    mode_from_env,
)
from mpqbench.timing import device_label

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

CHILD = r"""
import json, resource, sys
import torch
from mpqbench.host_heap import configure_host_heap
from mpqbench.timing import device_label
setting = configure_host_heap(sys.argv[1])
torch.set_num_threads(1)
n = 64 * 2**20 // 4
for i in range(32):
    torch.empty(n).fill_(float(i))
    if i == 23:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"faults": faults, "setting": setting, "label": device_label("cpu")}))
"""


def _child(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize(("value", "mode"), [
    (None, "keep"), ("", "keep"), ("keep", "keep"), (" KEEP ", "keep"), ("system", "system"),
])
def test_mode_from_env(value, mode):
    environ = {} if value is None else {ENV_VAR: value}
    assert mode_from_env(environ) == mode


def test_a_bad_mode_is_refused_naming_the_variable():
    with pytest.raises(ValueError, match=f"{ENV_VAR}='jemalloc'"):
        mode_from_env({ENV_VAR: "jemalloc"})
    with pytest.raises(ValueError, match="host heap mode 'fast'"):
        configure_host_heap("fast")


def test_the_command_line_refuses_a_bad_mode(monkeypatch, capsys):
    monkeypatch.setenv(ENV_VAR, "tcmalloc")
    assert main(["methods"]) == 2
    err = capsys.readouterr().err
    assert ENV_VAR in err and "tcmalloc" in err


@pytest.mark.skipif(not GLIBC, reason="the keep mode acts on glibc malloc only")
def test_keep_reuses_freed_pages_and_says_so():
    system, keep = _child("system"), _child("keep")
    pages = 64 * 2**20 // 4096
    # glibc's defaults: every fresh 64 MiB block is a new mapping, faulted in page by page
    assert system["faults"] >= 8 * pages * 0.9, system
    # keep, once the heap has grown: freed pages serve the next blocks
    assert keep["faults"] < pages, keep
    assert system["setting"] == {"mode": "system"}
    assert keep["setting"] == {"mode": "keep", "mmap_max": 0,
                               "trim_threshold": KEEP_TRIM_THRESHOLD}
    assert "host heap keep" not in system["label"]
    assert keep["label"].endswith("threads, host heap keep)")


@pytest.mark.skipif(not GLIBC, reason="the keep mode acts on glibc malloc only")
def test_records_carry_the_setting():
    # conftest sets keep for the test session, as the command line does
    assert host_heap_setting()["mode"] == "keep"
    assert device_info("cpu")["host_heap"] == host_heap_setting()
    assert "host heap keep" in device_label("cpu")
    assert configure_host_heap("system")["mode"] == "keep"  # glibc cannot undo it
