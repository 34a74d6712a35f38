"""Report stage: tables (pandas -> csv / md / tex / json) and plots (matplotlib PNG) of one experiment.

Entry points: `tas.report.tables.write_tables(results_root, spec)`,
`tas.report.plots.write_plots(results_root, spec)`, or `write_report` for both.
"""

from __future__ import annotations

from pathlib import Path

from tas.report.spec import PairRef, TableSpec

__all__ = ["PairRef", "TableSpec", "write_report"]


def write_report(results_root: str | Path, spec: TableSpec) -> list[Path]:
    """Tables then plots; returns every written path."""
    # Imported here so `import tas.report` stays cheap (no pandas / matplotlib until needed).
    from tas.report.plots import write_plots
    from tas.report.tables import write_tables

    return write_tables(results_root, spec) + write_plots(results_root, spec)
