"""Load a local Hugging Face checkpoint directory as a :class:`SpeechModel`, by its model type."""

from __future__ import annotations

import json
from pathlib import Path

from mpqbench.workloads.adapter import SpeechModel


def load_local_dir(path: str | Path) -> SpeechModel:
    """Load a local checkpoint directory, dispatching on ``config.json``'s ``model_type``.

    ``whisper`` goes to :func:`mpqbench.workloads.models.whisper.from_pretrained_dir`; the CTC
    types (``wav2vec2``, ``hubert``, ``wavlm``, ``data2vec-audio``) go to
    :func:`mpqbench.workloads.models.ctc.load_ctc`.

    Args:
        path: the directory.

    Returns:
        The loaded model (float32, eval mode, CPU), named by the path.

    Raises:
        FileNotFoundError: no such directory, or no ``config.json`` in it.
        ValueError: ``config.json`` is not valid JSON or names an unsupported model type
            (the message lists the supported ones).
    """
    from mpqbench.workloads.models.ctc import SUPPORTED_MODEL_TYPES, load_ctc

    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such model directory")
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: missing; not a Hugging Face checkpoint directory")
    try:
        model_type = json.loads(config_path.read_text(encoding="utf-8")).get("model_type")
    except (ValueError, AttributeError) as exc:
        raise ValueError(f"{config_path}: not a JSON object with a model_type: {exc}") from exc
    if model_type == "whisper":
        from mpqbench.workloads.models.whisper import from_pretrained_dir

        return from_pretrained_dir(directory)
    if model_type in SUPPORTED_MODEL_TYPES:
        return load_ctc(str(directory))
    supported = ["whisper", *sorted(SUPPORTED_MODEL_TYPES)]
    raise ValueError(
        f"{directory}: model_type {model_type!r} in config.json is not supported; "
        f"supported model types: {', '.join(supported)}"
    )


__all__ = ["load_local_dir"]
