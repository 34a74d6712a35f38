"""distill: train one run's student, taught by its pair's teacher or alone for a teacher-free method."""

from __future__ import annotations

import json

from tas import paths
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


def distill(cfg: Config, run: Run, threads: int | None = None) -> dict:
    check_run(cfg, run)
    exp = cfg.experiment(run.experiment)
    method = cfg.method(run.method)
    seed = run.seed
    recipe = cfg.student_recipe(exp, run.student)
    student_spec = cfg.model(run.student)
    weights = teacher_weights(cfg, run) if run.teacher else None
    identity = run_identity(cfg, run)
    ctx = init_from_env()
    devices.seed_everything(seed, cfg.runtime.deterministic)
    placement = devices.resolve(cfg.runtime, student_spec.family == "cnn", threads, ctx.local_rank)
    data = loaders(cfg, exp, recipe, placement, seed, student_spec, ctx)
    info, size = data.info, data.image_size
    teacher = None
    if weights is not None:
        teacher = create_model(cfg.model(run.teacher), info.num_classes, size)
        load_weights(teacher.model, weights, replace_head=False)
    student = create_model(student_spec, info.num_classes, size, drop_path=recipe.drop_path)
    maybe_sync_bn(cfg, student, ctx)
    distiller = build_distiller(method.type, student, teacher, method.options, info.num_classes,
                                make_criterion(recipe.label_smoothing))
    if distiller.built_first is not None:  # e.g. TAS's assistant, built by this pair's prepare-run job
        distiller.check_built_first(read_prepared(cfg, run))
    initial_state = distiller.initialise(seed)  # e.g. TAS's L2G drawn from this run's seed
    record = provenance.record(identity, info.checksum, seed, devices.device_name(placement.device))
    summary = {**run.ids(), "kind": "student", "method_type": method.type, "recipe": recipe.id}
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
