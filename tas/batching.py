"""The batch arithmetic of a training job: the paper's global batch on any number of processes.

A recipe names the optimizer's batch (`global_batch`) and the batch one process forwards at a time
(`micro_batch`, what BatchNorm and in-batch losses such as InfoNCE see). A job of P processes gives each
process global / P samples per optimizer step, in global / (P x micro) accumulated micro-batches. An
epoch is floor(train images / global batch) optimizer steps: the last partial batch is dropped, as
OFA's loader does. Pure arithmetic, no torch: planning, `check` and `describe` use it too.
"""

from __future__ import annotations

from dataclasses import dataclass

from tas.errors import TasError


@dataclass(frozen=True)
class BatchPlan:
    global_batch: int
    micro_batch: int
    processes: int

    @property
    def per_process(self) -> int:
        return self.global_batch // self.processes

    @property
    def accumulation(self) -> int:
        """Micro-batches each process forwards per optimizer step."""
        return self.per_process // self.micro_batch

    def steps_per_epoch(self, train_images: int) -> int:
        return train_images // self.global_batch


def plan(recipe, processes: int = 1) -> BatchPlan:
    """The plan of `recipe` (a tas.config.RecipeSpec) on `processes` processes; a TasError naming the
    recipe keys when the global batch does not split into whole micro-batches."""
    where = f"recipes.{recipe.id}"
    global_batch, processes = int(recipe.global_batch), int(processes)
    if global_batch % processes:
        raise TasError(f"{where}.global_batch {global_batch} does not split over {processes} processes "
                       f"(gpus_per_job); use a multiple of {processes}")
    per_process = global_batch // processes
    micro = per_process if recipe.micro_batch is None else int(recipe.micro_batch)
    if micro > per_process or per_process % micro:
        raise TasError(f"{where}.micro_batch {micro} must divide the {per_process} samples each of {processes} "
                       f"process(es) takes of global_batch {global_batch}; use a divisor of {per_process}")
    return BatchPlan(global_batch, micro, processes)


def check_epoch(batches: BatchPlan, train_images: int, recipe_id: str) -> int:
    """Optimizer steps per epoch; a TasError when the data cannot fill one global batch."""
    steps = batches.steps_per_epoch(train_images)
    if steps < 1:
        raise TasError(f"recipes.{recipe_id}.global_batch {batches.global_batch} is larger than the {train_images} "
                       "training images: no full optimizer step per epoch; lower global_batch or use more data")
    return steps


__all__ = ["BatchPlan", "plan", "check_epoch"]
