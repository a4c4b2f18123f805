"""Tiny random-initialised models of the real model classes, for tests only.

Each builder returns a real :class:`~mpqbench.bench.workloads.adapter.SpeechModel` of the same
transformers class as the full-size model, small enough to run in milliseconds on a CPU.
"""

from __future__ import annotations

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
    :func:`mpqbench.bench.workloads.ctc.load_ctc`, so tests exercise the real loading path.
    The global torch RNG is left untouched.

    Args:
        source: ``"wav2vec2"``, ``"hubert"``, ``"wavlm"`` or ``"data2vec-audio"``.
        seed: initialisation seed.

    Returns:
        a :class:`~mpqbench.bench.workloads.ctc.CTCSpeechModel` named ``tiny-ctc:<source>``.

    Raises:
        ValueError: unknown ``source``.
    """
    import json
    import tempfile

    import torch
    import transformers

    from mpqbench.bench.workloads.ctc import SUPPORTED_MODEL_TYPES, load_ctc

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
