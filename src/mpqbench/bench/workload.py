"""Building a method's workload from names: the one place every command (``run``,
``quantize``, ``search``, ``eval``) loads a model, sets its window, selects its layers and
opens its data."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mpqbench.method import TeacherSource, Workload
from mpqbench.quant.allocation import Allocation, build_allocation
from mpqbench.workloads.adapter import SpeechModel
from mpqbench.workloads.data.embedded import open_split
from mpqbench.workloads.data.librispeech import LibriSpeechSplit
from mpqbench.workloads.data.types import Utterance
from mpqbench.workloads.models.registry import load_model


def open_model(name: str, *, device: str, whisper_window_s: int | None = None,
               embedding_row_groups: Sequence[int] | None = None) -> SpeechModel:
    """Load a registered model (or local checkpoint), set its Whisper encoder window and
    split its token embedding into row groups (``split_embedding_rows_``).

    Raises:
        ValueError: an unknown model, a window or row groups for a model that is not
            Whisper, or cut points outside its vocabulary.
    """
    model = load_model(name, device=device)
    if whisper_window_s is not None:
        if not hasattr(model, "set_window_"):
            raise ValueError(f"whisper_window_s applies to Whisper models, not {name!r}")
        model.set_window_(whisper_window_s)
    if embedding_row_groups is not None:
        if not hasattr(model, "split_embedding_rows_"):
            raise ValueError(f"embedding_row_groups applies to Whisper models, not {name!r}")
        model.split_embedding_rows_(embedding_row_groups)
    return model


def eligible_layers(model: SpeechModel, groups: Sequence[str],
                    rules: Sequence[str] = ()) -> Allocation:
    """The layers a run may quantize: ``groups`` of the model's layer groups, then
    ``PATTERN=BITS`` rules (8 bits stands in for "quantized"; ``none`` keeps a layer 32-bit).

    Raises:
        ValueError: an unknown group or a bad rule.
    """
    return build_allocation(model.name, model.layer_groups(), 8, groups=tuple(groups),
                            rules=tuple(rules))


def open_dev(data: str, split: str, size: int, seed: int) -> LibriSpeechSplit:
    """The seeded dev subset the search proxies score (``size`` utterances at most)."""
    dev = open_split(data, split)
    return dev.subset(min(size, len(dev)), seed=seed)


def make_workload(
    model: SpeechModel,
    eligible: Allocation,
    *,
    data: str,
    train_split: str | None,
    dev_split: str,
    dev_subset: int,
    seed: int,
    teacher: TeacherSource,
    device: str,
    checkpoint_dir: Path | None = None,
    dev: Sequence[Utterance] | None = None,
    progress: bool = True,
) -> Workload:
    """A :class:`~mpqbench.method.Workload` over ``model``'s ``eligible`` layers.

    Args:
        train_split: the training split, or None for a method that trains nothing (the
            standalone precision search).
        dev_split, dev_subset, seed: the proxy utterances (:func:`open_dev`).
        dev: those utterances when the caller opened them already (not opened again).
        progress: the methods' progress bars.
    """
    train = open_split(data, train_split) if train_split is not None else []
    return Workload(
        name=model.name, model=model, train=train,
        dev=dev if dev is not None else open_dev(data, dev_split, dev_subset, seed),
        eligible=list(eligible.quantized), teacher=teacher, device=device,
        checkpoint_dir=checkpoint_dir, progress=progress,
    )


__all__ = ["eligible_layers", "make_workload", "open_dev", "open_model"]
