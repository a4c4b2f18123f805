"""The embedded corpus shipped inside the package, and opening a split by ``--data`` value.

The corpus lives at ``mpqbench/corpus/embedded/`` in the standard LibriSpeech layout
(splits ``train``, ``dev``, ``test-clean``, ``test-other``, ``real``) with a manifest at
its root recording sha256, engine and voice per file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from mpqbench.workloads.data.librispeech import LibriSpeechSplit

#: The ``--data`` value that selects the embedded corpus.
EMBEDDED = "embedded"


def embedded_corpus_root() -> Path:
    """Directory of the embedded corpus inside the installed package.

    Returns:
        The corpus root (holding one directory per split).

    Raises:
        FileNotFoundError: the package was installed without its corpus.
    """
    root = Path(__file__).resolve().parents[2] / "corpus" / "embedded"
    if not root.is_dir():
        raise FileNotFoundError(
            f"the embedded corpus is missing from this installation (expected {root}); "
            "reinstall mpqbench from a complete checkout"
        )
    return root


def embedded_manifest_path() -> Path | None:
    """The embedded corpus manifest (``manifest.*`` at the corpus root), if present."""
    root = embedded_corpus_root()
    found = sorted(p for p in root.glob("manifest*") if p.is_file())
    return found[0] if found else None


def embedded_manifest_sha256() -> str | None:
    """sha256 (hex) of the embedded corpus manifest, identifying the corpus version."""
    manifest = embedded_manifest_path()
    if manifest is None:
        return None
    return hashlib.sha256(manifest.read_bytes()).hexdigest()


def open_split(data: str, split: str) -> LibriSpeechSplit:
    """Open a split of the embedded corpus or of a LibriSpeech-layout directory.

    Args:
        data: ``"embedded"`` or a path (a corpus root, or the split directory itself).
        split: the split name, e.g. ``"test-clean"``.

    Returns:
        The scanned split (audio is read on access).

    Raises:
        FileNotFoundError: no such path or split (the message lists the splits there).
        ValueError: the split is malformed (see :class:`LibriSpeechSplit`).
    """
    root = embedded_corpus_root() if data == EMBEDDED else Path(data).expanduser()
    return LibriSpeechSplit(root, split)


__all__ = [
    "EMBEDDED",
    "embedded_corpus_root",
    "embedded_manifest_path",
    "embedded_manifest_sha256",
    "open_split",
]
