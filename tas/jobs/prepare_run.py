"""prepare-run: what a method declares `built_first` (TAS: its hybrid assistant), built for one pair from
freshly made models before any of the method's runs trains, and its record written. A pair the method
cannot handle fails here in seconds; each run of the method reads the record and checks itself against it
(Distiller.check_built_first)."""

from __future__ import annotations

import torch

from tas import paths, settings
from tas.config import Config
from tas.distillers import distiller_class
from tas.errors import TasError
from tas.io import write_json
from tas.jobs.common import classes_hint
from tas.models import create_model
from tas.settings import Reader


def prepare_run(cfg: Config, experiment: str, pair_id: str, method_id: str, threads: int | None = None) -> dict:
    torch.set_num_threads(max(1, threads or cfg.runtime.threads))
    exp = cfg.experiment(experiment)
    pair = exp.pair(pair_id)
    if method_id not in exp.methods:
        raise TasError(f"method {method_id!r} is not a method of experiment {exp.id} ({', '.join(exp.methods)})")
    s = settings.prepare_run(Reader(cfg), exp.id, pair.teacher, pair.student, method_id)
    cls = distiller_class(s.method.type)
    if cls.built_first is None:
        raise TasError(f"method {method_id!r} (type {s.method.type}) builds nothing before its runs: only a method "
                       "that declares `built_first` has a prepare-run job")
    size = s.protocol.augment.image_size
    num_classes = classes_hint(s.protocol.dataset)
    torch.manual_seed(s.seed)
    teacher = create_model(s.teacher, num_classes, size).eval()
    student = create_model(s.student, num_classes, size).eval()
    record = {"experiment": exp.id, "pair": pair.id, "teacher": pair.teacher, "student": pair.student,
              "method": method_id, "method_type": s.method.type, "built_first": cls.built_first, "image_size": size,
              **cls.build_first(student, teacher, s.method.options, num_classes, size)}
    write_json(paths.prepared_record(cfg.results_root, exp.id, pair.id, method_id), record)
    return record
