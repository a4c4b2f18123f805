"""CTC workloads: loading, batches, loss, greedy decoding, layer groups, label text.

Every family runs as a tiny random-init model saved to a directory and loaded back through
``load_ctc``, the same path a real checkpoint takes.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from torch import nn
from whisper_normalizer.english import EnglishTextNormalizer

from mpqbench.workloads.adapter import LAYER_GROUPS, SpeechModel
from mpqbench.workloads.data.types import Utterance
from mpqbench.workloads.models.ctc import CTCSpeechModel, load_ctc
from mpqbench.workloads.models.ctc_text import (
    normalize_for_vocab,
    spell_cardinal,
    spell_ordinal,
    spell_year,
)
from mpqbench.workloads.models.registry import load_model
from mpqbench.workloads.models.tiny import LIBRISPEECH_CTC_VOCAB, tiny_ctc

#: Float results here depend on which CPU kernels torch runs: .ci/run repeats them on AVX2.
pytestmark = pytest.mark.kernels

FAMILIES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio")
CLASSES = {
    "wav2vec2": "Wav2Vec2ForCTC",
    "hubert": "HubertForCTC",
    "wavlm": "WavLMForCTC",
    "data2vec-audio": "Data2VecAudioForCTC",
}
LENGTHS = (16000, 11000, 7001, 16000)  # two equal lengths, two shorter: padding in a batch
TEXTS = ("HELLO WORLD", "Mr. O'Brien's 25", "a cat", "THE END OF IT")


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request) -> CTCSpeechModel:
    return tiny_ctc(request.param)


def _audios(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in LENGTHS]


def _utterances() -> list[Utterance]:
    return [
        Utterance(id=f"1-2-{i}", audio=a, text=t)
        for i, (a, t) in enumerate(zip(_audios(), TEXTS, strict=True))
    ]


def _save(model: CTCSpeechModel, path) -> None:
    model.model.save_pretrained(path)
    model.tokenizer.save_pretrained(path)
    model.feature_extractor.save_pretrained(path)


# ------------------------------------------------------------------------ loading
def test_tiny_model_is_the_real_class(tiny):
    family = tiny.name.split(":")[1]
    assert type(tiny.model).__name__ == CLASSES[family]
    assert tiny.family == "ctc"
    assert not tiny.model.training
    assert tiny.uses_attention_mask == (family != "wav2vec2")
    # GroupNorm feature encoder (wav2vec2) and stacked pos-conv (data2vec) see padding.
    assert tiny.padding_exact == (family in ("hubert", "wavlm"))


def test_local_dir_round_trip_same_logits(tiny, tmp_path):
    _save(tiny, tmp_path)
    again = load_ctc(str(tmp_path))
    assert type(again.model) is type(tiny.model)
    inputs = tiny._collate_audio(_audios())
    with torch.no_grad():
        a, _ = tiny._logits(inputs)
        b, _ = again._logits(inputs)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_legacy_bin_checkpoint_with_weight_norm_g_v(tmp_path):
    """An old-style pytorch_model.bin (pos-conv weight_g/weight_v names) loads, weights_only."""
    model = tiny_ctc("wav2vec2")
    _save(model, tmp_path)
    (tmp_path / "model.safetensors").unlink()
    state = {}
    for key, value in model.model.state_dict().items():
        key = key.replace("parametrizations.weight.original0", "weight_g")
        key = key.replace("parametrizations.weight.original1", "weight_v")
        state[key] = value.clone()
    assert any(k.endswith("pos_conv_embed.conv.weight_g") for k in state)
    torch.save(state, tmp_path / "pytorch_model.bin")
    again = load_ctc(str(tmp_path))
    inputs = model._collate_audio(_audios()[:1])
    with torch.no_grad():
        torch.testing.assert_close(model._logits(inputs)[0], again._logits(inputs)[0])


def test_hub_id_resolves_from_the_local_cache_only(tiny, tmp_path, monkeypatch):
    """A hub id is looked up in the Hugging Face cache layout, never downloaded."""
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--someone--tiny-ctc"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    _save(tiny, repo / "snapshots" / commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cached = load_ctc("someone/tiny-ctc")
    assert cached.name == "someone/tiny-ctc"
    inputs = tiny._collate_audio(_audios()[:2])
    with torch.no_grad():
        torch.testing.assert_close(tiny._logits(inputs)[0], cached._logits(inputs)[0])
    with pytest.raises(ValueError, match="'someone/other' is not available offline"):
        load_ctc("someone/other")


def test_offline_miss_says_how_to_supply_a_local_copy(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError) as err:
        load_ctc("facebook/does-not-exist")
    msg = str(err.value)
    assert "'facebook/does-not-exist'" in msg
    assert "huggingface-cli download facebook/does-not-exist --local-dir" in msg
    assert "hf download facebook/does-not-exist" in msg
    assert "--model /path/does-not-exist" in msg
    assert "HF_HUB_OFFLINE=1" in msg


def test_registry_alias_of_the_paper_model_fails_clearly_when_not_cached(monkeypatch):
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache("facebook/wav2vec2-base-100h", "config.json"), str):
        pytest.skip("facebook/wav2vec2-base-100h is in the local Hugging Face cache")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="huggingface-cli download facebook/wav2vec2-base-100h"):
        load_model("wav2vec2-base-100h")


def test_missing_directory_is_named(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_ctc(str(tmp_path / "nope"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        load_ctc(str(tmp_path / "file"))


@pytest.mark.parametrize(
    ("remove", "match"),
    [
        ("preprocessor_config.json", "missing preprocessor_config.json"),
        ("vocab.json", "missing vocab.json"),
        ("model.safetensors", "no weights file"),
        ("config.json", "no config.json"),
    ],
)
def test_incomplete_directory_names_the_missing_file(tmp_path, remove, match):
    _save(tiny_ctc("hubert"), tmp_path)
    (tmp_path / remove).unlink()
    with pytest.raises(ValueError, match=match):
        load_ctc(str(tmp_path))


def test_unsupported_model_type_lists_supported(tmp_path):
    _save(tiny_ctc("hubert"), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["model_type"] = "sew"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"'sew' is not a supported CTC model.*data2vec-audio"):
        load_ctc(str(tmp_path))


def test_checkpoint_without_ctc_head_is_refused(tmp_path):
    model = tiny_ctc("wav2vec2")
    _save(model, tmp_path)
    model.model.wav2vec2.save_pretrained(tmp_path / "base")  # encoder only, no lm_head
    for name in ("vocab.json", "tokenizer_config.json", "preprocessor_config.json"):
        shutil.copy(tmp_path / name, tmp_path / "base" / name)
    with pytest.raises(ValueError, match="lm_head"):
        load_ctc(str(tmp_path / "base"))


def test_registry_tiny_ctc():
    model = load_model("tiny-ctc")
    assert isinstance(model, SpeechModel)
    assert model.family == "ctc"
    assert type(model.model).__name__ == "Wav2Vec2ForCTC"
    assert model.name == "tiny-ctc:wav2vec2"


def test_tiny_is_seeded_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a, b = tiny_ctc("hubert", seed=3), tiny_ctc("hubert", seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    c = tiny_ctc("hubert", seed=4)
    wa, wb, wc = (m.model.lm_head.weight for m in (a, b, c))
    assert torch.equal(wa, wb)
    assert not torch.equal(wa, wc)


# ------------------------------------------------------------------ batch, forward
def test_make_batch_contents(tiny):
    batch = tiny.make_batch(_utterances())
    inp = batch.inputs
    assert batch.ids == [f"1-2-{i}" for i in range(4)]
    assert inp["input_values"].shape == (4, max(LENGTHS))
    assert inp["num_samples"].tolist() == list(LENGTHS)
    # each clip normalised on its own samples, padding is exactly zero
    for b, n in enumerate(LENGTHS):
        clip = inp["input_values"][b, :n].double()
        assert abs(float(clip.mean())) < 1e-4
        assert abs(float(clip.std(unbiased=False)) - 1.0) < 1e-3
        assert torch.all(inp["input_values"][b, n:] == 0)
    if tiny.uses_attention_mask:
        assert inp["attention_mask"].sum(-1).tolist() == list(LENGTHS)
    else:
        assert "attention_mask" not in inp
    labels = inp["labels"]
    assert labels.shape[0] == 4
    for b, text in enumerate(TEXTS):
        row = labels[b][labels[b] != -100].tolist()
        assert row == tiny.label_ids(text)
        assert torch.all(labels[b][len(row) :] == -100)


def test_forward_loss_logits_mask(tiny):
    batch = tiny.make_batch(_utterances())
    out = tiny.forward(batch)
    frames = [(n - 400) // 320 + 1 for n in LENGTHS]  # the 320x conv stack's arithmetic
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert out.mask.dtype == torch.bool and out.mask.shape == (4, max(frames))
    assert out.logits.shape == (sum(frames), len(LIBRISPEECH_CTC_VOCAB))
    assert out.mask.sum(-1).tolist() == frames
    assert torch.all(out.mask[:, : min(frames)])
    out.loss.backward()
    q_proj = tiny.model.get_submodule(tiny.layer_groups()["blocks"][0])
    assert q_proj.weight.grad is not None and torch.isfinite(q_proj.weight.grad).all()
    tiny.model.zero_grad(set_to_none=True)


def test_loss_matches_transformers_own_ctc_loss(tiny):
    """Independent reference: the HF model's built-in loss with reduction "mean".

    Equal-length clips for every family; a padded batch too where padding is exact.
    """
    tiny.model.config.ctc_loss_reduction = "mean"
    utts = _utterances()
    batches = [[utts[0], utts[3]]]
    if tiny.padding_exact:
        batches.append(utts)
    with torch.no_grad():
        for chunk in batches:
            batch = tiny.make_batch(chunk)
            ours = tiny.forward(batch).loss
            inp = batch.inputs
            ref = tiny.model(
                input_values=inp["input_values"],
                attention_mask=inp.get("attention_mask"),
                labels=inp["labels"],
            ).loss
            torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_train_mode_forward_is_a_function_of_the_torch_seed(tiny):
    """SpecAugment draws from NumPy's RNG; the adapter ties it to torch's seed."""
    tiny.model.config.mask_time_prob = 0.3  # make masking certain on these short clips
    tiny.model.config.mask_time_length = 2
    batch = tiny.make_batch(_utterances())
    tiny.model.train()
    try:
        runs = []
        for np_seed in (1, 2):
            np.random.seed(np_seed)
            torch.manual_seed(0)
            with torch.no_grad():
                runs.append(tiny.forward(batch).logits)
        np_state = np.random.get_state()
        torch.manual_seed(1)
        with torch.no_grad():
            other = tiny.forward(batch).logits
        assert np.random.get_state()[1].tolist() == np_state[1].tolist()  # restored
    finally:
        tiny.model.eval()
        tiny.model.config.mask_time_prob = 0.05
        tiny.model.config.mask_time_length = 10
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
    assert not torch.equal(runs[0], other)


def test_make_batch_refuses_bad_clips(tiny):
    short = Utterance(id="s", audio=np.zeros(399, np.float32), text="A")
    with pytest.raises(ValueError, match=r"'s'.*receptive field"):
        tiny.make_batch([short])
    long_text = Utterance(id="t", audio=np.ones(8000, np.float32), text="A" * 30)
    with pytest.raises(ValueError, match=r"'t'.*needs 59 CTC frames.*only 24"):
        tiny.make_batch([long_text])
    empty = Utterance(id="e", audio=np.ones(8000, np.float32), text="?!")
    with pytest.raises(ValueError, match=r"'e'.*no character"):
        tiny.make_batch([empty])


# ---------------------------------------------------------------------- decoding
def test_batch_transcription_equals_single_clip(tiny):
    audios = _audios(seed=1)
    batch = tiny.transcribe(audios)
    singles = [tiny.transcribe([a])[0] for a in audios]
    assert batch == singles
    assert all(not t.capped for t in batch)
    assert any(t.text for t in batch)  # the random model emits characters
    # Frames past a short clip's valid length decode to characters in the padded batch,
    # so a decoder that did not stop at the valid length would differ from single clips.
    with torch.no_grad():
        logits, lengths = tiny._logits(tiny._collate_audio(audios))
    tail = logits[2, int(lengths[2]) :].argmax(-1)
    if tiny.padding_exact or tiny.batching == "padded":
        assert torch.any(tail != tiny.blank_id)


def test_padded_batching_of_an_inexact_model_really_differs():
    """Why "exact" batching exists: zero padding moves a GroupNorm model's outputs."""
    model = tiny_ctc("wav2vec2")
    audios = _audios()
    with torch.no_grad():
        single = model._logits(model._collate_audio(audios[2:3]))[0][0]
        exact, lengths = model._logits(model._collate_audio(audios))
        model.batching = "padded"
        padded, _ = model._logits(model._collate_audio(audios))
    n = int(lengths[2])
    torch.testing.assert_close(exact[2, :n], single, rtol=1e-5, atol=1e-5)
    assert float((padded[2, :n] - single).abs().max()) > 1e-3


def test_greedy_decoding_collapses_repeats_and_drops_blanks(tiny):
    vocab = {t: i for i, t in enumerate(LIBRISPEECH_CTC_VOCAB)}
    frames = ["<pad>", "H", "H", "E", "<pad>", "L", "L", "<pad>", "L", "O", "|", "|", "W",
              "<pad>", "O", "R", "L", "D", "<pad>", "|"]  # fmt: skip
    assert tiny.decode_ids([vocab[f] for f in frames]) == "HELLO WORLD"
    assert tiny.decode_ids([vocab[f] for f in ["L", "L", "L"]]) == "L"
    assert tiny.decode_ids([0, 0, 0]) == ""


def test_transcribe_restores_training_mode(tiny):
    tiny.model.train()
    tiny.transcribe(_audios()[:1])
    assert tiny.model.training
    tiny.model.eval()


# ------------------------------------------------------------------- layer groups
def test_layer_groups_names_and_types(tiny):
    groups = tiny.layer_groups()
    assert tuple(groups) == LAYER_GROUPS
    modules = dict(tiny.model.named_modules())
    layers = tiny.model.config.num_hidden_layers
    per_layer = 7 if tiny.name.endswith("wavlm") else 6  # q k v out ffn1 ffn2 (+ WavLM gate)
    assert len(groups["blocks"]) == layers * per_layer
    assert all(isinstance(modules[n], nn.Linear) for n in groups["blocks"])
    for kind in ("q_proj", "k_proj", "v_proj", "out_proj", "intermediate_dense", "output_dense"):
        assert sum(n.endswith(kind) for n in groups["blocks"]) == layers
    convs, proj = groups["feature_encoder"][:-1], groups["feature_encoder"][-1]
    assert len(convs) == 7 and all(isinstance(modules[n], nn.Conv1d) for n in convs)
    assert proj.endswith("feature_projection.projection") and isinstance(modules[proj], nn.Linear)
    assert groups["pos_conv"] and all(isinstance(modules[n], nn.Conv1d) for n in groups["pos_conv"])
    assert groups["head"] == ["lm_head"]
    if not tiny.name.endswith("data2vec-audio"):
        (name,) = groups["pos_conv"]
        assert name.endswith("encoder.pos_conv_embed.conv")
        weight_norm = modules[name].parametrizations.weight
        assert weight_norm.original0.shape[:2] == (1, 1)  # g, per kernel tap (dim=2)


def test_every_listed_layer_is_called_as_a_module(tiny):
    """A quantizer that swaps or hooks these modules must see every one of them run."""
    called: set[str] = set()
    names = [n for group in tiny.layer_groups().values() for n in group]
    handles = [
        tiny.model.get_submodule(n).register_forward_hook(
            lambda _m, _i, _o, n=n: called.add(n)
        )
        for n in names
    ]
    try:
        with torch.no_grad():
            tiny.forward(tiny.make_batch(_utterances()))
    finally:
        for h in handles:
            h.remove()
    assert called == set(names)


def test_wavlm_attention_via_modules_matches_transformers():
    from transformers.models.wavlm.modeling_wavlm import WavLMAttention

    model = tiny_ctc("wavlm")
    inputs = model._collate_audio(_audios())
    with torch.no_grad():
        ours = model._logits(inputs)[0]
        for module in model.model.modules():
            if isinstance(module, WavLMAttention):
                del module.torch_multi_head_self_attention  # back to the class method
        with pytest.warns(UserWarning, match="key_padding_mask"):
            theirs = model._logits(inputs)[0]
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------- labels
def test_reference_with_punctuation_apostrophes_digits(tiny):
    text = "Mr. O’Brien's 2 dogs—don't bark; 'tis the 3rd of May, 1850 & café 4.5%!"
    expected = (
        "MISTER O'BRIEN'S TWO DOGS DON'T BARK TIS THE THIRD OF MAY EIGHTEEN FIFTY AND CAFE "
        "FOUR POINT FIVE PERCENT"
    )
    assert tiny.reference_text(text) == expected
    ids = tiny.label_ids(text)
    vocab = {t: i for i, t in enumerate(LIBRISPEECH_CTC_VOCAB)}
    assert ids == [vocab["|" if c == " " else c] for c in expected]
    assert tiny.tokenizer.decode(ids, group_tokens=False) == expected


def test_lowercase_vocabulary_and_digit_vocabulary():
    assert normalize_for_vocab("Hello, World 25!", "abcdefghijklmnopqrstuvwxyz") == (
        "hello world twenty five"
    )
    assert normalize_for_vocab("Hello, World 25!", "abcdefghijklmnopqrstuvwxyz0123456789") == (
        "hello world 25"
    )
    # letters with no accent-free form in the vocabulary are dropped, not mapped to <unk>
    assert normalize_for_vocab("Ωmega straße", "ABCDEFGHIJKLMNOPQRSTUVWXYZ'") == "MEGA STRASSE"


def test_spelled_numbers_read_back_as_digits_by_the_whisper_normaliser():
    """Independent reference: Whisper's English normaliser turns the words back to digits."""
    normalise = EnglishTextNormalizer()
    rng = np.random.default_rng(0)
    numbers = [*range(2, 1100), *rng.integers(0, 10**9, 200).tolist()]
    for n in numbers:
        assert normalise(spell_cardinal(n)) == str(n), n
    for year in range(1100, 2000):
        assert normalise(spell_year(year)) == str(year), year
    # (the normaliser leaves "one" as a word and does not know "ninth")
    for n in (n for n in range(2, 300) if n % 10 != 9):
        suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
        assert normalise(spell_ordinal(n)) == f"{n}{suffix}", n


def test_spell_rejects_out_of_range():
    with pytest.raises(ValueError):
        spell_cardinal(-1)
    with pytest.raises(ValueError):
        spell_year(2001)
