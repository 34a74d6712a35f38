"""The ablation table: one row per (pair, method), methods inner: top-1, the paper's value, +params
(the layout of TAS's ablation tables, where each method is a variant of one)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator, Mapping

import pandas as pd
from matplotlib.figure import Figure

from tas import paths
from tas.report import render
from tas.report.colours import method_colours
from tas.report.plots import save
from tas.report.data import ReportData
from tas.report.render import Display, accuracy
from tas.report.tables import (TIE, TIE_SIGN, WIN, Footnotes, absent_notes, cell_stats, compare, delta, drop_empty,
                               notes, paper_absent, paper_text, paper_value, readout_caption,
                               regime_columns, test_caption)


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


def paper_rows(raw: Mapping) -> Iterator[tuple[str, object, object, Mapping | None]]:
    """The paper-value layout of an ablation table (report/paper_values.yaml): one `pair:` and its `rows:`
    (variant -> top-1): (where, teacher label, student label, that row's numbers)."""
    pair = raw.get("pair") or {}
    yield "rows", pair.get("teacher"), pair.get("student"), raw.get("rows")


def plots(data: ReportData, cells: pd.DataFrame) -> list[Path]:
    """ablation_<pair>.png: measured top-1 per method (bars, std as error bar), paper values as markers."""
    spec, paper = data.spec, data.paper
    stats, files = cells, []
    for ref in spec.pairs:
        s = stats.loc[ref.pair]
        if s["n"].sum() == 0:
            continue
        fig = Figure(figsize=(max(6, 0.9 * len(spec.methods) + 2), 4))
        ax = fig.subplots()
        xs = range(len(spec.methods))
        colours = method_colours(spec.methods)
        measured = [(x, s.loc[m, "mean"], s.loc[m, "std"], colours[m]) for x, m in zip(xs, spec.methods)
                    if s.loc[m, "n"] > 0]
        ax.bar([x for x, _, _, _ in measured], [v for _, v, _, _ in measured],
               yerr=[0 if math.isnan(e) else e for _, _, e, _ in measured], label="ours", capsize=3,
               color=[c for _, _, _, c in measured])
        if paper is not None:
            pv = [(x, paper.value(ref.teacher, ref.student, m)) for x, m in zip(xs, spec.methods)]
            pv = [(x, v) for x, v in pv if v is not None]
            if pv:
                ax.scatter([x for x, _ in pv], [v for _, v in pv], color="black", marker="_", s=400,
                           label="paper", zorder=3)
        ax.set_xticks(list(xs))
        ax.set_xticklabels([spec.method_name(m) for m in spec.methods], rotation=20, ha="right", fontsize=8)
        ax.set_ylabel("top-1 (%)")
        ax.set_title(f"{spec.experiment}: ablation on {ref.label}")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        files.append(save(fig, paths.plot_file(data.root, spec.experiment, f"ablation_{ref.pair}")))
    return files
