"""Training checkpoints: atomic writes, a sha256 checksum beside each file, safe loading.

Layout of a checkpoint directory::

    step-000040.pt          torch.save of a dict of tensors and plain values
    step-000040.pt.sha256   hex digest of the .pt file (written after it, atomically)

A checkpoint counts only when both files exist and the digest matches; a corrupt or
half-written one is skipped (with a warning) in favour of the previous one. Files are
loaded with ``torch.load(weights_only=True)``: no pickled code is ever executed.

One process writes a checkpoint directory (rank 0 under DDP). A kill inside a write leaves
a hidden ``.step-*.tmp`` file (checkpoints are large); the next save removes such leftovers.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any

import torch

from mpqbench._atomic import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

_NAME = re.compile(r"^step-(\d{6,})\.pt$")


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(directory: Path, step: int, state: dict[str, Any], *, keep: int = 2) -> Path:
    """Write ``state`` as the checkpoint of ``step`` and prune all but the newest ``keep``.

    The ``.pt`` file is renamed into place before its ``.sha256`` is written, so a kill in
    between leaves a checkpoint that fails verification, never one that passes with
    half its bytes. Temporary files left by earlier killed saves are removed.

    Raises:
        ValueError: ``keep < 1`` or ``step < 0``.
    """
    if keep < 1 or step < 0:
        raise ValueError(f"save_checkpoint: need keep >= 1 and step >= 0, got {keep}, {step}")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step-{step:06d}.pt"
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    atomic_write_text(path.with_name(path.name + ".sha256"), _digest(path) + "\n")
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
        old.with_name(old.name + ".sha256").unlink(missing_ok=True)
    for stale in directory.glob(".step-*.tmp"):  # from saves killed before their rename
        stale.unlink(missing_ok=True)
    return path


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files in ``directory`` sorted by step (oldest first), verified or not."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def verify_checkpoint(path: Path) -> bool:
    """True when ``path`` and its ``.sha256`` exist and the digest matches."""
    sidecar = path.with_name(path.name + ".sha256")
    try:
        expected = sidecar.read_text(encoding="utf-8").strip()
    except OSError:
        return False
    return path.is_file() and expected == _digest(path)


def load_latest_checkpoint(directory: Path) -> tuple[int, dict[str, Any]] | None:
    """The newest checkpoint that passes its checksum and loads, as ``(step, state)``.

    Corrupt ones are reported and skipped; None when there is no usable checkpoint.
    """
    for path in reversed(list_checkpoints(directory)):
        if not verify_checkpoint(path):
            log.warning("checkpoint %s fails its sha256 check; trying the previous one", path)
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a verified file that still cannot be read
            log.warning("checkpoint %s cannot be read (%s); trying the previous one", path, exc)
            continue
        step = int(_NAME.match(path.name).group(1))  # type: ignore[union-attr]
        return step, state
    return None


__all__ = ["list_checkpoints", "load_latest_checkpoint", "save_checkpoint", "verify_checkpoint"]
