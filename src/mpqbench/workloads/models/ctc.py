"""CTC speech models (wav2vec2, HuBERT, WavLM, data2vec-audio) behind :class:`SpeechModel`.

Checkpoints load from a local Hugging Face directory, or by hub id from the local Hugging
Face cache only: mpqbench never downloads a checkpoint (see :func:`load_ctc`).

Batches. Each clip is normalised on its own samples (zero mean, unit variance, when the
checkpoint's ``preprocessor_config.json`` says ``do_normalize``) and then padded with the
feature extractor's padding value (0.0). An attention mask is passed only when the
preprocessor config asks for one (``return_attention_mask``): models with
``feat_extract_norm == "group"`` such as wav2vec2-base were trained without it and take
zero-padded input and no mask, as the Hugging Face documentation prescribes.

Padding and exactness. A model is *padding-exact* when a clip's valid output frames do not
depend on what else is in its batch: it takes an attention mask, its feature encoder has no
GroupNorm (which normalises over the whole padded time axis), and its positional
convolution is a single conv layer (data2vec-audio stacks several conv + LayerNorm layers
over the zeroed padding, so frames near a clip's end see the padding). For a model that is
not padding-exact, ``batching="exact"`` (the default) runs the clips of a batch in groups of
equal length (in practice one clip per forward for natural speech), so transcripts, logits
and losses never depend on batch composition; ``batching="padded"`` runs one zero-padded
forward per batch (faster, what Hugging Face pipelines do) at the price of outputs that
change slightly with the other clips' lengths.

Randomness. In train mode transformers applies dropout, layerdrop and SpecAugment
(``mask_time_prob`` etc. from the checkpoint's config); SpecAugment masks come from NumPy's
global RNG, which the adapter seeds from torch's RNG for each forward (and then restores),
so a training run is a function of ``torch.manual_seed`` alone.

WavLM. Hugging Face's WavLM attention passes ``q_proj.weight`` etc. straight into
``F.multi_head_attention_forward``, so a quantizer that swaps those ``nn.Linear`` modules
would be bypassed. The adapter rebinds that method on every WavLM attention module to an
equivalent that calls ``q_proj``, ``k_proj``, ``v_proj`` and ``out_proj`` as modules (same
outputs to float rounding; tested), so every module in :meth:`CTCSpeechModel.layer_groups`
is used through its ``forward``.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mpqbench.workloads.adapter import (
    SAMPLE_RATE,
    ForwardOutput,
    ModelBatch,
    SpeechModel,
    Transcript,
)
from mpqbench.workloads.data.types import Utterance
from mpqbench.workloads.models.ctc_text import normalize_for_vocab

log = logging.getLogger(__name__)

#: ``config.json`` model_type -> transformers CTC class name.
SUPPORTED_MODEL_TYPES = {
    "wav2vec2": "Wav2Vec2ForCTC",
    "hubert": "HubertForCTC",
    "wavlm": "WavLMForCTC",
    "data2vec-audio": "Data2VecAudioForCTC",
}

Batching = Literal["exact", "padded"]
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


class CTCSpeechModel(SpeechModel):
    """A Hugging Face CTC model + its feature extractor and character tokenizer.

    Attributes:
        name: where it was loaded from (hub id, directory, or tiny-model name).
        model: the ``*ForCTC`` module.
        feature_extractor: the checkpoint's ``Wav2Vec2FeatureExtractor``.
        tokenizer: the checkpoint's ``Wav2Vec2CTCTokenizer``.
        batching: ``"exact"`` or ``"padded"`` (module docstring); only matters for models
            that are not padding-exact.
        ctc_loss_reduction: reduction of :meth:`forward`'s loss. ``"mean"`` (default):
            each clip's loss divided by its target length, then averaged over the batch
            (``torch.nn.functional.ctc_loss``'s "mean", Hugging Face's with
            ``ctc_loss_reduction="mean"``), so the loss scale does not depend on batch size
            or transcript length. The paper checkpoints' configs say ``"sum"``; it is
            deliberately not used.
    """

    family = "ctc"

    def __init__(
        self,
        model: nn.Module,
        feature_extractor,
        tokenizer,
        *,
        name: str,
        batching: Batching = "exact",
        ctc_loss_reduction: Literal["mean", "sum"] = "mean",
    ) -> None:
        if batching not in ("exact", "padded"):
            raise ValueError(f"batching must be 'exact' or 'padded', got {batching!r}")
        if ctc_loss_reduction not in ("mean", "sum"):
            raise ValueError(
                f"ctc_loss_reduction must be 'mean' or 'sum', got {ctc_loss_reduction!r}"
            )
        if feature_extractor.sampling_rate != SAMPLE_RATE:
            raise ValueError(
                f"{name}: feature extractor expects {feature_extractor.sampling_rate} Hz audio; "
                f"mpqbench feeds {SAMPLE_RATE} Hz"
            )
        self.name = name
        self.model = model
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer
        self.batching: Batching = batching
        self.ctc_loss_reduction = ctc_loss_reduction
        config = model.config
        self.blank_id = int(config.pad_token_id)
        vocab = tokenizer.get_vocab()
        if len(vocab) > config.vocab_size:
            raise ValueError(
                f"{name}: tokenizer has {len(vocab)} symbols but the model's CTC head only "
                f"{config.vocab_size}"
            )
        if tokenizer.pad_token_id != self.blank_id:
            log.warning(
                "%s: tokenizer pad id %s differs from config.pad_token_id %d; using the "
                "config's as the CTC blank (as transformers does)",
                name, tokenizer.pad_token_id, self.blank_id,
            )
        self._delimiter = tokenizer.word_delimiter_token
        special = set(tokenizer.all_special_tokens) | {self._delimiter}
        self._alphabet = {t: i for t, i in vocab.items() if len(t) == 1 and t not in special}
        self._delimiter_id = vocab[self._delimiter]
        self.uses_attention_mask = bool(feature_extractor.return_attention_mask)
        self.padding_exact = self.uses_attention_mask and _padding_exact_modules(model)
        self.min_samples = _min_samples(model)
        _route_wavlm_attention_through_modules(model)
        self._layer_groups = _find_layer_groups(model)

    # ------------------------------------------------------------------ text
    def reference_text(self, text: str) -> str:
        """``text`` rewritten into the model's alphabet, words separated by spaces.

        See :mod:`mpqbench.workloads.models.ctc_text` for every rule (case, numbers,
        punctuation, characters outside the vocabulary).
        """
        return normalize_for_vocab(text, self._alphabet)

    def label_ids(self, text: str) -> list[int]:
        """CTC target ids of a reference transcript (the word delimiter between words)."""
        ids: list[int] = []
        for w, word in enumerate(self.reference_text(text).split(" ")):
            if not word:
                continue
            if w:
                ids.append(self._delimiter_id)
            ids.extend(self._alphabet[c] for c in word)
        return ids

    # ----------------------------------------------------------------- batches
    def make_batch(self, utterances: Sequence[Utterance], *, trim: bool = False) -> ModelBatch:
        """Collate utterances into ``input_values``, ``num_samples``, ``labels``
        (padded with -100) and, when the checkpoint uses one, ``attention_mask``. Audio is
        always padded to the batch's longest clip, so ``trim`` changes nothing.

        Raises:
            ValueError: empty batch; a clip that is not 1-D, is shorter than the model's
                receptive field, or whose transcript has no symbol of the alphabet or more
                symbols than the clip has output frames (CTC could not align it).
        """
        if not utterances:
            raise ValueError("make_batch got no utterances")
        audios = [u.audio for u in utterances]
        ids = [u.id for u in utterances]
        inputs = self._collate_audio(audios, ids)
        frames = self.output_lengths(inputs["num_samples"]).tolist()
        labels = []
        for utt, n_frames in zip(utterances, frames, strict=True):
            target = self.label_ids(utt.text)
            if not target:
                raise ValueError(
                    f"utterance {utt.id!r}: reference {utt.text!r} has no character of the "
                    "model's alphabet, so it cannot be a CTC target"
                )
            needed = len(target) + sum(a == b for a, b in itertools.pairwise(target))
            if needed > n_frames:
                raise ValueError(
                    f"utterance {utt.id!r}: transcript needs {needed} CTC frames but the "
                    f"{utt.audio.shape[0] / SAMPLE_RATE:.2f} s clip gives only {n_frames}"
                )
            labels.append(torch.tensor(target, dtype=torch.long))
        inputs["labels"] = nn.utils.rnn.pad_sequence(labels, batch_first=True, padding_value=-100)
        device = self.device
        return ModelBatch(ids=ids, inputs={k: v.to(device) for k, v in inputs.items()})

    def _collate_audio(
        self, audios: Sequence[np.ndarray], ids: Sequence[str] | None = None
    ) -> dict[str, torch.Tensor]:
        fe = self.feature_extractor
        clips = []
        for i, audio in enumerate(audios):
            a = np.asarray(audio, dtype=np.float32)
            label = repr(ids[i]) if ids is not None else f"#{i}"
            if a.ndim != 1:
                raise ValueError(f"clip {label}: expected mono 1-D audio, got shape {a.shape}")
            if a.shape[0] < self.min_samples:
                raise ValueError(
                    f"clip {label}: {a.shape[0]} samples is shorter than the model's receptive "
                    f"field ({self.min_samples} samples = {self.min_samples / SAMPLE_RATE:.3f} s)"
                )
            if fe.do_normalize:
                a = fe.zero_mean_unit_var_norm([a], attention_mask=None)[0].astype(np.float32)
            clips.append(torch.from_numpy(np.ascontiguousarray(a)))
        num_samples = torch.tensor([c.shape[0] for c in clips], dtype=torch.long)
        values = nn.utils.rnn.pad_sequence(
            clips, batch_first=True, padding_value=float(fe.padding_value)
        )
        inputs = {"input_values": values, "num_samples": num_samples}
        if self.uses_attention_mask:
            positions = torch.arange(values.shape[1])
            inputs["attention_mask"] = (positions[None, :] < num_samples[:, None]).long()
        return inputs

    def output_lengths(self, num_samples: torch.Tensor) -> torch.Tensor:
        """Valid output frames per clip from its sample count (the conv stack's arithmetic)."""
        return self.model._get_feat_extract_output_lengths(num_samples).to(torch.long)

    # ----------------------------------------------------------------- forward
    def _logits(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        values = inputs["input_values"]
        num_samples = inputs["num_samples"]
        lengths = self.output_lengths(num_samples)
        if self.padding_exact or self.batching == "padded":
            return self._call_model(values, inputs.get("attention_mask")), lengths
        # Run clips of equal length together, unpadded, and reassemble in batch order.
        t_max = int(lengths.max())
        order: list[int] = []
        pieces = []
        for n in torch.unique(num_samples).tolist():
            idx = (num_samples == n).nonzero().flatten()
            clip = values[idx, :n]
            mask = inputs["attention_mask"][idx, :n] if "attention_mask" in inputs else None
            logits = self._call_model(clip, mask)
            pieces.append(F.pad(logits, (0, 0, 0, t_max - logits.shape[1])))
            order.extend(idx.tolist())
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(len(order))
        return torch.cat(pieces).index_select(0, inverse.to(values.device)), lengths

    def _call_model(self, values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if not self.model.training:
            return self.model(input_values=values, attention_mask=mask).logits
        # transformers draws SpecAugment masks (and adapter layerdrop) from NumPy's global
        # RNG; derive it from torch's so training is reproducible under torch.manual_seed and
        # resumable from a saved torch RNG state. NumPy's own state is restored afterwards.
        seed = int(torch.randint(0, 2**31 - 1, ()))
        state = np.random.get_state()
        np.random.seed(seed)
        try:
            return self.model(input_values=values, attention_mask=mask).logits
        finally:
            np.random.set_state(state)

    def forward(self, batch: ModelBatch) -> ForwardOutput:
        """CTC loss (reduction :attr:`ctc_loss_reduction`, blank = ``config.pad_token_id``,
        ``zero_infinity`` from the config) over each clip's valid frames only, the logits of
        the valid frames ``(N, V)`` and the valid-frame mask ``(B, T)``."""
        logits, lengths = self._logits(batch.inputs)
        mask = torch.arange(logits.shape[1], device=logits.device)[None, :] < lengths[:, None]
        labels = batch.inputs["labels"]
        valid = labels >= 0
        log_probs = F.log_softmax(logits, dim=-1, dtype=torch.float32).transpose(0, 1)
        with torch.backends.cudnn.flags(enabled=False):
            loss = F.ctc_loss(
                log_probs,
                labels.masked_select(valid),
                lengths,
                valid.sum(-1),
                blank=self.blank_id,
                reduction=self.ctc_loss_reduction,
                zero_infinity=bool(self.model.config.ctc_zero_infinity),
            )
        return ForwardOutput(loss=loss, logits=logits[mask], mask=mask)

    @torch.no_grad()  # not inference_mode: see mpqbench.precision
    def transcribe(
        self,
        audios: Sequence[np.ndarray],
        *,
        max_new_tokens: int | None = None,
        max_tokens_per_s: float | None = None,
    ) -> list[Transcript]:
        """Greedy CTC decoding: per frame argmax, collapse repeats, drop the blank, stop at
        each clip's own valid length. ``max_new_tokens`` and ``max_tokens_per_s`` have no
        meaning for CTC and are ignored; ``capped`` is always False."""
        if not audios:
            return []
        was_training = self.model.training
        self.model.eval()
        try:
            inputs = {k: v.to(self.device) for k, v in self._collate_audio(audios).items()}
            logits, lengths = self._logits(inputs)
            best = logits.argmax(-1).cpu()
        finally:
            self.model.train(was_training)
        return [
            Transcript(self.decode_ids(best[b, : int(n)].tolist()))
            for b, n in enumerate(lengths.tolist())
        ]

    def decode_ids(self, frame_ids: Sequence[int]) -> str:
        """Text of one clip's per-frame best ids (collapse repeats, drop blanks)."""
        collapsed = [t for i, t in enumerate(frame_ids) if i == 0 or t != frame_ids[i - 1]]
        kept = [t for t in collapsed if t != self.blank_id]
        text = self.tokenizer.decode(
            kept,
            skip_special_tokens=True,
            group_tokens=False,
            clean_up_tokenization_spaces=False,
        )
        return " ".join(text.split())

    # ----------------------------------------------------------------- layers
    def layer_groups(self) -> dict[str, list[str]]:
        """Quantizable module names by group, found by inspecting the module tree once at
        load time (so the names stay valid after a quantizer swaps the modules).

        - ``blocks``: every ``nn.Linear`` under ``<base>.encoder.layers.*`` (attention
          q/k/v/out_proj, feed_forward intermediate_dense/output_dense; for WavLM also the
          gated relative-position ``gru_rel_pos_linear``).
        - ``feature_encoder``: ``<base>.feature_extractor.conv_layers.*.conv`` (Conv1d) and
          ``<base>.feature_projection.projection`` (Linear).
        - ``pos_conv``: every Conv1d under ``<base>.encoder.pos_conv_embed``. For
          wav2vec2/HuBERT/WavLM that is one grouped conv carrying
          ``torch.nn.utils.parametrizations.weight_norm``: its ``weight`` is computed from
          ``parametrizations.weight.original0`` (g) and ``original1`` (v). Quantize the
          effective ``conv.weight`` (append a parametrization, or swap in a quantized
          Conv1d built from the materialised ``conv.weight``), never g or v separately.
          data2vec-audio has several plain Conv1d layers (``pos_conv_embed.layers.*.conv``).
        - ``head``: ``lm_head``.
        """
        return {group: list(names) for group, names in self._layer_groups.items()}


# ---------------------------------------------------------------------- loading
def load_ctc(source: str, *, batching: Batching = "exact") -> CTCSpeechModel:
    """Load a CTC checkpoint from a local directory or the local Hugging Face cache.

    A directory must hold ``config.json`` (model_type one of :data:`SUPPORTED_MODEL_TYPES`),
    weights (``model.safetensors``, preferred, or ``pytorch_model.bin``, which is read with
    ``torch.load(weights_only=True)``; sharded indexes also work), ``vocab.json`` (+ tokenizer
    config files) and ``preprocessor_config.json``. Anything else (an id such as
    ``facebook/wav2vec2-base-100h``) is looked up in the Hugging Face cache only
    (``local_files_only``), never downloaded.

    Args:
        source: local directory, or Hugging Face hub id.
        batching: see :class:`CTCSpeechModel`.

    Returns:
        the model in eval mode, float32, on CPU.

    Raises:
        ValueError: the checkpoint is not available offline (the message says how to supply
            a local copy), a required file is missing, the model type is unsupported, or the
            weights do not cover the model (e.g. a pre-trained model without a CTC head).
    """
    directory = _resolve_source(source)
    return _load_dir(directory, name=source, batching=batching)


def _resolve_source(source: str) -> Path:
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{path}: not a directory (a CTC checkpoint is a directory)")
    if not _HUB_ID.fullmatch(source):
        raise ValueError(f"model directory {str(path)!r} does not exist")
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id=source, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError) as exc:
        raise ValueError(_offline_help(source, constants.HF_HUB_CACHE)) from exc


def _offline_help(repo_id: str, cache: str) -> str:
    short = repo_id.rsplit("/", 1)[-1]
    cache_entry = "models--" + repo_id.replace("/", "--")
    return (
        f"CTC checkpoint {repo_id!r} is not available offline: it is not a local directory "
        f"and not in the Hugging Face cache ({cache}); mpqbench never downloads checkpoints. "
        f"To supply a local copy: on a machine with internet run "
        f"`huggingface-cli download {repo_id} --local-dir /path/{short}` "
        f"(or `hf download {repo_id} --local-dir /path/{short}`), copy that directory here and "
        f"pass `--model /path/{short}`; or copy the cache entry {cache_entry} into {cache} "
        f"and set HF_HUB_OFFLINE=1."
    )


def _load_dir(directory: Path, *, name: str, batching: Batching) -> CTCSpeechModel:
    import transformers

    config_path = directory / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{directory}: no config.json, not a Hugging Face checkpoint directory")
    try:
        model_type = json.loads(config_path.read_text(encoding="utf-8")).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{config_path}: not valid JSON ({exc})") from exc
    class_name = SUPPORTED_MODEL_TYPES.get(model_type)
    if class_name is None:
        raise ValueError(
            f"{config_path}: model_type {model_type!r} is not a supported CTC model "
            f"(supported: {', '.join(sorted(SUPPORTED_MODEL_TYPES))})"
        )
    if not any((directory / f).is_file() for f in _WEIGHT_FILES):
        raise ValueError(
            f"{directory}: no weights file (expected one of {', '.join(_WEIGHT_FILES)})"
        )
    for required, role in (
        ("vocab.json", "the CTC tokenizer's vocabulary"),
        ("preprocessor_config.json", "the feature extractor settings"),
    ):
        if not (directory / required).is_file():
            raise ValueError(f"{directory}: missing {required} ({role})")

    model_cls = getattr(transformers, class_name)
    model, info = model_cls.from_pretrained(
        str(directory),
        local_files_only=True,
        weights_only=True,
        dtype=torch.float32,
        output_loading_info=True,
    )
    missing = list(info.get("missing_keys", []))
    if missing:
        shown = ", ".join(sorted(missing)[:8]) + (" ..." if len(missing) > 8 else "")
        raise ValueError(
            f"{directory}: the weights do not cover {len(missing)} parameters of "
            f"{class_name} ({shown}); is this a fine-tuned CTC checkpoint?"
        )
    unexpected = list(info.get("unexpected_keys", []))
    if unexpected:
        log.warning("%s: ignored %d unexpected weights (%s ...)", directory, len(unexpected),
                    ", ".join(sorted(unexpected)[:4]))
    feature_extractor = transformers.Wav2Vec2FeatureExtractor.from_pretrained(
        str(directory), local_files_only=True
    )
    tokenizer = transformers.Wav2Vec2CTCTokenizer.from_pretrained(
        str(directory), local_files_only=True
    )
    model.eval()
    log.info("loaded %s (%s) from %s", name, class_name, directory)
    return CTCSpeechModel(model, feature_extractor, tokenizer, name=name, batching=batching)


# -------------------------------------------------------------- model inspection
def _find_layer_groups(model: nn.Module) -> dict[str, list[str]]:
    base = model.base_model_prefix
    groups: dict[str, list[str]] = {
        "blocks": [], "feature_encoder": [], "pos_conv": [], "head": [], "embeddings": [],
        "conv": [],
    }
    for name, module in model.named_modules():
        if name == "lm_head" and isinstance(module, nn.Linear):
            groups["head"].append(name)
        if not name.startswith(base + "."):
            continue
        rel = name[len(base) + 1 :]
        if re.fullmatch(r"encoder\.layers\.\d+\..+", rel) and isinstance(module, nn.Linear):
            groups["blocks"].append(name)
        elif (
            re.fullmatch(r"feature_extractor\.conv_layers\.\d+\.conv", rel)
            and isinstance(module, nn.Conv1d)
        ) or (rel == "feature_projection.projection" and isinstance(module, nn.Linear)):
            groups["feature_encoder"].append(name)
        elif rel.startswith("encoder.pos_conv_embed.") and isinstance(module, nn.Conv1d):
            groups["pos_conv"].append(name)
    return groups


def _padding_exact_modules(model: nn.Module) -> bool:
    base = getattr(model, model.base_model_prefix)
    if any(isinstance(m, nn.GroupNorm) for m in base.feature_extractor.modules()):
        return False
    pos_conv = getattr(base.encoder, "pos_conv_embed", None)
    convs = [m for m in pos_conv.modules() if isinstance(m, nn.Conv1d)] if pos_conv else []
    return len(convs) <= 1


def _min_samples(model: nn.Module) -> int:
    """Fewest input samples that give one output frame."""
    n = 1
    for kernel, stride in reversed(list(zip(model.config.conv_kernel, model.config.conv_stride,
                                            strict=True))):
        n = (n - 1) * stride + kernel
    return n


def _route_wavlm_attention_through_modules(model: nn.Module) -> None:
    from transformers.models.wavlm.modeling_wavlm import WavLMAttention

    for module in model.modules():
        if isinstance(module, WavLMAttention):
            module.torch_multi_head_self_attention = types.MethodType(
                _wavlm_self_attention, module
            )


def _wavlm_self_attention(
    self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None,
    gated_position_bias: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``F.multi_head_attention_forward`` as WavLM calls it, with module projections.

    ``gated_position_bias`` is ``(B * H, T, T)`` and added to the scaled scores; keys where
    ``attention_mask != 1`` are excluded.
    """
    bsz, tgt_len, embed = hidden_states.shape
    heads, head_dim = self.num_heads, embed // self.num_heads

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.view(bsz, tgt_len, heads, head_dim).transpose(1, 2)

    q = split(self.q_proj(hidden_states)) * (1.0 / math.sqrt(head_dim))
    k = split(self.k_proj(hidden_states))
    v = split(self.v_proj(hidden_states))
    scores = q @ k.transpose(-2, -1) + gated_position_bias.view(bsz, heads, tgt_len, tgt_len)
    if attention_mask is not None:
        padded = attention_mask.ne(1)[:, None, None, :]
        scores = scores.masked_fill(padded, float("-inf"))
    weights = scores.softmax(dim=-1)
    probs = F.dropout(weights, p=self.dropout, training=self.training) if self.dropout else weights
    context = (probs @ v).transpose(1, 2).reshape(bsz, tgt_len, embed)
    return self.out_proj(context), weights


__all__ = ["SUPPORTED_MODEL_TYPES", "CTCSpeechModel", "load_ctc"]
