"""Packed export: exact reload (toy stack and the tiny transformers models), sizes, errors."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from mpqbench.quant import (
    Allocation,
    PackedConv1d,
    PackedLinear,
    Quantizer,
    account,
    allocation_for,
    convert_,
    load_packed,
    packed_modules,
    prepare_,
    read_packed_metadata,
    save_packed,
)
from mpqbench.workloads.data.types import Utterance
from mpqbench.workloads.models.registry import load_model
from quant_toys import STACK_LAYERS, stack, stack_input

#: Float results here depend on which CPU kernels torch runs: .ci/run repeats them on AVX2.
pytestmark = pytest.mark.kernels


def _trained_stack(alloc: Allocation, spec: Quantizer) -> nn.Module:
    model = stack()
    prepare_(model, alloc, spec)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    model(stack_input()).square().mean().backward()
    opt.step()
    return model


@pytest.mark.parametrize(
    "spec", [Quantizer(), Quantizer(learnable_scale=True, granularity="per_tensor")],
    ids=["max-channel", "lsq-tensor"],
)
def test_stack_round_trip_is_exact_for_every_bit_width(tmp_path, spec):
    for offset in range(2):  # every bits value on every layer kind over the two rounds
        bits = {n: 1 + (i * 3 + offset * 4) % 8 for i, n in enumerate(STACK_LAYERS)}
        alloc = Allocation("stack", bits)
        model = _trained_stack(alloc, spec)
        with torch.no_grad():
            expected = model(stack_input())
        path = tmp_path / f"stack{offset}.safetensors"
        info = save_packed(model, alloc, path)
        loaded = load_packed(stack(seed=123), path)
        assert {n: m.bits for n, m in packed_modules(loaded).items()} == bits
        with torch.no_grad():
            assert torch.equal(loaded(stack_input()), expected)
        # exporting the converted model writes the same tensors
        convert_(model)
        info2 = save_packed(model, alloc, tmp_path / "again.safetensors")
        assert info2.file_bytes == info.file_bytes
        # sizes: every byte of the file is accounted for
        acc = account(model, alloc)
        assert info.accounted_bytes == acc.size_packed_bytes.value
        assert info.packed_weight_bytes + info.scale_bytes + info.rest_parameter_bytes == (
            info.accounted_bytes
        )
        assert info.file_bytes == info.header_bytes + info.accounted_bytes + info.buffer_bytes
        assert info.buffer_bytes == 0


def test_stack_file_layout(tmp_path):
    alloc = Allocation("stack", {"lin": 3, "pos": 5, "conv": None})
    model = _trained_stack(alloc, Quantizer())
    path = tmp_path / "m.safetensors"
    save_packed(model, alloc, path)
    meta = read_packed_metadata(path)
    assert meta["allocation"] == alloc and meta["model"] == "stack"
    assert meta["layers"]["lin"] == {
        "bits": 3, "shape": [32, 16], "kind": "linear", "granularity": "per_channel",
    }
    assert meta["layers"]["pos"]["kind"] == "conv1d"
    assert meta["aliases"] == {"tied.weight": "out.weight"}
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        keys = set(fh.keys())
        assert fh.get_tensor("lin.qweight").dtype == torch.uint8
        assert fh.get_tensor("lin.qweight").shape == ((32 * 16 * 3 + 7) // 8,)
        assert fh.get_tensor("lin.scale").shape == (32, 1)
        assert fh.get_tensor("lin.scale").dtype == torch.float32
    assert "lin.weight" not in keys and not any(k.startswith("pos.parametrizations") for k in keys)
    assert {"lin.bias", "pos.bias", "conv.weight", "out.weight"} <= keys
    # the weight-normalised conv reloads as a plain packed conv; the tie is restored
    loaded = load_packed(stack(seed=7), path)
    assert isinstance(loaded.pos, PackedConv1d) and isinstance(loaded.lin, PackedLinear)
    assert loaded.tied.weight is loaded.out.weight


def _utterances(n: int = 2) -> list[Utterance]:
    rng = np.random.default_rng(0)
    return [
        Utterance(f"1-1-{i}", (rng.standard_normal(8000 * (i + 2)) * 0.1).astype(np.float32),
                  "hello world")
        for i in range(n)
    ]


@pytest.mark.parametrize("name", ["tiny-whisper", "tiny-ctc"])
def test_tiny_model_packed_reload_is_exact(tmp_path, name):
    speech = load_model(name)
    speech.model.eval()
    groups = {g: 4 for g, layers in speech.layer_groups().items() if layers}
    alloc = allocation_for(speech, groups=groups)
    cycle = itertools.cycle(range(1, 9))
    alloc = alloc.with_bits({n: next(cycle) for n in alloc.layers})  # every b in 1..8
    assert prepare_(speech, alloc, Quantizer(learnable_scale=True)) is speech
    batch = speech.make_batch(_utterances())
    with torch.no_grad():
        expected = speech.forward(batch).logits
    path = tmp_path / "packed.safetensors"
    info = save_packed(speech, alloc, path)

    skeleton = load_model(name)
    skeleton.model.eval()
    with torch.no_grad():
        for p in skeleton.model.parameters():
            p.add_(1.0)  # the file must overwrite every tensor
    assert load_packed(skeleton, path) is skeleton
    assert set(packed_modules(skeleton.model)) == set(alloc.quantized)
    with torch.no_grad():
        assert torch.equal(skeleton.forward(batch).logits, expected)
    assert convert_(speech) is speech
    with torch.no_grad():
        assert torch.equal(speech.forward(batch).logits, expected)
    assert info.file_bytes == info.header_bytes + info.accounted_bytes + info.buffer_bytes


def test_file_size_within_two_percent_of_accounting(tmp_path):
    speech = load_model("tiny-whisper")  # 3.6M parameters: the header is small beside them
    alloc = allocation_for(speech, 4, groups=["blocks", "feature_encoder"])
    prepare_(speech.model, alloc)
    info = save_packed(speech, alloc, tmp_path / "w.safetensors")
    assert abs(info.relative_to_accounting) < 0.02, info.to_dict()
    assert info.file_bytes == (tmp_path / "w.safetensors").stat().st_size


def test_export_errors(tmp_path):
    alloc = Allocation("stack", {"lin": 4})
    with pytest.raises(ValueError, match="'lin' is a plain Linear"):
        save_packed(stack(), alloc, tmp_path / "x.safetensors")
    model = _trained_stack(alloc, Quantizer())
    with pytest.raises(ValueError, match="'lin' has 4 bits but the allocation says 3"):
        save_packed(model, Allocation("stack", {"lin": 3}), tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match=r"\['lin'\] are not in the allocation"):
        save_packed(model, Allocation("stack", {"conv": None}), tmp_path / "x.safetensors")
    assert not list(tmp_path.iterdir()), "failed exports must leave no file behind"


def test_load_errors_name_the_file(tmp_path):
    alloc = Allocation("stack", {"lin": 4})
    path = tmp_path / "m.safetensors"
    save_packed(_trained_stack(alloc, Quantizer()), alloc, path)

    with pytest.raises(ValueError, match="no module 'lin'") as err:
        load_packed(nn.Sequential(nn.Linear(16, 32)), path)
    assert str(path) in str(err.value)

    class Wide(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(17, 32)

    with pytest.raises(ValueError, match=r"'lin' has shape \(32, 16\) but the model \(32, 17\)"):
        load_packed(Wide(), path)

    class Other(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(16, 32)

    with pytest.raises(ValueError, match="tensors do not match the model") as err:
        load_packed(Other(), path)
    assert str(path) in str(err.value)

    plain = tmp_path / "plain.safetensors"
    save_file({"a": torch.zeros(2)}, plain)
    with pytest.raises(ValueError, match="metadata field 'format'"):
        load_packed(stack(), plain)
    save_file({"a": torch.zeros(2)}, plain, metadata={
        "format": "mpqbench.packed", "format_version": "1", "allocation": "{oops",
        "layers": "{}", "aliases": "{}",
    })
    with pytest.raises(ValueError, match="'allocation' is not valid JSON"):
        load_packed(stack(), plain)
    bad_alloc = json.dumps({**alloc.to_dict(), "layers": {"lin": 11}})
    save_file({"a": torch.zeros(2)}, plain, metadata={
        "format": "mpqbench.packed", "format_version": "1", "allocation": bad_alloc,
        "layers": "{}", "aliases": "{}",
    })
    with pytest.raises(ValueError, match=r"layer 'lin'.*got 11"):
        load_packed(stack(), plain)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_packed(stack(), garbage)
    with pytest.raises(FileNotFoundError):
        load_packed(stack(), tmp_path / "missing.safetensors")
