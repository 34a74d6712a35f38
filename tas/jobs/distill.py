"""distill: train one run's student, taught by its pair's teacher or alone for a teacher-free method."""

from __future__ import annotations

import json

from tas import paths, settings
from tas.config import Config
from tas.distillers import build_distiller
from tas.engine import devices, provenance
from tas.engine.distributed import init_from_env
from tas.engine.trainer import TrainJob, fit, make_criterion
from tas.errors import TasError
from tas.jobs.common import check_run, loaders, maybe_sync_bn, teacher_weights
from tas.jobs.identity import run_identity
from tas.models import create_model
from tas.models.weights import load_weights
from tas.runs import Run
from tas.settings import Reader


def distill(cfg: Config, run: Run, threads: int | None = None) -> dict:
    check_run(cfg, run)
    s = settings.distill(Reader(cfg), run.experiment, run.teacher, run.student, run.method)
    seed, recipe = run.seed, s.recipe
    weights = teacher_weights(cfg, run) if run.teacher else None
    identity = run_identity(cfg, run)
    ctx = init_from_env()
    devices.seed_everything(seed, s.numerics.deterministic)
    placement = devices.resolve(s.numerics, s.student.family == "cnn", threads or cfg.runtime.threads,
                                ctx.local_rank)
    data = loaders(s.data, recipe, s.student, placement, seed, ctx, data_root=cfg.data_root,
                   num_workers=cfg.runtime.num_workers)
    info, size = data.info, data.image_size
    teacher = None
    if weights is not None:
        teacher = create_model(s.teacher, info.num_classes, size)
        load_weights(teacher.model, weights, replace_head=False)
    student = create_model(s.student, info.num_classes, size, drop_path=recipe.drop_path)
    maybe_sync_bn(s.sync_bn, student, ctx)
    distiller = build_distiller(s.method.type, student, teacher, s.method.options, info.num_classes,
                                make_criterion(recipe.label_smoothing))
    if distiller.built_first is not None:  # e.g. TAS's assistant, built by this pair's prepare-run job
        distiller.check_built_first(read_prepared(cfg, run))
    initial_state = distiller.initialise(seed)  # e.g. TAS's L2G drawn from this run's seed
    record = provenance.record(identity, info.checksum, seed, devices.device_name(placement.device))
    summary = {**run.ids(), "kind": "student", "method_type": s.method.type, "recipe": recipe.id}
    if initial_state is not None:
        summary["initial_state"] = initial_state  # where the method's added modules started from
    out = run.dir(cfg.results_root)
    return fit(TrainJob(distiller, recipe, data.train, data.test, placement, out, seed, info.num_classes, record,
                        summary, cfg.runtime.progress, ctx, identity=identity, accumulation=data.batches.accumulation))


def read_prepared(cfg: Config, run: Run) -> dict:
    path = paths.prepared_record(cfg.results_root, run.experiment, run.pair, run.method)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise TasError(f"{path} is missing or unreadable ({type(err).__name__}): run its prepare-run job first "
                       f"(python -m tas prepare-run --experiment {run.experiment} --pair {run.pair} --method "
                       f"{run.method})") from None
