"""A training job's identity: what must be equal for a checkpoint of an earlier attempt to be resumable.

It is the job's params+code hash from the matrix (the `hash` Snakemake compares and the code DVC tracks)
and a content hash of every file the job reads (data, teacher weights, assistant, a local checkpoint).
A checkpoint written under another identity belongs to a different job: the trainer refuses to resume it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable, Mapping

from tas import matrix
from tas.config import Config, thaw
from tas.io import file_digest
from tas.runs import Run


def inputs_hash(files: Iterable[str]) -> str:
    """sha256 over the contents of the job's input files (directories: every file under them, by name)."""
    digest = hashlib.sha256()
    for name in files:
        path = Path(name)
        members = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for member in members:
            state = file_digest(member) if member.is_file() else "missing"
            digest.update(f"{member.as_posix()}={state}\n".encode())
    return digest.hexdigest()[:16]


def _hashed_inputs(cfg: Config, job: matrix.Job) -> list[str]:
    """The job's inputs, but of a prepared dataset only its meta.json: it records the arrays' checksum, so
    the arrays (gigabytes for a cached ImageNet) are not read again at every job start."""
    data_root = Path(cfg.data_root).as_posix().rstrip("/") + "/"
    return [p for p in job.inputs if not (p.startswith(data_root) and p.endswith(".npy"))]


def job_identity(cfg: Config, rule: str, wildcards: Mapping[str, str]) -> dict:
    job = matrix.find_job(cfg, rule, wildcards, experiments=[wildcards["experiment"]])
    # Input paths are relative to the project root, where every job runs (as in dvc.yaml and the Snakefile).
    return {"job": job.name, "params_hash": job.params_hash, "code_hash": job.code_hash,
            "inputs_hash": inputs_hash(_hashed_inputs(cfg, job)),
            # the values behind params_hash: a rerun's log names the keys that changed (tas.engine.trainer)
            "params": {key: _value(cfg.raw, key) for key in job.params}}


def _value(tree, dotted: str):
    node = tree
    for part in dotted.split("."):
        node = node[part]
    return thaw(node)


def run_identity(cfg: Config, run: Run) -> dict:
    return job_identity(cfg, matrix.run_rules(run)[0], matrix.run_wildcards(run))
