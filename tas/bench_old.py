"""Benchmarks (`python -m tas bench`): training-step throughput per method, input-path throughput, and
the wall time of the whole pipeline. Each writes one JSON under results/bench/ (benchmarks/README.md
says how to run them and what every field means).

- step: one pair, every method, on a synthetic batch already on the device. The step is the
  trainer's own `tas.engine.trainer.TrainStep`: autocast forward of the distiller (teacher
  included), sum of the `loss_*` terms accumulated on the device (`StepMeter`), zero_grad, backward,
  grad clipping and EMA when the recipe has them, the optimizer step (timm `create_optimizer_v2`
  built as the trainer builds it), and the trainer's host read of the sums every SYNC_EVERY steps.
  Not timed: data loading, mixup (applied once beforehand, so soft-label losses run as in training)
  and the LR scheduler. images/s is the median over `windows` windows of `steps` steps, timed
  round-robin across methods after warm-up; windows disturbed by other processes are re-timed.
  Peak memory: CUDA allocator counters; on CPU sampled RSS (approximate). Also FLOPs per step.
- data: images/s of the input path alone (index/decode, augment, normalise, move to device) for
  the in-memory loader (the synthetic mini set; a CIFAR-shaped uint8 set at 32 px crop_flip and at
  the 224-px rrc protocol, with and without RandAugment) and the ImageFolder loader over generated
  JPEGs (0 and 2 workers), with the ratio to the scratch step of the job each path feeds; and, when
  datasets.imagenette.root is an extracted folder, that real folder read as a job reads it at 32, 64
  and 224 px on 1, 2 and all cores (bench_folder).
- pipeline: `snakemake --cores 2` of the selected study in a fresh copy of the checkout, then the
  no-op rerun and `dvc status`. Minutes; only with --what pipeline or all.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable

import torch

from tas.config import Config, ExperimentSpec
from tas.errors import TasError
from tas.io import write_json

DEFAULT_METHODS = "scratch,kd,dkd,ofa,rsd,tas"
GPU_VARIANTS = ("compile_student", "fused_optimizer", "teacher_bf16")
ALL_VARIANTS = GPU_VARIANTS + ("compile_distiller",)
# (numerator, denominator) step-time ratios reported when both methods ran.
RATIOS = (("tas", "kd"), ("tas", "scratch"), ("ofa", "kd"))
TARGETS = {
    "tas_over_kd_step_time_max": 1.25,
    "data_over_step_throughput_min": 5.0,
    "mini_study_wall_s_max": 300.0,
    "noop_rerun_wall_s_max": 5.0,
}
_DEFAULT_CLASSES = {"cifar100": 100, "imagefolder": 1000}


# --------------------------------------------------------------------------------------------------
# entry point


def run_bench(cfg: Config, args) -> list[Path]:
    """Run what `args.what` asks (step | data | pipeline | all); return the JSON paths written."""
    what = getattr(args, "what", "step") or "step"
    if what not in ("step", "data", "pipeline", "all"):
        raise TasError(f"bench --what {what!r} unknown; use step, data, pipeline or all")
    out_dir = Path(getattr(args, "output_dir", None) or "results/bench")
    steps = int(10 if getattr(args, "steps", None) is None else args.steps)
    windows = int(3 if getattr(args, "windows", None) is None else args.windows)
    if steps < 1 or windows < 1:
        raise TasError("bench --steps and --windows must be >= 1")
    threads = getattr(args, "threads", None)
    batch_size = getattr(args, "batch_size", None)
    exp = cfg.experiment(getattr(args, "experiment", None))
    pair = exp.pair(args.pair) if getattr(args, "pair", None) else exp.pairs[0]
    written: list[Path] = []
    if what in ("step", "all"):
        methods = parse_methods(cfg, getattr(args, "methods", None) or DEFAULT_METHODS)
        written.append(bench_step(cfg, exp.id, pair.id, methods, batch_size=batch_size, steps=steps,
                                  windows=windows, threads=threads, out_dir=out_dir))
    if what in ("data", "all"):
        # `--what data --experiment E` keeps the cases that feed E's jobs; otherwise every case
        named = getattr(args, "experiment", None) if what == "data" else None
        cases = [c["name"] for c in data_cases(cfg) if c["experiment"] == named] if named else None
        if cases == []:
            raise TasError(f"bench --what data has no input-path case for experiment {named!r}; "
                           f"leave --experiment out, or use one of: {', '.join(sorted({c[3] for c in DATA_CASES}))}")
        written.append(bench_data(cfg, steps=steps, windows=windows, threads=threads, out_dir=out_dir,
                                  batch_size=batch_size, cases=cases, tag=named if cases else None))
        root = folder_root(cfg)
        if root is not None and named is None:
            written.append(bench_folder(cfg, root, steps=steps, windows=windows, threads=threads, out_dir=out_dir,
                                        batch_size=int(batch_size or 64)))
    if what in ("pipeline", "all"):
        written.append(bench_pipeline(cfg, out_dir=out_dir, experiment=getattr(args, "experiment", None)))
    return written


def parse_methods(cfg: Config, text: str) -> list[str]:
    methods = [m.strip() for m in str(text).split(",") if m.strip()]
    if not methods:
        raise TasError("bench --methods is empty; give a comma list such as scratch,kd,tas")
    for m in methods:
        cfg.method(m)  # unknown ids fail here with the list of known ones
    return methods


# --------------------------------------------------------------------------------------------------
# environment description


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_slug(device: torch.device, threads: int | None = None) -> str:
    """cuda: the GPU's name (nvidia-h100-80gb-hbm3); cpu: cpu-<model>-<threads>t."""
    if device.type == "cuda":
        return _slug(torch.cuda.get_device_name(device))
    model = re.sub(r"\((r|tm)\)|\bcpu\b|\bprocessor\b|@.*$", " ", cpu_model(), flags=re.IGNORECASE)
    return f"cpu-{_slug(model) or platform.machine()}-{threads or torch.get_num_threads()}t"


def device_description(device: torch.device) -> dict:
    info = {"type": device.type, "threads": torch.get_num_threads(), "cpu": cpu_model(),
            "cpu_count": os.cpu_count(), "machine": platform.machine()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=torch.cuda.get_device_name(device), memory_mb=round(props.total_memory / 2**20),
                    capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    else:
        info["name"] = f"cpu ({cpu_model()}, {torch.get_num_threads()} threads)"
    return info


def versions() -> dict:
    import numpy as np
    import timm

    import tas

    return {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
            "numpy": np.__version__, "tas": tas.__version__}


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _header(kind: str, device: torch.device) -> dict:
    return {"benchmark": kind, "device": device_description(device), "versions": versions(),
            "git_commit": _git_commit(), "host": platform.node(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": list(sys.argv), "targets": dict(TARGETS)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _release_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed heap back, so the next RSS baseline is lower


def _rss_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        return None


class RssPeak:
    """Peak resident set size of this process while the block runs, sampled every `interval` s
    (psutil; without it, the ru_maxrss high-water mark, which only ever grows)."""

    def __init__(self, interval: float = 0.003) -> None:
        self.interval, self.peak, self.method = interval, 0, "psutil-sampled-rss"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "RssPeak":
        first = _rss_bytes()
        if first is None:
            import resource

            self.method = "ru_maxrss-high-water"
            self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            return self
        self.peak = first
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            rss = _rss_bytes() or 0
            if rss > self.peak:
                self.peak = rss

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss_bytes() or 0)
        else:
            import resource

            self.peak = max(self.peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


class ForeignLoad:
    """How busy the machine was with other processes while the block ran: their CPU seconds per
    wall second per core (0 = this benchmark had the machine to itself; 1 = every core was busy
    with something else). Needs psutil; None without it."""

    def __enter__(self) -> "ForeignLoad":
        self.fraction = None
        try:
            import psutil
        except ImportError:
            self._psutil = None
            return self
        self._psutil = psutil
        self._t0 = time.perf_counter()
        self._busy0 = self._busy()
        self._own0 = self._own()
        return self

    def _busy(self) -> float:
        t = self._psutil.cpu_times()
        return sum(getattr(t, k, 0.0) for k in ("user", "nice", "system", "irq", "softirq", "steal"))

    def _own(self) -> float:
        proc = self._psutil.Process()
        t = proc.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for child in proc.children(recursive=True):  # live loader workers are ours too
            with contextlib.suppress(self._psutil.Error):
                c = child.cpu_times()
                total += c.user + c.system
        return total

    def __exit__(self, *exc) -> None:
        if self._psutil is None:
            return
        wall = time.perf_counter() - self._t0
        foreign = (self._busy() - self._busy0) - (self._own() - self._own0)
        cores = self._psutil.cpu_count() or 1
        self.fraction = round(max(0.0, foreign) / max(wall * cores, 1e-9), 3)


def _guard_settings() -> tuple[float, int]:
    """(max foreign CPU fraction, retries) for a timed window: TAS_BENCH_MAX_FOREIGN (default 0.05)
    and TAS_BENCH_RETRIES (default 5). A window during which other processes used more than that
    share of the machine is timed again once the machine is quiet (wait_idle), up to `retries`
    times; the last attempt is kept and its foreign fraction recorded."""
    try:
        return float(os.environ.get("TAS_BENCH_MAX_FOREIGN", "0.05")), int(os.environ.get("TAS_BENCH_RETRIES", "5"))
    except ValueError:
        raise TasError("TAS_BENCH_MAX_FOREIGN must be a number and TAS_BENCH_RETRIES an integer") from None


def guarded(measure: Callable[[], object], label: str = "") -> tuple[object, float | None, int]:
    """Run `measure` (one timed window); redo it while other processes disturbed it.
    Returns (value, foreign CPU fraction of the kept attempt, attempts redone)."""
    max_foreign, retries = _guard_settings()
    for attempt in range(retries + 1):
        with ForeignLoad() as load:
            value = measure()
        if load.fraction is None or load.fraction <= max_foreign or attempt == retries:
            return value, load.fraction, attempt
        print(f"bench: {label} window disturbed (other processes used {100 * load.fraction:.0f}% of the CPU); "
              "waiting for a quiet machine, then timing it again", file=sys.stderr)
        wait_idle(max_foreign)
    raise AssertionError("unreachable")


def wait_idle(max_foreign: float, sample_s: float = 1.0, max_wait_s: float | None = None) -> float | None:
    """Sleep until other processes use at most `max_foreign` of the machine over `sample_s`
    (TAS_BENCH_MAX_WAIT seconds at most, default 120). Returns the last sample."""
    if max_wait_s is None:
        max_wait_s = float(os.environ.get("TAS_BENCH_MAX_WAIT", "120"))
    deadline = time.monotonic() + max_wait_s
    fraction = None
    while time.monotonic() < deadline:
        with ForeignLoad() as load:
            time.sleep(sample_s)
        fraction = load.fraction
        if fraction is None or fraction <= max_foreign:
            break
    return fraction


def _median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def _num_classes(cfg: Config, exp: ExperimentSpec) -> int:
    dataset = cfg.protocol_of(exp).dataset
    return int(dataset.num_classes or _DEFAULT_CLASSES.get(dataset.source, 100))


# Training-set sizes of the sources whose size is fixed (an ImageFolder's depends on the user's copy).
_FULL_TRAIN_IMAGES = {"cifar100": 50_000}


def train_images(cfg: Config, exp: ExperimentSpec) -> int | None:
    from tas.data.spec import SYNTHETIC_DEFAULT_TRAIN

    dataset = cfg.protocol_of(exp).dataset
    if dataset.train_size:
        return int(dataset.train_size)
    if dataset.source == "synthetic":
        return SYNTHETIC_DEFAULT_TRAIN
    return _FULL_TRAIN_IMAGES.get(dataset.source)


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


# --------------------------------------------------------------------------------------------------
# step benchmark


def _variants_for(device: torch.device, requested: str | None = None) -> list[str]:
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


class _StepJob:
    """One method's distiller, optimizer, EMA and a fixed batch, ready to run training steps."""

    def __init__(self, cfg: Config, exp: ExperimentSpec, pair, method_id: str, batch_size: int, placement,
                 variant: str | None = None, seed: int = 0) -> None:
        from timm.optim import create_optimizer_v2
        from timm.utils import ModelEmaV3

        from tas.distillers import build_distiller, distiller_class
        from tas.engine.step_meter import StepMeter
        from tas.engine.trainer import TrainStep, make_criterion, make_mixup
        from tas.models import create_model

        method = cfg.method(method_id)
        recipe = cfg.student_recipe(exp, pair.student)
        size = cfg.protocol_of(exp).augment.image_size
        num_classes = _num_classes(cfg, exp)
        device = placement.device
        self.device, self.placement, self.recipe, self.variant = device, placement, recipe, variant
        torch.manual_seed(seed)
        cls = distiller_class(method.type)
        teacher = create_model(cfg.model(pair.teacher), num_classes, size) if cls.needs_teacher else None
        student = create_model(cfg.model(pair.student), num_classes, size, drop_path=recipe.drop_path)
        self.distiller = build_distiller(method.type, student, teacher, method.options, num_classes,
                                         make_criterion(recipe.label_smoothing))
        self.distiller.to(device)
        if placement.channels_last:
            self.distiller.to(memory_format=torch.channels_last)
        if variant == "teacher_bf16" and self.distiller.teacher is not None:
            if not placement.amp:
                raise TasError("teacher_bf16 needs bf16 autocast (runtime.amp: auto on CUDA, or bf16)")
            self.distiller.teacher.to(torch.bfloat16)
        opt_kwargs = {"momentum": recipe.momentum} if recipe.optimizer == "sgd" else {}
        if variant == "fused_optimizer":
            opt_kwargs["fused"] = True
        self.optimizer = create_optimizer_v2(self.distiller, opt=recipe.optimizer, lr=recipe.lr,
                                             weight_decay=recipe.weight_decay, **opt_kwargs)
        if variant in ("compile_student", "compile_distiller"):
            torch._dynamo.reset()  # fresh caches: earlier methods' guards must not push this one past the recompile limit
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
        ema = ModelEmaV3(self.distiller.student.model, decay=recipe.ema_decay) if recipe.ema_decay else None
        self.train_step = TrainStep(self.distiller, self.optimizer, placement, recipe.clip_grad, self.distiller, ema)
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
        """The trainer's step (tas.engine.trainer.TrainStep) and its periodic read of the loss sums;
        not timed: data loading, mixup, the LR scheduler."""
        from tas.engine.trainer import SYNC_EVERY

        self.train_step(self.x, self.y, self.hard, self.meter, self.step_count, self.step_count)
        self.step_count += 1
        if self.step_count % SYNC_EVERY == 0:
            self.check_finite()

    def check_finite(self) -> None:
        bad = self.meter.first_non_finite()
        if bad is not None:
            raise TasError(f"bench: non-finite loss ({bad.what}) at step {bad.step + 1}")


def _window(step: Callable[[], None], device: torch.device, steps: int) -> float:
    """Mean ms per step over one window of `steps` steps (synchronised at the window's edges)."""
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return 1000.0 * (time.perf_counter() - t0) / steps


def summarize(window_ms: list[float], batch_size: int) -> dict:
    median_ms = _median(window_ms)
    return {
        "images_per_s": round(1000.0 * batch_size / median_ms, 2),
        "step_ms_median": round(median_ms, 3),
        "step_ms_windows": [round(v, 3) for v in window_ms],
        "step_ms_spread": round((max(window_ms) - min(window_ms)) / median_ms, 4),
    }


def time_steps(step: Callable[[], None], device: torch.device, batch_size: int, steps: int, windows: int,
               warmup: int) -> dict:
    """Warm up, then time `windows` windows of `steps` steps; median images/s over the windows."""
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    _sync(device)
    warmup_s = time.perf_counter() - start
    result = summarize([_window(step, device, steps) for _ in range(windows)], batch_size)
    result["warmup_s"] = round(warmup_s, 3)
    return result


class _Memory:
    """Per-method memory while several methods live in one process: what its build and warm-up
    added (models, optimizer state, EMA) plus the largest transient rise during its windows."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.cuda = device, device.type == "cuda"

    def now(self) -> int:
        if self.cuda:
            return torch.cuda.memory_allocated(self.device)
        return _rss_bytes() or 0

    @contextlib.contextmanager
    def transient(self, into: list):
        """Append the peak rise above the current level while the block runs."""
        if not self.cuda:
            _release_memory(self.device)
        before = self.now()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
            yield
            into.append(torch.cuda.max_memory_allocated(self.device) - before)
        else:
            with RssPeak() as rss:
                yield
            into.append(max(0, rss.peak - before))

    def kind(self) -> str:
        if self.cuda:
            return ("torch.cuda: memory_allocated added by the method's build + warm-up (models, optimizer state, "
                    "EMA) plus the max_memory_allocated rise during its steps")
        method = "psutil-sampled RSS" if _rss_bytes() is not None else "ru_maxrss"
        return (f"cpu {method}: RSS added by the method's build + warm-up plus the peak RSS rise during its steps "
                "(approximate: the allocator keeps freed pages, so read it as an order of magnitude)")


def measure_methods(cfg: Config, exp: ExperimentSpec, pair, methods: list[str], batch_size: int, placement,
                    steps: int, windows: int, warmup: int, variant: str | None = None,
                    count_flops: bool = True) -> dict:
    """Build every method and warm each up, then time their windows round-robin (window 1 of each
    method, then window 2, ...), so that a change in machine load hits every method alike."""
    device = placement.device
    mem = _Memory(device)
    jobs, static, warm, flops = {}, {}, {}, {}
    if device.type == "cpu":
        # one throwaway step first: thread pools and kernel caches initialised on first use would
        # otherwise show up in the first method's memory
        _StepJob(cfg, exp, pair, methods[0], batch_size, placement, variant=variant).step()
    for method_id in methods:
        _release_memory(device)
        before = mem.now()
        t0 = time.perf_counter()
        jobs[method_id] = _StepJob(cfg, exp, pair, method_id, batch_size, placement, variant=variant)
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(warmup):
            jobs[method_id].step()
        _sync(device)
        warm[method_id] = (round(build_s, 3), round(time.perf_counter() - t0, 3))
        if count_flops:
            flops[method_id] = jobs[method_id].count_flops()
        _release_memory(device)
        static[method_id] = max(0, mem.now() - before)
    window_ms: dict[str, list[float]] = {m: [] for m in methods}
    transient: dict[str, list[int]] = {m: [] for m in methods}
    foreign: dict[str, list] = {m: [] for m in methods}
    redone = {m: 0 for m in methods}
    for _ in range(windows):
        for method_id in methods:
            def one(method_id=method_id) -> float:
                with mem.transient(transient[method_id]):
                    return _window(jobs[method_id].step, device, steps)

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
    _release_memory(device)
    return out


def memory_kind(device: torch.device) -> str:
    return _Memory(device).kind()


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
    protocol = cfg.protocol_of(exp)
    recipe = cfg.student_recipe(exp, pair.student)
    batch = int(batch_size or recipe.batch_size)
    placement = devices.resolve(cfg.runtime, cfg.model(pair.student).family == "cnn", threads)
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    devices.seed_everything(0, cfg.runtime.deterministic)  # the numerics a real run uses
    try:
        return _bench_step(cfg, exp, pair, protocol, recipe, methods, batch, placement, steps, windows,
                           max(2, steps // 2) if warmup is None else int(warmup), out_dir, variants, write)
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


def _bench_step(cfg, exp, pair, protocol, recipe, methods, batch, placement, steps, windows, warmup, out_dir,
                variants, write):
    chosen = _variants_for(placement.device, variants)

    load_before = _loadavg()
    with ForeignLoad() as foreign:
        per_method = measure_methods(cfg, exp, pair, methods, batch, placement, steps, windows, warmup)
    kept = [f for res in per_method.values() for f in res["foreign_cpu_fraction_windows"] if f is not None]
    worst = max(kept, default=None)
    if worst is not None and worst > _guard_settings()[0]:
        print(f"bench step: other processes used up to {100 * worst:.0f}% of the CPU during a kept window; "
              "those timings are not reliable, rerun on an idle machine", file=sys.stderr)
    for method_id, res in per_method.items():
        print(f"bench step {pair.id} {method_id}: {res['images_per_s']} img/s, {res['step_ms_median']} ms/step",
              file=sys.stderr)
    variant_results: dict[str, dict] = {}
    for variant in chosen:
        variant_results[variant] = {}
        for method_id in methods:
            try:
                res = measure_methods(cfg, exp, pair, [method_id], batch, placement, steps, windows, warmup, variant,
                                      count_flops=False)[method_id]
                res["speedup_vs_baseline"] = round(per_method[method_id]["step_ms_median"] / res["step_ms_median"], 4)
            except Exception as err:  # an optional setting that fails here is recorded, not fatal
                first_line = str(err).splitlines()[0] if str(err) else ""
                res = {"error": f"{type(err).__name__}: {first_line}"[:300]}
                _release_memory(placement.device)
            variant_results[variant][method_id] = res
            print(f"bench step {pair.id} {method_id} [{variant}]: {res.get('images_per_s', res.get('error'))}",
                  file=sys.stderr)

    result = _header("step", placement.device)
    result.update({
        "experiment": exp.id, "protocol": protocol.id, "pair": pair.id, "teacher": pair.teacher,
        "student": pair.student, "teacher_timm": cfg.model(pair.teacher).timm, "student_timm": cfg.model(pair.student).timm,
        "threads": torch.get_num_threads(), "batch_size": batch, "image_size": protocol.augment.image_size,
        "num_classes": _num_classes(cfg, exp),
        "settings": {
            "steps": steps, "windows": windows, "warmup_steps": warmup, "recipe": recipe.id,
            "optimizer": recipe.optimizer, "clip_grad": recipe.clip_grad, "ema": bool(recipe.ema_decay),
            "mixup_soft_labels": bool(recipe.mixup or recipe.cutmix), "amp_bf16": placement.amp,
            "channels_last": placement.channels_last, "deterministic": cfg.runtime.deterministic,
            "runtime_compile": placement.compile, "variants": chosen,
            "step_includes": ["tas.engine.trainer.TrainStep: distiller forward (teacher included) under autocast",
                              "sum of loss_* terms", "on-device loss/accuracy sums (StepMeter)", "zero_grad",
                              "backward", "grad clip (recipe)", "optimizer step", "EMA update (recipe)",
                              "host read of the sums and finiteness every SYNC_EVERY steps"],
            "input": "synthetic batch already on the device (N(0,1) pixels, random labels)",
            "order": "all methods built and warmed up, then their windows timed round-robin",
            "load_average_before": load_before, "load_average_after": _loadavg(),
            "foreign_cpu_fraction_kept_windows_max": worst,
            "foreign_cpu_fraction_whole_run": foreign.fraction,
            "disturbance_guard": {"max_foreign": _guard_settings()[0], "retries": _guard_settings()[1]},
        },
        "peak_mem_kind": memory_kind(placement.device),
        "methods": per_method,
        "ratios": ratios(per_method),
        "ratio_definition": "step_ms_median of the first method / of the second (time ratio; > 1 = slower)",
        "flop_ratios": ratios(per_method, "train_gflops_per_image"),
        "projection": projection(per_method, train_images(cfg, exp), recipe.epochs),
        "variants": variant_results,
    })
    tk = result["ratios"].get("tas/kd")
    result["target_tas_over_kd_met"] = None if tk is None else bool(tk <= TARGETS["tas_over_kd_step_time_max"])
    if not write:
        return result
    path = step_path(Path(out_dir), device_slug(placement.device), protocol.id, pair.id)
    write_json(path, result)
    return path


def bench_flops(cfg: Config, experiment: str | None, pair_id: str | None, methods: list[str], *,
                batch_size: int = 2, threads: int | None = None, out_dir: Path | str = "results/bench") -> Path:
    """FLOPs of one training step per image for each method (device-independent, so it can be
    counted on a CPU for the 224-px pairs); writes flops-<protocol>-<pair>.json."""
    from tas.engine import devices

    exp = cfg.experiment(experiment)
    pair = exp.pair(pair_id) if pair_id else exp.pairs[0]
    protocol = cfg.protocol_of(exp)
    placement = devices.resolve(cfg.runtime, cfg.model(pair.student).family == "cnn", threads)
    per_method = {}
    for method_id in methods:
        job = _StepJob(cfg, exp, pair, method_id, batch_size, placement)
        job.step()
        gflops = round(job.count_flops() / 1e9, 4)
        job.check_finite()
        per_method[method_id] = {"train_gflops_per_image": gflops,
                                 "extra_params": job.extra_params}
        print(f"bench flops {pair.id} {method_id}: {per_method[method_id]['train_gflops_per_image']} GFLOP/image",
              file=sys.stderr)
        del job
        _release_memory(placement.device)
    result = {"benchmark": "flops", "versions": versions(), "git_commit": _git_commit(),
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "experiment": exp.id, "protocol": protocol.id,
              "pair": pair.id, "teacher_timm": cfg.model(pair.teacher).timm, "student_timm": cfg.model(pair.student).timm,
              "image_size": protocol.augment.image_size, "counted_with_batch": batch_size,
              "counted": "torch.utils.flop_counter over one training step (forward + backward): matmul, conv, "
                         "attention; elementwise ops, norms and the optimizer are not counted",
              "methods": per_method, "flop_ratios": ratios(per_method, "train_gflops_per_image")}
    path = Path(out_dir) / f"flops-{protocol.id}-{pair.id}.json"
    write_json(path, result)
    return path


# --------------------------------------------------------------------------------------------------
# data benchmark


def time_loader(loader, device: torch.device, batches: int, windows: int, warmup: int = 2) -> dict:
    """images/s of iterating `loader` (epochs chained; each batch ends on the device)."""

    def endless():
        epoch = 0
        while True:
            loader.set_epoch(epoch)
            yield from loader
            epoch += 1

    it = endless()
    t_first = time.perf_counter()
    for _ in range(warmup):
        next(it)
    _sync(device)
    warmup_s = time.perf_counter() - t_first
    rates, batch_ms, foreign, redone = [], [], [], 0

    def one() -> tuple[float, float]:
        n = 0
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(batches):
            x, _y = next(it)
            n += x.shape[0]
        _sync(device)
        dt = time.perf_counter() - t0
        return n / dt, 1000.0 * dt / batches

    for _ in range(windows):
        (rate, ms), fraction, again = guarded(one, "data")
        rates.append(rate)
        batch_ms.append(ms)
        foreign.append(fraction)
        redone += again
    it.close()
    return {"images_per_s": round(_median(rates), 1), "batch_ms_median": round(_median(batch_ms), 3),
            "images_per_s_windows": [round(r, 1) for r in rates], "warmup_s": round(warmup_s, 3),
            "batches_per_window": batches, "foreign_cpu_fraction_windows": foreign, "windows_redone": redone}


def _write_jpegs(root: Path, n: int, size: int, classes: int, seed: int = 0) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("train", n), ("val", max(classes, n // 10))):
        for i in range(count):
            label = i % classes
            folder = root / split / f"class{label:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            # smooth colour blobs + noise: compresses like a photo rather than like pure noise
            base = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
            img = np.asarray(Image.fromarray(base).resize((size, size), Image.BILINEAR), dtype=np.int16)
            img = np.clip(img + rng.integers(-20, 21, img.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(folder / f"{i:05d}.jpg", quality=90)


def reference_job(cfg: Config, experiment: str, randaugment: bool):
    """(experiment, pair, recipe) whose input path a case feeds: the experiment's first pair whose
    student recipe uses RandAugment (transformer students) or not (CNN students)."""
    exp = cfg.experiments.get(experiment)
    if exp is None:
        return None, None, None
    for pair in exp.pairs:
        recipe = cfg.student_recipe(exp, pair.student)
        if bool(recipe.randaugment) == randaugment:
            return exp, pair, recipe
    return exp, exp.pairs[0], cfg.student_recipe(exp, exp.pairs[0].student)


def _case_augment(cfg: Config, case: dict, recipe):
    """The protocol's augmentation with the student recipe's RandAugment/erasing (as jobs._loaders)."""
    from tas.data.spec import AugmentSpec

    aug = cfg.protocols[case["protocol"]].augment if case["protocol"] in cfg.protocols else AugmentSpec(**case["fallback"])
    if recipe is not None:
        aug = replace(aug, randaugment=recipe.randaugment, random_erasing=recipe.random_erasing)
    return aug


# name, data source, protocol (augmentation), experiment whose step it feeds, transformer-student recipe?,
# the ratio target applies on CUDA only (224 px), loader workers (folder)
DATA_CASES = (
    ("synthetic-mini", "synthetic", "mini", "mini", False, False, (0,)),
    ("cifar-32-crop_flip", "uint8", "cifar32", "cifar100_32", False, False, (0,)),
    ("cifar-32-crop_flip+randaugment+erasing", "uint8", "cifar32", "cifar100_32", True, False, (0,)),
    ("cifar-224-rrc", "uint8", "paper", "cifar100", False, True, (0,)),
    ("cifar-224-rrc+randaugment+erasing", "uint8", "paper", "cifar100", True, True, (0,)),
    ("jpeg-folder-32-crop_flip", "folder", "cifar32", "cifar100_32", False, False, (0, 2)),
    ("jpeg-folder-224-rrc", "folder", "imagenet", "imagenet", False, True, (0, 2)),
)
_FALLBACK_AUGMENT = {"mini": {"train": "crop_flip", "image_size": 32}, "cifar32": {"train": "crop_flip", "image_size": 32},
                     "paper": {"train": "rrc", "image_size": 224}, "imagenet": {"train": "rrc", "image_size": 224}}


def data_cases(cfg: Config, names: Iterable[str] | None = None) -> list[dict]:
    chosen = set(names) if names is not None else None
    cases = []
    for name, source, protocol, experiment, ra, gpu_only, workers in DATA_CASES:
        if chosen is not None and name not in chosen:
            continue
        cases.append({"name": name, "source": source, "protocol": protocol, "experiment": experiment,
                      "randaugment": ra, "gpu_only_ratio": gpu_only, "workers": workers,
                      "fallback": _FALLBACK_AUGMENT[protocol]})
    return cases


def _step_reference(cfg: Config, exp, pair, out_dir: Path, slug: str, steps: int, windows: int,
                    threads: int | None, batch_size: int | None, measure: bool, why_not: str) -> dict | None:
    """Scratch step throughput of the pair: from its step JSON when there is one, else measured."""
    if exp is None:
        return None
    protocol = cfg.protocol_of(exp)
    ref = {"experiment": exp.id, "protocol": protocol.id, "pair": pair.id, "method": "scratch"}
    path = step_path(out_dir, slug, protocol.id, pair.id)
    if path.is_file():
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            data = json.loads(path.read_text())
            if "scratch" in data["methods"]:
                return {**ref, "images_per_s": data["methods"]["scratch"]["images_per_s"],
                        "batch_size": data["batch_size"], "source": str(path)}
    if not measure:
        return {**ref, "images_per_s": None, "source": why_not}
    res = bench_step(cfg, exp.id, pair.id, ["scratch"], batch_size=batch_size, steps=steps, windows=windows,
                     threads=threads, out_dir=out_dir, variants="none", write=False)
    return {**ref, "images_per_s": res["methods"]["scratch"]["images_per_s"], "batch_size": res["batch_size"],
            "source": "measured by this data benchmark (scratch step, synthetic batch on the device)"}


def bench_data(cfg: Config, *, steps: int = 10, windows: int = 3, threads: int | None = None,
               out_dir: Path | str = "results/bench", batch_size: int | None = None, n_images: int = 2000,
               n_jpegs: int = 200, jpeg_size: int = 64, cases: Iterable[str] | None = None,
               measure_reference: bool = True, tag: str | None = None) -> Path:
    """images/s of each input path (DATA_CASES) and its ratio to the scratch step of the job it feeds."""
    import numpy as np

    from tas.data import synthetic
    from tas.data.imagefolder import scan
    from tas.data.loader import FolderLoader, InMemoryLoader
    from tas.data.spec import CIFAR100_MEAN, CIFAR100_STD, IMAGENET_MEAN, IMAGENET_STD, DatasetSpec
    from tas.engine import devices

    out_dir = Path(out_dir)
    placement = devices.resolve(cfg.runtime, True, threads)
    device = placement.device
    slug = device_slug(device)
    chosen = data_cases(cfg, cases)
    rng = np.random.default_rng(0)
    cifar_images = torch.from_numpy(rng.integers(0, 256, (n_images, 32, 32, 3), dtype=np.uint8))
    cifar_labels = torch.from_numpy(rng.integers(0, 100, n_images).astype(np.int64))
    results, refs = [], {}
    foreign_fractions = []
    with tempfile.TemporaryDirectory(prefix="tas-bench-jpeg-") as tmp:
        jpeg_root = Path(tmp)
        if any(c["source"] == "folder" for c in chosen):
            _write_jpegs(jpeg_root, n_jpegs, jpeg_size, classes=10)
        for case in chosen:
            exp, pair, recipe = reference_job(cfg, case["experiment"], case["randaugment"])
            aug = _case_augment(cfg, case, recipe)
            batch = int(batch_size or (recipe.batch_size if recipe is not None else 128))
            runs = []
            if case["source"] in ("synthetic", "uint8"):
                if case["source"] == "synthetic":
                    base = cfg.protocols[case["protocol"]].dataset if case["protocol"] in cfg.protocols else \
                        DatasetSpec(id="synthetic", source="synthetic", num_classes=10)
                    spec = replace(base, train_size=min(base.train_size or n_images, n_images), test_size=10)
                    images_np, labels_np, _, _ = synthetic.generate(spec)
                    images, labels = torch.from_numpy(images_np), torch.from_numpy(labels_np)
                    mean, std = spec.mean, spec.std
                else:
                    images, labels, mean, std = cifar_images, cifar_labels, CIFAR100_MEAN, CIFAR100_STD
                batch = min(batch, len(images))
                loader = InMemoryLoader(images, labels, batch, True, aug, mean, std, device, seed=0,
                                        channels_last=placement.channels_last)
                with ForeignLoad() as foreign:
                    timing = time_loader(loader, device, steps, windows)
                foreign_fractions.append(foreign.fraction)
                runs.append({"loader": "InMemoryLoader", "num_workers": 0, "n_images": int(len(images)),
                             "stored_size": int(images.shape[1]), **timing, "foreign_cpu_fraction": foreign.fraction})
            else:
                index = scan(jpeg_root, DatasetSpec(id="benchjpeg", source="imagefolder", image_size=jpeg_size))
                files = [f for f, _ in index["train"]]
                labels = torch.tensor([lab for _, lab in index["train"]], dtype=torch.int64)
                batch = min(batch, max(1, len(files) // 4))
                for workers in case["workers"]:
                    loader = FolderLoader(jpeg_root, files, labels, batch, True, aug, IMAGENET_MEAN, IMAGENET_STD,
                                          device, seed=0, num_workers=workers, channels_last=placement.channels_last)
                    with ForeignLoad() as foreign:
                        timing = time_loader(loader, device, steps, windows)
                    foreign_fractions.append(foreign.fraction)
                    del loader
                    runs.append({"loader": "FolderLoader", "num_workers": workers, "n_images": len(files),
                                 "stored_size": jpeg_size, "format": "jpeg q90", **timing,
                                 "foreign_cpu_fraction": foreign.fraction})
            key = (exp.id, pair.id) if exp is not None else None
            if key not in refs:
                gpu_only = case["gpu_only_ratio"] and device.type != "cuda"
                why_not = (f"not measured on CPU (224-px step); run `python -m tas bench --what step --experiment {exp.id if exp else '?'} "
                           f"--pair {pair.id if pair else '?'}` on a GPU first" if gpu_only else "not measured (measure_reference=False)")
                refs[key] = _step_reference(cfg, exp, pair, out_dir, slug, steps, windows, threads, batch_size,
                                            measure_reference and not gpu_only, why_not)
            ref = refs[key]
            step_ips = ref.get("images_per_s") if ref else None
            for run in runs:
                run["ratio_to_step"] = round(run["images_per_s"] / step_ips, 2) if step_ips else None
                run["target_met"] = None if not step_ips else bool(run["ratio_to_step"] >= TARGETS["data_over_step_throughput_min"])
            results.append({
                "name": case["name"], "source": case["source"], "protocol": case["protocol"], "batch_size": batch,
                "recipe": recipe.id if recipe is not None else None,
                "augment": {"train": aug.train, "image_size": aug.image_size, "randaugment": aug.randaugment,
                            "random_erasing": aug.random_erasing},
                "target_applies_on": "cuda" if case["gpu_only_ratio"] else "cpu and cuda",
                "runs": runs, "step_reference": ref,
            })
            best = max(r["images_per_s"] for r in runs)
            ratio = max((r["ratio_to_step"] or 0) for r in runs)
            print(f"bench data {case['name']}: {best} img/s" + (f", {ratio}x the step" if ratio else ""), file=sys.stderr)
    out = _header("data", device)
    out.update({
        "threads": torch.get_num_threads(), "channels_last": placement.channels_last,
        "settings": {"batches_per_window": steps, "windows": windows, "warmup_batches": 2,
                     "uint8_set": f"random uint8 ({n_images}, 32, 32, 3), CIFAR-100 mean/std",
                     "jpeg_set": f"{n_jpegs} generated {jpeg_size}x{jpeg_size} JPEGs (quality 90), 10 classes, PIL decode",
                     "measures": "iterate the train loader: index or decode, augment, normalise, move to the device",
                     "foreign_cpu_fraction_max": max((f for f in foreign_fractions if f is not None), default=None)},
        "cases": results,
        "ratio_definition": "input-path images/s / scratch training-step images/s of the job the path feeds",
    })
    path = out_dir / (f"{slug}-data-{tag}.json" if tag else f"{slug}-data.json")
    write_json(path, out)
    return path


# --------------------------------------------------------------------------------------------------
# real image folder (datasets.imagenette.root, e.g. ../shared/data/imagenette-96)

# Read sizes of the real-folder benchmark: the mini scale (32, 64) and the paper's 224 (resized up).
FOLDER_SIZES = (32, 64, 224)
# Projection of an H100's ResNet-18 training step at 224 px, since no GPU measured it here:
# NVIDIA's H100 SXM datasheet gives 989 dense bf16 TFLOP/s; at an assumed 35 % utilisation and the
# 10.65 GFLOP per image that results/bench/flops-paper-swin_t-r18.json counts for ResNet-18's
# training step (forward + backward) this is ~32.5k images/s (~13.9k for the TAS step, 24.92 GFLOP).
H100_PROJECTION = {"peak_bf16_dense_tflops": 989.0, "assumed_utilisation": 0.35,
                   "r18_train_gflops_per_image": 10.6456, "tas_swin_t_r18_train_gflops_per_image": 24.9216,
                   "box_cores": 16}


def h100_projection() -> dict:
    p = H100_PROJECTION
    flops = p["peak_bf16_dense_tflops"] * 1e12 * p["assumed_utilisation"]
    r18 = flops / (p["r18_train_gflops_per_image"] * 1e9)
    tas = flops / (p["tas_swin_t_r18_train_gflops_per_image"] * 1e9)
    return {**p, "r18_step_images_per_s": round(r18), "tas_step_images_per_s": round(tas),
            "per_core_needed_images_per_s": round(r18 / p["box_cores"], 1),
            "source": "FLOP projection (datasheet peak x assumed utilisation / counted training FLOPs); not a measurement"}


def folder_root(cfg: Config) -> Path | None:
    """The extracted Imagenette folder the benchmark reads: datasets.imagenette.root when it exists."""
    spec = cfg.datasets.get("imagenette")
    root = Path(spec.root) if spec is not None and spec.root else None
    return root if root is not None and (root / "train").is_dir() else None


def _folder_spec(cfg: Config, root: Path, size: int):
    """The dataset a job reading the folder at `size` would use (prepared under a scratch data root)."""
    from tas.data.spec import DatasetSpec

    base = cfg.datasets.get("imagenette")
    if base is None or base.source != "imagenette":
        return DatasetSpec(id=f"bench_folder_{size}", source="imagefolder", root=str(root), image_size=size)
    # The stored size is the read size at the mini scale (decoded once, cached when small);
    # 224 streams the folder and resizes up per sample.
    return replace(base, id=f"bench_imagenette_{size}", root=str(root), image_size=size if size <= 64 else None)


def _folder_reference(cfg: Config, size: int, out_dir: Path, slug: str, steps: int, windows: int,
                      threads: int | None) -> dict:
    """Training-step images/s the folder path at `size` feeds: a mini pair's scratch step at that size
    (measured on this CPU), or at 224 the H100 projection of ResNet-18 (see H100_PROJECTION)."""
    if size > 64:
        proj = h100_projection()
        return {"images_per_s": proj["r18_step_images_per_s"], "per_core_needed": proj["per_core_needed_images_per_s"],
                "source": "projected H100 ResNet-18 224-px step (h100_projection)"}
    from types import MappingProxyType

    exp = cfg.experiments.get("mini")
    # A CNN student: it runs at any input size (the tiny ViT/Mixer are built for 32 px).
    pair = next((p for p in exp.pairs if cfg.model(p.student).family == "cnn"), None) if exp else None
    if pair is None:
        return {"images_per_s": None, "source": "no mini pair with a CNN student in params.yaml"}
    protocol = cfg.protocol_of(exp)
    step_slug = slug
    if protocol.augment.image_size != size:
        sized = replace(protocol, augment=replace(protocol.augment, image_size=size))
        cfg = replace(cfg, protocols=MappingProxyType({**cfg.protocols, protocol.id: sized}))
        step_slug = f"{slug}-{size}px"  # no step JSON at this size: measured here
    ref = _step_reference(cfg, exp, pair, out_dir, step_slug, steps, windows, threads, None, True, "")
    return {**ref, "image_size": size}


def bench_folder(cfg: Config, root: Path | str, *, steps: int = 10, windows: int = 3, threads: int | None = None,
                 out_dir: Path | str = "results/bench", batch_size: int = 64, sizes: Iterable[int] = FOLDER_SIZES,
                 tag: str | None = None) -> Path:
    """images/s of a real image folder read as a job reads it (prepare-data, then build_loaders), at each
    size, for 1, 2 and all cores, train and eval loaders, against the step the path feeds."""
    from tas.data.loader import InMemoryLoader, build_loaders
    from tas.data.prepare import prepare_dataset
    from tas.data.spec import AugmentSpec
    from tas.engine import devices

    root = Path(root)
    out_dir = Path(out_dir)
    placement = devices.resolve(cfg.runtime, True, threads)
    device = placement.device
    slug = device_slug(device)
    all_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    core_counts = sorted({1, min(2, all_cores), all_cores})
    cases = []
    with tempfile.TemporaryDirectory(prefix="tas-bench-folder-") as data_root:
        for size in sizes:
            spec = _folder_spec(cfg, root, size)
            aug = AugmentSpec(train="crop_flip", image_size=size) if size <= 64 else AugmentSpec(train="rrc", image_size=size)
            torch.set_num_threads(all_cores)
            t0 = time.perf_counter()
            prepare_dataset(spec, data_root)
            prepare_s = time.perf_counter() - t0
            runs = []
            for cores in core_counts:
                train, test, info = build_loaders(spec, aug, data_root, batch_size, 256, device, seed=0,
                                                  num_workers=0 if cores == 1 else cores)
                cached = isinstance(train, InMemoryLoader)
                # In memory: the batch transform is torch ops (threads = cores); streamed: workers decode
                # and the main process only collates, so it keeps one thread.
                torch.set_num_threads(cores if cached else 1)
                with ForeignLoad() as foreign:
                    timing = time_loader(train, device, steps, windows)
                row = {"cores": cores, "loader": type(train).__name__, "cached": cached,
                       "num_workers": getattr(getattr(train, "loader", None), "num_workers", 0), **timing,
                       "foreign_cpu_fraction": foreign.fraction}
                if cores == all_cores:
                    ev = time_loader(test, device, max(1, min(steps, len(test) - 2)), 1)
                    row["eval_images_per_s"] = ev["images_per_s"]
                runs.append(row)
                del train, test
                gc.collect()
            ref = _folder_reference(cfg, size, out_dir, slug, steps, windows, threads)
            step_ips = ref.get("images_per_s")
            for run in runs:
                run["per_core_images_per_s"] = round(run["images_per_s"] / run["cores"], 1)
                run["ratio_to_step"] = round(run["images_per_s"] / step_ips, 2) if step_ips else None
            best = max(runs, key=lambda r: r["images_per_s"])
            one_core = next(r for r in runs if r["cores"] == 1)
            if size > 64:
                target = {"per_core_x16_over_h100_r18_step": round(16 * one_core["images_per_s"] / step_ips, 3)}
                target["met"] = target["per_core_x16_over_h100_r18_step"] >= 1.0
            else:
                target = {"data_over_step_min": TARGETS["data_over_step_throughput_min"],
                          "best_ratio": best["ratio_to_step"],
                          "met": None if best["ratio_to_step"] is None else best["ratio_to_step"] >= TARGETS["data_over_step_throughput_min"]}
            cases.append({"image_size": size, "augment": {"train": aug.train, "image_size": size},
                          "dataset_image_size": spec.image_size, "prepare_s": round(prepare_s, 2),
                          "n_train": info.n_train, "n_test": info.n_test, "batch_size": batch_size,
                          "runs": runs, "step_reference": ref, "target": target})
            print(f"bench folder {size}px: " + ", ".join(f"{r['cores']} cores {r['images_per_s']} img/s" for r in runs)
                  + (f" ({best['ratio_to_step']}x the step)" if best["ratio_to_step"] else ""), file=sys.stderr)
    out = _header("data-folder", device)
    out.update({
        "folder": str(root), "load_before": _loadavg(), "cores_available": all_cores, "cases": cases,
        "h100_projection": h100_projection(),
        "settings": {"batches_per_window": steps, "windows": windows, "warmup_batches": 2,
                     "measures": "prepare-data once (timed as prepare_s), then iterate the job's train loader "
                                 "(decode or index, augment, normalise, move to the device); eval loader at all cores"},
    })
    path = out_dir / (f"{slug}-data-imagenette-{tag}.json" if tag else f"{slug}-data-imagenette.json")
    write_json(path, out)
    return path


# --------------------------------------------------------------------------------------------------
# pipeline benchmark


def repo_files(root: Path) -> list[str]:
    """Tracked files plus untracked ones git does not ignore (the working tree as it is now)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                             capture_output=True, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        raise TasError(f"bench pipeline needs a git checkout to copy ({err}); run it from the project root") from None
    return sorted({f for f in out.stdout.decode().split("\0") if f})


def copy_checkout(root: Path, dest: Path, drop: Iterable[str] = ("results/", "data/")) -> int:
    """Copy the checkout's files (see repo_files) to dest, leaving out data and results (the study
    must produce them itself)."""
    count = 0
    for rel in repo_files(root):
        if any(rel.startswith(prefix) for prefix in drop):
            continue
        src = root / rel
        if not src.is_file():
            continue  # deleted in the working tree but still in the index
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
        count += 1
    return count


def _timed(cmd: list[str], cwd: Path, env: dict, log: Path, preexec=None, timeout: float | None = None) -> dict:
    t0 = time.perf_counter()
    with open(log, "w") as fh, ForeignLoad() as load:
        try:
            returncode = subprocess.run(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                        preexec_fn=preexec, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            returncode = None  # killed at the limit; the wall time says how long it had run
    wall = time.perf_counter() - t0
    text = log.read_text(errors="replace")
    return {"cmd": " ".join(cmd), "returncode": returncode, "wall_s": round(wall, 2), "timed_out": returncode is None,
            "foreign_cpu_fraction": load.fraction, "log_tail": text[-1500:]}


def _two_core_affinity():
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) <= 2:
        return None, cpus
    chosen = set(cpus[:2])
    return (lambda: os.sched_setaffinity(0, chosen)), sorted(chosen)


def bench_pipeline(cfg: Config, *, out_dir: Path | str = "results/bench", experiment: str | None = None,
                   cores: int = 2, root: Path | None = None, snakemake_args: Iterable[str] = (),
                   timeout: float | None = 3600, tag: str | None = None) -> Path:
    """Wall time of `snakemake --cores 2` in a fresh copy of the checkout, and of the no-op rerun."""
    root = Path(root or Path.cwd()).resolve()
    if not (root / "Snakefile").is_file():
        raise TasError(f"{root}/Snakefile is missing; run the pipeline benchmark from the project root")
    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""), CUDA_VISIBLE_DEVICES="",
               DVC_NO_ANALYTICS="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(cores),
               GIT_AUTHOR_NAME="tas-bench", GIT_AUTHOR_EMAIL="bench@localhost",
               GIT_COMMITTER_NAME="tas-bench", GIT_COMMITTER_EMAIL="bench@localhost")
    env.pop("PYTHONPATH", None)
    preexec, cpus = _two_core_affinity() if cores == 2 else (None, [])
    snakemake_args = list(snakemake_args)
    snakemake = [sys.executable, "-m", "snakemake", "--cores", str(cores), *snakemake_args]
    if experiment:
        snakemake += ["--config", f"experiment={experiment}"]
    result = _header("pipeline", torch.device("cpu"))
    with tempfile.TemporaryDirectory(prefix="tas-bench-pipeline-") as tmp:
        work = Path(tmp) / "repo"
        logs = Path(tmp) / "logs"
        logs.mkdir()
        t0 = time.perf_counter()
        n_files = copy_checkout(root, work)
        copy_s = time.perf_counter() - t0
        git_steps = _git_snapshot(work, env, logs) if (work / "dvc.yaml").is_file() else []
        print(f"bench pipeline: {n_files} files copied to {work}; running {' '.join(snakemake)}", file=sys.stderr)
        full = _timed(snakemake, work, env, logs / "full.log", preexec, timeout)
        print(f"bench pipeline: full run {full['wall_s']} s (rc {full['returncode']})", file=sys.stderr)
        noop = _timed(snakemake, work, env, logs / "noop.log", preexec, timeout)
        noop["nothing_to_do"] = "Nothing to be done" in noop["log_tail"]
        dryrun = _timed(snakemake + ["-n"], work, env, logs / "dry.log", preexec, timeout)
        dvc = _dvc_noop(work, env, logs, preexec)
        outputs = sorted(str(p.relative_to(work)) for p in (work / "results").rglob("*") if p.is_file()) \
            if (work / "results").is_dir() else []
        jobs = snakemake_job_times(work)
    result.update({
        "experiment": experiment or list(cfg.selected), "cores": cores, "cpu_affinity": cpus,
        "settings": {"copy": "git ls-files --cached --others --exclude-standard, data/ and results/ left out",
                     "files_copied": n_files, "copy_s": round(copy_s, 2), "snakemake_args": snakemake_args,
                     "env": {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": str(cores)}},
        "full_run": full, "noop_rerun": noop, "dry_run": dryrun, "dvc": {"git_snapshot": git_steps, **dvc},
        "outputs": {"count": len(outputs), "tables": [o for o in outputs if "/tables/" in o][:20]},
        "jobs": jobs,
        "target_study_met": bool(full["returncode"] == 0 and full["wall_s"] <= TARGETS["mini_study_wall_s_max"]),
        "target_noop_met": bool(noop["returncode"] == 0 and noop["wall_s"] <= TARGETS["noop_rerun_wall_s_max"]),
    })
    path = Path(out_dir) / f"{device_slug(torch.device('cpu'), cores)}-pipeline{'-' + tag if tag else ''}.json"
    write_json(path, result)
    return path


def snakemake_job_times(work: Path) -> dict:
    """Per-job wall/CPU seconds from the rules' `benchmark:` TSVs (tas.matrix.BENCHMARK_ROOT), and
    totals per rule: where the study's time goes."""
    try:
        from tas.matrix import BENCHMARK_ROOT
    except ImportError:
        BENCHMARK_ROOT = "benchmarks/snakemake"
    root = work / BENCHMARK_ROOT
    jobs, per_rule = [], {}
    for tsv in sorted(root.rglob("*.tsv")) if root.is_dir() else []:
        lines = tsv.read_text().strip().splitlines()
        if len(lines) < 2:
            continue
        row = dict(zip(lines[0].split("\t"), lines[1].split("\t")))
        rel = tsv.relative_to(root)
        rule = rel.parts[0]
        def num(key: str) -> float:
            try:
                return float(row.get(key, ""))
            except ValueError:  # Snakemake writes '-' where it measured nothing
                return 0.0

        wall, cpu, rss = num("s"), num("cpu_time"), num("max_rss")
        jobs.append({"rule": rule, "job": "/".join(rel.with_suffix("").parts[1:]), "wall_s": round(wall, 2),
                     "cpu_s": round(cpu, 2), "max_rss_mb": round(rss, 1)})
        agg = per_rule.setdefault(rule, {"jobs": 0, "wall_s": 0.0, "cpu_s": 0.0})
        agg["jobs"] += 1
        agg["wall_s"] = round(agg["wall_s"] + wall, 2)
        agg["cpu_s"] = round(agg["cpu_s"] + cpu, 2)
    return {"per_rule": per_rule, "per_job": sorted(jobs, key=lambda j: -j["wall_s"]),
            "sum_job_wall_s": round(sum(j["wall_s"] for j in jobs), 2)}


def _git_snapshot(work: Path, env: dict, logs: Path) -> list[dict]:
    """Make the fresh copy a git repository with one commit (DVC needs one), before any output exists."""
    steps = []
    for name, cmd in (("git-init", ["git", "init", "-q"]), ("git-add", ["git", "add", "-A"]),
                      ("git-commit", ["git", "commit", "-q", "--no-verify", "-m", "bench snapshot"])):
        res = _timed(cmd, work, env, logs / f"{name}.log", None, 600)
        steps.append({k: res[k] for k in ("cmd", "returncode", "wall_s")})
        if res["returncode"] != 0:
            steps[-1]["error"] = res["log_tail"][-300:]
            break
    return steps


def _dvc_noop(work: Path, env: dict, logs: Path, preexec) -> dict:
    """`dvc status` in the copy after `dvc commit` recorded the Snakemake outputs (the documented
    way to adopt outputs produced outside DVC): a no-op check that should find nothing to do."""
    if not (work / "dvc.yaml").is_file():
        return {"skipped": "no dvc.yaml in the checkout"}
    if not (work / ".git").is_dir():
        return {"skipped": "the copy is not a git repository (git init failed)"}
    dvc = [sys.executable, "-m", "dvc"]
    setup = []
    if not (work / ".dvc").is_dir():  # the checkout may carry its own .dvc/config
        setup.append(("dvc-init", dvc + ["init", "-q"]))
    setup += [("dvc-config", dvc + ["config", "core.analytics", "false"]), ("dvc-commit", dvc + ["commit", "-f"])]
    steps = []
    for name, cmd in setup:
        res = _timed(cmd, work, env, logs / f"{name}.log", preexec, 1800)
        steps.append({k: res[k] for k in ("cmd", "returncode", "wall_s")})
        if res["returncode"] != 0:
            steps[-1]["error"] = res["log_tail"][-600:]
            if name != "dvc-commit":
                return {"setup": steps}
    status = _timed(dvc + ["status"], work, env, logs / "dvc-status.log", preexec, 600)
    status["up_to_date"] = "up to date" in status["log_tail"]
    return {"setup": steps, "status": status,
            "target_noop_met": bool(status["returncode"] == 0 and status["up_to_date"]
                                    and status["wall_s"] <= TARGETS["noop_rerun_wall_s_max"])}


__all__ = ["run_bench", "bench_step", "bench_data", "bench_pipeline", "bench_flops", "measure_methods", "time_steps",
           "time_loader", "device_slug", "ratios"]
