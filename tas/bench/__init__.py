"""Benchmarks (`python -m tas bench`), one module per concern; each benchmark writes one JSON under
results/bench/ (benchmarks/README.md says how to run them and what every field means).

    machine   what ran where (device, versions, commit) and the device slug of the file names
    load      how busy the machine is with other processes; disturbed windows are timed again
    memory    a method's memory (CUDA allocator counters, sampled RSS on a CPU)
    timing    one timed window (torch.utils.benchmark.Timer) and its summary
    step      training-step throughput per method, built with the trainer's own build_step
    flops     FLOPs of one training step per method
    data      input-path throughput against the step each path feeds
    folder    a real image folder read as a job reads it
    pipeline  the whole study under Snakemake, its no-op rerun and `dvc status`

This module imports no torch: `run_bench` loads the benchmark that `--what` asks for.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from tas.config import Config
from tas.errors import TasError

DEFAULT_METHODS = "scratch,kd,dkd,ofa,rsd,tas"
# What the project aims for; every JSON records them beside its figures.
TARGETS = {
    "tas_over_kd_step_time_max": 1.25,
    "data_over_step_throughput_min": 5.0,
    "mini_study_wall_s_max": 300.0,
    "noop_rerun_wall_s_max": 5.0,
}
WHAT = ("step", "data", "pipeline", "all")
# Each benchmark's entry function, by the module that holds it (loaded on first use).
_ENTRIES = {"bench_step": "step", "bench_flops": "flops", "bench_data": "data", "bench_folder": "folder",
            "folder_root": "folder", "bench_pipeline": "pipeline"}


def __getattr__(name: str):
    if name in _ENTRIES:
        return getattr(importlib.import_module(f"tas.bench.{_ENTRIES[name]}"), name)
    raise AttributeError(f"module 'tas.bench' has no attribute {name!r}")


def parse_methods(cfg: Config, text: str) -> list[str]:
    methods = [m.strip() for m in str(text).split(",") if m.strip()]
    if not methods:
        raise TasError("bench --methods is empty; give a comma list such as scratch,kd,tas")
    for m in methods:
        cfg.method(m)  # unknown ids fail here with the list of known ones
    return methods


def _count(args, name: str, default: int) -> int:
    value = getattr(args, name, None)
    return int(default if value is None else value)


def run_bench(cfg: Config, args) -> list[Path]:
    """Run what `args.what` asks (step | data | pipeline | all); return the JSON paths written."""
    what = getattr(args, "what", "step") or "step"
    if what not in WHAT:
        raise TasError(f"bench --what {what!r} unknown; use step, data, pipeline or all")
    out_dir = Path(getattr(args, "output_dir", None) or "results/bench")
    steps, windows = _count(args, "steps", 10), _count(args, "windows", 3)
    if steps < 1 or windows < 1:
        raise TasError("bench --steps and --windows must be >= 1")
    threads = getattr(args, "threads", None)
    batch_size = getattr(args, "batch_size", None)
    experiment = getattr(args, "experiment", None)
    exp = cfg.experiment(experiment)
    pair = exp.pair(args.pair) if getattr(args, "pair", None) else exp.pairs[0]
    methods = parse_methods(cfg, getattr(args, "methods", None) or DEFAULT_METHODS) if what in ("step", "all") else []
    written: list[Path] = []
    if what in ("step", "all"):
        from tas.bench.step import bench_step

        written.append(bench_step(cfg, exp.id, pair.id, methods, batch_size=batch_size, steps=steps,
                                  windows=windows, threads=threads, out_dir=out_dir))
    if what in ("data", "all"):
        written += _run_data(cfg, experiment if what == "data" else None, steps, windows, threads, batch_size, out_dir)
    if what in ("pipeline", "all"):
        from tas.bench.pipeline import bench_pipeline

        written.append(bench_pipeline(cfg, out_dir=out_dir, experiment=experiment))
    return written


def _run_data(cfg: Config, named: str | None, steps: int, windows: int, threads, batch_size,
              out_dir: Path) -> list[Path]:
    """`--what data --experiment E` keeps the input-path cases that feed E's jobs; otherwise every case,
    and the real image folder when datasets.imagenette.root is one."""
    from tas.bench.data import DATA_CASES, bench_data, data_cases
    from tas.bench.folder import bench_folder, folder_root

    cases = [c["name"] for c in data_cases() if c["experiment"] == named] if named else None
    if cases == []:
        raise TasError(f"bench --what data has no input-path case for experiment {named!r}; "
                       f"leave --experiment out, or use one of: {', '.join(sorted({c[3] for c in DATA_CASES}))}")
    written = [bench_data(cfg, steps=steps, windows=windows, threads=threads, out_dir=out_dir, batch_size=batch_size,
                          cases=cases, tag=named if cases else None)]
    root = folder_root(cfg)
    if root is not None and named is None:
        written.append(bench_folder(cfg, root, steps=steps, windows=windows, threads=threads, out_dir=out_dir,
                                    batch_size=int(batch_size or 64)))
    return written
