"""Smoke mode (`smoke: true`): every job of the selected studies, with their real models, methods and recipe
structure, shrunk to minutes on a CPU, on self-made inputs, under their own folders.

`shrink(raw)` is what tas.config applies to the raw params (after the first validation, before the second)
when `smoke` is true. It changes sizes and input locations only, never which code runs:

- paths: `<data>-smoke/` and `<results>-smoke/`, so a smoke job never writes the real folders and a real
  table never reads a smoke record (the tables subcommand reads the results root of its own config);
- recipes: 1 epoch (0 stays 0: a teacher used as given), `global_batch` = MICRO_BATCH x ACCUMULATION per
  process x the largest `gpus_per_job`, `micro_batch` MICRO_BATCH, so every job accumulates, and its
  optimizer, scheduler, warm-up, mixup/cutmix, RandAugment, erasing, clipping and EMA all run; a smaller
  eval batch. Teachers that train (`epochs` > 0) train 1 epoch;
- datasets: STEPS_PER_EPOCH global batches of training images, TEST_SIZE test images (the class-stratified
  subset of the real source code);
- inputs (tas.smoke.inputs): a self-made CIFAR-100 archive in the official python-pickle format, served by a
  file:// `url` with its `md5`; a JPEG folder as `root` of an image-folder dataset; teacher checkpoints in
  the layout of OFA's release (file:// URL + `sha256`, or a local path + `sha256`, as the real one is
  given); timm-format weights as `pretrained_file`. They go through the real download, checksum, prepare,
  timm-filter and loading code.

Models (the real 224-px timm architectures), methods and their options, pairs, seeds, protocols and the
table kinds stay as they are, so a smoke study has every job of the real one.
"""

from __future__ import annotations

import copy
from typing import Any

from tas.paths import SMOKE_SUFFIX

# The sizes of a smoke job. Accumulation 2 on every process keeps the micro-batch loop (and DDP's no_sync)
# in play; a micro-batch of 2 is the smallest on which mixup/cutmix (even batches) and in-batch losses run.
MICRO_BATCH = 2
ACCUMULATION = 2
STEPS_PER_EPOCH = 2
TEST_SIZE = 16
EVAL_BATCH = 8


def smoke_root(path: str) -> str:
    """`data` -> `data-smoke`: beside the real folder, never inside it."""
    return str(path).rstrip("/") + SMOKE_SUFFIX


def largest_gpus_per_job(raw: dict) -> int:
    return max([int(exp.get("gpus_per_job", 1)) for exp in raw.get("experiments", {}).values()] or [1])


def shrink(raw: dict) -> dict:
    """The smoke version of validated raw params (a new dict; `raw` is not changed). Makes the self-made
    inputs of the selected experiments first when they are missing (once; tas.smoke.inputs)."""
    from tas.smoke import inputs  # light: stdlib only until an input has to be made

    out = copy.deepcopy(raw)
    paths = out.setdefault("paths", {})
    paths["data"] = smoke_root(paths.get("data", "data"))
    paths["results"] = smoke_root(paths.get("results", "results"))

    global_batch = MICRO_BATCH * ACCUMULATION * largest_gpus_per_job(out)
    for recipe in out["recipes"].values():
        _shrink_recipe(recipe, global_batch)
    for dataset in out["datasets"].values():
        dataset["train_size"] = STEPS_PER_EPOCH * global_batch
        dataset["test_size"] = TEST_SIZE
    for experiment in out["experiments"].values():
        for teacher in experiment["teachers"].values():
            if teacher.get("epochs"):
                teacher["epochs"] = 1

    selected = out["experiment"] if isinstance(out["experiment"], list) else [out["experiment"]]
    manifest = inputs.ensure(out, selected, paths["data"])
    inputs.relocate(out, manifest, paths["data"])
    return out


def _shrink_recipe(recipe: dict[str, Any], global_batch: int) -> None:
    if recipe.get("epochs", 0) > 0:
        recipe["epochs"] = 1
    recipe["global_batch"] = global_batch
    recipe["micro_batch"] = MICRO_BATCH
    recipe["eval_batch_size"] = EVAL_BATCH


__all__ = ["shrink", "smoke_root", "MICRO_BATCH", "ACCUMULATION", "STEPS_PER_EPOCH", "TEST_SIZE", "EVAL_BATCH"]
