"""evaluate: top-1/top-5, parameters, FLOPs and images/s of a teacher or of a run's trained student."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tas import paths, settings
from tas.config import Config
from tas.engine import devices
from tas.engine.evaluate import accuracy, count_parameters, forward_flops
from tas.errors import TasError
from tas.io import write_json
from tas.jobs.common import check_run, loaders
from tas.models import create_model
from tas.models.weights import load_weights
from tas.runs import Run
from tas.settings import Reader


def _evaluate_model(cfg: Config, s: settings.Evaluate, weights: Path, threads: int | None) -> dict:
    """`cfg` gives only the data folder and the runtime switches that leave the numbers alone."""
    if not weights.is_file():
        raise TasError(f"{weights} is missing; run the training job that writes it first")
    placement = devices.resolve(s.numerics, s.model.family == "cnn", threads or cfg.runtime.threads)
    # Seed 0: only the train loader draws from it, and an evaluation never iterates that loader.
    data = loaders(s.data, s.recipe, s.model, placement, 0, data_root=cfg.data_root,
                   num_workers=cfg.runtime.num_workers)
    test, info, size = data.test, data.info, data.image_size
    view = create_model(s.model, info.num_classes, size)
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
    s = settings.evaluate_teacher(Reader(cfg), experiment, teacher_id)
    weights = paths.teacher_dir(cfg.results_root, experiment, teacher_id) / paths.MODEL_FILE
    result = {"experiment": experiment, "model": teacher_id, **_evaluate_model(cfg, s, weights, threads)}
    write_json(paths.teacher_eval(cfg.results_root, experiment, teacher_id), result)
    return result


# Numbers only training can measure, copied from a run's metrics.json into its eval record. best_epoch_top1 /
# best_epoch: the best per-epoch test top-1 of the reported weights and its epoch (1-based), recorded beside
# the reported last-epoch top-1 for tables that compare with papers reporting the best epoch (OFA);
# metrics.json files written before the trainer recorded them lack them, and so does the record then.
BEST_EPOCH_FIELDS = ("best_epoch_top1", "best_epoch")


def training_record(trained: dict) -> dict:
    """The eval record's fields taken from the run's metrics.json (`trained`)."""
    return {"extra_params": trained.get("extra_params", 0),
            "auxiliary": trained.get("auxiliary", {}),  # e.g. TAS's assistant, as the trainer measured it
            **{key: trained[key] for key in BEST_EPOCH_FIELDS if key in trained}}


def evaluate_run(cfg: Config, run: Run, threads: int | None = None) -> dict:
    check_run(cfg, run)
    s = settings.evaluate_run(Reader(cfg), run.experiment, run.student)
    run_dir = run.dir(cfg.results_root)
    result = _evaluate_model(cfg, s, run_dir / paths.MODEL_FILE, threads)
    trained = json.loads((run_dir / paths.METRICS_FILE).read_text())
    result.update({**run.ids(), **training_record(trained)})
    if run.teacher:
        teacher_metrics = paths.teacher_dir(cfg.results_root, run.experiment, run.teacher) / paths.METRICS_FILE
        if teacher_metrics.is_file():
            result["teacher_top1"] = json.loads(teacher_metrics.read_text())["top1"]
    write_json(run.eval_path(cfg.results_root), result)
    return result
