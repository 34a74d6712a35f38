"""A real image folder (datasets.imagenette.root, e.g. ../shared/data/imagenette-96) read as a job reads it
(prepare-data, then build_loaders) at 32, 64 and 224 px on 1, 2 and all cores: part of `bench --what
data` when that folder exists."""

from __future__ import annotations

import gc
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Iterable

import torch

from tas.bench import TARGETS
from tas.bench.data import step_reference, time_loader
from tas.bench.load import ForeignLoad, loadavg
from tas.bench.machine import device_slug, header
from tas.bench.timing import run_s, window_s
from tas import paths
from tas.config import Config, PairSpec
from tas.io import write_json

# Read sizes: the mini scale (32, 64) and the paper's 224 (resized up).
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
            "source": "FLOP projection (datasheet peak x assumed utilisation / counted training FLOPs); "
                      "not a measurement"}


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
    # 224 streams the folder and resizes up per sample (cache: false, or a small square copy would be cached).
    if size <= 64:
        return replace(base, id=f"bench_imagenette_{size}", root=str(root), image_size=size)
    return replace(base, id=f"bench_imagenette_{size}", root=str(root), image_size=None, cache=False)


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
    # The step of a CNN trained as a student: it runs at any input size (the tiny ViT/Mixer are built
    # for 32 px). The mini CNN may be a teacher only; a scratch step never builds the pair's teacher, so
    # the reference pair is <another of its models> -> <the CNN>, added to a copy of the experiment if needed.
    pair = _cnn_student_pair(cfg, exp) if exp else None
    if pair is None:
        return {"images_per_s": None, "source": "no CNN model in the mini experiment of params.yaml"}
    if pair not in exp.pairs:
        exp = replace(exp, pairs=(*exp.pairs, pair))
        cfg = replace(cfg, experiments=MappingProxyType({**cfg.experiments, exp.id: exp}))
    protocol = cfg.protocol_of(exp)
    step_slug = slug
    if protocol.augment.image_size != size:
        sized = replace(protocol, augment=replace(protocol.augment, image_size=size))
        cfg = replace(cfg, protocols=MappingProxyType({**cfg.protocols, protocol.id: sized}))
        step_slug = f"{slug}-{size}px"  # no step JSON at this size: measured here
    ref = step_reference(cfg, exp, pair, out_dir, step_slug, steps, windows, threads, None, True, "")
    return {**ref, "image_size": size}


def _cnn_student_pair(cfg: Config, exp):
    """A pair of `exp` whose student is a CNN, else one made from its CNN teacher (as the student) and
    another of its models (as the teacher), else None."""
    pair = next((p for p in exp.pairs if cfg.model(p.student).family == "cnn"), None)
    if pair is not None:
        return pair
    cnn = next((t for t in exp.teachers if cfg.model(t).family == "cnn"), None)
    other = next((m for p in exp.pairs for m in (p.teacher, p.student) if m != cnn), None)
    if cnn is None or other is None:
        return None
    return PairSpec(id=paths.pair_id(other, cnn), teacher=other, student=cnn)


def _target(size: int, runs: list[dict], step_ips: float | None, gpu_box_runs: list[dict] | None = None) -> dict:
    """224 px: can 16 cores of one-core throughput feed the projected H100 step? Judged on what a GPU
    box's cores do (`gpu_box_runs`: upsampling left to the GPU) when given, else on `runs`. Smaller:
    the best ratio against the data-over-step target."""
    if size > 64:
        basis = gpu_box_runs or runs
        one_core = next(r for r in basis if r["cores"] == 1)
        ratio = round(16 * one_core["images_per_s"] / step_ips, 3)
        out = {"per_core_x16_over_h100_r18_step": ratio, "met": ratio >= 1.0,
               "basis": "gpu_box_runs" if gpu_box_runs else "runs"}
        if gpu_box_runs:
            resize_in_workers = next(r for r in runs if r["cores"] == 1)
            out["per_core_x16_over_h100_r18_step_resizing_in_workers"] = round(
                16 * resize_in_workers["images_per_s"] / step_ips, 3)
        return out
    best = max(r["ratio_to_step"] or 0 for r in runs) if step_ips else None
    return {"data_over_step_min": TARGETS["data_over_step_throughput_min"], "best_ratio": best,
            "met": None if best is None else best >= TARGETS["data_over_step_throughput_min"]}


class _WorkersOnly:
    """A FolderLoader's DataLoader alone (decode, crop, collate: the CPU's share of the work), with
    the loader's epochs: what time_loader iterates to measure a GPU box's cores without its GPU."""

    def __init__(self, loader):
        self.folder_loader = loader

    def set_epoch(self, epoch: int) -> None:
        self.folder_loader.set_epoch(epoch)

    def __iter__(self):
        return ((batch.labels,) for batch in self.folder_loader.loader)  # time_loader counts [0]'s rows


def _resize_ms_per_image(loader, device: torch.device) -> float | None:
    """The device's share when the workers defer the upsampling: resize_crops on one batch's deferred
    crops, ms per deferred image."""
    from tas.data.augment import resize_crops

    loader.set_epoch(0)
    batch = next(iter(loader.loader))
    if len(batch.deferred_pos) == 0:
        return None
    src = batch.deferred.to(device)
    per_batch = window_s(lambda: resize_crops(src, batch.boxes, loader.augment.image_size), 3)
    return round(1000.0 * per_batch / len(src), 4)


def _timed_loaders(spec, aug, data_root, batch_size: int, device: torch.device, cores: int, steps: int,
                   windows: int, upsample_on: str, workers_only: bool = False):
    """The job's loaders with `cores` cores (0 workers for 1), the train loader timed (or its
    DataLoader alone): (train, test, info, timing with foreign_cpu_fraction)."""
    from tas.data.loader import InMemoryLoader, build_loaders

    train, test, info = build_loaders(spec, aug, data_root, batch_size, 256, device, seed=0,
                                      num_workers=0 if cores == 1 else cores, upsample_on=upsample_on)
    # In memory: the batch transform is torch ops (threads = cores); streamed: workers decode and the
    # main process only collates, so it keeps one thread.
    torch.set_num_threads(cores if isinstance(train, InMemoryLoader) else 1)
    with ForeignLoad() as foreign:
        timing = time_loader(_WorkersOnly(train) if workers_only else train, device, steps, windows)
    return train, test, info, {**timing, "foreign_cpu_fraction": foreign.fraction}


def _gpu_box_runs(spec, aug, data_root, batch_size: int, device: torch.device, core_counts, steps: int,
                  windows: int) -> tuple[list[dict], float | None]:
    """224 px as a GPU box reads it (runtime.upsample_on auto = device there): the DataLoader alone,
    the upsampling left to the GPU. Measured on any machine; the GPU's own share is not in it."""
    runs, resize_ms = [], None
    for cores in core_counts:
        train, test, _info, timing = _timed_loaders(spec, aug, data_root, batch_size, device, cores, steps, windows,
                                                    "device", workers_only=True)
        runs.append({"cores": cores, "num_workers": train.num_workers, "upsample_on": "device", **timing,
                     "per_core_images_per_s": round(timing["images_per_s"] / cores, 1)})
        if cores == 1:
            resize_ms = _resize_ms_per_image(train, device)
        del train, test
        gc.collect()
    return runs, resize_ms


def bench_folder(cfg: Config, root: Path | str, *, steps: int = 10, windows: int = 3, threads: int | None = None,
                 out_dir: Path | str = "results/bench", batch_size: int = 64, sizes: Iterable[int] = FOLDER_SIZES,
                 tag: str | None = None) -> Path:
    """images/s of a real image folder read as a job reads it (prepare-data, then build_loaders), at each
    size, for 1, 2 and all cores, train and eval loaders, against the step the path feeds."""
    from tas.data.loader import InMemoryLoader
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
            aug = (AugmentSpec(train="crop_flip", image_size=size) if size <= 64
                   else AugmentSpec(train="rrc", image_size=size))
            torch.set_num_threads(all_cores)
            prepare_s = run_s(lambda: prepare_dataset(spec, data_root), 1)
            runs = []
            for cores in core_counts:
                train, test, info, timing = _timed_loaders(spec, aug, data_root, batch_size, device, cores, steps,
                                                           windows, cfg.runtime.upsample_on)
                cached = isinstance(train, InMemoryLoader)
                row = {"cores": cores, "loader": type(train).__name__, "cached": cached,
                       "num_workers": getattr(getattr(train, "loader", None), "num_workers", 0),
                       "upsample_on": getattr(train, "upsample_on", None), **timing}
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
            case = {"image_size": size, "augment": {"train": aug.train, "image_size": size},
                    "dataset_image_size": spec.image_size, "prepare_s": round(prepare_s, 2),
                    "n_train": info.n_train, "n_test": info.n_test, "batch_size": batch_size,
                    "runs": runs, "step_reference": ref}
            gpu_box = None
            if not runs[0]["cached"] and device.type != "cuda":
                gpu_box, resize_ms = _gpu_box_runs(spec, aug, data_root, batch_size, device, core_counts,
                                                   steps, windows)
                case["gpu_box_runs"] = gpu_box
                case["gpu_box_note"] = ("the DataLoader alone with runtime.upsample_on=device (auto on a GPU): the "
                                        "cores' share of the work; the resize it leaves runs on the GPU there")
                case["resize_crops_ms_per_image_here"] = resize_ms
            case["target"] = _target(size, runs, step_ips, gpu_box)
            cases.append(case)
            print(f"bench folder {size}px: " + ", ".join(f"{r['cores']} cores {r['images_per_s']} img/s" for r in runs)
                  + (f" ({best['ratio_to_step']}x the step)" if best["ratio_to_step"] else ""), file=sys.stderr)
    out = header("data-folder", device)
    out.update({
        "folder": str(root), "load_before": loadavg(), "cores_available": all_cores, "cases": cases,
        "h100_projection": h100_projection(),
        "settings": {"batches_per_window": steps, "windows": windows, "warmup_batches": 2,
                     "measures": "prepare-data once (timed as prepare_s), then iterate the job's train loader "
                                 "(decode or index, augment, normalise, move to the device); eval loader at all cores; "
                                 "streamed cases on a CPU also gpu_box_runs (see gpu_box_note)"},
    })
    path = out_dir / (f"{slug}-data-imagenette-{tag}.json" if tag else f"{slug}-data-imagenette.json")
    write_json(path, out)
    return path
