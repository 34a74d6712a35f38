"""Plots (PNG): training curves, gain over scratch, teacher / assistant / student accuracy.

Uses matplotlib's object API with the Agg canvas (no pyplot, no global backend switch), so it is
safe in headless jobs and beside other code that imports pyplot. A plot without data is skipped.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tas import io, paths
from tas.errors import TasError
from tas.report.paper import PaperTable, load_paper_table
from tas.report.spec import PairRef, TableSpec
from tas.report.tables import SCRATCH, assistant_table, cell_stats, collect, collect_teachers

# No timestamp / version in the PNG, so an unchanged plot is byte-identical (small git diffs).
_METADATA = {"Software": None}


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, metadata=_METADATA)
    return path


def read_history(results_root: str | Path, spec: TableSpec, ref: PairRef, method: str) -> pd.DataFrame:
    """All seeds' history.csv of one (pair, method), stacked with a `seed` column; empty when none exist."""
    frames = []
    for seed in spec.seeds:
        path = spec.run(ref, method, seed).dir(results_root) / "history.csv"
        if not path.is_file():
            continue
        try:
            hist = pd.read_csv(path)
        except (OSError, ValueError) as err:
            raise TasError(f"history file {path} is unreadable ({err}); delete the run and re-run `python -m tas distill`") from None
        if "epoch" in hist:
            frames.append(hist.assign(seed=seed))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _curve_panel(ax, histories: dict[str, pd.DataFrame], column: str, spec: TableSpec) -> bool:
    """Mean over seeds per epoch, shaded min..max across seeds; False when no method logs `column`."""
    drawn = False
    for method, hist in histories.items():
        if column not in hist or hist[column].isna().all():
            continue
        by_epoch = hist.groupby("epoch")[column]
        mean = by_epoch.mean()
        ax.plot(mean.index, mean.values, label=spec.method_name(method))
        if hist["seed"].nunique() > 1:
            ax.fill_between(mean.index, by_epoch.min().values, by_epoch.max().values, alpha=0.2)
        drawn = True
    return drawn


def plot_curves(results_root: str | Path, spec: TableSpec) -> list[Path]:
    """curves_<pair>.png: test top-1 and total loss vs epoch, one line per method."""
    files = []
    for ref in spec.pairs:
        histories = {m: h for m in spec.methods if not (h := read_history(results_root, spec, ref, m)).empty}
        if not histories:
            continue
        fig = Figure(figsize=(11, 4))
        ax_acc, ax_loss = fig.subplots(1, 2)
        drawn_acc = _curve_panel(ax_acc, histories, "test_top1", spec)
        drawn_loss = _curve_panel(ax_loss, histories, "loss", spec)
        if not (drawn_acc or drawn_loss):
            continue
        for ax, ylabel, drawn in ((ax_acc, "test top-1 (%)", drawn_acc), (ax_loss, "training loss (total)", drawn_loss)):
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
        files.append(_save(fig, paths.plots_dir(results_root, spec.experiment) / f"curves_{ref.pair}.png"))
    return files


def _grouped_bars(ax, groups: list[str], series: dict[str, list[float]]) -> None:
    """One bar per (group, series); a NaN value gets no bar (a zero-height bar would read as a value)."""
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        pts = [(g + (i - (len(series) - 1) / 2) * width, v) for g, v in enumerate(values) if not math.isnan(v)]
        if pts:
            ax.bar([x for x, _ in pts], [v for _, v in pts], width, label=name)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=20, ha="right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)


def plot_gain(results_root: str | Path, spec: TableSpec, df: pd.DataFrame) -> list[Path]:
    """gain_over_scratch.png: (method mean - scratch mean) per pair; bars only where both are measured."""
    if SCRATCH not in spec.methods or df.empty:
        return []
    stats = cell_stats(df, spec)["mean"]
    methods = [m for m in spec.methods if m != SCRATCH]
    gains = {spec.method_name(m): [stats[(p.pair, m)] - stats[(p.pair, SCRATCH)] for p in spec.pairs] for m in methods}
    if all(math.isnan(v) for vals in gains.values() for v in vals):
        return []
    fig = Figure(figsize=(max(6, 1.5 * len(spec.pairs) + 3), 4))
    ax = fig.subplots()
    _grouped_bars(ax, [p.label for p in spec.pairs], gains)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("top-1 gain over scratch (points)")
    ax.set_title(f"{spec.experiment}: gain over scratch (mean over seeds)")
    fig.tight_layout()
    return [_save(fig, paths.plots_dir(results_root, spec.experiment) / "gain_over_scratch.png")]


def plot_assistant(results_root: str | Path, spec: TableSpec, df: pd.DataFrame, teachers: pd.DataFrame) -> list[Path]:
    """tas_assistant.png: teacher / assistant / student top-1 per (pair, method) that reports an assistant."""
    table = assistant_table(df, teachers, spec)
    if table.empty:
        return []
    groups = [f"{r.label}\n{r.method_name}" if table["method"].nunique() > 1 else r.label
              for r in table.itertuples()]
    fig = Figure(figsize=(max(6, 1.8 * len(groups) + 2), 4))
    ax = fig.subplots()
    _grouped_bars(ax, groups, {"teacher": table["teacher_top1"].tolist(),
                               "assistant": table["assistant_mean"].tolist(),
                               "student": table["student_mean"].tolist()})
    ax.set_ylabel("top-1 (%)")
    ax.set_title(f"{spec.experiment}: teacher / assistant / student (missing bars = not measured)")
    fig.tight_layout()
    return [_save(fig, paths.plots_dir(results_root, spec.experiment) / "tas_assistant.png")]


def plot_ablation(results_root: str | Path, spec: TableSpec, df: pd.DataFrame, paper: PaperTable | None) -> list[Path]:
    """ablation_<pair>.png: measured top-1 per method (bars, std as error bar), paper values as markers."""
    if spec.kind != "ablation" or df.empty:
        return []
    stats = cell_stats(df, spec)
    files = []
    for ref in spec.pairs:
        s = stats.loc[ref.pair]
        if s["n"].sum() == 0:
            continue
        fig = Figure(figsize=(max(6, 0.9 * len(spec.methods) + 2), 4))
        ax = fig.subplots()
        xs = range(len(spec.methods))
        measured = [(x, s.loc[m, "mean"], s.loc[m, "std"]) for x, m in zip(xs, spec.methods) if s.loc[m, "n"] > 0]
        ax.bar([x for x, _, _ in measured], [v for _, v, _ in measured],
               yerr=[0 if math.isnan(e) else e for _, _, e in measured], label="ours", capsize=3)
        if paper is not None:
            pv = [(x, paper.value(ref.teacher_name, ref.student_name, m)) for x, m in zip(xs, spec.methods)]
            pv = [(x, v) for x, v in pv if v is not None]
            if pv:
                ax.scatter([x for x, _ in pv], [v for _, v in pv], color="black", marker="_", s=400, label="paper", zorder=3)
        ax.set_xticks(list(xs))
        ax.set_xticklabels([spec.method_name(m) for m in spec.methods], rotation=20, ha="right", fontsize=8)
        ax.set_ylabel("top-1 (%)")
        ax.set_title(f"{spec.experiment}: ablation on {ref.label}")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        files.append(_save(fig, paths.plots_dir(results_root, spec.experiment) / f"ablation_{ref.pair}.png"))
    return files


def write_plots(results_root: str | Path, spec: TableSpec, *, paper: PaperTable | None = None) -> list[Path]:
    """Write every plot that has data under results/<exp>/plots/; returns the written paths."""
    df = collect(results_root, spec)
    if paper is None and spec.paper_table:
        paper = load_paper_table(spec.paper_table)
    files = plot_curves(results_root, spec)
    files += plot_gain(results_root, spec, df)
    files += plot_assistant(results_root, spec, df, collect_teachers(results_root, spec))
    files += plot_ablation(results_root, spec, df, paper)
    return files
