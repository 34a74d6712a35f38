"""Plots (PNG): training curves, gain over scratch, teacher / assistant / student accuracy.

Every plot reads the ReportData the tables read (tas.report.data), never the files again.
Uses matplotlib's object API with the Agg canvas (no pyplot, no global backend switch), so it is
safe in headless jobs and beside other code that imports pyplot. A plot without data is skipped.
A method has one colour in every plot of its study (tas.report.colours); the curves_<pair>.png files are
also dvc.yaml's plots (tas.dvcyaml), which `dvc plots show` shows as images, offline.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tas import io, paths
from tas.report.colours import ROLE_COLOURS, method_colours
from tas.report.data import ReportData
from tas.report.spec import PairRef, TableSpec
from tas.report.tables import SCRATCH, assistant_table, cell_stats

# No timestamp / version in the PNG, so an unchanged plot is byte-identical (small git diffs).
_METADATA = {"Software": None}


def save(fig: Figure, path: Path) -> Path:
    """Write a figure as PNG, atomically, with fixed metadata (the same plot gives the same bytes)."""
    FigureCanvasAgg(fig)
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, metadata=_METADATA)
    return path


def _curve_panel(ax, histories: dict[str, pd.DataFrame], column: str, spec: TableSpec,
                 colours: dict[str, str]) -> bool:
    """Mean over seeds per epoch, shaded min..max across seeds in the method's colour (so the seeds of a
    method read as one method); False when no method logs `column`."""
    drawn = False
    for method, hist in histories.items():
        if column not in hist or hist[column].isna().all():
            continue
        by_epoch = hist.groupby("epoch")[column]
        mean = by_epoch.mean()
        colour = colours[method]
        ax.plot(mean.index, mean.values, label=spec.method_name(method), color=colour)
        if hist["seed"].nunique() > 1:
            ax.fill_between(mean.index, by_epoch.min().values, by_epoch.max().values, alpha=0.2, color=colour,
                            linewidth=0)
        drawn = True
    return drawn


# (history column, y label): the CE term is the one loss every method has, so its curves compare
# across methods; the total sums a different number of terms per method and is shown for each on its own.
CURVE_PANELS = (("test_top1", "test top-1 (%)"), ("loss_ce", "training CE loss (comparable)"),
                ("loss", "training loss, total (terms differ per method)"))


def curves_figure(data: ReportData, ref: PairRef) -> Figure | None:
    """The figure of curves_<pair>.png (None without data): CURVE_PANELS side by side, one line per method
    in its study colour."""
    spec = data.spec
    histories = {m: h for m in spec.methods if not (h := data.history(ref.pair, m)).empty}
    if not histories:
        return None
    colours = method_colours(spec.methods)
    fig = Figure(figsize=(15, 4))
    axes = fig.subplots(1, len(CURVE_PANELS))
    drawn = [_curve_panel(ax, histories, column, spec, colours) for ax, (column, _) in zip(axes, CURVE_PANELS)]
    if not any(drawn):
        return None
    for ax, (_, ylabel), drawn in zip(axes, CURVE_PANELS, drawn):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(f"{spec.experiment}: {ref.label}")
    fig.tight_layout()
    return fig


def plot_curves(data: ReportData) -> list[Path]:
    """curves_<pair>.png: test top-1, the CE term and the total loss vs epoch, one line per method.
    The name is also spelled by tas.dvcyaml (CURVES_PLOT), which may not import this module."""
    spec, files = data.spec, []
    for ref in spec.pairs:
        fig = curves_figure(data, ref)
        if fig is not None:
            files.append(save(fig, paths.plot_file(data.root, spec.experiment, f"curves_{ref.pair}")))
    return files


def _grouped_bars(ax, groups: list[str], series: dict[str, list[float]], colours: list[str]) -> None:
    """One bar per (group, series), series i in colours[i]; a NaN value gets no bar (a zero-height bar would
    read as a value)."""
    width = 0.8 / max(len(series), 1)
    for i, ((name, values), colour) in enumerate(zip(series.items(), colours)):
        pts = [(g + (i - (len(series) - 1) / 2) * width, v) for g, v in enumerate(values) if not math.isnan(v)]
        if pts:
            ax.bar([x for x, _ in pts], [v for _, v in pts], width, label=name, color=colour)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=20, ha="right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)


def plot_gain(data: ReportData, cells: pd.DataFrame) -> list[Path]:
    """gain_over_scratch.png: (method mean - scratch mean) per pair; bars only where both are measured."""
    spec = data.spec
    if SCRATCH not in spec.methods:
        return []
    stats = cells["mean"]
    methods = [m for m in spec.methods if m != SCRATCH]
    gains = {spec.method_name(m): [stats[(p.pair, m)] - stats[(p.pair, SCRATCH)] for p in spec.pairs] for m in methods}
    if all(math.isnan(v) for vals in gains.values() for v in vals):
        return []
    fig = Figure(figsize=(max(6, 1.5 * len(spec.pairs) + 3), 4))
    ax = fig.subplots()
    colours = method_colours(spec.methods)  # of the whole study, so a method keeps its curves' colour
    _grouped_bars(ax, [p.label for p in spec.pairs], gains, [colours[m] for m in methods])
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("top-1 gain over scratch (points)")
    ax.set_title(f"{spec.experiment}: gain over scratch (mean over seeds)")
    fig.tight_layout()
    return [save(fig, paths.plot_file(data.root, spec.experiment, "gain_over_scratch"))]


def plot_assistant(data: ReportData, cells: pd.DataFrame) -> list[Path]:
    """tas_assistant.png: teacher / assistant / student top-1 per (pair, method) that reports an assistant."""
    spec, table = data.spec, assistant_table(data, cells)
    if table.empty:
        return []
    groups = [f"{r.label}\n{r.method_name}" if table["method"].nunique() > 1 else r.label
              for r in table.itertuples()]
    fig = Figure(figsize=(max(6, 1.8 * len(groups) + 2), 4))
    ax = fig.subplots()
    roles = {"teacher": table["teacher_top1"].tolist(), "assistant": table["assistant_mean"].tolist(),
             "student": table["student_mean"].tolist()}
    _grouped_bars(ax, groups, roles, [ROLE_COLOURS[r] for r in roles])
    ax.set_ylabel("top-1 (%)")
    ax.set_title(f"{spec.experiment}: teacher / assistant / student (missing bars = not measured)")
    fig.tight_layout()
    return [save(fig, paths.plot_file(data.root, spec.experiment, "tas_assistant"))]


def write_plots(data: ReportData, cells: pd.DataFrame | None = None) -> list[Path]:
    """Write every plot that has data under results/<exp>/plots/; returns the written paths.
    `cells`: cell_stats(data) when the caller already has it."""
    cells = cell_stats(data) if cells is None else cells
    return plot_curves(data) + plot_gain(data, cells) + plot_assistant(data, cells)
