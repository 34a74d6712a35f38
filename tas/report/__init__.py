"""Report (the tables subcommand): tables (csv / md / tex / html, provenance.csv, summary.json) and plots
(PNG) of one experiment.

One data object (`tas.report.data.load`) reads every run record once; tables and plots both render it.
Entry point: `write_report(results_root, spec)`.
"""

from __future__ import annotations

from pathlib import Path

from tas.report.spec import PairRef, TableSpec

__all__ = ["PairRef", "TableSpec", "write_report"]


def write_report(results_root: str | Path, spec: TableSpec, *, paper=None, warn=None) -> list[Path]:
    """Tables then plots from one read of the records; returns every written path.
    `paper` (a PaperTable) overrides spec.paper_table; `warn(line)` gets one line per pair row outside the
    papers' regime (tas.report.regime)."""
    # Imported here so `import tas.report` stays cheap (no pandas / scipy / matplotlib until needed).
    from tas.report import kinds
    from tas.report.data import load
    from tas.report.plots import write_plots
    from tas.report.tables import cell_stats, write_tables

    data = load(results_root, spec, paper)
    cells = cell_stats(data)
    kind_plots = getattr(kinds.module(spec.kind), "plots", None)  # a table kind may bring its own plots
    return write_tables(data, cells, warn) + write_plots(data, cells) + (kind_plots(data, cells) if kind_plots else [])
