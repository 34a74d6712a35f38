"""The report's one data object: every run record of an experiment, read once, handed to tables and plots.

`load(results_root, spec)` reads, for every (pair, method, seed) cell of the spec, the run's eval JSON,
its metrics.json provenance and its history.csv, and every teacher's eval JSON. A run that is not
there is kept as a row with a `status` saying why (never run, unfinished or failed, trained but not
evaluated, an unreadable eval), so a table shows an empty cell with a footnote instead of stopping.
Top-1 values are used as the evaluate subcommand writes them (percent); numbers are never filled in.
A run's `top1` is the one the table shows (TableSpec.report): the last epoch's, or, for `best`, the eval's
`best_epoch_top1`; a run whose eval lacks the shown one is a missing cell with its reason, never the other.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tas import paths
from tas.errors import TasError
from tas.report.paper import PaperTable, load_paper_table, teacher_values
from tas.report.spec import READOUT_FIELDS, TableSpec

EVAL_FIELDS = ("top1", "top5", "params", "extra_params", "flops", "images_per_s", "teacher_top1", "best_epoch_top1",
               "best_epoch")
TEACHER_FIELDS = ("top1", "top5", "params", "flops", "images_per_s")
PROVENANCE_FIELDS = ("git_commit", "git_dirty", "params_hash", "code_hash", "dataset_checksum", "device", "wall_time_s")
OK = "ok"


def _num(value) -> float:
    """Optional numeric field -> float, NaN when absent or not a number (kept missing, never guessed)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def _json(path: Path) -> dict:
    """A JSON object, or a ValueError naming what is wrong with the file."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"unreadable ({err.__class__.__name__})") from None
    if not isinstance(record, dict):
        raise ValueError("holds no JSON object")
    return record


def _check_ids(path: Path, record: dict, expect: dict) -> None:
    # A mismatch means a file was copied or moved by hand: tabulating it would put numbers in the
    # wrong cell, which no footnote can make right.
    for key, want in expect.items():
        if key in record and str(record[key]) != str(want):
            raise TasError(f"eval file {path} says {key}={record[key]!r} but its path says {want!r}; "
                           f"re-run `python -m tas evaluate` for it")


NOT_RECORDED = "not recorded"  # status of a run whose eval predates the shown top-1 (best_epoch_top1)


def _read_eval(path: Path, expect: dict, field: str = "top1") -> tuple[dict | None, str, str]:
    """(record, "ok", ""), or (None, status, why it cannot be used) for an unreadable file, a non-finite
    `field`, or (status NOT_RECORDED) an eval written before `field` was recorded."""
    try:
        record = _json(path)
    except ValueError as err:
        return None, "failed", f"eval JSON {err}: delete it and re-run `python -m tas evaluate`"
    _check_ids(path, record, expect)
    if field != "top1" and field not in record:
        return None, NOT_RECORDED, (f"eval JSON has no {field} (evaluated before it was recorded): "
                                    "re-run `python -m tas evaluate`, and `python -m tas distill` first if the run's "
                                    "metrics.json lacks it too")
    top1 = record.get(field)
    if isinstance(top1, bool) or not isinstance(top1, (int, float)) or not math.isfinite(top1):
        what = "top-1" if field == "top1" else field
        return None, "failed", f"eval JSON has no finite {what} (got {top1!r}): re-run `python -m tas evaluate`"
    return record, OK, ""


def _provenance(job_dir: Path) -> dict:
    """Provenance fields of a training job from its provenance.json, and its wall time from metrics.json
    (empty where a file is absent or unreadable)."""
    try:
        metrics = _json(job_dir / paths.METRICS_FILE)
    except ValueError:
        return {}
    try:
        prov = _json(job_dir / paths.PROVENANCE_FILE)
    except ValueError:
        prov = {}
    prov = prov if isinstance(prov, dict) else {}
    git = prov.get("git") if isinstance(prov.get("git"), dict) else {}
    return {"git_commit": git.get("commit"), "git_dirty": git.get("dirty"), "params_hash": prov.get("params_hash"),
            "code_hash": prov.get("code_hash"), "dataset_checksum": prov.get("dataset_checksum"),
            "device": prov.get("device"), "wall_time_s": _num(metrics.get("wall_time_s"))}


def _absent(run_dir: Path) -> tuple[str, str]:
    """Why a run has no eval JSON, from what its directory holds."""
    if (run_dir / paths.METRICS_FILE).is_file():
        return "not evaluated", "trained but not evaluated: run `python -m tas evaluate`"
    if run_dir.is_dir():
        return "unfinished", ("training did not finish (failed or still running): "
                              f"see {paths.checkpoint_dir(run_dir) / paths.LOG_FILE}")
    return "not run", "not run"


def _history(run_dir: Path) -> pd.DataFrame | None:
    path = run_dir / paths.HISTORY_FILE
    if not path.is_file():
        return None
    try:
        hist = pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise TasError(f"history file {path} is unreadable ({err}); "
                       "delete the run and re-run `python -m tas distill`") from None
    return hist if "epoch" in hist else None


@dataclass(frozen=True)
class ReportData:
    """Everything the tables and plots of one experiment show.

    runs: one row per (pair, method, seed) of the spec, measured or not (`status` "ok" when measured;
    else `reason`); a teacher-free run appears in the row of every pair with its student.
    teachers: one row per teacher of the spec (top-1 NaN where not evaluated), with `paper_top1`.
    histories: history.csv rows of every run, stacked with pair / method / seed columns."""

    spec: TableSpec
    paper: PaperTable | None
    root: Path  # results root the records were read from; the tables and plots are written under it
    runs: pd.DataFrame = field(hash=False)
    teachers: pd.DataFrame = field(hash=False)
    histories: pd.DataFrame = field(hash=False)

    @property
    def measured(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] == OK]

    def samples(self, pair: str, method: str, column: str = "top1") -> list[float]:
        """The measured values of one cell over seeds, in seed order (NaN-free)."""
        rows = self.measured
        if column not in rows:  # an auxiliary no method of the table reports
            return []
        values = rows.loc[(rows["pair"] == pair) & (rows["method"] == method), column]
        return [float(v) for v in values if not math.isnan(v)]

    def history(self, pair: str, method: str) -> pd.DataFrame:
        h = self.histories
        return h[(h["pair"] == pair) & (h["method"] == method)] if len(h) else h


def load(results_root: str | Path, spec: TableSpec, paper: PaperTable | None = None) -> ReportData:
    """Read every record the report needs once. `paper` overrides spec.paper_table.

    One clear error when nothing at all has been evaluated; otherwise missing runs are rows with a reason."""
    if paper is None and spec.paper_table:
        paper = load_paper_table(spec.paper_table)
    rows, histories, seen = [], [], {}
    shown = READOUT_FIELDS[spec.report]
    for ref in spec.pairs:
        for method in spec.methods:
            for seed in spec.seeds:
                run = spec.run(ref, method, seed)
                run_dir, eval_path = run.dir(results_root), run.eval_path(results_root)
                if eval_path.is_file():
                    record, status, reason = _read_eval(eval_path, run.ids(), shown)
                else:
                    record = None
                    status, reason = _absent(run_dir)
                rows.append({"pair": ref.pair, "teacher": ref.teacher, "student": ref.student, "method": method,
                             "seed": seed, "status": status, "reason": "" if status == OK else reason,
                             "run_dir": str(run_dir), "eval_path": str(eval_path),
                             **{f: _num((record or {}).get(f)) for f in EVAL_FIELDS},
                             "top1": _num((record or {}).get(shown)),
                             **{f"aux_{a}_top1": _num(((record or {}).get("auxiliary") or {}).get(a, {}).get("top1"))
                                for a in spec.auxiliaries},  # an eval's `auxiliary` record: columns aux_<name>_top1
                             **{f: None for f in PROVENANCE_FIELDS}, **_provenance(run_dir)})
                # A shared (teacher-free) run is read from disk once, then shown in every pair row.
                if run_dir not in seen:
                    seen[run_dir] = _history(run_dir)
                if seen[run_dir] is not None:
                    histories.append(seen[run_dir].assign(pair=ref.pair, method=method, seed=seed))
    runs = pd.DataFrame(rows)
    if not (runs["status"] == OK).any() and (runs["status"] == NOT_RECORDED).any():
        raise TasError(f"no run eval of experiment {spec.experiment!r} holds {shown} (table.report: {spec.report}); "
                       f"evaluate the runs again (`snakemake --cores 2 --config experiment={spec.experiment} "
                       "--forcerun evaluate_run evaluate_student_run`), or set table.report: last")
    if not (runs["status"] == OK).any():
        raise TasError(f"no run evals found under {paths.experiment_dir(results_root, spec.experiment) / 'eval'}; "
                       f"run the study first: `snakemake --cores 2 --config experiment={spec.experiment}` "
                       f"(or `dvc repro`; one run: `python -m tas evaluate --experiment {spec.experiment} "
                       "--pair T-S --method M`)")
    return ReportData(spec, paper, Path(results_root), runs.astype({"seed": "int64"}),
                      _teachers(results_root, spec, paper),
                      pd.concat(histories, ignore_index=True) if histories else pd.DataFrame())


def _teachers(results_root: str | Path, spec: TableSpec, paper: PaperTable | None) -> pd.DataFrame:
    published = teacher_values((spec.experiment, *([paper.dataset] if paper is not None else [])))
    rows = []
    for teacher in dict.fromkeys(ref.teacher for ref in spec.pairs):
        path = paths.teacher_eval(results_root, spec.experiment, teacher)
        record, _, reason = _read_eval(path, {"experiment": spec.experiment, "model": teacher}) if path.is_file() \
            else (None, "missing",
                  f"not evaluated: run `python -m tas evaluate --experiment {spec.experiment} --teacher {teacher}`")
        job_dir = paths.teacher_dir(results_root, spec.experiment, teacher)
        rows.append({"teacher": teacher, "status": OK if record is not None else "missing",
                     "reason": "" if record is not None else reason,
                     "run_dir": str(job_dir), "eval_path": str(path),
                     **{f: _num((record or {}).get(f)) for f in TEACHER_FIELDS},
                     "paper_top1": published.get(teacher, math.nan),
                     **{f: None for f in PROVENANCE_FIELDS}, **_provenance(job_dir)})
    return pd.DataFrame(rows)
