"""tables: an experiment's tables (CSV, Markdown, LaTeX, HTML), provenance.csv and plots from its run records."""

from __future__ import annotations

import sys
from pathlib import Path

from tas.config import Config
from tas.distillers.registry import declaration
from tas.runs import needs_teacher


def table_spec(cfg: Config, experiment: str):
    from tas.report import PairRef, TableSpec

    exp = cfg.experiment(experiment)
    pairs = tuple(PairRef(p.id, p.teacher, p.student, cfg.model(p.teacher).name, cfg.model(p.student).name)
                  for p in exp.pairs)
    names = {m: cfg.method(m).name for m in exp.methods}
    teacher_free = frozenset(m for m in exp.methods if not needs_teacher(cfg, m))
    auxiliaries = tuple(dict.fromkeys(a for m in exp.methods for a in declaration(cfg.method(m).type).auxiliaries))
    # The report's own options of `experiments.<id>.table` (regime_margin, report) are read from the validated
    # params: ExperimentSpec carries only what planning needs (kind, paper); TableSpec holds the defaults.
    options = ((cfg.raw.get("experiments") or {}).get(exp.id) or {}).get("table") or {}
    extra = {key: options[key] for key in ("regime_margin", "report") if key in options}
    return TableSpec(experiment=exp.id, kind=exp.table_kind, pairs=pairs, methods=exp.methods, method_names=names,
                     seeds=exp.seeds, paper_table=exp.paper_table, teacher_free=teacher_free, smoke=cfg.smoke,
                     auxiliaries=auxiliaries, **extra)


def tables(cfg: Config, experiment: str) -> list[Path]:
    from tas.report import write_report

    # A row outside the papers' regime is marked in the tables; the job's log says it too, one line per row.
    return write_report(cfg.results_root, table_spec(cfg, experiment), warn=lambda line: print(line, file=sys.stderr))
