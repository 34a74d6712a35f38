"""The ablation table: one row per (pair, method), methods inner: top-1, the paper's value, +params
(the layout of TAS's ablation tables, where each method is a variant of one)."""

from __future__ import annotations

import math

import pandas as pd

from tas.report import render
from tas.report.data import ReportData
from tas.report.render import Display, accuracy
from tas.report.tables import (TIE, TIE_SIGN, WIN, Footnotes, absent_notes, cell_stats, compare, delta, drop_empty, notes,
                               paper_absent, paper_text, paper_value, readout_caption, regime_columns, test_caption)


def table(data: ReportData, cells: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rows = (pair, method) in spec order, methods inner; columns mean, std, n, ci, mark, extra_params and,
    with a paper table, paper, paper_note (why the paper's number is absent), diff, paper_in_ci."""
    spec, cells = data.spec, cell_stats(data) if cells is None else cells
    rows = []
    for ref in spec.pairs:
        for m in spec.methods:
            s = cells.loc[(ref.pair, m)]
            rows.append({"pair": ref.pair, "label": ref.label, "method": m, "method_name": spec.method_name(m),
                         **{k: s[k] for k in ("mean", "std", "n", "ci_low", "ci_high", "mark")},
                         **compare(s, paper_value(data, ref, m)), "paper_note": paper_absent(data, ref, m) or None,
                         "extra_params": s["extra_params"]})
    out = pd.DataFrame(rows).astype({"n": "int64", "paper_in_ci": "boolean"})
    if data.paper is None:  # no paper: no paper columns; with one, absent numbers keep their '— [nt]'
        out = out.drop(columns=["paper", "paper_note", "diff", "paper_in_ci"])
    return regime_columns(drop_empty(out, ("extra_params",)), data)


def display(table: pd.DataFrame, data: ReportData, verdicts, foot: Footnotes) -> Display:
    n_seeds = len(data.spec.seeds)
    out = pd.DataFrame({"Pair": table["label"], "Method": table["method_name"]})
    out["Top-1"] = [accuracy(r["mean"], r["std"], r["n"], n_seeds) + (TIE_SIGN if r["mark"] == TIE else "")
                    + foot.tag(r["pair"], r["method"]) for _, r in table.iterrows()]
    if "paper" in table:
        out["Paper"] = [paper_text(v, why) for v, why in zip(table["paper"], table["paper_note"])]
        out["Δ"] = [delta(d, w) for d, w in zip(table["diff"], table["paper_in_ci"])]
    if "extra_params" in table:
        out["+params"] = [render.params(v) for v in table["extra_params"]]
    bold = frozenset((i, "Top-1") for i, mark in enumerate(table["mark"]) if mark == WIN)
    lines = notes(data, verdicts, with_avg=False, with_teacher=False) + absent_notes(table)
    caption = f"{data.spec.experiment}: ablation, {readout_caption(data)} top-1 (%){test_caption(data)}"
    return Display(out, bold, caption, tuple(lines + foot.lines))


def summary_cell(table: pd.DataFrame, pair: str, method: str, fields: tuple[str, ...]) -> dict:
    row = table.set_index(["pair", "method"]).loc[(pair, method)]
    return {k: row.get(k, math.nan) for k in fields}
