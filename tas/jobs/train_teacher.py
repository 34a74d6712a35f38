"""train-teacher / load-teacher: train or fine-tune one teacher of an experiment, or load it as given."""

from __future__ import annotations

import sys
from pathlib import Path

from tas import matrix, paths, settings
from tas.config import Config, TeacherSpec
from tas.distillers import build_distiller
from tas.engine import devices, provenance
from tas.engine.distributed import init_from_env
from tas.engine.trainer import TrainJob, fit, make_criterion
from tas.errors import TasError
from tas.subcommands import TEACHER_METHOD_TYPE
from tas.jobs.common import loaders, maybe_sync_bn
from tas.jobs.identity import job_identity
from tas.models import create_model
from tas.models.download import file_sha256, resolve_checkpoint
from tas.models.weights import load_teacher_checkpoint, pretrained_head_note
from tas.settings import Reader


def train_teacher(cfg: Config, experiment: str, teacher_id: str, threads: int | None = None,
                  load_only: bool = False) -> dict:
    """Train (or fine-tune) the teacher; with 0 epochs, load it as given and evaluate it. `load_only` (the
    load-teacher subcommand) refuses a teacher that would train."""
    s = settings.teacher(Reader(cfg), experiment, teacher_id)
    recipe = s.effective_recipe
    if load_only and recipe.epochs:
        raise TasError(f"teacher {teacher_id!r} of experiment {experiment!r} trains for {recipe.epochs} epochs; "
                       f"run `python -m tas train-teacher --experiment {experiment} --teacher {teacher_id}` "
                       "(load-teacher is for 0 epochs)")
    rule = matrix.teacher_rule(cfg, teacher_id, matrix.loaded_teachers(cfg, [experiment]))
    identity = job_identity(cfg, rule, {"experiment": experiment, "teacher": teacher_id})
    ctx = init_from_env()
    devices.seed_everything(s.seed, s.numerics.deterministic)
    placement = devices.resolve(s.numerics, s.model.family == "cnn", threads or cfg.runtime.threads, ctx.local_rank)
    data = loaders(s.data, recipe, s.model, placement, s.seed, ctx, data_root=cfg.data_root,
                   num_workers=cfg.runtime.num_workers)
    info = data.info
    view, origin = _teacher_model(s.teacher, s.model, info.num_classes, data.image_size, recipe,
                                  paths.checkpoint_cache(cfg.data_root))
    maybe_sync_bn(s.sync_bn, view, ctx)
    distiller = build_distiller(TEACHER_METHOD_TYPE, view, None, {}, info.num_classes,
                                make_criterion(recipe.label_smoothing))
    out = paths.teacher_dir(cfg.results_root, experiment, teacher_id)
    record = provenance.record(identity, info.checksum, s.seed, devices.device_name(placement.device))
    summary = {"experiment": experiment, "kind": "teacher", "model": teacher_id, "recipe": recipe.id,
               "seed": s.seed, **origin}
    return fit(TrainJob(distiller, recipe, data.train, data.test, placement, out, s.seed, info.num_classes, record,
                        summary, cfg.runtime.progress, ctx, identity=identity, accumulation=data.batches.accumulation))


def _teacher_model(spec: TeacherSpec, model_spec, num_classes: int, size: int, recipe, checkpoints: Path):
    """The teacher before its recipe runs: its `checkpoint:` (path or URL, timm's filter for old layouts),
    timm's pretrained weights, or a random init (refused by tas.config when it would not be trained).
    Returns the view and where its weights came from (metrics.json, and the log's first line). A URL is
    downloaded once into `checkpoints`."""
    trained = recipe.epochs > 0
    origin: dict = {"checkpoint": spec.checkpoint, "pretrained": spec.pretrained}
    note = None
    if spec.pretrained:
        if spec.pretrained_file and not Path(spec.pretrained_file).is_file():
            raise TasError(f"pretrained_file {spec.pretrained_file!r} of teacher {spec.model!r} not found; "
                           "fix the path, or drop pretrained_file to fetch timm's weights from the Hugging Face hub")
        note = pretrained_head_note(model_spec.timm, num_classes, trained, spec.replace_head)
        origin["pretrained_file"] = spec.pretrained_file
    view = create_model(model_spec, num_classes, size, drop_path=recipe.drop_path, pretrained=spec.pretrained,
                        pretrained_file=spec.pretrained_file)
    if spec.checkpoint:
        local = resolve_checkpoint(spec.checkpoint, checkpoints, spec.sha256)
        note = load_teacher_checkpoint(view.model, local, trained, spec.replace_head)
        origin["checkpoint_sha256"] = spec.sha256 or file_sha256(local)
    if note:
        print(f"teacher {spec.model}: {note}", file=sys.stderr)
        origin["head"] = note
    return view, origin
