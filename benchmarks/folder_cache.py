"""Training speed from a folder of small real photographs: streamed, cached by default (no image_size,
no cache key: tas.data.caching decides), and the in-memory CIFAR-format path, on the same pixels.

    python benchmarks/folder_cache.py /work/shared/data/imagenette-96 [--per-class 300] [--epochs 3]
        [--rounds 2] [--load none,busy] [--out results/bench/<slug>-data-folder-cache.json]

Makes, in a temporary folder deleted afterwards: a 32-px copy of a class-balanced subset of the photos
(PIL bicubic, JPEG quality 90, train/ and val/), and a CIFAR-100 python-format archive of the same
32-px pixels (decoded as the cache decodes them). Three datasets of one params file read them:

    streamed   {source: imagefolder, root: <copy>, cache: false}
    auto       {source: imagefolder, root: <copy>}          (what a user writes; planned and prepared cached)
    cifar      {source: cifar100, root: <archive folder>, md5: ...}

Each is prepared with `python -m tas prepare-data` (its decision line is recorded), then trained with
`python -m tas train-teacher` (tiny_cnn, the imagenette_mini teacher recipe, crop_flip at 32 px, 1 thread,
streamed: runtime.num_workers auto = 1 worker) from scratch, `rounds` times per load condition, the three
paths in rotating order. A run's speed is the median over epochs 2.. of history.csv's images_per_s (epoch 1
holds the loader's start). Load conditions: `none` (the machine as found) and `busy` (plus one process of
this script spinning on one core). Each run records the foreign load of the other processes
(tas.bench.load.ForeignLoad: their CPU seconds per wall second per core; the busy process counts as ours,
so `busy` runs read it in `busy_process`). `--paired-windows N` adds a measurement less at the mercy of
a shared machine: auto and cifar in one process, window by window in alternation (`paired`); `--rounds 0`
runs it alone.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import json
import pickle
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tas.bench.load import ForeignLoad, loadavg  # noqa: E402

PATHS = ("streamed", "auto", "cifar")


def make_copy(photos: Path, out: Path, per_class: int, val_per_class: int, size: int = 32) -> list[str]:
    from PIL import Image

    classes = sorted(p.name for p in (photos / "train").iterdir() if p.is_dir())
    for split, n in (("train", per_class), ("val", val_per_class)):
        for name in classes:
            files = sorted((photos / split / name).iterdir())[:n]
            (out / split / name).mkdir(parents=True)
            for f in files:
                with Image.open(f) as img:
                    img.convert("RGB").resize((size, size), Image.Resampling.BICUBIC).save(
                        out / split / name / f"{f.stem}.JPEG", quality=90)
    return classes


def make_cifar(copy: Path, classes: list[str], out: Path, size: int = 32) -> str:
    """cifar-100-python.tar.gz of the copy's pixels (decoded as the cache decodes them); its md5."""
    import numpy as np

    from tas.data.imagefolder import decode_stored

    members = {}
    for split, member in (("train", "train"), ("val", "test")):
        rows, labels = [], []
        for label, name in enumerate(classes):
            for f in sorted((copy / split / name).iterdir()):
                rows.append(decode_stored(f, size).transpose(2, 0, 1).reshape(-1))
                labels.append(label)
        members[member] = {b"data": np.stack(rows).astype(np.uint8), b"fine_labels": labels,
                           b"coarse_labels": [lab // 5 for lab in labels]}
    members["meta"] = {b"fine_label_names": [n.encode() for n in classes] + [f"unused_{i}".encode()
                                                                              for i in range(100 - len(classes))]}
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for name, obj in members.items():
            blob = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size, info.mtime = len(blob), 0
            tar.addfile(info, io.BytesIO(blob))
    out.mkdir(parents=True)
    (out / "cifar-100-python.tar.gz").write_bytes(buffer.getvalue())
    return hashlib.md5(buffer.getvalue()).hexdigest()


def write_params(tmp: Path, copy: Path, cifar_dir: Path, md5: str, epochs: int) -> Path:
    import yaml

    from tas.yamlload import load_file

    raw = load_file(ROOT / "params.yaml")
    raw["paths"] = {"data": str(tmp / "data"), "results": str(tmp / "results")}
    raw["runtime"]["progress"] = False
    raw["datasets"].update({
        "photos_streamed": {"source": "imagefolder", "root": str(copy), "cache": False},
        "photos_auto": {"source": "imagefolder", "root": str(copy)},
        "photos_cifar": {"source": "cifar100", "root": str(cifar_dir), "md5": md5},
    })
    raw["recipes"]["bench_teacher"] = {**raw["recipes"]["inette_teacher"], "epochs": epochs}
    base = raw["experiments"]["imagenette_mini"]
    for path in PATHS:
        raw["protocols"][f"photos_{path}"] = {"dataset": f"photos_{path}",
                                              "augment": {"train": "crop_flip", "image_size": 32}}
        raw["experiments"][f"photos_{path}"] = {**base, "protocol": f"photos_{path}", "seeds": [0],
                                                "teachers": {"tiny_cnn": {"recipe": "bench_teacher"}}}
    raw["experiment"] = "photos_auto"
    params = tmp / "params.yaml"
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    return params


def tas_cmd(params: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "tas", *args, "--params", str(params)]


def prepare(params: Path) -> dict:
    out = {}
    for path in PATHS:
        t0 = time.perf_counter()
        proc = subprocess.run(tas_cmd(params, "prepare-data", "--dataset", f"photos_{path}"), cwd=ROOT,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"prepare-data photos_{path} failed: {proc.stderr.strip()}")
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("dataset ")]
        out[path] = {"prepare_s": round(time.perf_counter() - t0, 2), "decision": lines[-1] if lines else None}
    return out


def train(params: Path, tmp: Path, path: str) -> dict:
    exp = f"photos_{path}"
    shutil.rmtree(tmp / "results" / exp, ignore_errors=True)  # from scratch, never a resume
    t0 = time.perf_counter()
    with ForeignLoad() as foreign:
        proc = subprocess.run(tas_cmd(params, "train-teacher", "--experiment", exp, "--teacher", "tiny_cnn",
                                      "--threads", "1"), cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"train-teacher {exp} failed: {proc.stderr.strip()[-2000:]}")
    with open(tmp / "results" / exp / "teachers" / "tiny_cnn" / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    ips = [float(r["images_per_s"]) for r in rows]
    return {"path": path, "images_per_s": round(statistics.median(ips[1:] or ips), 1),
            "epochs_images_per_s": [round(v, 1) for v in ips], "job_wall_s": round(wall, 1),
            "foreign_cpu_fraction": foreign.fraction, "loadavg_after": loadavg()}


def paired(params: Path, windows: int, steps: int) -> dict:
    """auto (cached) and cifar (in memory) measured in one process, window by window in alternation (a
    tiny_cnn training step, 100 outputs for both, 1 thread): both windows of a pair see the same foreign
    load. The streamed path is left out: its worker would prefetch while the other path runs."""
    import torch

    from tas.config import load_config
    from tas.data.loader import InMemoryLoader, build_loaders
    from tas.models import create_model

    torch.set_num_threads(1)
    cfg = load_config(str(params))
    chosen = ("auto", "cifar")
    iters = {}
    for path in chosen:
        spec, aug = cfg.datasets[f"photos_{path}"], cfg.protocols[f"photos_{path}"].augment
        train, _test, _info = build_loaders(spec, aug, cfg.data_root, 128, 256, "cpu", seed=0)
        assert isinstance(train, InMemoryLoader), path

        def endless(loader=train):
            epoch = 0
            while True:
                loader.set_epoch(epoch)
                yield from loader
                epoch += 1

        iters[path] = endless()
    torch.manual_seed(0)
    model = create_model(cfg.model("tiny_cnn"), 100, 32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def window(path: str) -> float:
        seen, t0 = 0, time.perf_counter()
        for _ in range(steps):
            x, y = next(iters[path])
            out = model(x)
            loss = loss_fn(getattr(out, "logits", out), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(y)
        return seen / (time.perf_counter() - t0)

    for path in chosen:  # warm-up
        window(path)
    rows = []
    for w in range(windows):
        row = {}
        for path in (chosen if w % 2 == 0 else chosen[::-1]):
            with ForeignLoad() as foreign:
                row[path] = round(window(path), 1)
            row[f"{path}_foreign_cpu_fraction"] = foreign.fraction
        row["auto_over_cifar"] = round(row["auto"] / row["cifar"], 3)
        rows.append(row)
    ratios = [r["auto_over_cifar"] for r in rows]
    return {"windows": rows, "steps_per_window": steps, "batch": 128,
            "auto_images_per_s_median": round(statistics.median(r["auto"] for r in rows), 1),
            "cifar_images_per_s_median": round(statistics.median(r["cifar"] for r in rows), 1),
            "auto_over_cifar_median": round(statistics.median(ratios), 3),
            "within_10_percent": abs(statistics.median(ratios) - 1) <= 0.10}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("photos", type=Path)
    ap.add_argument("--per-class", type=int, default=300)
    ap.add_argument("--val-per-class", type=int, default=50)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--load", default="none,busy")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--paired-windows", type=int, default=0, help="also the paired in-process measurement")
    ap.add_argument("--paired-steps", type=int, default=8)
    args = ap.parse_args()
    import torch

    from tas.bench.machine import device_slug, header
    from tas.io import write_json

    conditions = [c.strip() for c in args.load.split(",") if c.strip()]
    runs = []
    with tempfile.TemporaryDirectory(prefix="tas-folder-cache-") as tmp_name:
        tmp = Path(tmp_name)
        copy = tmp / "photos32"
        classes = make_copy(args.photos, copy, args.per_class, args.val_per_class)
        md5 = make_cifar(copy, classes, tmp / "cifar")
        params = write_params(tmp, copy, tmp / "cifar", md5, args.epochs)
        prepared = prepare(params)
        paired_runs = {}
        if args.paired_windows:
            for condition in conditions:
                busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if condition == "busy" else None
                try:
                    paired_runs[condition] = paired(params, args.paired_windows, args.paired_steps)
                finally:
                    if busy is not None:
                        busy.kill()
                        busy.wait()
                print(condition, json.dumps(paired_runs[condition]), file=sys.stderr)
        for rnd in range(args.rounds):
            for condition in conditions:
                busy = None
                if condition == "busy":
                    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                try:
                    order = PATHS[rnd % 3:] + PATHS[:rnd % 3]
                    for path in order:
                        run = {"round": rnd, "load": condition, **train(params, tmp, path)}
                        runs.append(run)
                        print(json.dumps(run), file=sys.stderr)
                finally:
                    if busy is not None:
                        busy.kill()  # our own spinning process, by its pid
                        busy.wait()
    summary = {}
    for condition in (conditions if runs else []):
        per = {p: statistics.median([r["images_per_s"] for r in runs if r["load"] == condition and r["path"] == p])
               for p in PATHS}
        summary[condition] = {
            **{f"{p}_images_per_s": round(v, 1) for p, v in per.items()},
            "auto_over_cifar": round(per["auto"] / per["cifar"], 3),
            "streamed_over_cifar": round(per["streamed"] / per["cifar"], 3),
            "within_10_percent": abs(per["auto"] / per["cifar"] - 1) <= 0.10,
            "foreign_cpu_fraction_runs": [r["foreign_cpu_fraction"] for r in runs if r["load"] == condition],
        }
    out = header("data-folder-cache", torch.device("cpu"))
    out.update({
        "photos": str(args.photos), "copy": {"size": 32, "train_per_class": args.per_class,
                                             "val_per_class": args.val_per_class, "classes": len(classes),
                                             "format": "JPEG q90, PIL bicubic from the 96-px photos"},
        "training": {"model": "tiny_cnn", "recipe": "inette_teacher", "epochs": args.epochs, "threads": 1,
                     "augment": "crop_flip 32", "measure": "median over epochs 2.. of history.csv images_per_s"},
        "busy_process": "one `python -c 'while True: pass'` of this script for the `busy` condition",
        "prepared": prepared, "runs": runs, "summary": summary, "paired": paired_runs, "loadavg_end": loadavg(),
        "target": "auto (cached by default) within 10 % of cifar (in memory), under load and idle",
    })
    path = args.out or ROOT / "results" / "bench" / f"{device_slug(torch.device('cpu'), 1)}-data-folder-cache.json"
    write_json(path, out)
    print(path)


if __name__ == "__main__":
    main()
