"""What a result depends on, recorded beside it: code version, params, data, seed, software, device."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import timm
import torch

import tas


def git_commit(cwd: Path | None = None) -> dict:
    def run(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        commit = run("rev-parse", "HEAD")
        dirty = bool(run("status", "--porcelain", "--untracked-files=no", "--", "tas", "params.yaml"))
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": dirty if commit else None}


def versions() -> dict:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
        "tas": tas.__version__,
    }


def record(identity: dict, dataset_checksum: str, seed: int, device: str, argv: list[str] | None = None) -> dict:
    """`identity`: the job's identity (tas.jobs.identity): params+code hash of the matrix, code and inputs hashes."""
    return {
        "git": git_commit(),
        "params_hash": identity["params_hash"],
        "code_hash": identity["code_hash"],
        "inputs_hash": identity["inputs_hash"],
        "dataset_checksum": dataset_checksum,
        "seed": seed,
        "versions": versions(),
        "device": device,
        "host": platform.node(),
        "argv": list(argv if argv is not None else sys.argv),
    }
