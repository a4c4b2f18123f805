"""``evaluate`` and ``mpqbench eval`` end to end with the tiny random models."""

from __future__ import annotations

import json

import pytest

from librispeech_tree import make_corpus
from mpqbench.bench.records import RECORD_SCHEMA
from mpqbench.cli import main
from mpqbench.workloads.data import LibriSpeechSplit
from mpqbench.workloads.evaluate import evaluate
from mpqbench.workloads.metrics.wer import UtteranceScore, normalize_text
from mpqbench.workloads.models.registry import load_model


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    make_corpus(root, "test-clean")
    return root


@pytest.fixture(scope="module")
def tiny_models():
    return {name: load_model(name) for name in ("tiny-ctc", "tiny-whisper")}


def _eval(corpus, out, *extra, model="tiny-ctc"):
    return main(
        ["eval", "--model", model, "--data", str(corpus), "--split", "test-clean",
         "--device", "cpu", "--no-progress", "--out", str(out), *extra]
    )


@pytest.mark.parametrize("name", ["tiny-ctc", "tiny-whisper"])
def test_batched_rows_match_one_at_a_time_and_keep_split_order(corpus, tiny_models, name):
    model = tiny_models[name]
    split = LibriSpeechSplit(corpus, "test-clean")
    model.model.train()
    batched = evaluate(model, split, batch_size=4, max_new_tokens=8, progress=False)
    assert model.model.training, "evaluate restores the previous mode"
    model.model.eval()
    single = evaluate(model, split, batch_size=1, max_new_tokens=8, progress=False)
    assert [r.score.id for r in batched.rows] == split.ids
    assert [r.score.ref for r in batched.rows] == [normalize_text(e.text) for e in split.entries]
    assert [r.score.hyp for r in batched.rows] == [r.score.hyp for r in single.rows]
    assert any(r.score.hyp for r in batched.rows), "a comparison of empty outputs proves little"
    assert batched.totals == single.totals
    assert batched.num_capped == sum(r.capped for r in batched.rows)
    assert batched.audio_s == pytest.approx(sum(len(u.audio) for u in split) / 16000)


def test_token_cap_is_counted(corpus, tiny_models):
    split = LibriSpeechSplit(corpus, "test-clean")
    result = evaluate(tiny_models["tiny-whisper"], split, max_new_tokens=1, progress=False)
    # A random-init decoder does not emit end-of-text as its first token on every clip.
    assert result.num_capped == sum(r.capped for r in result.rows) > 0
    # a duration cap below one token per clip stops every clip at its first token too
    by_rate = evaluate(tiny_models["tiny-whisper"], split, max_tokens_per_s=1e-9,
                       progress=False)
    assert by_rate.rows == result.rows and by_rate.max_tokens_per_s == 1e-9
    with pytest.raises(ValueError, match="max_tokens_per_s"):
        evaluate(tiny_models["tiny-whisper"], split, max_tokens_per_s=0, progress=False)


@pytest.mark.parametrize(
    ("model", "family", "cap_args", "cap", "rate"),
    [("tiny-ctc", "ctc", (), None, None),
     ("tiny-whisper", "whisper", ("--max-new-tokens", "6"), 6, None),
     ("tiny-whisper", "whisper", ("--max-tokens-per-s", "2.5"), 128, 2.5)],
)
def test_eval_writes_a_complete_record(corpus, tmp_path, capsys, model, family, cap_args, cap,
                                       rate):
    out = tmp_path / "rec" / "r.json"
    assert _eval(corpus, out, "--batch-size", "4", *cap_args, model=model) == 0
    summary = capsys.readouterr().out
    assert "WER" in summary and str(out) in summary
    record = json.loads(out.read_text())
    assert record["schema"] == RECORD_SCHEMA and record["kind"] == "eval"
    assert record["config"] == {
        "model": model, "data": str(corpus.resolve()), "split": "test-clean", "limit": None,
        "seed": None, "decoding": "greedy", "batch_size": 4, "max_new_tokens": cap,
        "normalizer": "openai-whisper-english", "alignment": "unit", "precision": "fp32",
        "max_tokens_per_s": rate,
    }
    assert record["model_family"] == family
    assert record["data"]["source"] == str(corpus.resolve())
    env = record["environment"]  # the same block as cell records
    assert env["device"]["type"] == "cpu" and env["device"]["name"]
    assert {"torch", "transformers", "mpqbench"} <= set(env["libraries"])
    assert list(record["splits"]) == ["test-clean"]
    split = record["splits"]["test-clean"]
    assert split["alignment"] == "unit"
    rows = split["utterances"]
    assert [r["id"] for r in rows] == LibriSpeechSplit(corpus, "test-clean").ids
    for row in rows:
        UtteranceScore.from_dict(row)  # counts agree with the alignment string
        assert isinstance(row["capped"], bool)
    totals = split["totals"]
    for key in "nsdi":
        assert totals[key] == sum(r[key] for r in rows)
    assert split["wer"] == pytest.approx((totals["s"] + totals["d"] + totals["i"]) / totals["n"])
    assert split["num_capped"] == sum(r["capped"] for r in rows)
    assert split["timing"]["wall_s"] > 0 and split["timing"]["utterances_per_s"] > 0
    assert list(out.parent.iterdir()) == [out]  # no temporary file left beside it


def test_limit_and_default_path(corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["eval", "--model", "tiny-whisper", "--data", str(corpus), "--split", "test-clean",
            "--limit", "2", "--no-progress", "--alignment", "sclite"]
    assert main(argv) == 0
    out = tmp_path / "results" / "eval" / f"tiny-whisper__{corpus.name}__test-clean.json"
    record = json.loads(out.read_text())
    assert record["splits"]["test-clean"]["num_utterances"] == 2
    assert record["config"]["limit"] == 2 and record["data"]["utterances_in_split"] == 6
    assert record["config"]["max_new_tokens"] == 128  # Whisper's default cap, recorded
    assert record["config"]["alignment"] == "sclite"
    assert record["splits"]["test-clean"]["alignment"] == "sclite"


def test_existing_record_is_kept_without_overwrite(corpus, tmp_path, capsys):
    out = tmp_path / "r.json"
    out.write_text("precious\n")
    assert _eval(corpus, out) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_text() == "precious\n"
    assert _eval(corpus, out, "--overwrite", "--limit", "1") == 0
    assert json.loads(out.read_text())["splits"]["test-clean"]["num_utterances"] == 1


def test_interrupted_run_leaves_no_record(corpus, tmp_path, monkeypatch, capsys):
    from mpqbench.workloads.models.ctc import CTCSpeechModel

    real_transcribe = CTCSpeechModel.transcribe
    calls = []

    def interrupt_on_second_batch(self, audios, **kwargs):
        calls.append(len(audios))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_transcribe(self, audios, **kwargs)

    monkeypatch.setattr(CTCSpeechModel, "transcribe", interrupt_on_second_batch)
    out_dir = tmp_path / "records"
    assert _eval(corpus, out_dir / "r.json", "--batch-size", "2") == 130
    assert calls == [2, 2]
    assert "interrupted" in capsys.readouterr().err
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


def test_unknown_model_lists_the_registry(corpus, tmp_path, capsys):
    code = main(["eval", "--model", "no-such-model", "--data", str(corpus),
                 "--split", "test-clean", "--out", str(tmp_path / "r.json")])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown model 'no-such-model'" in err and "whisper-tiny.en" in err
    assert not (tmp_path / "r.json").exists()


def test_missing_split_lists_splits(corpus, tmp_path, capsys):
    code = main(["eval", "--model", "tiny-ctc", "--data", str(corpus), "--split", "dev",
                 "--out", str(tmp_path / "r.json")])
    assert code == 2
    assert "splits there: test-clean" in capsys.readouterr().err


def test_reference_empty_after_normalisation_is_refused_before_decoding(tmp_path, capsys):
    make_corpus(tmp_path, "test-clean")
    trans = tmp_path / "test-clean/19/198/19-198.trans.txt"
    trans.write_text("19-198-0000 HELLO WORLD\n19-198-0001 UM UH\n")
    code = main(["eval", "--model", "tiny-ctc", "--data", str(tmp_path), "--split", "test-clean",
                 "--out", str(tmp_path / "r.json"), "--no-progress"])
    assert code == 2
    assert "'19-198-0001'" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


@pytest.mark.slow  # a fresh interpreter imports torch + transformers: seconds, minutes under load
def test_killed_run_leaves_no_record(tmp_path):
    """SIGKILL mid-evaluation: the record only ever appears by one atomic rename at the end."""
    import signal
    import subprocess
    import sys
    import time

    from librispeech_tree import make_chapter

    make_chapter(tmp_path / "many", "1", "2", [f"WORD NUMBER {k}" for k in range(40)],
                 seconds=0.2)
    out = tmp_path / "records" / "r.json"
    code = (
        "from mpqbench.cli import main; raise SystemExit(main(["
        f"'eval', '--model', 'tiny-whisper', '--data', {str(tmp_path / 'many')!r}, "
        f"'--split', 'many', '--batch-size', '1', '--out', {str(out)!r}]))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)
    seen = b""
    deadline = time.monotonic() + 600
    while b" 1/40" not in seen and time.monotonic() < deadline:  # the first clip is done
        chunk = proc.stderr.read1(4096)
        if not chunk:
            break
        seen += chunk
    assert b" 1/40" in seen, seen.decode(errors="replace")[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []
