"""Per-sample cost of the streamed image-folder path, split into its parts (one process, one core).

    python benchmarks/profile_data.py /path/to/imagenette-96 [--n 400] [--rounds 5] [--out results/bench/x.json]

For each read size (32, 64: crop_flip geometry; 224: random-resized crop, resized up) it times,
per image, what a DataLoader worker does (derive the sample's generator, read + decode
(simplejpeg) + crop + resize (PIL)) and what the main process then does per image of a batch
(`BatchTransform`: crop/flip, normalise, on the CPU here); at 224 also the worker's cost when it
leaves the upsampling to the device (runtime.upsample_on: device, what a GPU box runs). Each figure
is the minimum over `rounds` passes, so that other processes on a shared machine inflate it as
little as possible.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import random
import sys
from pathlib import Path

import torch

import tas  # noqa: F401  (torchvision guard)
from tas.bench.load import loadavg
from tas.bench.machine import header
from tas.bench.timing import best_ms_per_item
from tas.data.augment import resize_crops
from tas.data.imagefolder import centre_box, decode_box, rrc_box
from tas.data.loader import BatchTransform, _FolderSamples, sample_seed
from tas.data.spec import IMAGENET_MEAN, IMAGENET_STD, AugmentSpec
from tas.io import write_json


def _per_image_ms(fn, items, rounds: int) -> float:
    return round(best_ms_per_item(fn, items, rounds), 4)


def _cprofile(fn, items, top: int = 6) -> dict:
    """Where a worker's time goes: cProfile's own time per function (ms per image), the largest first."""
    prof = cProfile.Profile()
    prof.enable()
    for item in items:
        fn(item)
    prof.disable()
    stats = pstats.Stats(prof).stats  # {(file, line, name): (cc, nc, tottime, cumtime, callers)}
    own = sorted(((v[2], f"{Path(k[0]).name}:{k[2]}") for k, v in stats.items()), reverse=True)[:top]
    return {name: round(1000.0 * t / len(items), 4) for t, name in own}


def profile(root: Path, n: int, rounds: int, sizes=(32, 64, 224)) -> dict:
    torch.set_num_threads(1)
    files = sorted(p.relative_to(root).as_posix() for p in (root / "train").rglob("*") if p.is_file())
    files = files[:: max(1, len(files) // n)][:n]  # spread over the classes
    labels = torch.zeros(len(files), dtype=torch.int64)
    out = {}
    for size in sizes:
        aug = AugmentSpec("crop_flip", image_size=size) if size <= 64 else AugmentSpec("rrc", image_size=size)
        samples = _FolderSamples(root, files, labels, aug, True, seed=0)
        keys = [(i, 0) for i in range(len(files))]
        paths = [root / f for f in files]
        parts = {"worker_total": _per_image_ms(samples.__getitem__, keys, rounds),
                 "sample_generator": _per_image_ms(lambda k: random.Random(sample_seed(0, k[1], k[0])), keys, rounds)}
        if aug.train == "rrc":
            rng = random.Random(0)
            parts["decode_crop_resize"] = _per_image_ms(
                lambda p: decode_box(p, size, lambda w, h: rrc_box(w, h, aug.scale, aug.ratio, rng)), paths, rounds)
        else:
            parts["decode_crop_resize"] = _per_image_ms(lambda p: decode_box(p, size,
                                                                             lambda w, h: centre_box(w, h, size)),
                                                        paths, rounds)
        parts["worker_profile_ms_per_image"] = _cprofile(samples.__getitem__, keys)
        parts["batch_of_64_per_image"] = round(_per_image_ms(samples.__getitems__, [keys[:64]], rounds) / 64, 4)
        batch = samples.__getitems__(keys[:64]).final
        transform = BatchTransform(aug, True, IMAGENET_MEAN, IMAGENET_STD, torch.device("cpu"), geometry_done=True)
        gen = torch.Generator().manual_seed(0)
        parts["batch_transform_per_image"] = round(_per_image_ms(lambda _: transform(batch, gen), [0], rounds * 4)
                                                   / len(batch), 4)
        parts["images_per_s_one_core"] = round(1000.0 / (parts["worker_total"] + parts["batch_transform_per_image"]), 1)
        if size > 64:
            # As a GPU box reads it (runtime.upsample_on: auto = device): the worker leaves the resize
            # up to `size` to resize_crops on the GPU (timed here on the CPU, for reference only).
            deferred = _FolderSamples(root, files, labels, aug, True, seed=0, defer_upsample=True)
            parts["worker_total_upsample_on_device"] = _per_image_ms(deferred.__getitem__, keys, rounds)
            parts["worker_profile_upsample_on_device"] = _cprofile(deferred.__getitem__, keys)
            batch = deferred.__getitems__(keys[:64])
            parts["batch_of_64_per_image_upsample_on_device"] = round(
                _per_image_ms(deferred.__getitems__, [keys[:64]], rounds) / 64, 4)
            if len(batch.deferred):
                parts["resize_crops_per_image_cpu"] = round(
                    _per_image_ms(lambda _: resize_crops(batch.deferred, batch.boxes, size), [0], rounds)
                    / len(batch.deferred), 4)
            parts["worker_images_per_s_one_core_upsample_on_device"] = round(
                1000.0 / parts["batch_of_64_per_image_upsample_on_device"], 1)
        out[str(size)] = parts
        print(f"{size}px: {json.dumps(parts)}", file=sys.stderr)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    result = header("data-profile", torch.device("cpu"))
    result.update({"folder": str(args.root), "n_images": args.n, "rounds": args.rounds, "load_before": loadavg(),
                   "unit": "ms per image, 1 thread, min over rounds", "sizes": profile(args.root, args.n, args.rounds)})
    if args.out:
        write_json(args.out, result)
    else:
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
