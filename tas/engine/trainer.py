"""One trainer for every method: it sums a distiller's `loss_*` terms and never asks which method it runs.

Per epoch: train (mixup/cutmix, bf16 autocast, grad clip, EMA, per-step LR schedule), evaluate the
student (and the EMA copy and any auxiliary classifier the distiller exposes), checkpoint the whole
state atomically. A rerun resumes from the last complete checkpoint and ends with the same result.
Final outputs (model.pt, metrics.json, history.csv, log.txt, provenance.json) are written only once
training is done.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.profiler import record_function
from timm.data import Mixup
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3, dispatch_clip_grad
from tqdm import tqdm

from tas import batching
from tas.distillers.base import Distiller
from tas.engine import checkpoint, devices, run_lock
from tas.engine.devices import Placement
from tas.engine.criterion import make_criterion  # noqa: F401  (it lived here; jobs and tests import it here)
from tas.engine.distributed import DistContext, all_reduce_sum, barrier
from tas.engine.evaluate import accuracy
from tas.engine.step_meter import StepMeter
from tas.errors import TasError
from tas.io import write_json, write_text
from tas.paths import (HISTORY_FILE, LOG_FILE, METRICS_FILE, MODEL_FILE, PROVENANCE_FILE, RESUME_FILE,
                       STALE_RESUME_FILE, checkpoint_dir)


class NonFiniteLoss(TasError):
    pass


def make_mixup(recipe, num_classes: int) -> Mixup | None:
    if not (recipe.mixup or recipe.cutmix):
        return None
    return Mixup(mixup_alpha=recipe.mixup, cutmix_alpha=recipe.cutmix, label_smoothing=recipe.label_smoothing,
                 num_classes=num_classes)


@dataclass
class TrainJob:
    distiller: Distiller
    recipe: object  # tas.config.RecipeSpec
    train_loader: object
    test_loader: object
    placement: Placement
    out_dir: Path
    seed: int
    num_classes: int
    provenance: dict
    summary: dict = field(default_factory=dict)  # ids written into metrics.json (experiment, pair, ...)
    progress: bool = True
    ctx: DistContext = field(default_factory=DistContext)
    # What makes a checkpoint resumable by this job (tas.jobs.identity); None: resume any (benchmarks, tests).
    identity: dict | None = None
    # Micro-batches per optimizer step in each process (tas.batching): the loader yields micro-batches.
    accumulation: int = 1


def _logger(path: Path, is_main: bool) -> logging.Logger:
    log = logging.getLogger(f"tas.train.{path}")
    log.handlers.clear()
    log.setLevel(logging.INFO)
    log.propagate = False
    if not is_main:
        log.addHandler(logging.NullHandler())
        return log
    path.parent.mkdir(parents=True, exist_ok=True)
    # Left by a kill during a checkpoint or output write (model.pt): the job folder is locked, no other writer.
    for stale in (*path.parent.glob(".*.tmp"), *path.parent.parent.glob(".*.tmp")):
        stale.unlink(missing_ok=True)
    for handler in (logging.FileHandler(path), logging.StreamHandler(sys.stderr)):
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
    return log


def fit(job: TrainJob) -> dict:
    """Train `job` to its final outputs, as the only process writing its folder (tas.engine.run_lock)."""
    with run_lock.hold(job.out_dir, enabled=job.ctx.is_main):
        return _fit(job)


def _fit(job: TrainJob) -> dict:
    recipe, place, distiller = job.recipe, job.placement, job.distiller
    ckpt_dir = checkpoint_dir(job.out_dir)
    ctx = job.ctx
    log = _logger(ckpt_dir / LOG_FILE, ctx.is_main)
    steps_per_epoch = max(1, len(job.train_loader) // job.accumulation)  # optimizer steps
    train_step, optimizer, scheduler, ema = build_step(distiller, recipe, place, steps_per_epoch, ctx,
                                                       accumulation=job.accumulation)
    student = distiller.student.model
    mixup = make_mixup(recipe, job.num_classes)

    history: list[dict] = []
    start_epoch = 0
    elapsed_before = 0.0
    state = _resumable_state(ckpt_dir, job.identity, log, ctx.is_main)
    if state is not None:
        distiller.load_trainable_state(state["distiller"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        devices.set_rng_state(state["rng"])
        start_epoch, history = state["epoch"] + 1, list(state["history"])
        elapsed_before = float(state["elapsed"])
        log.info("resumed from %s at epoch %d", ckpt_dir / RESUME_FILE, start_epoch)
    else:
        log.info("training %s for %d epochs on %s", job.summary, recipe.epochs, job.provenance.get("device"))

    wall_start = time.perf_counter()
    elapsed = elapsed_before  # training time through the last completed epoch: what its checkpoint records
    for epoch in range(start_epoch, recipe.epochs):
        try:
            row = _train_epoch(job, train_step, scheduler, mixup, epoch, steps_per_epoch)
        except torch.cuda.OutOfMemoryError:
            micro = batching.plan(recipe, ctx.world_size).micro_batch
            raise TasError(f"out of GPU memory at micro-batch {micro}; set a smaller recipes.{recipe.id}.micro_batch "
                           f"(e.g. --set recipes.{recipe.id}.micro_batch={max(1, micro // 2)}): the global batch, and "
                           "with it the optimizer's arithmetic, stays the same") from None
        row.update(_evaluate_all(job, ema))
        history.append(row)
        log.info("epoch %d/%d  loss %.4f  train top1 %.2f  test top1 %.2f  (%.0f img/s)", epoch + 1, recipe.epochs,
                 row["loss"], row["train_top1"], row["test_top1"], row["images_per_s"])
        elapsed = elapsed_before + time.perf_counter() - wall_start
        if ctx.is_main:
            checkpoint.save(ckpt_dir / RESUME_FILE, {
                "identity": job.identity,
                "distiller": distiller.trainable_state(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "ema": ema.state_dict() if ema is not None else None,
                "rng": devices.rng_state(), "epoch": epoch, "history": history,
                "elapsed": elapsed,
            })
        barrier(ctx)

    final = history[-1] if history else _evaluate_all(job, ema)
    # The checkpointed training time: a job rerun on its complete checkpoint (a deleted model.pt rebuilt)
    # writes the same metrics.json, byte for byte, so nothing that reads it reruns.
    wall = elapsed if history else elapsed_before + time.perf_counter() - wall_start
    metrics = {
        **job.summary,
        **reported_accuracy(final, ema is not None),
        **best_epoch(history, ema is not None),
        "epochs": recipe.epochs, "extra_params": distiller.extra_parameters(),
        "params": sum(p.numel() for p in student.parameters()),
        "wall_time_s": round(wall, 3),
        "world_size": ctx.world_size,
        # what ran, after runtime's `auto` was resolved for this device: these change the numbers
        "placement": {"amp": "bf16" if place.amp else "off", "channels_last": place.channels_last,
                      "compile": place.compile},
    }
    metrics.update({key: value for key, value in final.items() if key.startswith("ema_")})
    # Auxiliary classifiers a method trains beside the student (TAS's assistant): one generic record.
    metrics["auxiliary"] = {key.removeprefix("aux_").removesuffix("_top1"): {"top1": value}
                            for key, value in final.items() if key.startswith("aux_")}
    # Fixed by rule, never by comparing test scores (that would select on the test set).
    final_weights = ema.module if metrics["weights"] == "ema" else student
    if ctx.is_main:
        _write_outputs(job.out_dir, final_weights, metrics, history, ckpt_dir / LOG_FILE, job.provenance)
    barrier(ctx)
    # The Snakemake rules echo this line to the console (ECHO_RESULT in workflow/rules/common.smk).
    log.info("done %s: top1 %.2f (%s weights) in %.1f s", job.out_dir, metrics["top1"], metrics["weights"], wall)
    return metrics


def _resumable_state(ckpt_dir: Path, identity: dict | None, log: logging.Logger, is_main: bool) -> dict | None:
    """The last checkpoint when the same job wrote it; a checkpoint of another job (changed params, code or
    inputs) is moved aside to ckpt/stale.pt (weeks of training are never deleted by a rerun) and the job
    starts from scratch, saying why."""
    path = ckpt_dir / RESUME_FILE
    state = checkpoint.load(path)
    if state is None or identity is None:
        return state
    written_by = state.get("identity") or {}
    changed = [key for key in ("params_hash", "code_hash", "inputs_hash") if written_by.get(key) != identity.get(key)]
    if not changed:
        return state
    stale = ckpt_dir / STALE_RESUME_FILE
    keys = changed_params(written_by.get("params"), identity.get("params")) if "params_hash" in changed else []
    log.info("not resuming %s: it was written by a different job (%s changed)%s; starting from scratch (moved to %s)",
             path, ", ".join(k.removesuffix("_hash") for k in changed),
             f"; changed keys: {'; '.join(keys)}" if keys else "", stale.name)
    if is_main:  # every process reads the same file; one moves it (replacing an older stale one)
        os.replace(path, stale)
    return None


def changed_params(old: dict | None, new: dict | None, limit: int = 8) -> list[str]:
    """'methods.kd.T: 1 -> 2' for each params.yaml leaf whose value differs between two identities' params
    (empty when either lacks them: a checkpoint of an earlier tas)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return []

    def leaves(value, prefix: str, out: dict) -> dict:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                leaves(item, f"{prefix}.{key}", out)
        else:
            out[prefix] = value
        return out

    before, after = {}, {}
    for key, value in old.items():
        leaves(value, key, before)
    for key, value in new.items():
        leaves(value, key, after)
    missing = object()

    def shown(value) -> str:
        text = "(not set)" if value is missing else repr(value)
        return text if len(text) <= 40 else text[:39] + "…"

    out = [f"{key}: {shown(before.get(key, missing))} -> {shown(after.get(key, missing))}"
           for key in sorted(before.keys() | after.keys()) if before.get(key, missing) != after.get(key, missing)]
    return out[:limit] + ([f"... {len(out) - limit} more"] if len(out) > limit else [])


class TrainStep:
    """One optimisation step of any distiller over `accumulation` micro-batches: forward (autocast), sum of
    the `loss_*` terms, backward of its share, then clip, optimizer step, EMA once the last micro-batch is
    in. Under DDP the gradients are all-reduced on the last micro-batch only (`no_sync` before), so P
    processes of A micro-batches each average the same P x A micro-batch gradients as one process of
    P x A. The trainer's loop and the step benchmark (tas.bench.step) both run this."""

    def __init__(self, step_fn: Callable, optimizer: torch.optim.Optimizer, placement: Placement,
                 clip_grad: float | None, distiller: Distiller, ema: ModelEmaV3 | None, accumulation: int = 1) -> None:
        self.step_fn, self.optimizer, self.placement = step_fn, optimizer, placement
        self.clip_grad, self.ema, self.ema_source = clip_grad, ema, distiller.student.model
        self.clipped = distiller.trainable_parameters() if clip_grad else []
        self.accumulation = int(accumulation)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, hard: torch.Tensor, meter: StepMeter, step: int,
                 global_step: int, micro: int = 0) -> bool:
        """`y`: the targets the losses see (soft after mixup); `hard`: the labels accuracy is counted on;
        `micro`: this micro-batch's place in the optimizer step. True when the optimizer stepped.
        The named regions are what `benchmarks/profile_step.py` reports (near-free without a profiler)."""
        last = micro == self.accumulation - 1
        sync = (self.step_fn.no_sync() if not last and isinstance(self.step_fn, DistributedDataParallel)
                else nullcontext())
        with sync:
            with record_function("step.forward"), self.placement.autocast():
                out = self.step_fn(x, y)
                terms = {k: v for k, v in out.items() if k.startswith("loss_")}
                loss = sum(terms.values())
            with record_function("step.accounting"):
                meter.add(step, terms, loss, out["logits"], hard)
            with record_function("step.backward"):
                if micro == 0:
                    self.optimizer.zero_grad(set_to_none=True)
                # each micro-batch's mean loss weighs 1/A of the step's (A = 1 leaves the loss as it is)
                (loss if self.accumulation == 1 else loss / self.accumulation).backward()
        if not last:
            return False
        with record_function("step.optimizer"):
            if self.clip_grad:
                dispatch_clip_grad(self.clipped, value=self.clip_grad, mode="norm")
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.ema_source, step=global_step)
        return True


class BuiltStep(NamedTuple):
    step: TrainStep
    optimizer: torch.optim.Optimizer
    scheduler: object  # timm.scheduler.Scheduler, stepped per update
    ema: ModelEmaV3 | None


def build_step(distiller: Distiller, recipe, placement: Placement, steps_per_epoch: int, ctx: DistContext | None = None,
               *, fused_optimizer: bool = False, accumulation: int = 1) -> BuiltStep:
    """Everything a training step needs, built the one way: `fit` and the step benchmark (tas.bench.step)
    both call this, so the benchmark times what training runs. Moves the distiller to its device and
    memory format; `fused_optimizer` is the benchmark's variant of the same optimizer (training keeps
    timm's default)."""
    ctx = ctx or DistContext()
    distiller.to(placement.device)
    if placement.channels_last:
        distiller.to(memory_format=torch.channels_last)
    step_fn = distiller
    if placement.compile:
        # Compile the whole step forward (teacher, student, method terms); weights stay shared.
        step_fn = torch.compile(distiller)
    if ctx.enabled:
        device_ids = [placement.device.index] if placement.device.type == "cuda" else None
        step_fn = DistributedDataParallel(step_fn, device_ids=device_ids)
    options = {"momentum": recipe.momentum} if recipe.optimizer == "sgd" else {}
    if fused_optimizer:
        options["fused"] = True
    optimizer = create_optimizer_v2(distiller, opt=recipe.optimizer, lr=recipe.lr, weight_decay=recipe.weight_decay,
                                    **options)
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=recipe.scheduler, num_epochs=max(1, recipe.epochs), decay_epochs=recipe.step_epochs,
        decay_rate=recipe.step_gamma, min_lr=recipe.min_lr, warmup_lr=recipe.warmup_lr,
        warmup_epochs=recipe.warmup_epochs,
        # timm 0.6.5 (OFA) moved the LR once per epoch; per optimizer step is smoother (recipe lr_update)
        step_on_epochs=recipe.lr_update == "epoch", updates_per_epoch=steps_per_epoch,
    )
    ema = ModelEmaV3(distiller.student.model, decay=recipe.ema_decay) if recipe.ema_decay else None
    step = TrainStep(step_fn, optimizer, placement, recipe.clip_grad, distiller, ema, accumulation)
    return BuiltStep(step, optimizer, scheduler, ema)


# Steps between host reads of the loss sums: each read waits for the GPU to drain its queue.
SYNC_EVERY = 50
# Seconds between the progress bar's reads of the same sums (also a host read, so rare; the first step
# is always shown, so a short epoch still shows loss, accuracy and images/s).
PROGRESS_EVERY_S = 1.0


def progress_due(step: int, now: float, last_shown: float | None) -> bool:
    """Whether the bar reads the meter at this step: the first step, then at most once per PROGRESS_EVERY_S."""
    return last_shown is None or step == 0 or now - last_shown >= PROGRESS_EVERY_S


def progress_postfix(totals, elapsed: float) -> dict[str, str]:
    seen = max(1, totals.seen)
    return {"loss": f"{totals.sums['loss'] / seen:.3f}", "acc": f"{100 * totals.correct / seen:.1f}",
            "ips": f"{totals.seen / elapsed:.0f}" if elapsed > 0 else "-"}


def _train_epoch(job: TrainJob, train_step: TrainStep, scheduler, mixup, epoch: int, steps_per_epoch: int) -> dict:
    distiller, place, recipe = job.distiller, job.placement, job.recipe
    distiller.train()
    job.train_loader.set_epoch(epoch)
    meter = StepMeter(place.device)
    start = time.perf_counter()
    accumulation = job.accumulation
    bar = tqdm(job.train_loader, total=steps_per_epoch * accumulation, desc=f"epoch {epoch + 1}/{recipe.epochs}",
               leave=False, disable=not (job.progress and sys.stderr.isatty()))
    shown = None
    for index, (x, y) in enumerate(bar):
        step, micro = divmod(index, accumulation)
        if step >= steps_per_epoch:
            break  # a loader longer than whole optimizer steps (not one of the job's): never a partial step
        hard = y
        if mixup is not None and x.shape[0] % 2 == 0:
            x, y = mixup(x, y)
        stepped = train_step(x, y, hard, meter, step, global_step=epoch * steps_per_epoch + step, micro=micro)
        if stepped:
            scheduler.step_update(epoch * steps_per_epoch + step + 1)
        if stepped and (step + 1) % SYNC_EVERY == 0:
            _stop_if_non_finite(meter, job, epoch)
        now = time.perf_counter()
        if not bar.disable and progress_due(index, now, shown):
            shown = now
            bar.set_postfix(progress_postfix(meter.totals(), now - start))
    # Before the epoch's checkpoint: weights trained through a non-finite loss must never reach last.pt.
    _stop_if_non_finite(meter, job, epoch)
    totals = meter.totals()
    scheduler.step(epoch + 1)
    elapsed = time.perf_counter() - start
    keys = sorted(totals.sums)
    reduced = all_reduce_sum([totals.sums[k] for k in keys] + [totals.correct, totals.seen], job.ctx,
                             job.placement.device)
    sums, correct, seen = dict(zip(keys, reduced[:-2])), reduced[-2], reduced[-1]
    row = {"epoch": epoch + 1, "lr": train_step.optimizer.param_groups[0]["lr"]}
    row.update({key: value / max(1, seen) for key, value in sums.items()})
    row["train_top1"] = 100.0 * correct / max(1, seen)
    row["images_per_s"] = seen / elapsed if elapsed > 0 else 0.0
    row["time_s"] = elapsed
    return row


def _stop_if_non_finite(meter: StepMeter, job: TrainJob, epoch: int) -> None:
    bad = meter.first_non_finite()
    # All processes stop together: the gradient all-reduce spreads one rank's NaN to every rank's
    # weights, and a rank that stopped alone would leave the others waiting in the next collective.
    ranks_bad = all_reduce_sum([0.0 if bad is None else 1.0], job.ctx, job.placement.device)[0]
    if not ranks_bad:
        return
    what = f"{bad.what} became non-finite at epoch {epoch + 1} step {bad.step + 1}" if bad else \
        f"a loss term became non-finite in another process during epoch {epoch + 1}"
    raise NonFiniteLoss(f"{what}; the last good checkpoint is kept in {checkpoint_dir(job.out_dir)}; "
                        "lower the learning rate or enable grad clipping (recipes.<r>.clip_grad)")


def _evaluate_all(job: TrainJob, ema) -> dict:
    distiller, place = job.distiller, job.placement
    distiller.eval()
    student = distiller.student.model

    def measure(predict) -> dict:
        result = accuracy(predict, job.test_loader, place.autocast)
        c1, c5, n = all_reduce_sum([result["correct1"], result["correct5"], result["n"]], job.ctx, place.device)
        return {"top1": 100.0 * c1 / max(1, n), "top5": 100.0 * c5 / max(1, n)}

    result = measure(student)
    row = {"test_top1": result["top1"], "test_top5": result["top5"]}
    if ema is not None:
        ema_result = measure(ema.module)
        row["ema_top1"], row["ema_top5"] = ema_result["top1"], ema_result["top5"]
    for name, predict in distiller.auxiliary_classifiers().items():
        row[f"aux_{name}_top1"] = measure(predict)["top1"]
    return row


def best_epoch(history: list[dict], ema_on: bool) -> dict:
    """The highest per-epoch test top-1 of the reported weights and its epoch (1-based): what OFA's
    train.py reports ("*** Best metric"). Selected on the test set, so recorded beside the reported
    (last-epoch) number for comparison with such papers, never instead of it."""
    key = "ema_top1" if ema_on else "test_top1"
    if not history:
        return {}
    best = max(history, key=lambda row: row[key])  # the first epoch among equals
    return {"best_epoch_top1": best[key], "best_epoch": best["epoch"]}


def reported_accuracy(final: dict, ema_on: bool) -> dict:
    """The student a run reports, fixed by rule: the EMA copy when EMA is on, else the trained model.
    Both accuracies are kept (`model_top1`, and `ema_top1` from the evaluation row)."""
    prefix = "ema" if ema_on else "test"
    return {"top1": final[f"{prefix}_top1"], "top5": final[f"{prefix}_top5"], "weights": "ema" if ema_on else "model",
            "model_top1": final["test_top1"], "model_top5": final["test_top5"]}


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def _write_outputs(out_dir: Path, model: torch.nn.Module, metrics: dict, history: list[dict], log_path: Path,
                   provenance: dict) -> None:
    # metrics.json last: its presence marks a complete job for humans and tools alike.
    checkpoint.save(out_dir / MODEL_FILE, _weights(model))
    write_text(out_dir / HISTORY_FILE, history_csv(history))
    write_text(out_dir / LOG_FILE, log_path.read_text() if log_path.exists() else "")
    write_json(out_dir / PROVENANCE_FILE, provenance)
    write_json(out_dir / METRICS_FILE, metrics)


def history_csv(history: list[dict]) -> str:
    columns: list[str] = []
    for row in history:
        for key in row:
            if key not in columns:
                columns.append(key)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


__all__ = ["TrainJob", "TrainStep", "BuiltStep", "build_step", "SYNC_EVERY", "PROGRESS_EVERY_S", "progress_due",
           "progress_postfix", "fit", "make_criterion", "NonFiniteLoss"]
