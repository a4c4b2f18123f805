"""What a record says about where it was produced: device, library versions, git revision."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from mpqbench.precision import native_bf16
from mpqbench.timing import cpu_model

#: Distributions whose versions every record carries.
RECORDED_DISTRIBUTIONS = (
    "mpqbench", "torch", "transformers", "numpy", "jiwer", "soundfile", "soxr",
)


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries that affect results (``None`` if absent)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in RECORDED_DISTRIBUTIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_info(device: str | torch.device) -> dict[str, Any]:
    """The device that ran the work: type, name (CPU model or GPU name), torch threads, and
    whether it multiplies bf16 natively; on a CPU also the kernel set torch dispatches to
    (``cpu_capability``: AVX2, AVX512, ...), since two CPUs of one model name can differ in
    it and bf16 timings differ many times over between them."""
    device = torch.device(device)
    info: dict[str, Any] = {"type": device.type, "torch_threads": torch.get_num_threads(),
                            "bf16_native": native_bf16(device)}
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    else:
        info["name"] = cpu_model()
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return info


def git_revision(path: str | Path | None = None) -> dict[str, Any] | None:
    """The git commit of the checkout holding ``path`` (default: this package), or ``None``.

    Returns:
        ``{"commit": sha, "dirty": bool}`` (dirty: tracked files differ from the commit),
        or ``None`` outside a git checkout or without git.
    """
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())} if commit else None


__all__ = ["RECORDED_DISTRIBUTIONS", "device_info", "git_revision", "library_versions"]
