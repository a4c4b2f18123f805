"""Speech models behind the one adapter interface (:mod:`mpqbench.workloads.adapter`):
Whisper (CTranslate2 / Hugging Face), CTC models, tiny random-init test models, and the
registry that loads them by name."""

from __future__ import annotations

from mpqbench.workloads.models.registry import MODEL_REGISTRY, available_models, load_model

__all__ = ["MODEL_REGISTRY", "available_models", "load_model"]
