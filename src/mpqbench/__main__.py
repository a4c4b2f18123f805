"""``python -m mpqbench``: the command line (also ``torchrun ... -m mpqbench quantize ...``)."""

from __future__ import annotations

from mpqbench.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
