"""The only place that spells artifact paths.

Everything a job reads or writes is named here, relative to the project root (or absolute when
params.yaml says so), so that Snakemake rules, dvc.yaml and the CLI always agree.

    data/<dataset>/                                 prepared arrays + meta.json
    data/checkpoints/                               teacher checkpoints downloaded from URLs (+ .sha256)
    results/<exp>/teachers/<teacher>/               model.pt metrics.json history.csv log.txt provenance.json ckpt/
    results/<exp>/prepared/<pair>/<method>.json     what a method builds before its runs (TAS: its assistant's plan)
    results/<exp>/runs/<pair>/<method>/seed<k>/     model.pt metrics.json history.csv log.txt ckpt/
    results/<exp>/runs/<student>/<method>/seed<k>/  the same, for a teacher-free method (scratch)
    results/<exp>/eval/teachers/<teacher>.json
    results/<exp>/eval/runs/<pair>/<method>/seed<k>.json
    results/<exp>/eval/runs/<student>/<method>/seed<k>.json
    results/<exp>/tables/   results/<exp>/plots/

A method that needs no teacher (scratch) depends only on the experiment, the student, the method and
the seed, so its run exists once per student and every pair with that student shares it. A bare model
id never contains '-' and a pair id always does, so a student's run never collides with a pair's.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

MODEL_FILE = "model.pt"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
LOG_FILE = "log.txt"
# Where a training job's result came from (git commit, params/code hashes, dataset checksum, versions,
# device): apart from metrics.json, so that `dvc metrics show` lists results only.
PROVENANCE_FILE = "provenance.json"
TRAINING_OUTPUTS = (MODEL_FILE, METRICS_FILE, HISTORY_FILE, LOG_FILE, PROVENANCE_FILE)
# The uint8 arrays prepare-data writes for in-memory datasets (data/<dataset>/<name>.npy), in checksum order.
DATASET_ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")
# Resume state of a training job (in checkpoint_dir): the whole state of the last complete epoch.
RESUME_FILE = "last.pt"
# Where a resume checkpoint of a different job (changed params, code or inputs) is moved: kept, not resumed.
STALE_RESUME_FILE = "stale.pt"
# Held (lockf) by the process training a job, in checkpoint_dir: one writer per job folder (tas.engine.run_lock).
RUN_LOCK_FILE = "run.lock"


def pair_id(teacher: str, student: str) -> str:
    """Model ids never contain '-', so the pair id splits back unambiguously."""
    return f"{teacher}-{student}"


def dataset_dir(data_root: str | Path, dataset: str) -> Path:
    return Path(data_root) / dataset


URL_SCHEMES = ("http", "https", "file")
# A smoke study's folders sit beside the real ones (`data-smoke/`, `results-smoke/`, `logs/snakemake-smoke/`):
# a smoke job never writes where a real one does, and a real table or benchmark never reads a smoke record.
SMOKE_SUFFIX = "-smoke"


def is_url(text: str | None) -> bool:
    """A checkpoint given as a URL (downloaded into checkpoint_cache) rather than a local path."""
    return bool(text) and urlsplit(text).scheme in URL_SCHEMES


def checkpoint_cache(data_root: str | Path) -> Path:
    """Where teacher checkpoints given by URL are downloaded (tas.models.download), one file per URL."""
    return Path(data_root) / "checkpoints"


def dataset_meta(data_root: str | Path, dataset: str) -> Path:
    return dataset_dir(data_root, dataset) / "meta.json"


def experiment_dir(results_root: str | Path, experiment: str) -> Path:
    return Path(results_root) / experiment


def teacher_dir(results_root: str | Path, experiment: str, teacher: str) -> Path:
    return experiment_dir(results_root, experiment) / "teachers" / teacher


def prepared_record(results_root: str | Path, experiment: str, pair: str, method: str) -> Path:
    """What a method declares `built_first`, built for one pair (tas.jobs.prepare_run)."""
    return experiment_dir(results_root, experiment) / "prepared" / pair / f"{method}.json"


def _run_subpath(owner: str, method: str, seed: int | str, suffix: str = "") -> Path:
    """<owner>/<method>/seed<k><suffix>: owner is a pair id, or a student id for a teacher-free run."""
    return Path(owner) / method / f"seed{seed}{suffix}"


def run_dir(results_root: str | Path, experiment: str, pair: str, method: str, seed: int | str) -> Path:
    """A run of a method that needs a teacher: one per pair."""
    return experiment_dir(results_root, experiment) / "runs" / _run_subpath(pair, method, seed)


def student_run_dir(results_root: str | Path, experiment: str, student: str, method: str, seed: int | str) -> Path:
    """A run of a teacher-free method: one per student, shared by every pair with that student."""
    return experiment_dir(results_root, experiment) / "runs" / _run_subpath(student, method, seed)


def teacher_eval(results_root: str | Path, experiment: str, teacher: str) -> Path:
    return experiment_dir(results_root, experiment) / "eval" / "teachers" / f"{teacher}.json"


def run_eval(results_root: str | Path, experiment: str, pair: str, method: str, seed: int | str) -> Path:
    return _eval_runs(results_root, experiment) / _run_subpath(pair, method, seed, ".json")


def student_run_eval(results_root: str | Path, experiment: str, student: str, method: str, seed: int | str) -> Path:
    return _eval_runs(results_root, experiment) / _run_subpath(student, method, seed, ".json")


def _eval_runs(results_root: str | Path, experiment: str) -> Path:
    return experiment_dir(results_root, experiment) / "eval" / "runs"


def tables_dir(results_root: str | Path, experiment: str) -> Path:
    return experiment_dir(results_root, experiment) / "tables"


def plots_dir(results_root: str | Path, experiment: str) -> Path:
    return experiment_dir(results_root, experiment) / "plots"


# Files the tables subcommand writes into tables_dir besides the tables (<name>.csv/.md/.tex/.html).
PROVENANCE_TABLE = "provenance.csv"
SUMMARY_FILE = "summary.json"


def plot_file(results_root: str | Path, experiment: str, name: str) -> Path:
    """results/<exp>/plots/<name>.png (curves_<pair>, gain_over_scratch, tas_assistant, ablation_<pair>)."""
    return plots_dir(results_root, experiment) / f"{name}.png"


def checkpoint_dir(job_dir: Path) -> Path:
    """Resume state lives apart from the final outputs so a partial job never looks finished."""
    return job_dir / "ckpt"
