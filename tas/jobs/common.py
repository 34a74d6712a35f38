"""What several training/evaluation jobs share: loaders for a job's data settings (tas.settings), SyncBatchNorm
under DDP, the class count before the data is read, and the run checks."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import torch

from tas import batching, paths
from tas.batching import BatchPlan
from tas.config import Config, ExperimentSpec
from tas.data import sources
from tas.data.spec import DatasetSpec
from tas.data.loader import build_loaders
from tas.engine.distributed import DistContext
from tas.errors import TasError
from tas.models.data_config import eval_transform
from tas.runs import Run, needs_teacher
from tas.settings import Data

# The head size an assistant is built with when the class count comes from the data (an image folder not
# indexed yet): only its head's parameter count depends on it, not the shapes prepare-run checks.
UNCOUNTED_CLASSES = 1000


class Loaders(NamedTuple):
    train: object
    test: object
    info: object  # tas.data.loader.DatasetInfo
    image_size: int
    batches: BatchPlan  # the recipe's global batch on this job's processes


def loaders(data: Data, recipe, model_spec, placement, seed: int, ctx: DistContext = DistContext(), *,
            data_root, num_workers) -> Loaders:
    """The train and test loaders of a job that trains or evaluates `model_spec` with `recipe`: the
    protocol's augmentation with the recipe's, the eval transform of the model (tas.models.data_config),
    micro-batches of the recipe's global batch split over the job's processes (tas.batching). `data_root`
    and `num_workers` (runtime's, which leaves the numbers alone) are the job's own, not its settings."""
    protocol = data.protocol
    evaluation = eval_transform(recipe, model_spec)
    augment = replace(protocol.augment, randaugment=recipe.randaugment, random_erasing=recipe.random_erasing,
                      interpolation=recipe.train_interpolation, eval_interpolation=evaluation.interpolation,
                      crop_pct=evaluation.crop_pct)
    batches = batching.plan(recipe, ctx.world_size)
    # data held in memory has no upsampling switch (tas.settings.Data): the loader's default stands
    streamed = {} if data.upsample_on is None else {"upsample_on": data.upsample_on}
    train, test, info = build_loaders(protocol.dataset, augment, data_root, batches.micro_batch,
                                      recipe.eval_batch_size, placement.device, seed, num_workers=num_workers,
                                      rank=ctx.rank, world_size=ctx.world_size, channels_last=placement.channels_last,
                                      global_batch=batches.global_batch, **streamed)
    batching.check_epoch(batches, info.n_train, recipe.id)
    return Loaders(train, test, info, augment.image_size, batches)


def maybe_sync_bn(sync_bn: bool, view, ctx: DistContext) -> None:
    if ctx.enabled and sync_bn:
        view.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(view.model)
        view.rebind()


def num_classes_hint(cfg: Config, exp: ExperimentSpec) -> int:
    return classes_hint(cfg.protocol_of(exp).dataset)


def classes_hint(dataset: DatasetSpec) -> int:
    """The class count a model is built with before the data is read: the dataset's, else its source's."""
    return dataset.num_classes or sources.declaration(dataset.source).num_classes or UNCOUNTED_CLASSES


def check_run(cfg: Config, run: Run) -> None:
    """tas.runs gives a run a teacher exactly when its method needs one; a hand-made Run must agree, or a
    teacher-free run would be trained again under a pair (or a teacher method without its teacher)."""
    if needs_teacher(cfg, run.method) != (run.teacher is not None):
        wanted = "a teacher" if run.teacher is None else "no teacher"
        raise TasError(f"method {run.method!r} takes {wanted}; name the run with tas.runs.resolve or pair_run")


def teacher_weights(cfg: Config, run: Run) -> Path:
    weights = paths.teacher_dir(cfg.results_root, run.experiment, run.teacher) / paths.MODEL_FILE
    if not weights.is_file():
        raise TasError(f"teacher weights {weights} are missing; run `python -m tas train-teacher --experiment "
                       f"{run.experiment} --teacher {run.teacher}` first")
    return weights
