"""tables: an experiment's tables (CSV, Markdown, LaTeX, HTML), provenance.csv and plots from its run records."""

from __future__ import annotations

import sys
from pathlib import Path

from tas import settings
from tas.config import Config
from tas.distillers.registry import declaration
from tas.settings import Reader


def table_spec(cfg: Config, experiment: str):
    from tas.report import PairRef, TableSpec

    s = settings.tables(Reader(cfg), experiment)
    pairs = tuple(PairRef(p.id, p.teacher, p.student, s.model_names[p.teacher], s.model_names[p.student])
                  for p in s.pairs)
    # What a method's type declares (in its file, read without importing it): its runs are per student when it
    # needs no teacher, and the auxiliary accuracies it reports.
    declared = {m: declaration(s.method_types[m]) for m in s.methods}
    teacher_free = frozenset(m for m in s.methods if not declared[m].needs_teacher)
    auxiliaries = tuple(dict.fromkeys(a for m in s.methods for a in declared[m].auxiliaries))
    # The report's own options of `experiments.<id>.table` (regime_margin, report): TableSpec holds the defaults.
    extra = {key: s.table[key] for key in ("regime_margin", "report") if key in s.table}
    return TableSpec(experiment=experiment, kind=s.kind, pairs=pairs, methods=s.methods,
                     method_names=dict(s.method_names), seeds=s.seeds, paper_table=s.paper,
                     teacher_free=teacher_free, smoke=s.smoke, auxiliaries=auxiliaries, **extra)


def tables(cfg: Config, experiment: str) -> list[Path]:
    from tas.report import write_report

    # A row outside the papers' regime is marked in the tables; the job's log says it too, one line per row.
    return write_report(cfg.results_root, table_spec(cfg, experiment), warn=lambda line: print(line, file=sys.stderr))
