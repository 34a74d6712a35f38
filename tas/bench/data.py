"""Input-path throughput (`bench --what data`): images/s of the loader alone (index or decode, augment,
normalise, move to the device) for the in-memory loader (the synthetic mini set; a CIFAR-shaped uint8
set at 32 px crop_flip and at the 224-px rrc protocol, with and without RandAugment) and the
ImageFolder loader over generated JPEGs (0 and 2 workers), each with its ratio to the scratch step of
the job the path feeds."""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Iterable

import torch

from tas import batching
from tas.bench import TARGETS
from tas.bench.load import ForeignLoad, guarded
from tas.bench.machine import device_slug, header
from tas.bench.step import bench_step, step_path
from tas.bench.timing import median, run_s, window_s
from tas.config import Config
from tas.data import sources
from tas.io import write_json


def time_loader(loader, device: torch.device, batches: int, windows: int, warmup: int = 2) -> dict:
    """images/s of iterating `loader` (epochs chained; each batch ends on the device)."""

    def endless():
        epoch = 0
        while True:
            loader.set_epoch(epoch)
            yield from loader
            epoch += 1

    it = endless()
    sizes: list[int] = []

    def fetch() -> None:
        sizes.append(next(it)[0].shape[0])

    warmup_s = run_s(fetch, warmup)
    rates, batch_ms, foreign, redone = [], [], [], 0

    def one() -> tuple[float, float]:
        per_batch = window_s(fetch, batches)
        # The window's timed batches are its last `batches` fetches (the Timer's warm-up ones come first);
        # an epoch's last batch may be short.
        return sum(sizes[-batches:]) / (per_batch * batches), 1000.0 * per_batch

    for _ in range(windows):
        (rate, ms), fraction, again = guarded(one, "data")
        rates.append(rate)
        batch_ms.append(ms)
        foreign.append(fraction)
        redone += again
    it.close()
    return {"images_per_s": round(median(rates), 1), "batch_ms_median": round(median(batch_ms), 3),
            "images_per_s_windows": [round(r, 1) for r in rates], "warmup_s": round(warmup_s, 3),
            "batches_per_window": batches, "foreign_cpu_fraction_windows": foreign, "windows_redone": redone}


def write_jpegs(root: Path, n: int, size: int, classes: int, seed: int = 0) -> None:
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
    """The protocol's augmentation with the student recipe's RandAugment/erasing (as jobs.common.loaders)."""
    from tas.data.spec import AugmentSpec

    aug = (cfg.protocols[case["protocol"]].augment if case["protocol"] in cfg.protocols
           else AugmentSpec(**case["fallback"]))
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
_FALLBACK_AUGMENT = {"mini": {"train": "crop_flip", "image_size": 32},
                     "cifar32": {"train": "crop_flip", "image_size": 32},
                     "paper": {"train": "rrc", "image_size": 224}, "imagenet": {"train": "rrc", "image_size": 224}}


def data_cases(names: Iterable[str] | None = None) -> list[dict]:
    chosen = set(names) if names is not None else None
    cases = []
    for name, source, protocol, experiment, ra, gpu_only, workers in DATA_CASES:
        if chosen is not None and name not in chosen:
            continue
        cases.append({"name": name, "source": source, "protocol": protocol, "experiment": experiment,
                      "randaugment": ra, "gpu_only_ratio": gpu_only, "workers": workers,
                      "fallback": _FALLBACK_AUGMENT[protocol]})
    return cases


def step_reference(cfg: Config, exp, pair, out_dir: Path, slug: str, steps: int, windows: int,
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


def _in_memory_set(cfg: Config, case: dict, n_images: int, cifar: tuple):
    """(images, labels, mean, std) the in-memory case iterates: the mini protocol's synthetic set, or a
    CIFAR-shaped random uint8 set."""
    from tas.data import synthetic
    from tas.data.spec import DatasetSpec

    if case["source"] == "uint8":
        cifar100 = sources.declaration("cifar100")
        return (*cifar, cifar100.mean, cifar100.std)
    base = cfg.protocols[case["protocol"]].dataset if case["protocol"] in cfg.protocols else \
        DatasetSpec(id="synthetic", source="synthetic", num_classes=10)
    spec = replace(base, train_size=min(base.train_size or n_images, n_images), test_size=10)
    images, labels, _, _ = synthetic.generate(spec)
    return torch.from_numpy(images), torch.from_numpy(labels), spec.mean, spec.std


def _case_runs(cfg: Config, case: dict, aug, batch: int, placement, steps: int, windows: int, n_images: int,
               cifar: tuple, jpeg_root: Path, jpeg_size: int) -> tuple[int, list[dict]]:
    """(batch size used, one timing per loader setting) of one input-path case."""
    from tas.data.imagefolder import scan
    from tas.data.loader import FolderLoader, InMemoryLoader
    from tas.data.spec import IMAGENET_MEAN, IMAGENET_STD, DatasetSpec

    device = placement.device
    runs = []
    if case["source"] in ("synthetic", "uint8"):
        images, labels, mean, std = _in_memory_set(cfg, case, n_images, cifar)
        batch = min(batch, len(images))
        loader = InMemoryLoader(images, labels, batch, True, aug, mean, std, device, seed=0,
                                channels_last=placement.channels_last)
        with ForeignLoad() as foreign:
            timing = time_loader(loader, device, steps, windows)
        runs.append({"loader": "InMemoryLoader", "num_workers": 0, "n_images": int(len(images)),
                     "stored_size": int(images.shape[1]), **timing, "foreign_cpu_fraction": foreign.fraction})
        return batch, runs
    index = scan(jpeg_root, DatasetSpec(id="benchjpeg", source="imagefolder", image_size=jpeg_size))
    files = [f for f, _ in index["train"]]
    labels = torch.tensor([lab for _, lab in index["train"]], dtype=torch.int64)
    batch = min(batch, max(1, len(files) // 4))
    for workers in case["workers"]:
        loader = FolderLoader(jpeg_root, files, labels, batch, True, aug, IMAGENET_MEAN, IMAGENET_STD,
                              device, seed=0, num_workers=workers, channels_last=placement.channels_last)
        with ForeignLoad() as foreign:
            timing = time_loader(loader, device, steps, windows)
        del loader
        runs.append({"loader": "FolderLoader", "num_workers": workers, "n_images": len(files),
                     "stored_size": jpeg_size, "format": "jpeg q90", **timing,
                     "foreign_cpu_fraction": foreign.fraction})
    return batch, runs


def bench_data(cfg: Config, *, steps: int = 10, windows: int = 3, threads: int | None = None,
               out_dir: Path | str = "results/bench", batch_size: int | None = None, n_images: int = 2000,
               n_jpegs: int = 200, jpeg_size: int = 64, cases: Iterable[str] | None = None,
               measure_reference: bool = True, tag: str | None = None) -> Path:
    """images/s of each input path (DATA_CASES) and its ratio to the scratch step of the job it feeds."""
    import numpy as np

    from tas.engine import devices

    out_dir = Path(out_dir)
    placement = devices.resolve(cfg.runtime, True, threads)
    device = placement.device
    slug = device_slug(device)
    chosen = data_cases(cases)
    rng = np.random.default_rng(0)
    cifar = (torch.from_numpy(rng.integers(0, 256, (n_images, 32, 32, 3), dtype=np.uint8)),
             torch.from_numpy(rng.integers(0, 100, n_images).astype(np.int64)))
    results, refs = [], {}
    with tempfile.TemporaryDirectory(prefix="tas-bench-jpeg-") as tmp:
        jpeg_root = Path(tmp)
        if any(c["source"] == "folder" for c in chosen):
            write_jpegs(jpeg_root, n_jpegs, jpeg_size, classes=10)
        for case in chosen:
            exp, pair, recipe = reference_job(cfg, case["experiment"], case["randaugment"])
            aug = _case_augment(cfg, case, recipe)
            batch = int(batch_size
                        or (batching.plan(recipe, exp.gpus_per_job).micro_batch if recipe is not None else 128))
            batch, runs = _case_runs(cfg, case, aug, batch, placement, steps, windows, n_images, cifar, jpeg_root,
                                     jpeg_size)
            key = (exp.id, pair.id) if exp is not None else None
            if key not in refs:
                gpu_only = case["gpu_only_ratio"] and device.type != "cuda"
                why_not = ("not measured on CPU (224-px step); run `python -m tas bench --what step --experiment "
                           f"{exp.id if exp else '?'} --pair {pair.id if pair else '?'}` on a GPU first" if gpu_only
                           else "not measured (measure_reference=False)")
                refs[key] = step_reference(cfg, exp, pair, out_dir, slug, steps, windows, threads, batch_size,
                                           measure_reference and not gpu_only, why_not)
            ref = refs[key]
            step_ips = ref.get("images_per_s") if ref else None
            for run in runs:
                run["ratio_to_step"] = round(run["images_per_s"] / step_ips, 2) if step_ips else None
                run["target_met"] = (None if not step_ips
                                     else bool(run["ratio_to_step"] >= TARGETS["data_over_step_throughput_min"]))
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
            print(f"bench data {case['name']}: {best} img/s" + (f", {ratio}x the step" if ratio else ""),
                  file=sys.stderr)
    fractions = [r["foreign_cpu_fraction"] for case in results for r in case["runs"]
                 if r["foreign_cpu_fraction"] is not None]
    out = header("data", device)
    out.update({
        "threads": torch.get_num_threads(), "channels_last": placement.channels_last,
        "settings": {"batches_per_window": steps, "windows": windows, "warmup_batches": 2,
                     "uint8_set": f"random uint8 ({n_images}, 32, 32, 3), CIFAR-100 mean/std",
                     "jpeg_set": f"{n_jpegs} generated {jpeg_size}x{jpeg_size} JPEGs (quality 90), 10 classes, "
                                 "PIL decode",
                     "measures": "iterate the train loader: index or decode, augment, normalise, move to the device",
                     "timer": "torch.utils.benchmark.Timer.timeit(batches_per_window) per window "
                              "(its 2 untimed warm-up batches first)",
                     "foreign_cpu_fraction_max": max(fractions, default=None)},
        "cases": results,
        "ratio_definition": "input-path images/s / scratch training-step images/s of the job the path feeds",
    })
    path = out_dir / (f"{slug}-data-{tag}.json" if tag else f"{slug}-data.json")
    write_json(path, out)
    return path
