"""One benchmark cell end to end on tiny models and a synthetic LibriSpeech tree."""

from __future__ import annotations

import dataclasses
import json

import pytest

from mpqbench.bench.cell import CellSpec, run_cell, significance
from mpqbench.cli import main
from mpqbench.method import Budget, Target


@pytest.mark.parametrize("field", ["nonsense=3", "quantizer.bits=2"])
def test_bad_method_field_is_refused_before_loading(corpus, tmp_path, capsys, field):
    # quantizer.bits: the quantizer has no bit-width (the method sets each layer's), so
    # setting one is refused instead of silently ignored.
    argv = ["quantize", "--model", "tiny-ctc", "--data", str(corpus), "--method", "uniform",
            "--avg-bits", "4", "--eval-splits", "test-clean", "--out", str(tmp_path / "x.json"),
            "--set", field, "--reference", str(tmp_path / "missing.json")]
    assert main(argv) == 2
    assert field.split("=")[0].split(".")[-1] in capsys.readouterr().err
    assert not (tmp_path / "missing.json").exists()  # nothing was evaluated


@pytest.mark.parametrize("model", ["tiny-ctc", "tiny-whisper"])
def test_uniform_cell_record(corpus, model, capsys):
    budget = Budget(train_steps=2, batch_size=2, dev_subset=2, seed=0)
    base = CellSpec(model=model, data=str(corpus), method="uniform", target=Target(avg_bits=8),
                    budget=budget, eval_splits=("test-clean",), max_new_tokens=8,
                    groups=("blocks", "embeddings"))
    reference = run_cell(base.reference(), progress=False)
    assert reference["avg_bits"] == 32.0 and reference["compression_ratio"]["value"] == 1.0
    record = run_cell(base, reference=reference, progress=False)
    assert "QAT" not in capsys.readouterr().err, "progress=False must reach the QAT bar"
    json.dumps(record, allow_nan=False)  # records must be strict JSON
    bits = set(record["allocation"]["layers"].values())
    assert bits == {8}
    assert record["avg_bits"] == 8.0 and record["compression_ratio"]["value"] > 1.0
    assert [s["name"] for s in record["stages"]] == ["qat"]
    assert record["stages"][0]["steps"] == 2
    assert record["shared_stages"][0]["name"] == "teacher"
    sig = record["significance"]["test-clean"]
    assert set(sig) == {"mapsswe", "bootstrap", "significantly_worse"}
    assert len(record["splits"]["test-clean"]["utterances"]) == 4  # the corpus fixture
    assert record["config_hash"] == base.config_hash() != base.reference().config_hash()
    # "embeddings" takes the token embedding where the model has one (Whisper's, tied to
    # the output projection; a CTC model has none): the paper's rule then counts it
    # quantized, the blocks-only rule at 32 bits.
    ratios = record["compression_ratios"]
    assert ratios["cr_paper"] == record["compression_ratio"]["value"]
    if model == "tiny-whisper":
        assert record["allocation"]["layers"]["model.decoder.embed_tokens"] == 8
        assert ratios["cr_paper"] > ratios["cr_blocks_only"] > 1.0
        assert "embeddings" not in record["kept_fp32"]
    else:
        assert ratios["cr_paper"] == ratios["cr_blocks_only"]
    assert record["kept_fp32"]["norms"]["parameters"] > 0
    assert record["kept_fp32"]["biases"]["parameters"] > 0
    # The packed export: measured beside the accounting, reloaded, decoding the same text.
    export = record["export"]
    assert export["file"] is None  # no export_path: a temporary file
    assert export["file_bytes"] == export["header_bytes"] + export["accounted_bytes"] + \
        export["buffer_bytes"]
    assert export["reload"]["identical"] == export["reload"]["utterances"] == 4
    assert reference["export"] is None


def test_finetuned_reference_trains_in_32_bits_under_the_cells_budget(corpus):
    budget = Budget(train_steps=2, batch_size=2, dev_subset=2, search_budget=3, seed=4)
    spec = CellSpec(model="tiny-ctc", data=str(corpus), method="uniform",
                    target=Target(avg_bits=4), budget=budget, eval_splits=("test-clean",),
                    fp32_reference="finetuned")
    ref = spec.reference()
    assert ref.method == "fp32" and ref.fp32_reference == "finetuned"
    assert (ref.budget.train_steps, ref.budget.batch_size, ref.budget.seed) == (2, 2, 4)
    assert ref.budget.search_budget == 0
    pretrained = CellSpec(model="tiny-ctc", data=str(corpus), method="uniform",
                          target=Target(avg_bits=4), budget=budget,
                          eval_splits=("test-clean",), fp32_reference="pretrained")
    # "pretrained" is the default and hashes like an unset field (existing records resume).
    assert pretrained.config_hash() == dataclasses.replace(
        pretrained, fp32_reference=None).config_hash()
    assert pretrained.reference().budget.train_steps == 0
    record = run_cell(ref, progress=False)
    assert [s["name"] for s in record["stages"]] == ["finetune"]
    assert record["stages"][0]["steps"] == 2 and record["avg_bits"] == 32.0
    assert record["lossless"] is True
    untouched = run_cell(pretrained.reference(), progress=False)
    assert untouched["stages"] == []
    assert record["info"]["final_loss"] is not None
    with pytest.raises(ValueError, match="fp32_reference"):
        CellSpec(model="tiny-ctc", method="fp32", budget=budget, fp32_reference="tuned")


def test_quantize_cli_writes_reference_then_record(corpus, tmp_path, capsys):
    out = tmp_path / "uniform.json"
    argv = ["quantize", "--model", "tiny-ctc", "--data", str(corpus), "--method", "uniform",
            "--avg-bits", "4", "--train-steps", "1", "--batch-size", "2",
            "--eval-splits", "test-clean", "--out", str(out), "--no-progress",
            "--set", "train.lr=1e-4", "--export", str(tmp_path / "packed.safetensors")]
    assert main(argv) == 0
    assert len(list(tmp_path.glob("tiny-ctc__fp32__*.json"))) == 1
    record = json.loads(out.read_text())
    assert record["method_config"]["train"]["lr"] == 1e-4
    packed = tmp_path / "packed.safetensors"
    assert record["export"]["file"] == str(packed)
    assert packed.stat().st_size == record["export"]["file_bytes"]
    assert set(record["allocation"]["layers"].values()) == {4}
    assert main(argv) == 2  # refuses to overwrite
    assert "already exists" in capsys.readouterr().err


def test_alignment_is_a_recorded_cell_setting_shared_with_the_reference(corpus):
    budget = Budget(train_steps=0, batch_size=1, dev_subset=1, seed=0)
    unit = CellSpec(model="tiny-whisper", data=str(corpus), method="uniform",
                    target=Target(avg_bits=8), budget=budget, eval_splits=("test-clean",),
                    max_new_tokens=8)
    # "unit" is the default and hashes like the unset field (existing records resume)
    assert dataclasses.replace(unit, alignment="unit").config_hash() == unit.config_hash()
    sclite = dataclasses.replace(unit, alignment="sclite")
    assert sclite.config_hash() != unit.config_hash()
    assert sclite.reference().alignment == "sclite"
    assert sclite.reference().config_hash() != unit.reference().config_hash()
    with pytest.raises(ValueError, match="alignment must be one of"):
        dataclasses.replace(unit, alignment="nist")
    ref = run_cell(sclite.reference(), progress=False)
    assert ref["alignment"] == "sclite" and ref["splits"]["test-clean"]["alignment"] == "sclite"
    record = run_cell(sclite, reference=ref, progress=False)
    assert record["alignment"] == "sclite"
    assert "log10_p" in record["significance"]["test-clean"]["mapsswe"]
    unit_ref = run_cell(unit.reference(), progress=False)
    assert unit_ref["alignment"] == "unit"
    with pytest.raises(ValueError, match="same alignment"):
        significance(unit_ref["splits"]["test-clean"], record["splits"]["test-clean"])
