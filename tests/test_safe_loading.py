"""No pickle from user-supplied paths (issue 6, item 5).

* a source scan: nothing under ``src/`` imports a pickle-based loader (pickle, dill,
  cloudpickle, joblib, shelve, marshal), calls ``torch.load`` without ``weights_only=True``,
  passes ``weights_only=False`` or ``allow_pickle=True`` anywhere, calls ``yaml.load`` /
  ``yaml.unsafe_load``, ``torch.jit.load`` or ``pandas.read_pickle``. The scanner is
  tested on snippets, so it cannot pass by finding nothing.
* the checkpoint loader refuses a verified checkpoint that carries a pickled callable
  (the same file runs its payload under ``torch.load(weights_only=False)``);
* packaged model files are checked by sha256 before use: every file the packaged Whisper
  models read has a digest, the installed files match it, and a mismatch is refused.
"""

from __future__ import annotations

import ast
import hashlib
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mpqbench.quant.checkpoint import load_latest_checkpoint, save_checkpoint
from mpqbench.workloads.models.whisper_convert import PACKAGED_WHISPER, PackageFile, package_file

SRC = Path(__file__).resolve().parent.parent / "src"

_PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve",
                   "marshal"}
_ALWAYS_UNSAFE_CALLS = {"yaml.load", "yaml.unsafe_load", "yaml.full_load", "torch.jit.load",
                        "jit.load", "pd.read_pickle", "pandas.read_pickle"}


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_loads(source: str, filename: str = "<src>") -> list[str]:
    """Findings ``file:line: what`` for pickle-based loading in Python ``source``."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in _PICKLE_MODULES:
                    found.append(f"{where}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] in _PICKLE_MODULES:
                found.append(f"{where}: from {node.module} import ...")
            if node.module == "torch" and any(a.name == "load" for a in node.names):
                found.append(f"{where}: from torch import load (use torch.load(weights_only=True))")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            keywords = {k.arg: k.value for k in node.keywords}
            if name in _ALWAYS_UNSAFE_CALLS:
                found.append(f"{where}: {name}()")
            if name in ("torch.load", "th.load") and not _is_true(keywords.get("weights_only")):
                found.append(f"{where}: {name}() without weights_only=True")
            for key, value in keywords.items():
                if key == "weights_only" and not _is_true(value):
                    found.append(f"{where}: {name}(weights_only=...) not True")
                if key == "allow_pickle" and not (
                    isinstance(value, ast.Constant) and value.value is False
                ):
                    found.append(f"{where}: {name}(allow_pickle=...) not False")
    return found


@pytest.mark.parametrize(("snippet", "hits"), [
    ("import torch\ntorch.load(p)", 1),
    ("import torch\ntorch.load(p, map_location='cpu', weights_only=True)", 0),
    ("import torch\ntorch.load(p, weights_only=False)", 2),
    ("import torch\ntorch.load(p, weights_only=flag)", 2),
    ("import pickle\npickle.loads(b)", 1),
    ("from pickle import load", 1),
    ("import joblib", 1),
    ("import dill as d", 1),
    ("from torch import load", 1),
    ("import numpy as np\nnp.load(p)", 0),
    ("import numpy as np\nnp.load(p, allow_pickle=True)", 1),
    ("import yaml\nyaml.load(s)", 1),
    ("import yaml\nyaml.safe_load(s)", 0),
    ("m.from_pretrained(d, weights_only=True)", 0),
    ("m.from_pretrained(d, weights_only=False)", 1),
    ("import torch\ntorch.jit.load(p)", 1),
    ("s = 'torch.load(p) in a string is not a call'", 0),
], ids=lambda v: v if isinstance(v, int) else v.splitlines()[-1][:40])
def test_scanner_finds_unsafe_loading(snippet, hits):
    assert len(unsafe_loads(snippet)) == hits, unsafe_loads(snippet)


def test_no_pickle_based_loading_under_src():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 50  # the scan really covers the package
    findings = [f for path in files
                for f in unsafe_loads(path.read_text(encoding="utf-8"), str(path.relative_to(SRC)))]
    assert not findings, "pickle-based loading in src/:\n" + "\n".join(findings)


def test_transformers_model_loading_under_src_is_weights_only():
    """Every ``<Model>.from_pretrained`` call of a torch model says ``weights_only=True``."""
    model_call = re.compile(r"(For\w+|model_cls)\.from_pretrained\(")
    missing = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and model_call.search(ast.unparse(node.func) + "(")
                and not any(k.arg == "weights_only" and _is_true(k.value) for k in node.keywords)
            ):
                missing.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not missing, f"from_pretrained without weights_only=True: {missing}"


# ----------------------------------------------------------------------- checkpoints
class _Payload:
    """Unpickling this runs a shell command: what a malicious checkpoint would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_checkpoint_with_a_pickled_callable_is_refused(tmp_path, caplog):
    directory = tmp_path / "ckpt"
    good = {"step": 10, "weight": torch.arange(4.0)}
    save_checkpoint(directory, 10, good)
    marker = tmp_path / "payload-ran"
    evil = directory / "step-000020.pt"
    torch.save({"step": 20, "weight": torch.zeros(4), "extra": _Payload(marker)}, evil)
    # a correct checksum: only weights_only stands between the file and the payload
    (directory / "step-000020.pt.sha256").write_text(_digest(evil) + "\n")

    with caplog.at_level(logging.WARNING, logger="mpqbench.quant.checkpoint"):
        step, state = load_latest_checkpoint(directory)
    assert not marker.exists(), "the checkpoint loader executed pickled code"
    assert step == 10 and torch.equal(state["weight"], good["weight"])
    assert any("step-000020.pt" in r.getMessage() and "cannot be read" in r.getMessage()
               for r in caplog.records)

    # the payload is live: an unsafe load of the same file runs it (in a child process)
    code = f"import torch; torch.load({str(evil)!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, timeout=120,
                   cwd=Path(__file__).parent)
    assert marker.exists(), "the test payload did not run under weights_only=False"


def test_only_checkpoint_with_a_pickled_callable_gives_none(tmp_path):
    directory = tmp_path / "ckpt"
    directory.mkdir()
    evil = directory / "step-000001.pt"
    torch.save({"extra": _Payload(tmp_path / "ran")}, evil)
    (directory / "step-000001.pt.sha256").write_text(_digest(evil) + "\n")
    assert load_latest_checkpoint(directory) is None
    assert not (tmp_path / "ran").exists()


# ----------------------------------------------------------------- packaged model files
def test_every_packaged_model_file_has_a_digest():
    for spec in PACKAGED_WHISPER.values():
        assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256), spec.name
        for item in (*spec.parts, spec.tokenizer, spec.ct2_config):
            assert re.fullmatch(r"[0-9a-f]{64}", item.sha256), (spec.name, item.relpath)


@pytest.mark.parametrize("name", sorted(PACKAGED_WHISPER))
def test_installed_package_files_match_their_digests(name):
    spec = PACKAGED_WHISPER[name]
    for item in (spec.tokenizer, spec.ct2_config):
        try:
            path = package_file(item, spec.install)  # verifies the digest
        except FileNotFoundError as exc:
            pytest.skip(f"{item.module} not installed: {exc}")
        assert hashlib.sha256(path.read_bytes()).hexdigest() == item.sha256


def test_package_file_refuses_a_wrong_digest():
    # json is a package that is always installed; its __init__.py stands in for a model file
    real = package_file(PackageFile("json", "__init__.py"), "pip install nothing")
    good = hashlib.sha256(real.read_bytes()).hexdigest()
    assert package_file(PackageFile("json", "__init__.py", good), "pip install x") == real
    with pytest.raises(ValueError, match=r"__init__\.py: sha256 mismatch .*pip install x"):
        package_file(PackageFile("json", "__init__.py", "0" * 64), "pip install x")
    assert package_file(PackageFile("json", "__init__.py", "0" * 64), "x", verify=False) == real
