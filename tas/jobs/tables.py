"""tables: an experiment's tables (CSV, Markdown, LaTeX, HTML), provenance.csv and plots from its run records."""

from __future__ import annotations

from pathlib import Path

from tas.config import Config
from tas.runs import needs_teacher


def table_spec(cfg: Config, experiment: str):
    from tas.report import PairRef, TableSpec

    exp = cfg.experiment(experiment)
    pairs = tuple(PairRef(p.id, p.teacher, p.student, cfg.model(p.teacher).name, cfg.model(p.student).name) for p in exp.pairs)
    names = {m: cfg.method(m).name for m in exp.methods}
    teacher_free = frozenset(m for m in exp.methods if not needs_teacher(cfg, m))
    return TableSpec(experiment=exp.id, kind=exp.table_kind, pairs=pairs, methods=exp.methods, method_names=names,
                     seeds=exp.seeds, paper_table=exp.paper_table, teacher_free=teacher_free)


def tables(cfg: Config, experiment: str) -> list[Path]:
    from tas.report import write_report

    return write_report(cfg.results_root, table_spec(cfg, experiment))
