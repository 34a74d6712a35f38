"""Image folders: streamed vs cached, per-sample randomness, corrupt files, the imagenette source."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

import tas  # noqa: F401  (installs the torchvision guard before anything imports timm)
from tas.data.loader import (FolderLoader, InMemoryLoader, _FolderSamples, available_cores, build_loaders,
                             resolve_num_workers, resolve_upsample_on)
from tas.data.prepare import load_dataset, prepare_dataset
from tas.data.spec import AugmentSpec, DatasetSpec, prepare_writes_arrays
from tas.engine.evaluate import accuracy
from tas.errors import TasError

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ("n01440764", "n02102040", "n02979186")


def _photo(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth colour blobs + noise: a JPEG of it compresses like a photograph, not like pure noise."""
    from PIL import Image

    base = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(base).resize((w, h), Image.BILINEAR), dtype=np.int16)
    return np.clip(img + rng.integers(-15, 16, img.shape), 0, 255).astype(np.uint8)


def make_folder(root: Path, train: int = 8, val: int = 3, size: tuple[int, int] = (40, 52), ext: str = "JPEG") -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, per_class in (("train", train), ("val", val)):
        for name in CLASSES:
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(_photo(rng, *size)).save(d / f"{name}_{i}.{ext}", quality=90)
    return root


def _batches(loader, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.set_epoch(epoch)
    return [(x.clone(), y.clone()) for x, y in loader]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))


# ---------------------------------------------------------------- which prepare a dataset gets

def test_prepare_writes_arrays_decision(tmp_path):
    # The whole rule is tests/test_data_caching.py's; here: which sources ask it, and the keys' checks.
    assert prepare_writes_arrays(DatasetSpec("s", "synthetic")) and prepare_writes_arrays(DatasetSpec("c", "cifar100"))
    nowhere = str(tmp_path / "nope")  # not there yet: image_size <= 64 cached, unset streamed (as before)
    assert not prepare_writes_arrays(DatasetSpec("i", "imagefolder", root=nowhere))
    assert prepare_writes_arrays(DatasetSpec("i", "imagefolder", root=nowhere, image_size=64))
    assert prepare_writes_arrays(DatasetSpec("i", "imagenette", root=nowhere, image_size=160, cache=True))
    assert not prepare_writes_arrays(DatasetSpec("i", "imagefolder", root=nowhere, image_size=32, cache=False))
    assert prepare_writes_arrays(DatasetSpec("i", "imagefolder", root=nowhere, cache=True))  # size read at prepare
    with pytest.raises(TasError, match="image folders only"):
        DatasetSpec("c", "cifar100", cache=True)
    with pytest.raises(TasError, match="cache_budget_gb must be a number of GB > 0"):
        DatasetSpec("i", "imagefolder", cache_budget_gb=-1)


def test_source_declarations_import_nothing_heavy():
    # The planner (tas.matrix) asks prepare_writes_arrays, and config validation reads every source's
    # declaration: importing spec.py and every source module must pull in no torch, numpy or PIL.
    code = """
import importlib, sys
from tas.data import sources
from tas.data.spec import DatasetSpec, prepare_writes_arrays
for name in sources.names():
    importlib.import_module(f"tas.data.sources.{name}")
    sources.declaration(name)
assert prepare_writes_arrays(DatasetSpec("n", "imagenette", image_size=64))
heavy = {"torch", "numpy", "PIL"} & set(sys.modules)
assert not heavy, heavy
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr


def test_num_workers_auto_follows_the_job_share():
    cores = available_cores()
    assert resolve_num_workers("auto", threads=1) == 1
    assert resolve_num_workers("auto", threads=64) == cores  # never more workers than cores: no warning
    assert resolve_num_workers(3) == 3
    for bad in (-1, "many", True):
        with pytest.raises(TasError, match="num_workers"):
            resolve_num_workers(bad)


# ---------------------------------------------------------------- per-sample randomness

def test_streamed_batches_same_for_any_worker_count_and_after_resume(tmp_path):
    root = make_folder(tmp_path / "folder")
    spec = DatasetSpec("nette", "imagenette", root=str(root))
    prepare_dataset(spec, tmp_path / "data")
    ds = load_dataset(spec, tmp_path / "data")
    aug = AugmentSpec("rrc", image_size=32, scale=(0.2, 1.0), randaugment="rand-m9-mstd0.5-inc1", random_erasing=0.5)

    def loader(workers: int) -> FolderLoader:
        return FolderLoader(ds.root, ds.train_files, ds.train_labels, 6, True, aug, spec.mean, spec.std, "cpu",
                            seed=3, num_workers=workers)

    py, npy, th = random.getstate(), np.random.get_state(), torch.get_rng_state()
    serial = loader(0)
    uninterrupted = [_batches(serial, epoch) for epoch in range(3)]
    # No global generator is read or reseeded by the loader.
    assert random.getstate() == py and torch.equal(torch.get_rng_state(), th)
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state()[1:2], npy[1:2]))
    assert not _same(uninterrupted[0], uninterrupted[1])  # epochs differ
    parallel = loader(2)
    assert all(_same(_batches(parallel, e), uninterrupted[e]) for e in range(3))
    # A resumed run: a fresh loader (a new process, other global seeds) starting at epoch 2.
    torch.manual_seed(123), random.seed(123), np.random.seed(123)
    assert _same(_batches(loader(1), 2), uninterrupted[2])


# ---------------------------------------------------------------- upsampling on the device

def test_deferred_upsample_is_pils_resize_within_one_level(tmp_path):
    from PIL import Image

    from tas.data.augment import resize_crops
    from tas.data.imagefolder import centre_box, decode_crop, rrc_box

    Image.fromarray(_photo(np.random.default_rng(1), 40, 52)).save(tmp_path / "a.png")
    Image.fromarray(_photo(np.random.default_rng(2), 300, 260)).save(tmp_path / "b.png")
    def box_for(k: int):
        """Sample k's box function; a fresh one per call, so that both decodes draw the same box."""
        if k % 3 == 0:
            return lambda w, h: centre_box(w, h, 64, 73)  # eval: resize to 73, centre crop 64
        rng = random.Random(k)
        return lambda w, h: rrc_box(w, h, (0.08, 1.0), (3 / 4, 4 / 3), rng)

    deferred = 0
    for k in range(60):
        path = tmp_path / ("a.png" if k % 4 else "b.png")
        flip = k % 2 == 0
        ref, none = decode_crop(path, 64, box_for(k), "bilinear", flip)
        arr, region = decode_crop(path, 64, box_for(k), "bilinear", flip, defer_upsample=True)
        assert none is None
        if region is None:  # a box larger than 64 px (image b): resized in the worker, as before
            assert np.array_equal(arr, ref)
            continue
        deferred += 1
        assert arr.shape[0] < 64 and arr.shape[1] < 64  # the source pixels, not a 64 x 64 crop
        out = resize_crops(torch.from_numpy(arr.copy())[None], torch.tensor([region], dtype=torch.float64), 64)
        diff = np.abs(out[0].numpy().astype(int) - ref.astype(int))
        assert diff.max() <= 1 and diff.mean() < 0.3, (k, region, diff.max(), diff.mean())
    assert deferred >= 40  # every box of image a is an upsampling
    # torch's bicubic kernel is not PIL's: bicubic crops are never deferred.
    arr, region = decode_crop(tmp_path / "a.png", 64, lambda w, h: centre_box(w, h, 64), "bicubic", defer_upsample=True)
    assert region is None


def test_jpeg_decode_is_pils_draft_decode(tmp_path):
    # JPEGs go through simplejpeg (libjpeg-turbo, a third of PIL's time on small photos): the same
    # pixels as PIL's draft-reduced decode, for full-size and reduced decodes and for grayscale; a
    # CMYK JPEG (simplejpeg does not convert those) and a PNG go to PIL.
    from PIL import Image

    from tas.data.imagefolder import _decode_jpeg, _jpeg_size, _needed_size, decode_box, rrc_box

    rng = np.random.default_rng(3)
    photo = Image.fromarray(_photo(rng, 700, 900))
    photo.save(tmp_path / "big.jpg", quality=90)
    photo.resize((90, 70)).save(tmp_path / "small.jpg", quality=90)
    photo.convert("L").resize((300, 200)).save(tmp_path / "gray.jpg", quality=90)
    photo.convert("CMYK").resize((90, 70)).save(tmp_path / "cmyk.jpg", quality=90)
    photo.resize((90, 70)).save(tmp_path / "small.png")
    assert _jpeg_size((tmp_path / "cmyk.jpg").read_bytes()) is None
    assert _jpeg_size((tmp_path / "big.jpg").read_bytes()) == (900, 700)

    def pil_draft(path, out, box):
        with Image.open(path) as img:
            w, h = img.size
            left, top, bw, bh = box(w, h)
            img.draft("RGB", (max(1, math.ceil(w * out / bw)), max(1, math.ceil(h * out / bh))))
            sx, sy = img.size[0] / w, img.size[1] / h
            rgb = img.convert("RGB")
            return np.asarray(rgb.resize((out, out), Image.Resampling.BILINEAR,
                                         box=(left * sx, top * sy, (left + bw) * sx, (top + bh) * sy)))

    def box_for(k: int):
        """Sample k's random-resized-crop box; a fresh one per call, so that both decodes draw the same."""
        rng = random.Random(k)
        return lambda w, h: rrc_box(w, h, (0.08, 1.0), (3 / 4, 4 / 3), rng)

    for name in ("big.jpg", "small.jpg", "gray.jpg", "cmyk.jpg", "small.png"):
        for k, out in enumerate((32, 64, 224) * 3):
            ours = decode_box(tmp_path / name, out, box_for(k))
            assert np.array_equal(ours, pil_draft(tmp_path / name, out, box_for(k))), (name, out, k)
    # ... and the JPEGs did go through simplejpeg, at PIL's draft size (a silent fall back to PIL
    # would pass the comparison above).
    for name, out, reduced in (("big.jpg", 32, True), ("small.jpg", 64, False), ("gray.jpg", 224, False)):
        data = (tmp_path / name).read_bytes()
        size, box = _jpeg_size(data), box_for(0)(*_jpeg_size(data))
        with Image.open(tmp_path / name) as img:
            img.draft("RGB", _needed_size(*size, box, out))
            draft_size = img.size
        rgb = _decode_jpeg(data, size, box, out, deferred=False)
        assert rgb is not None and (rgb.shape[1], rgb.shape[0]) == draft_size and (draft_size != size) == reduced


def test_jpeg_simplejpeg_refuses_falls_back_to_pil(tmp_path, monkeypatch):
    # libjpeg damage that simplejpeg (strict) refuses after reading the header: PIL decodes the file,
    # with the box drawn once (a second draw would take another crop from the sample's generator).
    import simplejpeg
    from PIL import Image

    from tas.data.imagefolder import decode_box, rrc_box

    Image.fromarray(_photo(np.random.default_rng(4), 300, 260)).save(tmp_path / "a.jpg", quality=90)
    expected = decode_box(tmp_path / "a.jpg", 64,
                          lambda w, h, rng=random.Random(9): rrc_box(w, h, (0.08, 1.0), (0.75, 4 / 3), rng))

    def refuse(*args, **kwargs):
        raise ValueError("Corrupt JPEG data: 1 extraneous bytes before marker 0xd0")

    monkeypatch.setattr(simplejpeg, "decode_jpeg", refuse)
    draws = []

    def box(w, h, rng=random.Random(9)):
        draws.append((w, h))
        return rrc_box(w, h, (0.08, 1.0), (0.75, 4 / 3), rng)

    assert np.array_equal(decode_box(tmp_path / "a.jpg", 64, box), expected) and draws == [(260, 300)]


def test_upsample_on_resolves_by_device():
    assert resolve_upsample_on("auto", torch.device("cpu")) == "workers"
    assert resolve_upsample_on("auto", torch.device("cuda")) == "device"
    assert resolve_upsample_on("device", torch.device("cpu")) == "device"
    with pytest.raises(TasError, match="runtime.upsample_on must be one of auto, device, workers"):
        resolve_upsample_on("gpu", torch.device("cpu"))


def test_folder_batches_with_upsampling_on_the_device(tmp_path):
    # The same run read with the upsampling in the workers and on the device: same order, labels and
    # crops (pixels within one grey level), and the device mode is itself worker-count independent.
    from PIL import Image

    root = make_folder(tmp_path / "folder")
    rng = np.random.default_rng(5)
    for split in ("train", "val"):  # a few large photos: their crops are downscaled, in the workers
        for name in CLASSES:
            Image.fromarray(_photo(rng, 200, 170)).save(root / split / name / f"{name}_big.JPEG", quality=90)
    spec = DatasetSpec("nette", "imagenette", root=str(root))
    prepare_dataset(spec, tmp_path / "data")
    ds = load_dataset(spec, tmp_path / "data")
    aug = AugmentSpec("rrc", image_size=64, scale=(0.2, 1.0))

    def loader(workers: int, upsample_on: str, train: bool = True) -> FolderLoader:
        files, labels = (ds.train_files, ds.train_labels) if train else (ds.test_files, ds.test_labels)
        return FolderLoader(ds.root, files, labels, 6, train, aug, spec.mean, spec.std, "cpu", seed=3,
                            num_workers=workers, upsample_on=upsample_on)

    samples = _FolderSamples(ds.root, ds.train_files, ds.train_labels, aug, True, 3, defer_upsample=True)
    small = [i for i, f in enumerate(ds.train_files) if "_big" not in f]
    batch = samples.__getitems__([(i, 1) for i in small])
    assert len(batch.final) == 0 and batch.deferred_pos.tolist() == list(range(len(small)))  # 40x52: all deferred
    assert batch.deferred.shape[1] <= 42 and batch.deferred.shape[2] <= 54  # source pixels + margin, not 64 x 64
    big = [i for i, f in enumerate(ds.train_files) if "_big" in f]
    batch = samples.__getitems__([(i, 1) for i in big + small[:3]])
    assert batch.final_pos.tolist() == list(range(len(big))) and batch.final.shape[1:] == (64, 64, 3)
    mixed = 0
    one_level = 1.0 / (255.0 * min(spec.std)) + 1e-5
    for train in (True, False):
        workers = _batches(loader(0, "workers", train), 1)
        device = _batches(loader(0, "device", train), 1)
        assert len(workers) == len(device) > 0
        for (xw, yw), (xd, yd) in zip(workers, device):
            assert torch.equal(yw, yd) and xw.shape == xd.shape == (len(yw), 3, 64, 64)
            mixed += bool((xw == xd).all(dim=(1, 2, 3)).any())  # a final crop in the batch: identical
            assert (xw - xd).abs().max() <= one_level and not torch.equal(xw, xd)
        assert _same(_batches(loader(2, "device", train), 1), device)
    assert mixed >= 2  # batches that held final and deferred crops at once


# ---------------------------------------------------------------- cached vs streamed

def test_cached_and_streamed_folder_agree(tmp_path):
    root = make_folder(tmp_path / "folder", size=(24, 30))
    cached = DatasetSpec("small", "imagefolder", root=str(root), image_size=24)
    streamed = DatasetSpec("big", "imagefolder", root=str(root), image_size=24, cache=False)
    aug = AugmentSpec("crop_flip", image_size=24)
    out = prepare_dataset(cached, tmp_path / "data")
    assert (out / "train_images.npy").is_file()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["n_train"] == 24 and meta["image_size"] == 24 and len(meta["checksum"]) == 64
    prepare_dataset(streamed, tmp_path / "data")
    c_train, c_test, c_info = build_loaders(cached, aug, tmp_path / "data", 8, 5, "cpu", seed=0, num_workers=0)
    s_train, s_test, s_info = build_loaders(streamed, aug, tmp_path / "data", 8, 5, "cpu", seed=0, num_workers=2)
    assert isinstance(c_train, InMemoryLoader) and isinstance(s_train, FolderLoader)
    assert c_info.class_names == s_info.class_names == CLASSES
    assert torch.equal(load_dataset(cached, tmp_path / "data").test_labels,
                       load_dataset(streamed, tmp_path / "data").test_labels)
    # Same pixels in (one decode function, one batch transform), so the same batches and accuracy.
    assert _same(_batches(c_test, 0), _batches(s_test, 0))
    assert _same(_batches(c_train, 1), _batches(s_train, 1))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(8, 3)).eval()
    with torch.no_grad():
        a, b = accuracy(model, c_test, contextlib.nullcontext), accuracy(model, s_test, contextlib.nullcontext)
    assert a["top1"] == b["top1"] and a["top5"] == b["top5"]


# ---------------------------------------------------------------- corrupt files

def _corrupt(root: Path) -> list[Path]:
    truncated = root / "train" / CLASSES[0] / f"{CLASSES[0]}_1.JPEG"
    truncated.write_bytes(truncated.read_bytes()[:200])
    garbage = root / "val" / CLASSES[2] / f"{CLASSES[2]}_0.JPEG"
    garbage.write_bytes(b"not a jpeg at all" * 10)
    return [truncated, garbage]


@pytest.mark.parametrize("cached", [False, True])
def test_corrupt_jpeg_stops_prepare_with_the_list(tmp_path, cached):
    root = make_folder(tmp_path / "folder")
    bad = _corrupt(root)
    spec = DatasetSpec("nette", "imagefolder", root=str(root), image_size=32, cache=cached)
    with pytest.raises(TasError) as err:
        prepare_dataset(spec, tmp_path / "data")
    text = str(err.value)
    assert "\n" not in text and text.startswith("2 of 33 images")
    assert all(str(p.relative_to(root)) in text for p in bad)
    assert not (tmp_path / "data" / "nette" / "meta.json").exists()


def test_corrupt_jpeg_cli_exit_2(tmp_path):
    root = make_folder(tmp_path / "folder")
    _corrupt(root)
    out = subprocess.run(
        [sys.executable, "-m", "tas", "prepare-data", "--dataset", "imagenette",
         "--set", f"paths.data={tmp_path / 'data'}", "--set", f"datasets.imagenette.root={root}",
         "--set", "datasets.imagenette.num_classes=3"],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 2, out.stderr
    assert "do not decode" in out.stderr and "Traceback" not in out.stderr


def test_decode_failure_in_a_worker_is_one_line(tmp_path):
    root = make_folder(tmp_path / "folder")
    spec = DatasetSpec("nette", "imagefolder", root=str(root))
    prepare_dataset(spec, tmp_path / "data")
    broken = _corrupt(root)[0]  # broken after prepare-data checked it
    train, _test, _info = build_loaders(spec, AugmentSpec("rrc", image_size=32), tmp_path / "data", 24, 9, "cpu",
                                        seed=0, num_workers=2)
    with pytest.raises(TasError) as err:
        list(train)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"cannot decode image {broken}") and "Traceback" not in text


# ---------------------------------------------------------------- the imagenette source

def _archive(tmp_path: Path) -> tuple[Path, str]:
    src = make_folder(tmp_path / "src" / "imagenette2-160", train=4, val=2, size=(160, 213))
    (src / "noisy_imagenette.csv").write_text("path,noisy_labels_0\n")
    archive = tmp_path / "served" / "imagenette2-160.tgz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="imagenette2-160")
    return archive, hashlib.md5(archive.read_bytes()).hexdigest()


def test_imagenette_download_verify_extract_index(tmp_path):
    archive, md5 = _archive(tmp_path)
    spec = DatasetSpec("nette", "imagenette", url=archive.as_uri(), md5=md5)
    with pytest.raises(TasError, match="--download"):
        prepare_dataset(spec, tmp_path / "data")
    out = prepare_dataset(spec, tmp_path / "data", download=True)
    extracted = tmp_path / "data" / "nette" / "raw" / "imagenette2-160"
    assert (extracted / "train" / CLASSES[1]).is_dir() and (out / "raw" / "imagenette2-160.tgz").is_file()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["class_names"] == list(CLASSES) and (meta["n_train"], meta["n_test"]) == (12, 6)
    assert meta["index"]["train"][0] == [f"train/{CLASSES[0]}/{CLASSES[0]}_0.JPEG", 0]
    x, y = next(iter(build_loaders(spec, AugmentSpec("rrc", image_size=64), tmp_path / "data", 4, 4, "cpu", 0)[0]))
    assert x.shape == (4, 3, 64, 64)
    # An extracted copy elsewhere via root: no download, no archive needed.
    at_root = DatasetSpec("nette2", "imagenette", root=str(extracted), image_size=32)
    assert (prepare_dataset(at_root, tmp_path / "data") / "train_images.npy").is_file()


def test_imagenette_md5_mismatch_leaves_nothing(tmp_path):
    archive, md5 = _archive(tmp_path)
    spec = DatasetSpec("nette", "imagenette", url=archive.as_uri(), md5="0" * 32)
    with pytest.raises(TasError) as err:
        prepare_dataset(spec, tmp_path / "data", download=True)
    assert f"expected {'0' * 32}, got {md5}" in str(err.value)
    raw = tmp_path / "data" / "nette" / "raw"
    assert not raw.exists() or not any(raw.iterdir())


def test_imagenette_default_is_the_official_archive():
    spec = DatasetSpec("imagenette", "imagenette")
    assert spec.effective_url == "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz"
    assert spec.effective_md5 == "e793b78cc4c9e9a4ccc0c1155377a412"


# ---------------------------------------------------------------- the real-folder benchmark

def test_bench_folder_tiny(tmp_path, monkeypatch):
    from tas import bench

    monkeypatch.setenv("TAS_BENCH_MAX_WAIT", "1")  # a shared test machine: do not wait for quiet
    monkeypatch.setenv("TAS_BENCH_RETRIES", "0")
    from tas.config import load_config

    root = make_folder(tmp_path / "folder", size=(48, 60))
    cfg = load_config(str(ROOT / "params.yaml"),
                      [f"datasets.imagenette.root={root}", "datasets.imagenette.num_classes=3"])
    assert bench.folder_root(cfg) == root
    path = bench.bench_folder(cfg, root, steps=1, windows=1, threads=1, out_dir=tmp_path / "out", batch_size=8,
                              sizes=(32, 224))
    data = json.loads(Path(path).read_text())
    small, large = data["cases"]
    assert small["dataset_image_size"] == 32 and all(r["cached"] and r["loader"] == "InMemoryLoader"
                                                     for r in small["runs"])
    assert large["dataset_image_size"] is None and all(r["loader"] == "FolderLoader" for r in large["runs"])
    assert [r["cores"] for r in large["runs"]][0] == 1 and large["runs"][0]["num_workers"] == 0
    assert small["step_reference"]["images_per_s"] > 0 and small["runs"][0]["ratio_to_step"] > 0
    proj = data["h100_projection"]
    assert large["step_reference"]["images_per_s"] == proj["r18_step_images_per_s"] > 10000
    assert "per_core_x16_over_h100_r18_step" in large["target"]
    # On a CPU the 224-px case is also read as a GPU box's cores would: the upsampling left to the device.
    assert large["target"]["basis"] == "gpu_box_runs" and large["runs"][0]["upsample_on"] == "workers"
    assert [r["upsample_on"] for r in large["gpu_box_runs"]] == ["device"] * len(large["runs"])
    assert large["resize_crops_ms_per_image_here"] > 0  # 48x60 images read at 224: every crop is deferred
    assert "gpu_box_runs" not in small
    assert all(r["images_per_s"] > 0 for c in data["cases"] for r in c["runs"])


def test_auto_workers_do_not_warn(tmp_path):
    import warnings

    root = make_folder(tmp_path / "folder", train=4, val=2)
    spec = DatasetSpec("nette", "imagefolder", root=str(root))
    prepare_dataset(spec, tmp_path / "data")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PyTorch warns when workers exceed the cores it may use
        train, _test, _info = build_loaders(spec, AugmentSpec("rrc", image_size=16), tmp_path / "data", 4, 4, "cpu",
                                            seed=0, num_workers="auto")
        assert 1 <= train.num_workers <= available_cores()
        assert sum(len(y) for _, y in train) == 12
