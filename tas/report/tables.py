"""Tables: eval JSONs -> long DataFrame -> main / ablation / assistant tables -> csv, md, tex, json.

Numbers are never filled in: a cell without an eval JSON is missing (empty in CSV, '—' in
Markdown / LaTeX, null in JSON). Top-1 values are used as the evaluate stage writes them (percent).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from tas import io, paths
from tas.errors import TasError
from tas.report.paper import PaperTable, load_paper_table
from tas.report.spec import PairRef, TableSpec

EVAL_FIELDS = ("top1", "top5", "params", "extra_params", "flops", "images_per_s", "assistant_top1", "teacher_top1")
RUN_COLUMNS = ("pair", "teacher", "student", "method", "seed", *EVAL_FIELDS)
TEACHER_FIELDS = ("top1", "top5", "params", "flops", "images_per_s")
AVG_LABEL = "Avg. gain over scratch"
AVG_PAIR = "avg_gain"
SCRATCH = "scratch"
MISSING = "—"
TEXT_COLUMNS = ("Pair", "Method")  # left-aligned in Markdown; every other column holds numbers


# ---------------------------------------------------------------- collection


def _read_eval(path: Path, expect: dict) -> dict:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise TasError(f"eval file {path} is unreadable ({err}); delete it and re-run `python -m tas evaluate`") from None
    if not isinstance(record, dict):
        raise TasError(f"eval file {path} holds no JSON object; delete it and re-run `python -m tas evaluate`")
    # A mismatch means a file was copied or moved by hand: tabulating it would put numbers in the wrong cell.
    for key, want in expect.items():
        if key in record and str(record[key]) != str(want):
            raise TasError(f"eval file {path} says {key}={record[key]!r} but its path says {want!r}; re-run `python -m tas evaluate` for it")
    top1 = record.get("top1")
    if isinstance(top1, bool) or not isinstance(top1, (int, float)) or not math.isfinite(top1):
        raise TasError(f"eval file {path} has no finite 'top1' (got {top1!r}); re-run `python -m tas evaluate` for it")
    return record


def _num(value) -> float:
    """Optional numeric field -> float, NaN when absent or not a number (kept missing, never guessed)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def collect(results_root: str | Path, spec: TableSpec) -> pd.DataFrame:
    """Long form: one row per (pair, method, seed) that has an eval JSON; missing evals are absent.

    A teacher-free method's eval is its student's, so it appears in the row of every pair with that
    student: per-pair statistics (and the gain over scratch) stay as they are."""
    rows = []
    for ref in spec.pairs:
        for method in spec.methods:
            for seed in spec.seeds:
                run = spec.run(ref, method, seed)
                path = run.eval_path(results_root)
                if not path.is_file():
                    continue
                rec = _read_eval(path, run.ids())
                rows.append({"pair": ref.pair, "teacher": ref.teacher, "student": ref.student, "method": method,
                             "seed": seed, **{f: _num(rec.get(f)) for f in EVAL_FIELDS}})
    df = pd.DataFrame(rows, columns=list(RUN_COLUMNS))
    return df.astype({"seed": "int64"}) if len(df) else df


def collect_teachers(results_root: str | Path, spec: TableSpec) -> pd.DataFrame:
    """One row per teacher of the spec that has a teacher eval JSON."""
    rows = []
    for teacher in dict.fromkeys(ref.teacher for ref in spec.pairs):
        path = paths.teacher_eval(results_root, spec.experiment, teacher)
        if path.is_file():
            rec = _read_eval(path, {"experiment": spec.experiment, "model": teacher})
            rows.append({"teacher": teacher, **{f: _num(rec.get(f)) for f in TEACHER_FIELDS}})
    return pd.DataFrame(rows, columns=["teacher", *TEACHER_FIELDS])


def cell_stats(df: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """Per (pair, method) in spec order: top-1 mean / std (ddof 1, NaN for one seed) / n, extra params,
    assistant top-1 mean / std / n. Every spec cell is present; n = 0 where nothing was measured."""
    index = pd.MultiIndex.from_product([[p.pair for p in spec.pairs], list(spec.methods)], names=["pair", "method"])
    grouped = df.groupby(["pair", "method"])
    out = pd.DataFrame({
        "mean": grouped["top1"].mean(),
        "std": grouped["top1"].std(ddof=1),
        "n": grouped["top1"].count(),
        # extra_params is a property of the method on that pair, equal across seeds; max is a safe pick.
        "extra_params": grouped["extra_params"].max(),
        "assistant_mean": grouped["assistant_top1"].mean(),
        "assistant_std": grouped["assistant_top1"].std(ddof=1),
        "assistant_n": grouped["assistant_top1"].count(),
        "teacher_top1_run": grouped["teacher_top1"].mean(),
    }).reindex(index)
    for col in ("n", "assistant_n"):
        out[col] = out[col].fillna(0).astype("int64")
    return out


# ---------------------------------------------------------------- numeric tables


def _paper_value(paper: PaperTable | None, ref: PairRef, method: str) -> float:
    value = paper.value(ref.teacher_name, ref.student_name, method) if paper is not None else None
    return math.nan if value is None else value


def _drop_empty(table: pd.DataFrame, suffixes: tuple[str, ...]) -> pd.DataFrame:
    """Optional columns (paper, diff, extra params) appear only where some cell has a value."""
    empty = [c for c in table.columns if c.endswith(suffixes) and table[c].isna().all()]
    table = table.drop(columns=empty)
    # Parameter counts are integers; nullable Int64 keeps them exact in the CSV and still missing where missing.
    counts = [c for c in table.columns if c.endswith("extra_params")]
    return table.astype({c: "Int64" for c in counts}) if counts else table


def main_table(df: pd.DataFrame, spec: TableSpec, paper: PaperTable | None) -> pd.DataFrame:
    """Rows = pairs (spec order) + 'Avg. gain over scratch'; per method: mean, std, n, paper, diff, extra_params.

    The avg row holds, per method, the mean over pairs where both it and scratch were measured of
    (method mean - scratch mean); its `_n` is that number of pairs and `_paper` the paper's average gain.
    """
    stats = cell_stats(df, spec)
    rows = []
    for ref in spec.pairs:
        row = {"pair": ref.pair, "label": ref.label}
        for m in spec.methods:
            s = stats.loc[(ref.pair, m)]
            paper_v = _paper_value(paper, ref, m)
            row.update({f"{m}_mean": s["mean"], f"{m}_std": s["std"], f"{m}_n": s["n"], f"{m}_paper": paper_v,
                        f"{m}_diff": s["mean"] - paper_v, f"{m}_extra_params": s["extra_params"]})
        rows.append(row)
    avg = {"pair": AVG_PAIR, "label": AVG_LABEL}
    for m in spec.methods:
        gains = []
        if m != SCRATCH and SCRATCH in spec.methods:
            for ref in spec.pairs:
                ours, base = stats.loc[(ref.pair, m), "mean"], stats.loc[(ref.pair, SCRATCH), "mean"]
                if not (math.isnan(ours) or math.isnan(base)):
                    gains.append(ours - base)
        gain = sum(gains) / len(gains) if gains else math.nan
        paper_gain = paper.avg_gain.get(m, math.nan) if paper is not None else math.nan
        avg.update({f"{m}_mean": gain, f"{m}_std": math.nan, f"{m}_n": len(gains), f"{m}_paper": paper_gain,
                    f"{m}_diff": gain - paper_gain, f"{m}_extra_params": math.nan})
    rows.append(avg)
    table = pd.DataFrame(rows)
    for m in spec.methods:
        table[f"{m}_n"] = table[f"{m}_n"].astype("int64")
    return _drop_empty(table, ("_paper", "_diff", "_extra_params"))


def _cells(df: pd.DataFrame, spec: TableSpec, paper: PaperTable | None):
    """(pair ref, method, measured stats beside the paper's value) for every cell, in spec order."""
    stats = cell_stats(df, spec)
    for ref in spec.pairs:
        for m in spec.methods:
            s = stats.loc[(ref.pair, m)]
            paper_v = _paper_value(paper, ref, m)
            yield ref, m, {"mean": s["mean"], "std": s["std"], "n": s["n"], "paper": paper_v,
                           "diff": s["mean"] - paper_v, "extra_params": s["extra_params"]}


def ablation_table(df: pd.DataFrame, spec: TableSpec, paper: PaperTable | None) -> pd.DataFrame:
    """Rows = (pair, method) in spec order, methods inner; columns mean, std, n, paper, diff, extra_params."""
    rows = [{"pair": ref.pair, "label": ref.label, "method": m, "method_name": spec.method_name(m), **cell}
            for ref, m, cell in _cells(df, spec, paper)]
    table = pd.DataFrame(rows).astype({"n": "int64"})
    return _drop_empty(table, ("paper", "diff", "extra_params"))


def assistant_table(df: pd.DataFrame, teachers: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """Teacher / assistant / student top-1 per (pair, method) for methods whose evals report an assistant.

    Teacher top-1 comes from the teacher eval JSON, else from the runs' `teacher_top1`."""
    stats = cell_stats(df, spec)
    teacher_top1 = dict(zip(teachers["teacher"], teachers["top1"]))
    rows = []
    for ref in spec.pairs:
        for m in spec.methods:
            s = stats.loc[(ref.pair, m)]
            if s["assistant_n"] == 0:
                continue
            t = teacher_top1.get(ref.teacher, math.nan)
            rows.append({"pair": ref.pair, "label": ref.label, "method": m, "method_name": spec.method_name(m),
                         "teacher_top1": s["teacher_top1_run"] if math.isnan(t) else t,
                         "assistant_mean": s["assistant_mean"], "assistant_std": s["assistant_std"],
                         "assistant_n": s["assistant_n"], "student_mean": s["mean"], "student_std": s["std"],
                         "student_n": s["n"]})
    columns = ["pair", "label", "method", "method_name", "teacher_top1", "assistant_mean", "assistant_std",
               "assistant_n", "student_mean", "student_std", "student_n"]
    return pd.DataFrame(rows, columns=columns).astype({"assistant_n": "int64", "student_n": "int64"})


# ---------------------------------------------------------------- display formatting


def _isnan(x) -> bool:
    return x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x))


def _acc(mean, std, n, n_expected: int) -> str:
    """'78.12 ± 0.34'; a cell with fewer seeds than planned says so ('(1/2)') instead of hiding it."""
    if _isnan(mean) or n == 0:
        return MISSING
    text = f"{mean:.2f}"
    if n > 1 and not _isnan(std):
        text += f" ± {std:.2f}"
    if n < n_expected:
        text += f" ({n}/{n_expected})"
    return text


def _plain(x, signed: bool = False) -> str:
    return MISSING if _isnan(x) else (f"{x:+.2f}" if signed else f"{x:.2f}")


def _params(x) -> str:
    if _isnan(x):
        return MISSING
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= div:
            return f"{x / div:.2f}{unit}"
    return f"{int(x)}"


def _tex_escape(text: str) -> str:
    text = str(text).replace("\\", r"\textbackslash{}")
    for ch in "&%$#_{}":
        text = text.replace(ch, "\\" + ch)
    text = text.replace("~", r"\textasciitilde{}").replace("^", r"\textasciicircum{}")
    return text.replace("->", r"$\rightarrow$").replace("±", r"$\pm$").replace("Δ", r"$\Delta$")


def format_main(table: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """Strings for Markdown / LaTeX: one accuracy column per method, with paper, Δ and +params beside it."""
    out = pd.DataFrame({"Pair": table["label"]})
    is_avg = table["pair"] == AVG_PAIR
    for m in spec.methods:
        name = spec.method_name(m)
        out[name] = [
            _plain(r[f"{m}_mean"], signed=True) if avg else _acc(r[f"{m}_mean"], r[f"{m}_std"], r[f"{m}_n"], len(spec.seeds))
            for (_, r), avg in zip(table.iterrows(), is_avg)
        ]
        if f"{m}_paper" in table:
            out[f"{name} paper"] = [_plain(v, signed=avg) for v, avg in zip(table[f"{m}_paper"], is_avg)]
            out[f"{name} Δ"] = [_plain(v, signed=True) for v in table[f"{m}_diff"]]
        if f"{m}_extra_params" in table:
            out[f"{name} +params"] = [_params(v) for v in table[f"{m}_extra_params"]]
    return out


def format_ablation(table: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    out = pd.DataFrame({"Pair": table["label"], "Method": table["method_name"]})
    out["Top-1"] = [_acc(r["mean"], r["std"], r["n"], len(spec.seeds)) for _, r in table.iterrows()]
    if "paper" in table:
        out["Paper"] = [_plain(v) for v in table["paper"]]
        out["Δ"] = [_plain(v, signed=True) for v in table["diff"]]
    if "extra_params" in table:
        out["+params"] = [_params(v) for v in table["extra_params"]]
    return out


def format_assistant(table: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    n = len(spec.seeds)
    return pd.DataFrame({
        "Pair": table["label"],
        "Method": table["method_name"],
        "Teacher": [_plain(v) for v in table["teacher_top1"]],
        "Assistant": [_acc(r["assistant_mean"], r["assistant_std"], r["assistant_n"], n) for _, r in table.iterrows()],
        "Student": [_acc(r["student_mean"], r["student_std"], r["student_n"], n) for _, r in table.iterrows()],
    })


def to_markdown(display: pd.DataFrame, notes: list[str]) -> str:
    align = ["left" if c in TEXT_COLUMNS else "right" for c in display.columns]
    text = display.to_markdown(index=False, disable_numparse=True, colalign=align)
    return text + "\n" + "".join(f"\n{note}" for note in notes) + ("\n" if notes else "")


def to_latex(display: pd.DataFrame, caption: str) -> str:
    escaped = display.map(_tex_escape)
    escaped.columns = [_tex_escape(c) for c in display.columns]
    return escaped.to_latex(index=False, escape=False, column_format="l" + "r" * (len(display.columns) - 1),
                            caption=_tex_escape(caption))


def _csv(table: pd.DataFrame) -> str:
    # NaN -> empty field: a missing cell stays visibly missing, never a number.
    return table.to_csv(index=False, na_rep="", float_format="%.6g")


# ---------------------------------------------------------------- writing


def _jsonable(records: list[dict]) -> list[dict]:
    def clean(v):
        if hasattr(v, "item"):
            v = v.item()
        if isinstance(v, float):
            # NaN -> null (JSON has no NaN); round off float noise such as -0.13000000000000078.
            return None if math.isnan(v) else round(v, 6)
        return None if v is pd.NA else v
    return [{k: clean(v) for k, v in r.items()} for r in records]


def _write_set(directory: Path, stem: str, table: pd.DataFrame, display: pd.DataFrame, caption: str,
               notes: list[str]) -> list[Path]:
    files = [directory / f"{stem}.csv", directory / f"{stem}.md", directory / f"{stem}.tex"]
    io.write_text(files[0], _csv(table))
    io.write_text(files[1], f"**{caption}**\n\n" + to_markdown(display, notes))
    io.write_text(files[2], to_latex(display, caption))
    return files


def write_tables(results_root: str | Path, spec: TableSpec, *, paper: PaperTable | None = None) -> list[Path]:
    """Write tables/{main|ablation}.{csv,md,tex}, tas_assistant.* (when a run reports an assistant) and
    summary.json under the experiment; returns the written paths. `paper` overrides spec.paper_table."""
    df = collect(results_root, spec)
    if df.empty:
        raise TasError(f"no run evals found under {paths.experiment_dir(results_root, spec.experiment) / 'eval'}; "
                       f"run `python -m tas evaluate --experiment {spec.experiment}` first")
    if paper is None and spec.paper_table:
        paper = load_paper_table(spec.paper_table)
    teachers = collect_teachers(results_root, spec)
    out_dir = paths.tables_dir(results_root, spec.experiment)
    seeds = ", ".join(map(str, spec.seeds))
    notes = [f"Top-1 (%) mean ± std (sample std) over seeds {seeds}; '(k/N)' = only k of N seeds measured; "
             f"{MISSING} = not measured."]
    if paper is not None:
        notes.append(f"Paper: {paper.source}, table {paper.name}; Δ = ours - paper. {paper.note}".rstrip())

    if spec.kind == "main":
        table = main_table(df, spec, paper)
        notes.append(f"{AVG_LABEL}: mean over the pairs where both the method and scratch were measured "
                     f"(count in the CSV `_n` column).")
        stem, fmt_fn = "main", format_main
        caption = f"{spec.experiment}: top-1 (%) per teacher -> student pair"
    else:
        table = ablation_table(df, spec, paper)
        stem, fmt_fn = "ablation", format_ablation
        caption = f"{spec.experiment}: ablation, top-1 (%)"
    files = _write_set(out_dir, stem, table, fmt_fn(table, spec), caption, notes)

    assistant = assistant_table(df, teachers, spec)
    if len(assistant):
        files += _write_set(out_dir, "tas_assistant", assistant, format_assistant(assistant, spec),
                            f"{spec.experiment}: teacher / assistant / student top-1 (%)", notes[:1])

    files.append(out_dir / "summary.json")
    io.write_json(files[-1], summary(df, teachers, spec, paper, [f.name for f in files]))
    return files


def summary(df: pd.DataFrame, teachers: pd.DataFrame, spec: TableSpec, paper: PaperTable | None,
            files: list[str]) -> dict:
    """Machine-readable cells: every spec cell (null where missing), avg gains, assistant rows."""
    cells = [{"pair": ref.pair, "label": ref.label, "method": m, **cell,
              "seeds": sorted(df.loc[(df["pair"] == ref.pair) & (df["method"] == m), "seed"].tolist())}
             for ref, m, cell in _cells(df, spec, paper)]
    result = {
        "experiment": spec.experiment,
        "kind": spec.kind,
        "paper_table": paper.name if paper is not None else None,
        "paper_source": paper.source if paper is not None else None,
        "seeds": list(spec.seeds),
        "cells": _jsonable(cells),
        "teachers": _jsonable(teachers.to_dict("records")),
        "assistant": _jsonable(assistant_table(df, teachers, spec).to_dict("records")),
        "files": files,
    }
    if spec.kind == "main":
        avg = main_table(df, spec, paper).set_index("pair").loc[AVG_PAIR]
        result["avg_gain_over_scratch"] = _jsonable([
            {"method": m, "gain": avg[f"{m}_mean"], "n_pairs": avg[f"{m}_n"],
             "paper": avg.get(f"{m}_paper", math.nan), "diff": avg.get(f"{m}_diff", math.nan)}
            for m in spec.methods if m != SCRATCH])
    return result
