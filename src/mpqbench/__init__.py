"""mpqbench: a benchmark suite for mixed-precision quantization of speech foundation models."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
