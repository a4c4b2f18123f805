"""Accept either an ``nn.Module`` or a ``SpeechModel`` (whose ``.model`` is the module)."""

from __future__ import annotations

from typing import Any

from torch import nn


def unwrap_module(model: Any) -> nn.Module:
    """The ``nn.Module`` itself, or a SpeechModel's ``.model``.

    Raises:
        ValueError: neither.
    """
    if isinstance(model, nn.Module):
        return model
    inner = getattr(model, "model", None)
    if isinstance(inner, nn.Module):
        return inner
    raise ValueError(f"expected an nn.Module or SpeechModel, got {type(model).__name__}")
