"""The pipeline's jobs, one function per CLI stage. Each validates its inputs before writing anything
and writes only under the paths `tas.paths` gives."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from tas import paths
from tas.config import Config, ExperimentSpec
from tas.data.loader import build_loaders
from tas.data.prepare import prepare_dataset
from tas.distillers import build_distiller
from tas.engine import devices, provenance
from tas.engine.distributed import DistContext, init_from_env
from tas.engine.evaluate import accuracy, count_parameters, forward_flops
from tas.engine.trainer import TrainJob, fit, make_criterion
from tas.errors import TasError
from tas.io import atomic_path, write_json
from tas.models import create_model
from tas.models.assistant import HybridAssistant
from tas.models.weights import load_weights
from tas.runs import Run, needs_teacher

_DEFAULT_CLASSES = {"cifar100": 100, "imagefolder": 1000}


def prepare_data(cfg: Config, dataset_id: str, download: bool = False) -> Path:
    if dataset_id not in cfg.datasets:
        raise TasError(f"unknown dataset {dataset_id!r}; choose one of: {', '.join(cfg.datasets)}")
    return prepare_dataset(cfg.datasets[dataset_id], cfg.data_root, download=download)


def _loaders(cfg: Config, exp: ExperimentSpec, recipe, placement, seed: int, ctx: DistContext = DistContext()):
    protocol = cfg.protocol_of(exp)
    augment = replace(protocol.augment, randaugment=recipe.randaugment, random_erasing=recipe.random_erasing)
    train, test, info = build_loaders(protocol.dataset, augment, cfg.data_root, recipe.batch_size, recipe.eval_batch_size,
                                      placement.device, seed, num_workers=cfg.runtime.num_workers, rank=ctx.rank,
                                      world_size=ctx.world_size, channels_last=placement.channels_last)
    return train, test, info, augment.image_size


def _params_hash(cfg: Config, exp: ExperimentSpec, *keys: str) -> str:
    protocol = cfg.protocol_of(exp)
    return cfg.section_hash(f"datasets.{protocol.dataset.id}", f"protocols.{protocol.id}", *keys)


def train_teacher(cfg: Config, experiment: str, teacher_id: str, threads: int | None = None) -> dict:
    exp = cfg.experiment(experiment)
    spec = exp.teacher(teacher_id)
    recipe = cfg.teacher_recipe(exp, teacher_id)
    model_spec = cfg.model(teacher_id)
    seed = exp.seeds[0]
    ctx = init_from_env()
    devices.seed_everything(seed, cfg.runtime.deterministic)
    placement = devices.resolve(cfg.runtime, model_spec.family == "cnn", threads, ctx.local_rank)
    train, test, info, size = _loaders(cfg, exp, recipe, placement, seed, ctx)
    view = create_model(model_spec, info.num_classes, size, drop_path=recipe.drop_path, pretrained=spec.pretrained)
    if spec.checkpoint:
        load_weights(view.model, spec.checkpoint, replace_head=spec.replace_head)
    _maybe_sync_bn(cfg, view, ctx)
    distiller = build_distiller("scratch", view, None, {}, info.num_classes, make_criterion(recipe.label_smoothing))
    out = paths.teacher_dir(cfg.results_root, exp.id, teacher_id)
    record = provenance.record(
        _params_hash(cfg, exp, f"models.{teacher_id}", f"recipes.{recipe.id}", f"experiments.{exp.id}.teachers.{teacher_id}"),
        info.checksum, seed, devices.device_name(placement.device))
    summary = {"experiment": exp.id, "kind": "teacher", "model": teacher_id, "recipe": recipe.id, "seed": seed,
               "checkpoint": spec.checkpoint}
    return fit(TrainJob(distiller, recipe, train, test, placement, out, seed, info.num_classes, record, summary, cfg.runtime.progress, ctx))


def _maybe_sync_bn(cfg: Config, view, ctx: DistContext) -> None:
    if ctx.enabled and cfg.runtime.sync_bn:
        view.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(view.model)
        view.rebind()


def _num_classes_hint(cfg: Config, exp: ExperimentSpec) -> int:
    dataset = cfg.protocol_of(exp).dataset
    return dataset.num_classes or _DEFAULT_CLASSES.get(dataset.source, 100)


def build_assistant(cfg: Config, experiment: str, pair_id: str, threads: int | None = None) -> dict:
    torch.set_num_threads(max(1, threads or cfg.runtime.threads))
    exp = cfg.experiment(experiment)
    pair = exp.pair(pair_id)
    size = cfg.protocol_of(exp).augment.image_size
    num_classes = _num_classes_hint(cfg, exp)
    torch.manual_seed(exp.seeds[0])
    teacher = create_model(cfg.model(pair.teacher), num_classes, size)
    student = create_model(cfg.model(pair.student), num_classes, size)
    assistant = HybridAssistant(teacher, student, num_classes, fusion="full")
    teacher.eval(), student.eval(), assistant.eval()

    part_a = assistant.part_a
    shared = _shared_parameters(assistant, size)
    probe = torch.zeros(1, 3, size, size)
    with torch.inference_mode():
        h = part_a.stem(probe)
        for index in range(3):
            h = part_a.stage(index, h)
        counter = FlopCounterMode(display=False)
        with counter:
            assistant(h)
        extra_flops = int(counter.get_total_flops())
        counter = FlopCounterMode(display=False)
        with counter:
            x = part_a.stem(probe)
            for index in range(3):
                x = part_a.stage(index, x)
            assistant(x)
        total_flops = int(counter.get_total_flops())
    spec = {
        "experiment": exp.id, "pair": pair.id, "teacher": pair.teacher, "student": pair.student,
        "part_a_source": f"{assistant.roles.part_a} ({getattr(cfg.model(pair.teacher if assistant.roles.part_a == 'teacher' else pair.student), 'name')}): stem + stages 1-3",
        "part_b_source": f"{assistant.roles.part_b} ({getattr(cfg.model(pair.teacher if assistant.roles.part_b == 'teacher' else pair.student), 'name')}): stage 4 + norm + pool + head",
        "image_size": size,
        "shared_parameters": shared,
        "new_parameters": assistant.new_parameters(),
        "flops_total": total_flops,
        "flops_added_per_step": extra_flops,
        "shape_plan": assistant.spec(),
    }
    out = paths.assistant_dir(cfg.results_root, exp.id, pair.id)
    with atomic_path(out / "l2g.pt") as tmp:
        torch.save(assistant.state_dict(), tmp)
    write_json(out / "assistant.json", spec)
    return spec


def _shared_parameters(assistant: HybridAssistant, size: int) -> int:
    """Student/teacher parameters on the assistant's path: those one backward through it reaches."""
    models = [assistant.part_a.model, assistant.part_b.model]
    params = {id(p): p for m in models for p in m.parameters()}
    saved = {key: p.requires_grad for key, p in params.items()}
    for p in params.values():
        p.requires_grad_(True)
        p.grad = None
    try:
        h = assistant.part_a.stem(torch.zeros(2, 3, size, size))
        for index in range(3):
            h = assistant.part_a.stage(index, h)
        assistant(h)[2].sum().backward()
        return sum(p.numel() for p in params.values() if p.grad is not None)
    finally:
        for key, p in params.items():
            p.grad = None
            p.requires_grad_(saved[key])


def _check_run(cfg: Config, run: Run) -> None:
    """tas.runs gives a run a teacher exactly when its method needs one; a hand-made Run must agree, or a
    teacher-free run would be trained again under a pair (or a teacher method without its teacher)."""
    if needs_teacher(cfg, run.method) != (run.teacher is not None):
        wanted = "a teacher" if run.teacher is None else "no teacher"
        raise TasError(f"method {run.method!r} takes {wanted}; name the run with tas.runs.resolve or pair_run")


def _teacher_weights(cfg: Config, run: Run) -> Path:
    weights = paths.teacher_dir(cfg.results_root, run.experiment, run.teacher) / "model.pt"
    if not weights.is_file():
        raise TasError(f"teacher weights {weights} are missing; run `python -m tas train-teacher --experiment {run.experiment} --teacher {run.teacher}` first")
    return weights


def distill(cfg: Config, run: Run, threads: int | None = None) -> dict:
    """Train `run`'s student: taught by the pair's teacher, or alone for a teacher-free method."""
    _check_run(cfg, run)
    exp = cfg.experiment(run.experiment)
    method = cfg.method(run.method)
    seed = run.seed
    recipe = cfg.student_recipe(exp, run.student)
    student_spec = cfg.model(run.student)
    teacher_weights = _teacher_weights(cfg, run) if run.teacher else None
    ctx = init_from_env()
    devices.seed_everything(seed, cfg.runtime.deterministic)
    placement = devices.resolve(cfg.runtime, student_spec.family == "cnn", threads, ctx.local_rank)
    train, test, info, size = _loaders(cfg, exp, recipe, placement, seed, ctx)
    teacher = None
    if teacher_weights is not None:
        teacher = create_model(cfg.model(run.teacher), info.num_classes, size)
        load_weights(teacher.model, teacher_weights, replace_head=False)
    student = create_model(student_spec, info.num_classes, size, drop_path=recipe.drop_path)
    _maybe_sync_bn(cfg, student, ctx)
    distiller = build_distiller(method.type, student, teacher, method.options, info.num_classes, make_criterion(recipe.label_smoothing))
    initial_state = distiller.load_initial_state(paths.assistant_dir(cfg.results_root, exp.id, run.pair)) if run.pair else None
    # A teacher-free run's provenance leaves the teacher out: its result does not depend on one.
    teacher_keys = [f"models.{run.teacher}"] if run.teacher else []
    record = provenance.record(
        _params_hash(cfg, exp, *teacher_keys, f"models.{run.student}", f"methods.{method.id}", f"recipes.{recipe.id}"),
        info.checksum, seed, devices.device_name(placement.device))
    summary = {**run.ids(), "kind": "student", "method_type": method.type, "recipe": recipe.id}
    if initial_state is not None:
        summary["initial_state"] = initial_state  # where the method's added modules started from
    out = run.dir(cfg.results_root)
    return fit(TrainJob(distiller, recipe, train, test, placement, out, seed, info.num_classes, record, summary, cfg.runtime.progress, ctx))


def _evaluate_model(cfg: Config, exp: ExperimentSpec, model_id: str, weights: Path, threads: int | None, recipe) -> dict:
    if not weights.is_file():
        raise TasError(f"{weights} is missing; run the training stage that writes it first")
    model_spec = cfg.model(model_id)
    placement = devices.resolve(cfg.runtime, model_spec.family == "cnn", threads)
    _, test, info, size = _loaders(cfg, exp, recipe, placement, exp.seeds[0])
    view = create_model(model_spec, info.num_classes, size)
    load_weights(view.model, weights, replace_head=False)
    model = view.model.to(placement.device).eval()
    if placement.channels_last:
        model = model.to(memory_format=torch.channels_last)
    result = accuracy(model, test, placement.autocast)
    return {
        "top1": result["top1"], "top5": result["top5"], "n": result["n"], "images_per_s": result["images_per_s"],
        "params": count_parameters(model), "flops": forward_flops(model, size, placement.device),
        "device": devices.device_name(placement.device), "dataset_checksum": info.checksum,
    }


def evaluate_teacher(cfg: Config, experiment: str, teacher_id: str, threads: int | None = None) -> dict:
    exp = cfg.experiment(experiment)
    exp.teacher(teacher_id)
    weights = paths.teacher_dir(cfg.results_root, exp.id, teacher_id) / "model.pt"
    result = {"experiment": exp.id, "model": teacher_id,
              **_evaluate_model(cfg, exp, teacher_id, weights, threads, cfg.teacher_recipe(exp, teacher_id))}
    write_json(paths.teacher_eval(cfg.results_root, exp.id, teacher_id), result)
    return result


def evaluate_run(cfg: Config, run: Run, threads: int | None = None) -> dict:
    _check_run(cfg, run)
    exp = cfg.experiment(run.experiment)
    run_dir = run.dir(cfg.results_root)
    result = _evaluate_model(cfg, exp, run.student, run_dir / "model.pt", threads, cfg.student_recipe(exp, run.student))
    trained = json.loads((run_dir / "metrics.json").read_text())
    result.update({**run.ids(), "extra_params": trained.get("extra_params", 0)})
    if "aux_assistant_top1" in trained:
        result["assistant_top1"] = trained["aux_assistant_top1"]
    if run.teacher:
        teacher_metrics = paths.teacher_dir(cfg.results_root, exp.id, run.teacher) / "metrics.json"
        if teacher_metrics.is_file():
            result["teacher_top1"] = json.loads(teacher_metrics.read_text())["top1"]
    write_json(run.eval_path(cfg.results_root), result)
    return result


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
