"""Image folders cached by default when their arrays fit the budget (tas.data.caching): the rule, the
override keys, the sample of image headers, and one answer for the plan, prepare-data and the loaders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tas  # noqa: F401  (installs the torchvision guard before anything imports timm)
from tas import matrix
from tas.config import load_config
from tas.data import caching
from tas.data.loader import FolderLoader, InMemoryLoader, build_loaders
from tas.data.prepare import load_dataset, prepare_dataset
from tas.data.spec import AugmentSpec, DatasetSpec, folder_cache, prepare_writes_arrays
from tas.errors import TasError

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ("n01440764", "n02102040", "n02979186")


def _photo(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(base).resize((w, h), Image.BILINEAR), dtype=np.int16)
    return np.clip(img + rng.integers(-15, 16, img.shape), 0, 255).astype(np.uint8)


def folder(root: Path, sizes=((32, 32),), train: int = 4, val: int = 2, ext: str = "JPEG",
           classes=CLASSES) -> Path:
    """train/<class>/<i>.<ext>, val/...; image i of a class has sizes[i % len(sizes)] (w, h)."""
    rng = np.random.default_rng(0)
    for split, per_class in (("train", train), ("val", val)):
        for name in classes:
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                w, h = sizes[i % len(sizes)]
                Image.fromarray(_photo(rng, h, w)).save(d / f"{name}_{i}.{ext}", quality=90)
    return root


def n_bytes(images: int, size: int) -> float:
    """cache_budget_gb that holds exactly `images` images of size x size."""
    return images * 3 * size * size / 1e9


def _config(tmp_path: Path, **dataset):
    """The repo's params with datasets.imagenette = {source: imagenette, num_classes: 3, **dataset} (`root`,
    `cache`, ...; no image_size unless given) and the data under tmp_path; the file is tmp_path/params.yaml."""
    import yaml

    from tas.yamlload import load_file

    raw = load_file(ROOT / "params.yaml")
    raw["datasets"]["imagenette"] = {"source": "imagenette", "num_classes": 3,
                                     **{k: str(v) if isinstance(v, Path) else v for k, v in dataset.items()}}
    raw.setdefault("paths", {})["data"] = str(tmp_path / "data")
    raw["experiment"] = "imagenette_mini"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_config(str(params))


# ---------------------------------------------------------------- the rule

def test_small_square_folder_without_image_size_is_planned_cached_and_cached(tmp_path):
    root = folder(tmp_path / "f", sizes=((32, 32),))
    cfg = _config(tmp_path, root=root)
    spec = cfg.datasets["imagenette"]
    assert spec.image_size is None and spec.cache is None
    assert matrix.prepare_rule(cfg, "imagenette") == "prepare_arrays"
    plan = folder_cache(spec, cfg.data_root)
    assert (plan.cached, plan.size) == (True, 32) and "cached at 32 px (18 images" in plan.reason
    jobs = [j for j in matrix.expand(cfg) if j.subcommand == "prepare-data"]
    out = prepare_dataset(spec, cfg.data_root)
    assert all(Path(o).is_file() for o in jobs[0].outs) and (out / "train_images.npy").is_file()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["image_size"] == 32 and meta["cache"]["cached"] and meta["spec"]["stored_size"] == 32
    ds = load_dataset(spec, cfg.data_root)
    assert ds.in_memory and tuple(ds.train_images.shape) == (12, 32, 32, 3)
    # Stored at the images' own size: every pixel as decoded, nothing resampled.
    first = root / "train" / CLASSES[0] / f"{CLASSES[0]}_0.JPEG"
    with Image.open(first) as img:
        assert np.array_equal(ds.train_images[0].numpy(), np.asarray(img.convert("RGB")))
    train, test, info = build_loaders(spec, AugmentSpec("crop_flip", image_size=32), cfg.data_root, 4, 4, "cpu", 0)
    assert isinstance(train, InMemoryLoader) and isinstance(test, InMemoryLoader) and info.n_train == 12


def test_a_folder_over_the_budget_streams(tmp_path):
    root = folder(tmp_path / "f", sizes=((32, 32),), ext="png")  # 12 train + 6 val = 18 images
    fits = DatasetSpec("fits", "imagefolder", root=str(root), cache_budget_gb=n_bytes(18, 32))
    over = DatasetSpec("over", "imagefolder", root=str(root), cache_budget_gb=n_bytes(18, 32) - 1e-9)
    assert prepare_writes_arrays(fits) and not prepare_writes_arrays(over)
    assert "would exceed the cache budget" in folder_cache(over).reason
    cfg = _config(tmp_path, root=root, cache_budget_gb=n_bytes(17, 32))
    assert matrix.prepare_rule(cfg, "imagenette") == "prepare_index"
    out = prepare_dataset(cfg.datasets["imagenette"], cfg.data_root)
    assert not (out / "train_images.npy").exists()
    assert json.loads((out / "meta.json").read_text())["cache"]["cached"] is False
    train, _test, _info = build_loaders(cfg.datasets["imagenette"], AugmentSpec("rrc", image_size=16),
                                        cfg.data_root, 4, 4, "cpu", 0, num_workers=0)
    assert isinstance(train, FolderLoader)
    # The count stops at what the budget holds: a subset that fits is cached.
    assert prepare_writes_arrays(DatasetSpec("sub", "imagefolder", root=str(root), train_size=6, test_size=3,
                                             cache_budget_gb=n_bytes(9, 32)))


def test_image_size_and_cache_override(tmp_path):
    mixed = folder(tmp_path / "mixed", sizes=((32, 32), (40, 40)))
    small = folder(tmp_path / "small", sizes=((32, 32),))
    # image_size: the size it is decoded at (shorter side, centre crop), whatever the files' sizes.
    at_24 = DatasetSpec("m", "imagefolder", root=str(mixed), image_size=24)
    assert folder_cache(at_24).size == 24
    out = prepare_dataset(at_24, tmp_path / "data")
    assert json.loads((out / "meta.json").read_text())["image_size"] == 24
    # ... and the budget still applies to it, unless cache: true.
    assert not prepare_writes_arrays(DatasetSpec("m", "imagefolder", root=str(mixed), image_size=64,
                                                 cache_budget_gb=n_bytes(17, 64)))
    forced = DatasetSpec("m", "imagefolder", root=str(mixed), image_size=64, cache=True, cache_budget_gb=1e-9)
    assert folder_cache(forced).cached and folder_cache(forced).size == 64
    assert not prepare_writes_arrays(DatasetSpec("s", "imagefolder", root=str(small), cache=False))
    assert DatasetSpec("s", "imagefolder", root=str(small), cache="auto").cache is None
    assert folder_cache(DatasetSpec("s", "imagefolder", root=str(small), cache=True)).size == 32


def test_mixed_or_non_square_sizes_stream_unless_image_size_says(tmp_path):
    mixed = folder(tmp_path / "mixed", sizes=((32, 32), (40, 40)))
    plan = folder_cache(DatasetSpec("m", "imagefolder", root=str(mixed)))
    assert not plan.cached and "different or non-square sizes (32x32, 40x40)" in plan.reason
    oblong = folder(tmp_path / "oblong", sizes=((40, 30),))
    assert not prepare_writes_arrays(DatasetSpec("o", "imagefolder", root=str(oblong)))
    with pytest.raises(TasError) as err:
        prepare_writes_arrays(DatasetSpec("m", "imagefolder", root=str(mixed), cache=True))
    assert "\n" not in str(err.value) and "set datasets.<id>.image_size" in str(err.value)
    # The same through the plan: one clear line before any job runs.
    cfg = _config(tmp_path, root=mixed, cache=True)
    with pytest.raises(TasError, match="cache: true without image_size"):
        matrix.expand(cfg)


def test_an_image_the_sample_misses_is_resized_to_the_sampled_size(tmp_path):
    from tas.data.imagefolder import decode_stored

    # Images 0 and 1 of each class (the sample) are 32x32, image 2 is 40x40.
    root = folder(tmp_path / "f", sizes=((32, 32), (32, 32), (40, 40)), train=3, val=2)
    spec = DatasetSpec("f", "imagefolder", root=str(root))
    assert folder_cache(spec).size == 32
    prepare_dataset(spec, tmp_path / "data")
    ds = load_dataset(spec, tmp_path / "data")
    odd = root / "train" / CLASSES[0] / f"{CLASSES[0]}_2.JPEG"
    assert np.array_equal(ds.train_images[2].numpy(), decode_stored(odd, 32))


def test_a_root_not_there_yet_plans_as_before(tmp_path):
    nowhere = str(tmp_path / "nope")
    assert not prepare_writes_arrays(DatasetSpec("i", "imagefolder", root=nowhere))
    assert prepare_writes_arrays(DatasetSpec("i", "imagenette", root=nowhere, image_size=caching.LEGACY_MAX_SIZE))
    assert not prepare_writes_arrays(DatasetSpec("i", "imagenette", root=nowhere,
                                                 image_size=caching.LEGACY_MAX_SIZE + 1))
    assert prepare_writes_arrays(DatasetSpec("i", "imagefolder", root=nowhere, cache=True))
    assert prepare_writes_arrays(DatasetSpec("s", "synthetic")) and prepare_writes_arrays(DatasetSpec("c", "cifar100"))
    # Without root: <data_root>/<id>/raw, so the data root is part of the question.
    data = tmp_path / "data"
    folder(data / "own" / "raw", sizes=((16, 16),))
    assert prepare_writes_arrays(DatasetSpec("own", "imagefolder"), data)
    assert not prepare_writes_arrays(DatasetSpec("own", "imagefolder"), tmp_path / "elsewhere")


# ---------------------------------------------------------------- plan == job

@pytest.mark.parametrize("case", ["small", "over_budget", "mixed", "forced_stream"])
def test_the_plan_and_the_job_agree(tmp_path, case):
    sizes = ((32, 32), (48, 48)) if case == "mixed" else ((32, 32),)
    root = folder(tmp_path / "f", sizes=sizes)
    extra = {"over_budget": {"cache_budget_gb": n_bytes(10, 32)}, "forced_stream": {"cache": False}}.get(case, {})
    cfg = _config(tmp_path, root=root, **extra)
    rule = matrix.prepare_rule(cfg, "imagenette")
    assert rule == ("prepare_arrays" if case == "small" else "prepare_index")
    assert matrix.dataset_constraint(cfg, rule).split("|").count("imagenette") == 1
    # The job itself, as Snakemake or DVC runs it: a new process.
    job = next(j for j in matrix.expand(cfg) if j.subcommand == "prepare-data")
    proc = subprocess.run([sys.executable, "-m", "tas", "prepare-data", "--dataset", "imagenette",
                           "--params", str(tmp_path / "params.yaml")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert folder_cache(cfg.datasets["imagenette"], cfg.data_root).reason in proc.stderr
    assert all(Path(o).is_file() for o in job.outs)
    arrays = list((cfg.data_root / "imagenette").glob("*.npy"))
    assert bool(arrays) == (rule == "prepare_arrays")
    assert load_dataset(cfg.datasets["imagenette"], cfg.data_root).in_memory == (rule == "prepare_arrays")


def test_a_folder_changed_after_prepare_is_prepared_again(tmp_path):
    root = folder(tmp_path / "f", sizes=((32, 32),))
    spec = DatasetSpec("f", "imagefolder", root=str(root), cache_budget_gb=n_bytes(18, 32))
    prepare_dataset(spec, tmp_path / "data")
    for i in range(2):  # now over the budget: streamed, so the prepared arrays are stale
        Image.fromarray(_photo(np.random.default_rng(i), 32, 32)).save(root / "val" / CLASSES[0] / f"extra_{i}.png")
    caching._MEMO.clear()  # a training job is a new process: it reads the folder afresh
    with pytest.raises(TasError, match=r"prepared with other settings \(cached"):
        load_dataset(spec, tmp_path / "data")


# ---------------------------------------------------------------- headers and cost

@pytest.mark.parametrize("fmt", ["baseline", "progressive", "grey", "exif", "png", "png_rgba", "webp", "bmp"])
def test_header_sizes_are_pils(tmp_path, fmt):
    arr = _photo(np.random.default_rng(1), 37, 53)
    img = Image.fromarray(arr)
    ext, kw = {"png": ("png", {}), "png_rgba": ("png", {}), "webp": ("webp", {}), "bmp": ("bmp", {})}.get(
        fmt, ("jpg", {"quality": 85}))
    if fmt == "progressive":
        kw["progressive"] = True
    if fmt == "grey":
        img = img.convert("L")
    if fmt == "png_rgba":
        img = img.convert("RGBA")
    if fmt == "exif":
        exif = Image.Exif()
        exif[0x010F] = "x" * 3000  # a long APP1 segment before the frame header
        kw["exif"] = exif
    path = tmp_path / f"a.{ext}"
    img.save(path, **kw)
    with Image.open(path) as ref:
        assert caching.image_size(str(path)) == ref.size == (53, 37)
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 10)  # truncated before any frame
    assert caching.image_size(str(tmp_path / "b.jpg")) is None


def test_counting_stops_once_over_the_budget(tmp_path, monkeypatch):
    classes = tuple(f"c{i:02d}" for i in range(20))
    root = folder(tmp_path / "f", sizes=((8, 8),), train=3, val=1, ext="png", classes=classes)
    opened = []
    real = os.listdir

    def listdir(path="."):
        opened.append(Path(path))
        return real(path)

    monkeypatch.setattr(caching.os, "listdir", listdir)
    plan = folder_cache(DatasetSpec("f", "imagefolder", root=str(root), cache_budget_gb=n_bytes(5, 8)))
    assert not plan.cached and "more than 5 images" in plan.reason
    listed = [p for p in opened if p.parent == root / "train"]
    # 8 sampled classes listed for their headers (c00, c02, ..., c14), then counting stops in the second
    # class (3 + 3 > 5): c19 and the val classes other than the sampled ones are never listed.
    assert len(listed) == 8 + 2 and root / "train" / "c01" in listed
    assert root / "train" / "c19" not in opened and root / "val" / "c01" not in opened


def test_planning_reads_no_numpy_torch_or_pil(tmp_path):
    # Planning asks prepare_writes_arrays for every dataset: on JPEG/PNG folders it reads their headers
    # itself and imports nothing heavy.
    jpeg = folder(tmp_path / "j", sizes=((32, 32),))
    png = folder(tmp_path / "p", sizes=((16, 16),), ext="png")
    code = f"""
import importlib, sys
from tas.data import sources
from tas.data.spec import DatasetSpec, prepare_writes_arrays
for name in sources.names():
    importlib.import_module(f"tas.data.sources.{{name}}")
    sources.declaration(name)
assert prepare_writes_arrays(DatasetSpec("n", "imagenette", image_size=64))
assert prepare_writes_arrays(DatasetSpec("j", "imagefolder", root={str(jpeg)!r}))
assert prepare_writes_arrays(DatasetSpec("p", "imagenette", root={str(png)!r}))
heavy = {{"torch", "numpy", "PIL"}} & set(sys.modules)
assert not heavy, heavy
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr


# ---------------------------------------------------------------- params.yaml

def test_cache_keys_in_params(tmp_path):
    cfg = _config(tmp_path, cache="auto", cache_budget_gb=0.5)
    assert cfg.datasets["imagenette"].cache is None and cfg.datasets["imagenette"].cache_budget_gb == 0.5
    for bad in ({"cache_budget_gb": 0}, {"cache": "maybe"}, {"cache_budget_gb": "lots"}):
        with pytest.raises(TasError, match=next(iter(bad))) as err:
            _config(tmp_path, **bad)
        assert "\n" not in str(err.value)
    with pytest.raises(TasError, match="image folders only"):
        load_config(str(ROOT / "params.yaml"), ["datasets.cifar100.cache_budget_gb=1"])
