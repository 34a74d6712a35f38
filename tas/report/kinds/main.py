"""The main table: one row per teacher -> student pair, a column group per method, and a last row with
each method's average gain over scratch (the layout of TAS's Tables 1-2)."""

from __future__ import annotations

import math
from typing import Iterator, Mapping

import pandas as pd

from tas.report import render
from tas.report.data import ReportData
from tas.report.paper import NOT_TRANSCRIBED
from tas.report.render import Display, accuracy, plain
from tas.report.tables import (AVG_LABEL, AVG_PAIR, SCRATCH, TEACHER, TIE, TIE_SIGN, WIN, Footnotes, absent_columns,
                               absent_notes, absent_text, cell_stats, compare, delta, drop_empty, gain_over_scratch,
                               notes, paper_absent, paper_methods, paper_text, paper_value, readout_caption,
                               regime_columns, test_caption)


def table(data: ReportData, cells: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rows = pairs (spec order) + 'Avg. gain over scratch'. Columns: teacher top-1 (ours, paper), and per
    method mean, std, n, ci_low, ci_high, mark, extra_params, and, for a method the paper has a column
    of, paper, paper_note (why the paper's number is absent), diff, paper_in_ci. A paper column no
    method of the experiment fills (CRD) adds <column>_paper, _paper_note and _absent (why ours is).

    In the avg row, `_mean` / `_std` are over seeds of the per-seed average gain, `_n` the number of
    seeds, `_pairs` the number of pairs averaged, `_paper` the paper's average gain."""
    spec, cells = data.spec, cell_stats(data) if cells is None else cells
    teachers = data.teachers.set_index("teacher")
    with_paper, absent = set(paper_methods(data)), absent_columns(data)
    rows = []
    for ref in spec.pairs:
        row = {"pair": ref.pair, "label": ref.label, "teacher_top1": teachers.loc[ref.teacher, "top1"],
               "teacher_paper": teachers.loc[ref.teacher, "paper_top1"]}
        for m in spec.methods:
            s = cells.loc[(ref.pair, m)]
            row.update({f"{m}_{k}": s[k] for k in ("mean", "std", "n", "ci_low", "ci_high", "mark")})
            if m in with_paper:
                row.update({f"{m}_{k}": v for k, v in compare(s, paper_value(data, ref, m)).items()})
                row[f"{m}_paper_note"] = paper_absent(data, ref, m) or None
            row[f"{m}_pairs"] = math.nan
            row[f"{m}_extra_params"] = s["extra_params"]
        for c, why in absent:
            row.update({f"{c}_paper": paper_value(data, ref, c), f"{c}_paper_note": paper_absent(data, ref, c) or None,
                        f"{c}_absent": why})
        rows.append(row)
    avg = {"pair": AVG_PAIR, "label": AVG_LABEL, "teacher_top1": math.nan, "teacher_paper": math.nan}
    for m in spec.methods:
        gain = gain_over_scratch(data, m)
        avg.update({f"{m}_{k}": v for k, v in gain.items()})
        avg.update({f"{m}_ci_low": math.nan, f"{m}_ci_high": math.nan, f"{m}_mark": "", f"{m}_extra_params": math.nan})
        if m in with_paper:
            paper_gain = _paper_gain(data, m)
            avg.update({f"{m}_paper": paper_gain, f"{m}_paper_note": _gain_note(m, paper_gain),
                        f"{m}_diff": gain["mean"] - paper_gain, f"{m}_paper_in_ci": pd.NA})
    for c, why in absent:
        paper_gain = _paper_gain(data, c)
        avg.update({f"{c}_paper": paper_gain, f"{c}_paper_note": _gain_note(c, paper_gain), f"{c}_absent": why})
    rows.append(avg)
    out = pd.DataFrame(rows)
    for m in spec.methods:
        out[f"{m}_n"] = out[f"{m}_n"].astype("int64")
        out[f"{m}_pairs"] = out[f"{m}_pairs"].astype("Int64")
        if m in with_paper:
            out[f"{m}_paper_in_ci"] = out[f"{m}_paper_in_ci"].astype("boolean")
    # A method's paper column stays even where every number is absent: its '— [nt]' cells say the paper has
    # them. The published teacher column appears only where some teacher has a published top-1.
    return regime_columns(drop_empty(out, ("teacher_paper", "_extra_params")), data)


def _paper_gain(data: ReportData, method: str) -> float:
    gain = data.paper.gain(method) if data.paper is not None else None
    return math.nan if gain is None else gain


def _gain_note(method: str, paper_gain: float) -> str | None:
    # Scratch has no gain over itself: its avg cell is empty, not an untranscribed number.
    return NOT_TRANSCRIBED if math.isnan(paper_gain) and method != SCRATCH else None


def display(table: pd.DataFrame, data: ReportData, verdicts, foot: Footnotes) -> Display:
    spec, n_seeds = data.spec, len(data.spec.seeds)
    teacher_of = {ref.pair: ref.teacher for ref in spec.pairs}
    out = pd.DataFrame({"Pair": table["label"],
                        "Teacher": [plain(v) + foot.tag(TEACHER, teacher_of.get(pair, "")) if pair != AVG_PAIR
                                    else plain(v) for v, pair in zip(table["teacher_top1"], table["pair"])]})
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
            out[f"{name} paper"] = _paper_texts(table, m)
            out[f"{name} Δ"] = [delta(d, w) for d, w in zip(table[f"{m}_diff"], table[f"{m}_paper_in_ci"])]
        if f"{m}_extra_params" in table:
            out[f"{name} +params"] = [render.params(v) for v in table[f"{m}_extra_params"]]
    for c, _ in absent_columns(data):
        name = data.paper.column_name(c)
        out[name] = [absent_text(why) if pair != AVG_PAIR else plain(math.nan)
                     for why, pair in zip(table[f"{c}_absent"], table["pair"])]
        out[f"{name} paper"] = _paper_texts(table, c)
    caption = f"{spec.experiment}: {readout_caption(data)} top-1 (%) per teacher -> student pair{test_caption(data)}"
    lines = notes(data, verdicts, with_avg=True, with_teacher=True)
    uncovered = [spec.method_name(m) for m in spec.methods if data.paper is not None
                 and m not in data.paper.all_columns]
    if uncovered:  # their paper columns are left out: say why, rather than leave the reader to guess
        lines.append(f"No paper column for {', '.join(uncovered)}: the paper's table has none.")
    lines += absent_notes(table)
    return Display(out, frozenset(bold), caption, tuple(lines + foot.lines))


def _paper_texts(table: pd.DataFrame, column: str) -> list[str]:
    """The paper's numbers of a column: the avg row signed, an absent number '—' with its tag."""
    return [paper_text(v, why, signed=pair == AVG_PAIR)
            for v, why, pair in zip(table[f"{column}_paper"], table[f"{column}_paper_note"], table["pair"])]


def summary_cell(table: pd.DataFrame, pair: str, method: str, fields: tuple[str, ...]) -> dict:
    row = table.set_index("pair").loc[pair]
    return {k: row.get(f"{method}_{k}", math.nan) for k in fields}


def _absent_summary(table: pd.DataFrame, data: ReportData) -> list[dict]:
    """Each paper column no method of the experiment fills, one record per row: why ours is absent, the
    paper's number (or why it is absent too)."""
    return [{"column": c, "name": data.paper.column_name(c), "pair": pair, "ours": why, "paper": value,
             "paper_note": note}
            for c, _ in absent_columns(data)
            for pair, why, value, note in zip(table["pair"], table[f"{c}_absent"], table[f"{c}_paper"],
                                              table[f"{c}_paper_note"])]


def summary_extra(table: pd.DataFrame, data: ReportData) -> dict:
    """Each method's average gain over scratch beside the paper's."""
    avg = table.set_index("pair").loc[AVG_PAIR]
    return {"paper_columns_absent": _absent_summary(table, data), "avg_gain_over_scratch": [
        {"method": m, "gain": avg[f"{m}_mean"], "std_over_seeds": avg[f"{m}_std"], "n_seeds": avg[f"{m}_n"],
         "n_pairs": avg[f"{m}_pairs"], "paper": avg.get(f"{m}_paper", math.nan), "diff": avg.get(f"{m}_diff", math.nan)}
        for m in data.spec.methods if m != SCRATCH]}


def paper_rows(raw: Mapping) -> Iterator[tuple[str, object, object, Mapping]]:
    """The paper-value layout of a main table (report/paper_values.yaml): `rows:` of {teacher, student,
    <method>: top-1, ...}: (where, teacher label, student label, that row's numbers)."""
    for i, row in enumerate(raw.get("rows") or []):
        row = dict(row)
        yield f"rows[{i}]", row.pop("teacher", None), row.pop("student", None), row
