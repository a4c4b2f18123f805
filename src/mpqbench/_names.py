"""File-name-safe names (record files, default output paths, study names)."""

from __future__ import annotations


def safe_name(text: str, *, limit: int | None = None) -> str:
    """``text`` with every character other than letters, digits and ``-._`` replaced by ``_``.

    Args:
        text: a model name, directory, split, ...
        limit: keep only the last ``limit`` characters (the distinctive end of a path).

    Returns:
        A non-empty name (``"_"`` for an empty ``text``).
    """
    out = "".join(c if c.isalnum() or c in "-._" else "_" for c in text)
    if limit is not None:
        out = out[-limit:]
    return out or "_"


__all__ = ["safe_name"]
