"""Training-step throughput of every method of one pair (`bench --what step`).

The step is the trainer's own: `tas.engine.trainer.build_step` builds it here as `fit` does (device and
memory format, optimizer, LR scheduler, EMA, `TrainStep`), and each call runs the autocast forward of
the distiller (teacher included), the sum of the `loss_*` terms accumulated on the device
(`StepMeter`), zero_grad, backward, grad clipping and EMA when the recipe has them, the optimizer
step, and the trainer's host read of the sums every SYNC_EVERY steps. Not timed: data loading, mixup
(applied once beforehand, so soft-label losses run as in training) and the LR scheduler. images/s is
the median over `windows` windows of `steps` steps, timed round-robin across methods after warm-up;
windows disturbed by other processes are re-timed. Peak memory: CUDA allocator counters; on CPU
sampled RSS (approximate). Also FLOPs per step.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

from tas import batching
from tas.bench import TARGETS
from tas.bench.load import ForeignLoad, guard_settings, guarded, loadavg
from tas.bench.machine import device_slug, header
from tas.bench.memory import MethodMemory, release_memory
from tas.bench.timing import run_s, summarize, window_s
from tas.config import Config, ExperimentSpec
from tas.data import sources
from tas.errors import TasError
from tas.io import write_json
from tas.jobs.common import num_classes_hint

GPU_VARIANTS = ("compile_student", "fused_optimizer", "teacher_bf16")
ALL_VARIANTS = GPU_VARIANTS + ("compile_distiller",)
# (numerator, denominator) step-time ratios reported when both methods ran.
RATIOS = (("tas", "kd"), ("tas", "scratch"), ("ofa", "kd"))
# Training-set sizes of the sources whose size is fixed (an ImageFolder's depends on the user's copy).
def projection(per_method: dict, images: int | None, epochs: int) -> dict:
    """What a full training run of each method costs at the measured step throughput: training steps
    only (no evaluation, data loading or checkpoints), so a lower bound of the job's wall time."""
    if not images:
        return {"train_images": None, "note": "training-set size unknown for this source; no projection"}
    per = {}
    for method_id, res in per_method.items():
        if res.get("images_per_s"):
            epoch_s = images / res["images_per_s"]
            per[method_id] = {"epoch_s": round(epoch_s, 2), "run_h": round(epoch_s * epochs / 3600, 3)}
    return {"train_images": images, "epochs": epochs, "methods": per,
            "note": "training steps only at the measured images/s: excludes evaluation, data loading and checkpoints"}


def variants_for(device: torch.device, requested: str | None = None) -> list[str]:
    """Optional settings measured besides the baseline: TAS_BENCH_VARIANTS=a,b (or 'none');
    default: every GPU variant on CUDA, none on CPU."""
    text = requested if requested is not None else os.environ.get("TAS_BENCH_VARIANTS")
    if text is None:
        return list(GPU_VARIANTS) if device.type == "cuda" else []
    chosen = [v.strip() for v in text.split(",") if v.strip() and v.strip() != "none"]
    bad = [v for v in chosen if v not in ALL_VARIANTS]
    if bad:
        raise TasError(f"TAS_BENCH_VARIANTS: unknown {bad}; use any of {', '.join(ALL_VARIANTS)} or 'none'")
    return chosen


class MethodStep:
    """One method's distiller with the trainer's step (build_step) on a fixed synthetic batch."""

    def __init__(self, cfg: Config, exp: ExperimentSpec, pair, method_id: str, batch_size: int, placement,
                 variant: str | None = None, seed: int = 0) -> None:
        from tas.distillers import build_distiller, distiller_class
        from tas.engine.step_meter import StepMeter
        from tas.engine.trainer import build_step, make_criterion, make_mixup
        from tas.models import create_model

        method = cfg.method(method_id)
        recipe = cfg.student_recipe(exp, pair.student)
        size = cfg.protocol_of(exp).augment.image_size
        num_classes = num_classes_hint(cfg, exp)
        device = placement.device
        self.device, self.placement, self.recipe, self.variant = device, placement, recipe, variant
        torch.manual_seed(seed)
        cls = distiller_class(method.type)
        teacher = create_model(cfg.model(pair.teacher), num_classes, size) if cls.needs_teacher else None
        student = create_model(cfg.model(pair.student), num_classes, size, drop_path=recipe.drop_path)
        self.distiller = build_distiller(method.type, student, teacher, method.options, num_classes,
                                         make_criterion(recipe.label_smoothing))
        # One step per "epoch": the scheduler is built as training builds it but never stepped here.
        self.train_step = build_step(self.distiller, recipe, placement, steps_per_epoch=1,
                                     fused_optimizer=variant == "fused_optimizer").step
        if variant == "teacher_bf16" and self.distiller.teacher is not None:
            if not placement.amp:
                raise TasError("teacher_bf16 needs bf16 autocast (runtime.amp: auto on CUDA, or bf16)")
            self.distiller.teacher.to(torch.bfloat16)  # frozen: no optimizer state to convert
        if variant in ("compile_student", "compile_distiller"):
            # fresh caches: earlier methods' guards must not push this one past the recompile limit
            torch._dynamo.reset()
        if variant == "compile_student":
            self.distiller.student.compile()
        elif variant == "compile_distiller":
            self.distiller.compile()
        gen = torch.Generator().manual_seed(seed)
        fmt = torch.channels_last if placement.channels_last else torch.contiguous_format
        x = torch.randn(batch_size, 3, size, size, generator=gen)
        y = torch.randint(0, num_classes, (batch_size,), generator=gen)
        self.x = x.to(device).contiguous(memory_format=fmt)
        self.hard = y.to(device)
        self.y = self.hard
        mixup = make_mixup(recipe, num_classes)
        if mixup is not None and batch_size % 2 == 0:
            self.x, self.y = mixup(self.x, self.hard)  # once, outside the timed steps
        self.extra_params = int(self.distiller.extra_parameters())
        self.meter = StepMeter(device)
        self.step_count = 0
        self.distiller.train()

    def count_flops(self) -> float:
        """FLOPs of one training step (forward + backward; matmul/conv/attention as counted by
        torch.utils.flop_counter, elementwise ops not counted) per image. Runs one real step."""
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            self.step()
        return counter.get_total_flops() / self.x.shape[0]

    def step(self) -> None:
        """The trainer's step and its periodic read of the loss sums; not timed: data loading, mixup, the LR
        scheduler."""
        from tas.engine.trainer import SYNC_EVERY

        self.train_step(self.x, self.y, self.hard, self.meter, self.step_count, self.step_count)
        self.step_count += 1
        if self.step_count % SYNC_EVERY == 0:
            self.check_finite()

    def check_finite(self) -> None:
        bad = self.meter.first_non_finite()
        if bad is not None:
            raise TasError(f"bench: non-finite loss ({bad.what}) at step {bad.step + 1}")


def measure_methods(cfg: Config, exp: ExperimentSpec, pair, methods: list[str], batch_size: int, placement,
                    steps: int, windows: int, warmup: int, variant: str | None = None,
                    count_flops: bool = True) -> dict:
    """Build every method and warm each up, then time their windows round-robin (window 1 of each
    method, then window 2, ...), so that a change in machine load hits every method alike."""
    device = placement.device
    mem = MethodMemory(device)
    jobs, static, warm, flops = {}, {}, {}, {}
    if device.type == "cpu":
        # one throwaway step first: thread pools and kernel caches initialised on first use would
        # otherwise show up in the first method's memory
        MethodStep(cfg, exp, pair, methods[0], batch_size, placement, variant=variant).step()
    for method_id in methods:
        release_memory(device)
        before = mem.now()
        t0 = time.perf_counter()
        jobs[method_id] = MethodStep(cfg, exp, pair, method_id, batch_size, placement, variant=variant)
        build_s = time.perf_counter() - t0
        warmup_s = run_s(jobs[method_id].step, warmup)
        warm[method_id] = (round(build_s, 3), round(warmup_s, 3))
        if count_flops:
            flops[method_id] = jobs[method_id].count_flops()
        release_memory(device)
        static[method_id] = max(0, mem.now() - before)
    window_ms: dict[str, list[float]] = {m: [] for m in methods}
    transient: dict[str, list[int]] = {m: [] for m in methods}
    foreign: dict[str, list] = {m: [] for m in methods}
    redone = {m: 0 for m in methods}
    for _ in range(windows):
        for method_id in methods:
            def one(method_id=method_id) -> float:
                with mem.transient(transient[method_id]):
                    return 1000.0 * window_s(jobs[method_id].step, steps)

            ms, fraction, again = guarded(one, f"{pair.id} {method_id}")
            window_ms[method_id].append(ms)
            foreign[method_id].append(fraction)
            redone[method_id] += again
    for job in jobs.values():
        job.check_finite()  # timings of a diverged method would be meaningless
    out = {}
    for method_id in methods:
        res = summarize(window_ms[method_id], batch_size)
        res.update({
            "foreign_cpu_fraction_windows": foreign[method_id], "windows_redone": redone[method_id],
            "build_s": warm[method_id][0], "warmup_s": warm[method_id][1],
            "extra_params": jobs[method_id].extra_params,
            "train_gflops_per_image": round(flops[method_id] / 1e9, 4) if method_id in flops else None,
            "peak_mem_mb": round((static[method_id] + max(transient[method_id])) / 2**20, 1),
            "static_mem_mb": round(static[method_id] / 2**20, 1),
            "activation_mem_mb": round(max(transient[method_id]) / 2**20, 1),
        })
        out[method_id] = res
    jobs.clear()
    release_memory(device)
    return out


def ratios(per_method: dict, key: str = "step_ms_median") -> dict:
    out = {}
    for num, den in RATIOS:
        if num in per_method and den in per_method and per_method[num].get(key) and per_method[den].get(key):
            out[f"{num}/{den}"] = round(per_method[num][key] / per_method[den][key], 4)
    return out


def step_path(out_dir: Path, slug: str, protocol: str, pair_id: str) -> Path:
    return Path(out_dir) / f"{slug}-{protocol}-{pair_id}.json"


def bench_step(cfg: Config, experiment: str | None, pair_id: str | None, methods: list[str], *,
               batch_size: int | None = None, steps: int = 10, windows: int = 3, warmup: int | None = None,
               threads: int | None = None, out_dir: Path | str = "results/bench", variants: str | None = None,
               write: bool = True) -> Path | dict:
    """Measure each method's training step on one pair; write <device>-<protocol>-<pair>.json."""
    from tas.engine import devices

    exp = cfg.experiment(experiment)
    pair = exp.pair(pair_id) if pair_id else exp.pairs[0]
    recipe = cfg.student_recipe(exp, pair.student)
    batch = int(batch_size or batching.plan(recipe, exp.gpus_per_job).micro_batch)  # one process's forward batch
    placement = devices.resolve(cfg.runtime, cfg.model(pair.student).family == "cnn", threads)
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    devices.seed_everything(0, cfg.runtime.deterministic)  # the numerics a real run uses
    try:
        result = _measure(cfg, exp, pair, methods, batch, placement, steps, windows,
                          max(2, steps // 2) if warmup is None else int(warmup), variants)
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
    if not write:
        return result
    path = step_path(Path(out_dir), device_slug(placement.device), result["protocol"], pair.id)
    write_json(path, result)
    return path


def _measure_variants(cfg, exp, pair, methods, batch, placement, steps, windows, warmup, chosen, baseline) -> dict:
    """Each optional setting per method, against the baseline; one that fails is recorded, not fatal."""
    results: dict[str, dict] = {}
    for variant in chosen:
        results[variant] = {}
        for method_id in methods:
            try:
                res = measure_methods(cfg, exp, pair, [method_id], batch, placement, steps, windows, warmup, variant,
                                      count_flops=False)[method_id]
                res["speedup_vs_baseline"] = round(baseline[method_id]["step_ms_median"] / res["step_ms_median"], 4)
            except Exception as err:  # e.g. a compile backend missing on this machine
                first_line = str(err).splitlines()[0] if str(err) else ""
                res = {"error": f"{type(err).__name__}: {first_line}"[:300]}
                release_memory(placement.device)
            results[variant][method_id] = res
            print(f"bench step {pair.id} {method_id} [{variant}]: {res.get('images_per_s', res.get('error'))}",
                  file=sys.stderr)
    return results


def _measure(cfg, exp, pair, methods, batch, placement, steps, windows, warmup, variants) -> dict:
    chosen = variants_for(placement.device, variants)
    protocol = cfg.protocol_of(exp)
    recipe = cfg.student_recipe(exp, pair.student)
    load_before = loadavg()
    with ForeignLoad() as foreign:
        per_method = measure_methods(cfg, exp, pair, methods, batch, placement, steps, windows, warmup)
    kept = [f for res in per_method.values() for f in res["foreign_cpu_fraction_windows"] if f is not None]
    worst = max(kept, default=None)
    max_foreign, retries = guard_settings()
    if worst is not None and worst > max_foreign:
        print(f"bench step: other processes used up to {100 * worst:.0f}% of the CPU during a kept window; "
              "those timings are not reliable, rerun on an idle machine", file=sys.stderr)
    for method_id, res in per_method.items():
        print(f"bench step {pair.id} {method_id}: {res['images_per_s']} img/s, {res['step_ms_median']} ms/step",
              file=sys.stderr)
    variant_results = _measure_variants(cfg, exp, pair, methods, batch, placement, steps, windows, warmup, chosen,
                                        per_method)
    result = header("step", placement.device)
    result.update({
        "experiment": exp.id, "protocol": protocol.id, "pair": pair.id, "teacher": pair.teacher,
        "student": pair.student, "teacher_timm": cfg.model(pair.teacher).timm,
        "student_timm": cfg.model(pair.student).timm, "threads": torch.get_num_threads(), "batch_size": batch,
        "image_size": protocol.augment.image_size, "num_classes": num_classes_hint(cfg, exp),
        "settings": {
            "steps": steps, "windows": windows, "warmup_steps": warmup, "recipe": recipe.id,
            "optimizer": recipe.optimizer, "clip_grad": recipe.clip_grad, "ema": bool(recipe.ema_decay),
            "mixup_soft_labels": bool(recipe.mixup or recipe.cutmix), "amp_bf16": placement.amp,
            "channels_last": placement.channels_last, "deterministic": cfg.runtime.deterministic,
            "runtime_compile": placement.compile, "variants": chosen,
            "step_includes": ["tas.engine.trainer.build_step: the step fit() runs (TrainStep), distiller forward "
                              "(teacher included) under autocast", "sum of loss_* terms",
                              "on-device loss/accuracy sums (StepMeter)", "zero_grad", "backward", "grad clip (recipe)",
                              "optimizer step", "EMA update (recipe)",
                              "host read of the sums and finiteness every SYNC_EVERY steps"],
            "timer": "torch.utils.benchmark.Timer.timeit(steps) per window (its 2 untimed warm-up calls first)",
            "input": "synthetic batch already on the device (N(0,1) pixels, random labels)",
            "order": "all methods built and warmed up, then their windows timed round-robin",
            "load_average_before": load_before, "load_average_after": loadavg(),
            "foreign_cpu_fraction_kept_windows_max": worst,
            "foreign_cpu_fraction_whole_run": foreign.fraction,
            "disturbance_guard": {"max_foreign": max_foreign, "retries": retries},
        },
        "peak_mem_kind": MethodMemory(placement.device).kind(),
        "methods": per_method,
        "ratios": ratios(per_method),
        "ratio_definition": "step_ms_median of the first method / of the second (time ratio; > 1 = slower)",
        "flop_ratios": ratios(per_method, "train_gflops_per_image"),
        "projection": projection(per_method, sources.train_images(cfg.protocol_of(exp).dataset, cfg.data_root),
                                 recipe.epochs),
        "variants": variant_results,
    })
    tk = result["ratios"].get("tas/kd")
    result["target_tas_over_kd_met"] = None if tk is None else bool(tk <= TARGETS["tas_over_kd_step_time_max"])
    return result
