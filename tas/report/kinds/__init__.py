"""Table kinds: one module per kind in this folder, `<kind>.py`; its file name is the kind's name
(`experiments.<id>.table.kind` in params.yaml). The schema has no enum of them (a new kind is one file):
tas.config checks the kind against these file names (tests/test_plugin_sources_kinds.py: an unknown one
stops config in one line), and tests/test_codedeps.py checks that the schema's description names each one.

A kind module gives the tables subcommand three functions (tas.report.tables calls them; its helpers
`cell_stats`, `compare`, `paper_value`, `gain_over_scratch`, `notes`, `Footnotes` do the shared work):

    table(data, cells) -> DataFrame          the numbers, written as tables/<kind>.csv
    display(table, data, verdicts, foot) -> Display   the formatted table (md / tex / html)
    summary_cell(table, pair, method, fields) -> dict     one cell's numbers for summary.json

and may add `summary_extra(table, data) -> dict` (more keys of summary.json), `paper_rows(raw)` (its layout
in report/paper_values.yaml: yields (where, teacher label, student label, {method: top-1}); a paper table
of this kind needs it, tas.report.paper) and `plots(data, cells) -> [Path]` (its own PNGs, written by
tas.report.write_report after the shared ones; the ablation kind's bar charts). The table has a `pair`
column and the display one `Pair` cell per table row: tables.write_tables marks the rows whose teacher is
outside the papers' regime there (tas.report.regime); `regime_columns(table, data)` adds the regime's CSV
columns (the built-in kinds call it). The module is imported by
name when the tables job runs, so a job's code (tas.codedeps) holds its own kind only.
"""

from __future__ import annotations

from types import ModuleType

from tas.plugins import TABLE_KINDS_PACKAGE, import_plugin, plugin_modules


def names() -> tuple[str, ...]:
    """Every table kind, sorted."""
    return tuple(plugin_modules(TABLE_KINDS_PACKAGE))


def module(name: str) -> ModuleType:
    return import_plugin(TABLE_KINDS_PACKAGE, name, "table kind")


__all__ = ["names", "module"]
