"""Tables of one experiment from its ReportData: its kind's table (tas/report/kinds/), the assistant table, and
where each number came from; the helpers the kinds share.

Written under results/<exp>/tables/: <table>.{csv,md,tex,html} (the CSV holds the numbers, the others
the same formatted table), provenance.csv (every run behind every cell) and summary.json.
A missing or failed run is an empty cell ('—' in text, empty in CSV, null in JSON) with a footnote; so is a
paper number the paper does not have, or that was not transcribed ('— [nt]', a `_paper_note` CSV column).
Every table also checks the papers' regime (tas.report.regime) and says which top-1 of each run it shows.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from pathlib import Path
from typing import Callable

import pandas as pd

from tas import io, paths
from tas.report import kinds, regime, render, stats
from tas.report.data import OK, PROVENANCE_FIELDS, ReportData
from tas.report.paper import NOT_IMPLEMENTED, NOT_IN_PAPER, NOT_RUN, NOT_TRANSCRIBED
from tas.report.render import MISSING, Display, accuracy, plain
from tas.report.spec import PairRef

AVG_LABEL = "Avg. gain over scratch"
AVG_PAIR = "avg_gain"
SCRATCH = "scratch"
WIN, TIE = "win", "tie"
TIE_SIGN = " ≈"
PROVENANCE = paths.PROVENANCE_TABLE
TEACHER = "teacher"  # the method column of a teacher's rows in provenance.csv


# ---------------------------------------------------------------- per-cell statistics


def cell_stats(data: ReportData, verdicts: dict[str, stats.Verdict] | None = None) -> pd.DataFrame:
    """Per (pair, method) in spec order: top-1 mean / std (ddof 1) / n / 95% t-interval, the row's
    significance mark, extra params, assistant top-1 mean / std / n. n = 0 where nothing was measured."""
    spec, verdicts = data.spec, row_verdicts(data) if verdicts is None else verdicts
    rows = []
    for ref in spec.pairs:
        for m in spec.methods:
            top1, assistant = data.samples(ref.pair, m), data.samples(ref.pair, m, "aux_assistant_top1")
            extra = data.samples(ref.pair, m, "extra_params")
            lo, hi = stats.t_interval(top1)
            v = verdicts[ref.pair]
            rows.append({"pair": ref.pair, "method": m, "mean": stats.mean(top1), "std": stats.sample_std(top1),
                         "n": len(top1), "ci_low": lo, "ci_high": hi,
                         "mark": WIN if v.winner == m else TIE if m in v.tied else "",
                         # a property of the method on that pair, equal across seeds
                         "extra_params": max(extra) if extra else math.nan,
                         "assistant_mean": stats.mean(assistant), "assistant_std": stats.sample_std(assistant),
                         "assistant_n": len(assistant)})
    return pd.DataFrame(rows).set_index(["pair", "method"])


def row_verdicts(data: ReportData) -> dict[str, stats.Verdict]:
    """Per pair row: which method (if any) is ahead of the others beyond noise."""
    return {ref.pair: stats.best_of({m: data.samples(ref.pair, m) for m in data.spec.methods})
            for ref in data.spec.pairs}


def paper_value(data: ReportData, ref: PairRef, method: str) -> float:
    value = data.paper.value(ref.teacher, ref.student, method) if data.paper is not None else None
    return math.nan if value is None else value


def paper_absent(data: ReportData, ref: PairRef, method: str) -> str:
    """Why the paper's cell has no number ('' where it has one): the `_paper_note` of the CSV."""
    return (data.paper.absent(ref.teacher, ref.student, method) or "") if data.paper is not None else ""


def paper_methods(data: ReportData) -> list[str]:
    """The experiment's methods that have a column in the paper (their paper / Δ columns are shown)."""
    return [m for m in data.spec.methods if data.paper is not None and m in data.paper.all_columns]


def absent_columns(data: ReportData) -> list[tuple[str, str]]:
    """Paper columns no method of the experiment fills, with why: (column, NOT_IMPLEMENTED or NOT_RUN).
    They are shown as absent columns beside the paper's numbers, so a reader sees the paper had them."""
    if data.paper is None:
        return []
    return [(c, NOT_IMPLEMENTED if c in data.paper.source_table(c).not_implemented else NOT_RUN)
            for c in data.paper.all_columns if c not in data.spec.methods]


# Short tags of absent paper cells ('— [nt]'), each explained once in the notes of a table that uses it.
ABSENT_TAGS = {NOT_TRANSCRIBED: "nt", NOT_IN_PAPER: "np", NOT_IMPLEMENTED: "ni", NOT_RUN: "nr"}
ABSENT_NOTES = {
    NOT_TRANSCRIBED: "the paper prints a value here that paper_values.yaml does not hold (not transcribed); "
                     "absent, not zero",
    NOT_IN_PAPER: "the paper's table has no such row or column",
    NOT_IMPLEMENTED: "a column of the paper with no method in tas (not implemented), shown for its paper values only",
    NOT_RUN: "a column of the paper whose method this experiment does not run",
}


def absent_text(reason: str) -> str:
    return f"{MISSING} [{ABSENT_TAGS[reason]}]"


def paper_text(value, reason, signed: bool = False) -> str:
    """A paper cell: its number, or '—' with the tag of why it has none (`reason`: a `_paper_note`, which
    pandas holds as NaN where the paper has the number)."""
    return absent_text(reason) if isinstance(reason, str) and reason and render.isnan(value) else plain(value, signed)


def absent_notes(table: pd.DataFrame) -> list[str]:
    """One line per absence tag the table uses (in its `_paper_note` / `_absent` columns)."""
    used = set()
    for c in table.columns:
        if c.endswith(("paper_note", "_absent")):
            used |= set(table[c].dropna()) & set(ABSENT_TAGS)
    return [f"[{ABSENT_TAGS[r]}] {ABSENT_NOTES[r]}." for r in ABSENT_TAGS if r in used]


def compare(s: pd.Series, paper_v: float) -> dict:
    """Our cell beside the paper's: delta and whether the paper's value lies in our 95% interval."""
    within = stats.inside(paper_v, (s["ci_low"], s["ci_high"]))
    return {"paper": paper_v, "diff": s["mean"] - paper_v, "paper_in_ci": pd.NA if within is None else within}


def gain_over_scratch(data: ReportData, method: str) -> dict:
    """Average gain over scratch computed per seed (mean over pairs), then mean ± std over seeds."""
    if method == SCRATCH or SCRATCH not in data.spec.methods:
        return {"mean": math.nan, "std": math.nan, "n": 0, "pairs": 0}
    ok = data.measured
    def by_cell(m):
        rows = ok[ok["method"] == m]
        return {(p, int(s)): float(v) for p, s, v in zip(rows["pair"], rows["seed"], rows["top1"])}
    per_seed = stats.per_seed_gain(by_cell(method), by_cell(SCRATCH), [r.pair for r in data.spec.pairs],
                                   data.spec.seeds)
    gains = [g for g, _ in per_seed.values()]
    return {"mean": stats.mean(gains), "std": stats.sample_std(gains), "n": len(gains),
            "pairs": max((k for _, k in per_seed.values()), default=0)}


# ---------------------------------------------------------------- numeric tables


def drop_empty(table: pd.DataFrame, suffixes: tuple[str, ...]) -> pd.DataFrame:
    """Optional columns (paper, diff, extra params) appear only where some cell has a value."""
    empty = [c for c in table.columns if c.endswith(suffixes) and table[c].isna().all()]
    table = table.drop(columns=empty)
    # Parameter counts are integers; nullable Int64 keeps them exact in the CSV and still missing where missing.
    counts = [c for c in table.columns if c.endswith("extra_params")]
    return table.astype({c: "Int64" for c in counts}) if counts else table


def assistant_table(data: ReportData, cells: pd.DataFrame | None = None) -> pd.DataFrame:
    """Teacher / assistant / student top-1 per (pair, method) for methods whose evals report an assistant.

    Teacher top-1 comes from the teacher eval JSON, else from the runs' `teacher_top1`."""
    spec, cells = data.spec, cell_stats(data) if cells is None else cells
    teachers = data.teachers.set_index("teacher")["top1"]
    rows = []
    for ref in spec.pairs:
        for m in spec.methods:
            s = cells.loc[(ref.pair, m)]
            if s["assistant_n"] == 0:
                continue
            t = teachers.get(ref.teacher, math.nan)
            rows.append({"pair": ref.pair, "label": ref.label, "method": m, "method_name": spec.method_name(m),
                         "teacher_top1": stats.mean(data.samples(ref.pair, m, "teacher_top1")) if math.isnan(t) else t,
                         "assistant_mean": s["assistant_mean"], "assistant_std": s["assistant_std"],
                         "assistant_n": s["assistant_n"], "student_mean": s["mean"], "student_std": s["std"],
                         "student_n": s["n"]})
    columns = ["pair", "label", "method", "method_name", "teacher_top1", "assistant_mean", "assistant_std",
               "assistant_n", "student_mean", "student_std", "student_n"]
    return pd.DataFrame(rows, columns=columns).astype({"assistant_n": "int64", "student_n": "int64"})


def provenance_table(data: ReportData) -> pd.DataFrame:
    """One row per run behind a cell (a teacher-free run under each pair row it fills; the teacher under
    each of its pair rows): where it lies, its status, and what produced it."""
    spec = data.spec
    cols = ["pair", "method", "seed", "status", "top1", "run_dir", "eval_path", *PROVENANCE_FIELDS]
    runs = data.runs[cols]
    teachers = data.teachers.set_index("teacher")
    teacher_rows = [{"pair": ref.pair, "method": TEACHER, "seed": pd.NA,
                     **{c: teachers.loc[ref.teacher, c] for c in cols if c not in ("pair", "method", "seed")}}
                    for ref in spec.pairs]
    table = pd.concat([pd.DataFrame(teacher_rows, columns=cols), runs], ignore_index=True)
    order = {ref.pair: i for i, ref in enumerate(spec.pairs)}
    table = table.assign(_o=table["pair"].map(order)).sort_values(["_o"], kind="stable").drop(columns="_o")
    return table.astype({"seed": "Int64"}).reset_index(drop=True)


# ---------------------------------------------------------------- notes and footnotes


class Footnotes:
    """Numbered footnotes for cells with a missing or failed seed: '[k]' in the cell, its reasons below."""

    def __init__(self, data: ReportData) -> None:
        self.marks: dict[tuple[str, str], int] = {}
        self.lines: list[str] = []
        labels = {ref.pair: ref.label for ref in data.spec.pairs}
        missing = data.runs[data.runs["status"] != OK]
        for (pair, method), group in missing.groupby(["pair", "method"], sort=False):
            reasons = defaultdict(list)
            for seed, reason in zip(group["seed"], group["reason"]):
                reasons[reason].append(str(seed))
            k = len(self.lines) + 1
            self.marks[(pair, method)] = k
            what = "; ".join(f"seed{'s' if len(s) > 1 else ''} {', '.join(s)}: {r}" for r, s in reasons.items())
            self.lines.append(f"[{k}] {labels[pair]}, {data.spec.method_name(method)}: {what}.")
        # A teacher fills the Teacher cell of each of its pair rows: one footnote per teacher.
        for teacher, reason in zip(data.teachers["teacher"], data.teachers["reason"]):
            if reason:
                self.marks[(TEACHER, teacher)] = k = len(self.lines) + 1
                self.lines.append(f"[{k}] teacher {teacher}: {reason}.")

    def tag(self, pair: str, method: str) -> str:
        """' [k]' for a (pair, method) cell, or for (TEACHER, teacher id); '' where nothing is missing."""
        k = self.marks.get((pair, method))
        return f" [{k}]" if k else ""


def readout_caption(data: ReportData) -> str:
    """The caption's word for which top-1 the table shows."""
    return "last-epoch" if data.spec.report == "last" else "best-epoch (selected on the test set)"


def notes(data: ReportData, verdicts: dict[str, stats.Verdict], with_avg: bool, with_teacher: bool) -> list[str]:
    spec = data.spec
    notes = [f"Top-1 (%) mean ± std (sample std) over seeds {', '.join(map(str, spec.seeds))}; '(k/N)' = only k of N "
             f"seeds measured; {MISSING} = not measured; [k] = footnote below.",
             f"Top-1 of each run: {spec.readout}."]
    untested = [ref.label for ref in spec.pairs if verdicts[ref.pair].reason]
    if len(spec.seeds) < 2:
        notes.append(f"No winner is marked: with one seed per method there is no spread to test a difference "
                     f"against (list more seeds in experiments.{spec.experiment}.seeds).")
    else:
        notes.append(f"Bold: the best of its row, ahead of every other method by {stats.TEST_NAME} over seeds at "
                     f"p < {stats.ALPHA}; "
                     f"'≈': the best methods of the row, not separable at p < {stats.ALPHA} (a tie).")
        if untested:
            notes.append(f"Not tested (a method measured on fewer than two seeds): {'; '.join(untested)}.")
    if with_teacher:
        notes.append("Teacher: top-1 of the teacher's own evaluation" +
                     ("; Teacher paper: its published top-1." if data.teachers["paper_top1"].notna().any() else "."))
    if data.paper is not None:
        notes.append(f"Paper: {data.paper.source}, table {data.paper.name}; Δ = ours - paper; '(in)' / '(out)': the "
                     f"paper's value lies inside / outside our {stats.LEVEL:.0%} t-interval over seeds (none with one "
                     f"seed). {data.paper.note}".rstrip())
        shown = set(paper_methods(data)) | {c for c, _ in absent_columns(data)}
        for column, other in data.paper.supplements.items():
            if column in shown:
                notes.append(f"{data.paper.column_name(column)} paper: not a column of {data.paper.name}; from table "
                             f"{other.name}, {other.source}. {other.note}".rstrip())
    if with_avg:
        notes.append(f"{AVG_LABEL}: per seed, the mean over the pairs measured for both the method and scratch of "
                     f"(method - scratch); shown as mean ± std over seeds.")
    notes.append("Where each number came from (run directory, git commit, params and code hashes, dataset checksum, "
                 f"seed, device, wall time): {PROVENANCE} in this folder.")
    return notes


# ---------------------------------------------------------------- display


def test_caption(data: ReportData) -> str:
    """The caption names the test behind the marks (the notes explain it; LaTeX keeps the caption first)."""
    if len(data.spec.seeds) < 2:
        return "; one seed, so no winner marked"
    return f"; bold = best beyond noise ({stats.TEST_NAME.split(' (')[0]}, p < {stats.ALPHA}), ≈ marks a tie"


def delta(diff, within) -> str:
    if render.isnan(diff):
        return MISSING
    return plain(diff, signed=True) + ("" if within is pd.NA or within is None else " (in)" if within else " (out)")


def format_assistant(table: pd.DataFrame, data: ReportData) -> Display:
    n = len(data.spec.seeds)
    out = pd.DataFrame({
        "Pair": table["label"],
        "Method": table["method_name"],
        "Teacher": [plain(v) for v in table["teacher_top1"]],
        "Assistant": [accuracy(r["assistant_mean"], r["assistant_std"], r["assistant_n"], n)
                      for _, r in table.iterrows()],
        "Student": [accuracy(r["student_mean"], r["student_std"], r["student_n"], n) for _, r in table.iterrows()],
    })
    notes = (f"Top-1 (%) mean ± std over seeds {', '.join(map(str, data.spec.seeds))}; {MISSING} = not measured.",
             f"Student top-1: {data.spec.readout}; assistant top-1: as the trainer measured it at the end of training.")
    return Display(out, frozenset(), f"{data.spec.experiment}: teacher / assistant / student top-1 (%)", notes)


# ---------------------------------------------------------------- writing


def _write_set(directory: Path, stem: str, table: pd.DataFrame, display: Display) -> list[Path]:
    files = [directory / f"{stem}.{ext}" for ext in ("csv", "md", "tex", "html")]
    io.write_text(files[0], render.to_csv(table))
    io.write_text(files[1], render.to_markdown(display))
    io.write_text(files[2], render.to_latex(display))
    io.write_text(files[3], render.to_html(display, csv_name=files[0].name))
    return files


def _smoke_title(display: Display, spec) -> Display:
    """A smoke study's numbers are meaningless (tas.smoke): its captions say so first."""
    if not spec.smoke:
        return display
    return dataclasses.replace(display,
                               caption=f"SMOKE (tiny self-made inputs, numbers meaningless): {display.caption}")


def regime_checks(data: ReportData) -> dict[str, regime.RegimeCheck]:
    """Each pair row's teacher (its own evaluation) against its student's scratch top-1 over seeds."""
    spec = data.spec
    teachers = dict(zip(data.teachers["teacher"], data.teachers["top1"]))
    scratch = {ref.pair: data.samples(ref.pair, SCRATCH) for ref in spec.pairs} if SCRATCH in spec.methods else None
    return regime.check_rows(spec.pairs, teachers, scratch, spec.regime_margin)


def regime_columns(table: pd.DataFrame, data: ReportData) -> pd.DataFrame:
    """A kind's numeric table plus the regime columns (regime_gap, outside_regime) of its pair rows; the
    built-in kinds call it in table(). The mark, notes and warnings need nothing from a kind (write_tables)."""
    return regime.with_columns(table, regime_checks(data))


def write_tables(data: ReportData, cells: pd.DataFrame | None = None,
                 warn: Callable[[str], None] | None = None) -> list[Path]:
    """Write tables/<kind>.{csv,md,tex,html}, tas_assistant.* (when a run reports an assistant),
    provenance.csv and summary.json under the experiment; returns the written paths.
    `cells`: cell_stats(data) when the caller already has it. `warn` gets one line per row outside the
    papers' regime (the CLI prints them to stderr)."""
    spec = data.spec
    out_dir = paths.tables_dir(data.root, spec.experiment)
    verdicts, foot = row_verdicts(data), Footnotes(data)
    cells = cell_stats(data, verdicts) if cells is None else cells
    kind = kinds.module(spec.kind)
    checks = regime_checks(data)
    table = kind.table(data, cells)
    display = regime.mark(kind.display(table, data, verdicts, foot), list(table["pair"]), checks, spec.regime_margin,
                          spec.experiment)
    files = _write_set(out_dir, spec.kind, table, _smoke_title(display, spec))
    assistant = assistant_table(data, cells)
    if len(assistant):
        files += _write_set(out_dir, "tas_assistant", assistant, _smoke_title(format_assistant(assistant, data), spec))
    files.append(out_dir / PROVENANCE)
    io.write_text(files[-1], render.to_csv(provenance_table(data)))
    files.append(out_dir / paths.SUMMARY_FILE)
    io.write_json(files[-1], summary(data, kind, table, assistant, verdicts, [f.name for f in files], checks))
    for check in regime.flagged(checks):
        if warn is not None:
            warn(regime.warning(spec.experiment, check))
    return files


def _jsonable(records: list[dict]) -> list[dict]:
    def clean(v):
        if hasattr(v, "item"):
            v = v.item()
        if isinstance(v, float):
            # NaN -> null (JSON has no NaN); round off float noise such as -0.13000000000000078.
            return None if math.isnan(v) else round(v, 6)
        return None if v is pd.NA else v
    return [{k: clean(v) for k, v in r.items()} for r in records]


def summary(data: ReportData, kind, table: pd.DataFrame, assistant: pd.DataFrame, verdicts: dict[str, stats.Verdict],
            files: list[str], checks: dict[str, regime.RegimeCheck] | None = None) -> dict:
    """Machine-readable: every spec cell (null where missing) with its seeds, interval and mark; each row's
    verdict; the kind's extras (the main table's avg gains); teachers; assistant rows; the runs that are
    missing and why. Built from the tables already computed, never recomputed."""
    spec, ok = data.spec, data.measured
    fields = ("mean", "std", "n", "ci_low", "ci_high", "mark", "paper", "paper_note", "diff", "paper_in_ci",
              "extra_params")
    cells = []
    for ref in spec.pairs:
        for m in spec.methods:
            cell = kind.summary_cell(table, ref.pair, m, fields)
            seeds = ok.loc[(ok["pair"] == ref.pair) & (ok["method"] == m), "seed"].tolist()
            cells.append({"pair": ref.pair, "label": ref.label, "method": m, **cell, "seeds": sorted(seeds)})
    result = {
        "experiment": spec.experiment,
        "smoke": spec.smoke,
        "kind": spec.kind,
        "paper_table": data.paper.name if data.paper is not None else None,
        "paper_source": data.paper.source if data.paper is not None else None,
        "seeds": list(spec.seeds),
        "report": {"top1": spec.report, "means": spec.readout},
        "regime": regime.summary(regime_checks(data) if checks is None else checks, spec.regime_margin),
        "test": {"name": stats.TEST_NAME, "alpha": stats.ALPHA, "interval": stats.LEVEL},
        "rows": {pair: {"winner": v.winner, "tied": list(v.tied), "untested": v.reason or None}
                 for pair, v in verdicts.items()},
        "cells": _jsonable(cells),
        "teachers": _jsonable(data.teachers[["teacher", "status", "top1", "top5", "params", "flops", "images_per_s",
                                             "paper_top1"]].to_dict("records")),
        "assistant": _jsonable(assistant.to_dict("records")),
        "missing": _jsonable(data.runs.loc[data.runs["status"] != OK, ["pair", "method", "seed", "status", "reason",
                                                                         "run_dir"]].to_dict("records")),
        "files": files,
    }
    extra = getattr(kind, "summary_extra", None)
    if extra is not None:
        result.update({key: _jsonable(records) for key, records in extra(table, data).items()})
    return result
