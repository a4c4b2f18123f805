"""How this process's C heap hands out large blocks: glibc malloc kept from mmap/munmap.

PyTorch allocates CPU tensors with the C library's allocator. glibc serves every block over
its mmap threshold (32 MiB at most on 64-bit, whatever is asked for) by a fresh ``mmap`` and
gives it back with ``munmap`` on free, so every new tensor that large starts as unmapped
pages that the kernel faults in and zeroes 4 KiB at a time. whisper-tiny.en's tied token
embedding is 51,864 x 384 fp32 (76 MiB): every fake-quantized copy of it, its gradient and
the supernet's ``(K, 51864, 384)`` candidate stack is such a block, several per QAT step.
Measured on a 2-core AMD EPYC (AVX2): an elementwise multiply into a fresh 76 MiB tensor
took 45 ms against 12 ms into an existing one, and the one_stage supernet step of the main
job spent most of its elementwise time faulting pages (docs/FINDINGS.md, "Page faults").

:func:`configure_host_heap` in mode ``"keep"`` (the command line's default) sets glibc's
``M_MMAP_MAX`` to 0 (no block is served by mmap: large blocks come from the heap and go back
to its free lists) and ``M_TRIM_THRESHOLD`` to 2 GiB - 1 (free memory at the top of the heap
is returned to the kernel only beyond that), so a freed tensor's pages serve the next one.
The cost is resident memory: the process keeps what it freed, up to about its peak. Mode
``"system"`` leaves glibc's defaults. The environment variable ``MPQBENCH_HOST_HEAP``
(``keep`` | ``system``) chooses the mode for the command line. It changes no computed value,
only where freed memory goes; outside glibc (macOS, musl) it does nothing and says so.

This is the lightweight version of what PyTorch's CPU tuning guide recommends (a caching
allocator such as jemalloc or tcmalloc via ``LD_PRELOAD``); it needs nothing installed and
applies to the process that calls it, from the call on.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
from typing import Any

log = logging.getLogger(__name__)

#: The environment variable that picks the command line's mode.
ENV_VAR = "MPQBENCH_HOST_HEAP"
#: The modes: keep freed large blocks in the heap, or glibc's defaults.
MODES = ("keep", "system")
#: glibc's mallopt parameter numbers (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
#: mallopt takes a C int: the largest trim threshold it accepts, 2 GiB - 1.
KEEP_TRIM_THRESHOLD = 2**31 - 1

_setting: dict[str, Any] = {"mode": "system"}


def mode_from_env(environ: dict[str, str] | None = None) -> str:
    """The mode ``MPQBENCH_HOST_HEAP`` names (``keep`` when unset or empty).

    Raises:
        ValueError: the variable holds something else.
    """
    value = (os.environ if environ is None else environ).get(ENV_VAR, "").strip().lower()
    if not value:
        return "keep"
    if value not in MODES:
        raise ValueError(f"{ENV_VAR}={value!r}: expected one of {', '.join(MODES)}")
    return value


def _glibc_mallopt() -> Any | None:
    """glibc's ``mallopt``, or None where the C library is not glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt


def configure_host_heap(mode: str = "keep") -> dict[str, Any]:
    """Set how this process's C heap serves and returns large blocks (module docstring).

    ``"keep"``: glibc ``M_MMAP_MAX = 0`` and ``M_TRIM_THRESHOLD = 2 GiB - 1``, from this
    call on; ``"system"``: nothing is changed (a heap already set to keep stays so: glibc
    has no call that restores its dynamic defaults). Idempotent.

    Returns:
        The process's setting as :func:`host_heap_setting` reports it.

    Raises:
        ValueError: an unknown mode.
    """
    if mode not in MODES:
        raise ValueError(f"host heap mode {mode!r}: expected one of {', '.join(MODES)}")
    if mode == "system" or _setting["mode"] == "keep":
        return host_heap_setting()
    mallopt = _glibc_mallopt()
    if mallopt is None:
        log.debug("host heap: not glibc (%s), left as it is", platform.libc_ver())
        _setting.update(mode="system", note="not glibc: keep has no effect")
        return host_heap_setting()
    ok = (mallopt(M_MMAP_MAX, 0) == 1) and (mallopt(M_TRIM_THRESHOLD, KEEP_TRIM_THRESHOLD) == 1)
    if not ok:  # glibc refused a value: report the heap as untouched
        log.warning("host heap: glibc mallopt refused the keep setting; left as it is")
        _setting.update(mode="system", note="mallopt refused")
        return host_heap_setting()
    _setting.clear()
    _setting.update(mode="keep", mmap_max=0, trim_threshold=KEEP_TRIM_THRESHOLD)
    return host_heap_setting()


def host_heap_setting() -> dict[str, Any]:
    """What :func:`configure_host_heap` set in this process: ``{"mode": "system"}`` (glibc
    defaults, or not glibc, with a ``note``) or ``{"mode": "keep", "mmap_max": 0,
    "trim_threshold": ...}``. Records carry it: it changes timings and resident memory,
    never a computed value."""
    return dict(_setting)


__all__ = [
    "ENV_VAR",
    "KEEP_TRIM_THRESHOLD",
    "MODES",
    "configure_host_heap",
    "host_heap_setting",
    "mode_from_env",
]
