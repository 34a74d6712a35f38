"""Checks that run before a workflow touches anything: what a job would only find out after Snakemake
had already planned (and deleted) downstream results.

- `unreadable_outputs`: existing outputs of the planned jobs that cannot be read back (a truncated
  model.pt, a half-copied metrics.json). Snakemake plans from modification times alone, so a rewritten
  but broken upstream file looks *newer* and would make it rerun every job below it, deleting their
  complete outputs before the first of them fails on the broken file.
- `missing_inputs`: user files named in params.yaml (local teacher checkpoints, pretrained_file) and
  the raw data of datasets not prepared yet, checked before hours of other jobs run.

Imports nothing heavy (no torch/numpy at parse time); the raw-data check imports a dataset module only
for a dataset that still needs preparing.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Iterable

from tas import paths
from tas.config import Config
from tas.data import sources
from tas.errors import TasError


def unreadable_file(path: Path) -> str | None:
    """Why the existing file at `path` cannot be what its job wrote, or None when it can.

    Cheap on purpose (it runs on every Snakemake start): torch.save writes a zip archive whose central
    directory sits at the end, so a truncated copy fails to open; the full CRC pass is left to loading."""
    try:
        if path.stat().st_size == 0:
            return "empty file"
        if path.suffix == ".pt":
            with zipfile.ZipFile(path) as archive:
                if not any(name.endswith("data.pkl") for name in archive.namelist()):
                    return "a zip archive without torch's data.pkl"
        elif path.suffix == ".json":
            json.loads(path.read_text())
    except zipfile.BadZipFile:
        return "truncated or not a torch file"
    except (ValueError, UnicodeDecodeError) as err:
        return f"not valid JSON: {str(err)[:80]}"
    except OSError as err:
        return f"cannot be read: {err.strerror or err}"
    return None


def unreadable_outputs(jobs: Iterable) -> list[tuple[str, str, str]]:
    """(path, why, job name) of each existing output of `jobs` (tas.matrix.Job) that cannot be read."""
    bad = []
    for job in jobs:
        for out in job.outs:
            path = Path(out)
            if path.suffix in (".pt", ".json") and path.is_file():
                why = unreadable_file(path)
                if why:
                    bad.append((out, why, job.name))
    return bad


def check_outputs(jobs: Iterable) -> None:
    """One TasError naming the first unreadable output (and how many more) with the two ways out."""
    bad = unreadable_outputs(jobs)
    if not bad:
        return
    path, why, name = bad[0]
    more = f" (and {len(bad) - 1} more unreadable output(s))" if len(bad) > 1 else ""
    raise TasError(f"{path} ({name}) is unreadable: {why}{more}; nothing was run or deleted. Restore it "
                   f"(`dvc checkout {path}`) or delete it so that its job writes it again (and the jobs after it rerun)")


def missing_inputs(cfg: Config, experiments: Iterable[str], check_data: bool = True) -> list[str]:
    """One line per user file the selected experiments need and cannot find."""
    problems = []
    chosen = [cfg.experiment(e) for e in experiments]
    for exp in chosen:
        for teacher_id in exp.teachers:
            spec = exp.teacher(teacher_id)
            if spec.checkpoint and not paths.is_url(spec.checkpoint) and not Path(spec.checkpoint).is_file():
                problems.append(f"experiments.{exp.id}.teachers.{teacher_id}.checkpoint {spec.checkpoint} not found; "
                                "fix the path (relative to the project root) or give a URL")
            if spec.pretrained and spec.pretrained_file and not Path(spec.pretrained_file).is_file():
                problems.append(f"experiments.{exp.id}.teachers.{teacher_id}.pretrained_file {spec.pretrained_file} not "
                                "found; fix the path, or drop pretrained_file to fetch timm's weights from the hub")
    if check_data:
        for dataset in dict.fromkeys(cfg.protocol_of(exp).dataset for exp in chosen):
            problem = _missing_raw(cfg, dataset)
            if problem:
                problems.append(problem)
    return problems


def _missing_raw(cfg: Config, spec) -> str | None:
    """The prepare job's own error for a dataset whose raw files are absent (None: prepared, or findable)."""
    if paths.dataset_meta(cfg.data_root, spec.id).is_file():
        return None
    return sources.module(spec.source).missing_raw(spec, cfg.data_root)


__all__ = ["unreadable_file", "unreadable_outputs", "check_outputs", "missing_inputs"]
