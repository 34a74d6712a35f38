"""The main table: one row per teacher -> student pair, a column group per method, and a last row with
each method's average gain over scratch (the layout of TAS's Tables 1-2)."""

from __future__ import annotations

import math

import pandas as pd

from tas.report import render
from tas.report.data import ReportData
from tas.report.render import Display, accuracy, plain
from tas.report.tables import (AVG_LABEL, AVG_PAIR, SCRATCH, TEACHER, TIE, TIE_SIGN, WIN, Footnotes, cell_stats, compare,
                               delta, drop_empty, gain_over_scratch, notes, paper_value, test_caption)


def table(data: ReportData, cells: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rows = pairs (spec order) + 'Avg. gain over scratch'. Columns: teacher top-1 (ours, paper), and per
    method mean, std, n, ci_low, ci_high, mark, paper, diff, paper_in_ci, extra_params.

    In the avg row, `_mean` / `_std` are over seeds of the per-seed average gain, `_n` the number of
    seeds, `_pairs` the number of pairs averaged, `_paper` the paper's average gain."""
    spec, cells = data.spec, cell_stats(data) if cells is None else cells
    teachers = data.teachers.set_index("teacher")
    rows = []
    for ref in spec.pairs:
        row = {"pair": ref.pair, "label": ref.label, "teacher_top1": teachers.loc[ref.teacher, "top1"],
               "teacher_paper": teachers.loc[ref.teacher, "paper_top1"]}
        for m in spec.methods:
            s = cells.loc[(ref.pair, m)]
            row.update({f"{m}_{k}": s[k] for k in ("mean", "std", "n", "ci_low", "ci_high", "mark")})
            row.update({f"{m}_{k}": v for k, v in compare(s, paper_value(data, ref, m)).items()})
            row[f"{m}_pairs"] = math.nan
            row[f"{m}_extra_params"] = s["extra_params"]
        rows.append(row)
    avg = {"pair": AVG_PAIR, "label": AVG_LABEL, "teacher_top1": math.nan, "teacher_paper": math.nan}
    for m in spec.methods:
        gain = gain_over_scratch(data, m)
        paper_gain = data.paper.avg_gain.get(m, math.nan) if data.paper is not None else math.nan
        avg.update({f"{m}_{k}": v for k, v in gain.items()})
        avg.update({f"{m}_ci_low": math.nan, f"{m}_ci_high": math.nan, f"{m}_mark": "", f"{m}_paper": paper_gain,
                    f"{m}_diff": gain["mean"] - paper_gain, f"{m}_paper_in_ci": pd.NA, f"{m}_extra_params": math.nan})
    rows.append(avg)
    out = pd.DataFrame(rows)
    for m in spec.methods:
        out[f"{m}_n"] = out[f"{m}_n"].astype("int64")
        out[f"{m}_pairs"] = out[f"{m}_pairs"].astype("Int64")
        out[f"{m}_paper_in_ci"] = out[f"{m}_paper_in_ci"].astype("boolean")
    return drop_empty(out, ("_paper", "_diff", "_paper_in_ci", "_extra_params"))


def display(table: pd.DataFrame, data: ReportData, verdicts, foot: Footnotes) -> Display:
    spec, n_seeds = data.spec, len(data.spec.seeds)
    teacher_of = {ref.pair: ref.teacher for ref in spec.pairs}
    out = pd.DataFrame({"Pair": table["label"],
                        "Teacher": [plain(v) + foot.tag(TEACHER, teacher_of.get(pair, "")) if pair != AVG_PAIR else plain(v)
                                    for v, pair in zip(table["teacher_top1"], table["pair"])]})
    if "teacher_paper" in table:
        out["Teacher paper"] = [plain(v) for v in table["teacher_paper"]]
    bold = set()
    for m in spec.methods:
        name, texts = spec.method_name(m), []
        for i, (_, r) in enumerate(table.iterrows()):
            if r["pair"] == AVG_PAIR:
                texts.append(accuracy(r[f"{m}_mean"], r[f"{m}_std"], r[f"{m}_n"], r[f"{m}_n"], signed=True))
                continue
            texts.append(accuracy(r[f"{m}_mean"], r[f"{m}_std"], r[f"{m}_n"], n_seeds)
                         + (TIE_SIGN if r[f"{m}_mark"] == TIE else "") + foot.tag(r["pair"], m))
            if r[f"{m}_mark"] == WIN:
                bold.add((i, name))
        out[name] = texts
        if f"{m}_paper" in table:
            is_avg = table["pair"] == AVG_PAIR
            out[f"{name} paper"] = [plain(v, signed=a) for v, a in zip(table[f"{m}_paper"], is_avg)]
            within = table[f"{m}_paper_in_ci"] if f"{m}_paper_in_ci" in table else [pd.NA] * len(table)
            out[f"{name} Δ"] = [delta(d, w) for d, w in zip(table[f"{m}_diff"], within)]
        if f"{m}_extra_params" in table:
            out[f"{name} +params"] = [render.params(v) for v in table[f"{m}_extra_params"]]
    caption = f"{spec.experiment}: top-1 (%) per teacher -> student pair{test_caption(data)}"
    lines = notes(data, verdicts, with_avg=True, with_teacher=True)
    return Display(out, frozenset(bold), caption, tuple(lines + foot.lines))


def summary_cell(table: pd.DataFrame, pair: str, method: str, fields: tuple[str, ...]) -> dict:
    row = table.set_index("pair").loc[pair]
    return {k: row.get(f"{method}_{k}", math.nan) for k in fields}


def summary_extra(table: pd.DataFrame, data: ReportData) -> dict:
    """Each method's average gain over scratch beside the paper's."""
    avg = table.set_index("pair").loc[AVG_PAIR]
    return {"avg_gain_over_scratch": [
        {"method": m, "gain": avg[f"{m}_mean"], "std_over_seeds": avg[f"{m}_std"], "n_seeds": avg[f"{m}_n"],
         "n_pairs": avg[f"{m}_pairs"], "paper": avg.get(f"{m}_paper", math.nan), "diff": avg.get(f"{m}_diff", math.nan)}
        for m in data.spec.methods if m != SCRATCH]}
