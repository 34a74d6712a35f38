"""What deciding "cached or streamed" costs a plan (tas.data.caching): on ImageNet-sized folder layouts, and
`snakemake -n --config experiment=cifar100` before/after in two checkouts (alternating runs).

    python benchmarks/folder_cache_planning.py [--checkout before=/path/a --checkout after=/path/b]
        [--repeat 5] [--out results/bench/<slug>-data-folder-cache-planning.json]

Layouts (made in a temporary folder, deleted afterwards; every file a hard link to one of 64 small JPEGs,
so 1.33M files take directory entries only): ImageNet's 1000 classes x 1300 train + 50 val images,
`mixed` (two image sizes: decided from the headers, nothing counted) and `square32` (all 32x32: counted
until the default budget is passed). Each figure: a new Python process asks prepare_writes_arrays once
(the median of `repeat` processes, the import time excluded), and the file system's listing of the
folder is warm (the layout was just made), as on a machine that uses the folder.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tas.bench.load import ForeignLoad, loadavg  # noqa: E402

CLASSES, TRAIN, VAL = 1000, 1300, 50
COPIES = 64

ASK = """
import sys, time
from tas.data.spec import DatasetSpec, prepare_writes_arrays, folder_cache
spec = DatasetSpec("imagenet", "imagefolder", root=sys.argv[1])
t0 = time.perf_counter()
cached = prepare_writes_arrays(spec)
dt = time.perf_counter() - t0
print(dt, cached, folder_cache(spec).reason, sep="\\t")
"""


def make_layout(root: Path, sources: list[Path]) -> None:
    for split, per_class in (("train", TRAIN), ("val", VAL)):
        for c in range(CLASSES):
            d = root / split / f"n{c:08d}"
            d.mkdir(parents=True)
            for i in range(per_class):
                os.link(sources[(c + i) % len(sources)], d / f"img_{c:04d}_{i:05d}.JPEG")


def time_decision(root: Path, repeat: int) -> dict:
    times, out = [], None
    for _ in range(repeat):
        proc = subprocess.run([sys.executable, "-c", ASK, str(root)], cwd=ROOT, capture_output=True, text=True,
                              check=True)
        dt, cached, reason = proc.stdout.strip().split("\t")
        times.append(float(dt))
        out = {"cached": cached == "True", "reason": reason}
    return {**out, "decision_ms_median": round(1000 * statistics.median(times), 2),
            "decision_ms_runs": [round(1000 * t, 2) for t in times]}


def time_snakemake(checkouts: dict[str, Path], repeat: int) -> dict:
    """`snakemake -n --config experiment=cifar100` in each checkout, alternating, `repeat` times each."""
    snakemake = Path(sys.executable).with_name("snakemake")
    runs: dict[str, list] = {label: [] for label in checkouts}
    for _ in range(repeat):
        for label, checkout in checkouts.items():
            with ForeignLoad() as foreign:
                t0 = time.perf_counter()
                proc = subprocess.run([str(snakemake), "-n", "--quiet", "--config", "experiment=cifar100"],
                                      cwd=checkout, capture_output=True, text=True)
                wall = time.perf_counter() - t0
            if proc.returncode != 0:
                raise SystemExit(f"snakemake -n in {checkout} failed: {proc.stderr[-2000:]}")
            runs[label].append({"wall_s": round(wall, 3), "foreign_cpu_fraction": foreign.fraction})
    out = {}
    for label, checkout in checkouts.items():
        git = ["git", "-C", str(checkout)]
        head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run([*git, "status", "--short", "--untracked-files=no"], capture_output=True,
                               text=True).stdout.split("\n")
        walls = [r["wall_s"] for r in runs[label]]
        out[label] = {"checkout": str(checkout), "head": head, "modified_files": [ln[3:] for ln in dirty if ln.strip()],
                      "wall_s_median": round(statistics.median(walls), 2), "wall_s_min": min(walls),
                      "runs": runs[label]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkout", action="append", default=[], help="label=path of a checkout to plan in")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--snakemake-repeat", type=int, default=10)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    import numpy as np
    import torch
    from PIL import Image

    from tas.bench.machine import device_slug, header
    from tas.io import write_json

    layouts = {}
    with tempfile.TemporaryDirectory(prefix="tas-plan-folders-") as tmp_name:
        tmp = Path(tmp_name)
        rng = np.random.default_rng(0)
        for name, sizes in (("mixed", [(500, 375), (333, 500)]), ("square32", [(32, 32)])):
            sources = []
            for k in range(COPIES):  # ext4 allows 65,000 links per file: the links spread over copies
                w, h = sizes[k % len(sizes)]
                path = tmp / f"{name}_{k}.JPEG"
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, quality=90)
                sources.append(path)
            t0 = time.perf_counter()
            make_layout(tmp / name, sources)
            layouts[name] = {"files": CLASSES * (TRAIN + VAL), "image_sizes": [f"{w}x{h}" for w, h in sizes],
                             "made_s": round(time.perf_counter() - t0, 1), **time_decision(tmp / name, args.repeat)}
            print(name, json.dumps(layouts[name]), file=sys.stderr)
    checkouts = {item.partition("=")[0]: Path(item.partition("=")[2]) for item in args.checkout}
    plans = time_snakemake(checkouts, args.snakemake_repeat) if checkouts else {}
    print(json.dumps(plans), file=sys.stderr)
    out = header("data-folder-cache-planning", torch.device("cpu"))
    out.update({"layouts": layouts, "snakemake_n_cifar100": plans, "loadavg_end": loadavg(),
                "settings": {"repeat": args.repeat, "snakemake_repeat": args.snakemake_repeat, "classes": CLASSES,
                             "train_per_class": TRAIN,
                             "val_per_class": VAL}})
    slug = device_slug(torch.device("cpu"), 1)
    path = args.out or ROOT / "results" / "bench" / f"{slug}-data-folder-cache-planning.json"
    write_json(path, out)
    print(path)


if __name__ == "__main__":
    main()
