"""The test command's second run: the tests marked ``kernels`` again with AVX2 kernels forced.

Forcing AVX2 (ATen's ``ATEN_CPU_CAPABILITY``, MKL's ``MKL_ENABLE_INSTRUCTIONS``, oneDNN's
``ONEDNN_MAX_CPU_ISA``) makes an AVX-512 machine a second CPU kind in one run, so a test that
holds on one kind only fails here rather than on another machine. On a machine whose CPU has
nothing above AVX2 (no AVX-512, AVX-VNNI or AMX: the flags in ``/proc/cpuinfo``) every one of
those caps is already what the libraries pick, so the rerun would repeat the first run's
kernels exactly; it is skipped there, and the script says so. Where the flags cannot be read
(not Linux) it always reruns.

    python scripts/rerun_kernel_tests.py [pytest arguments]
"""

from __future__ import annotations

import os
import subprocess
import sys

from mpqbench.precision import cpu_flags

#: Environment that caps every CPU kernel library torch uses at AVX2.
AVX2_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}
#: /proc/cpuinfo flags of instruction sets above AVX2 that torch's CPU kernels can use.
ABOVE_AVX2 = ("avx512f", "avx_vnni", "amx_tile")


def rerun_differs(flags: set[str] | None) -> bool:
    """Whether forcing AVX2 can change a kernel on a CPU with these flags."""
    return flags is None or any(f in flags for f in ABOVE_AVX2)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    flags = cpu_flags()
    if not rerun_differs(flags):
        print("rerun_kernel_tests: this CPU has nothing above AVX2 (no "
              f"{', '.join(ABOVE_AVX2)} in /proc/cpuinfo), so the tests above already ran "
              "on AVX2 kernels; the forced-AVX2 rerun would repeat them and is skipped")
        return 0
    env = {**os.environ, **AVX2_ENV}
    cmd = [sys.executable, "-m", "pytest", "-m", "kernels", "-q", *args]
    print("rerun_kernel_tests: " + " ".join(f"{k}={v}" for k, v in AVX2_ENV.items())
          + " " + " ".join(cmd[1:]), flush=True)
    return subprocess.call(cmd, env=env)


if __name__ == "__main__":
    sys.exit(main())
