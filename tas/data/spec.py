"""Frozen descriptions of a dataset and of its augmentation, built by `tas.config`.

Kept free of torch/numpy imports so that config validation stays cheap.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

from tas.data import sources
from tas.errors import TasError

TRAIN_AUGMENTS = ("crop_flip", "rrc", "none")

# The ImageNet statistics (timm's), which sources of ImageNet-like photos declare as theirs.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _triple(name: str, value, ds_id: str) -> tuple[float, float, float]:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 3:
        raise TasError(f"dataset {ds_id!r}: {name} must be 3 numbers (R, G, B), got {value!r}")
    return out  # type: ignore[return-value]


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset. Sizes 0 mean "all" (cifar100/imagefolder) or the default (synthetic:
    5000 train / 1000 test). `num_classes` None means the source's own count. A subset
    (size > 0) is class-stratified and drawn with `seed`. `root`: an image folder (imagefolder,
    or an already extracted imagenette), or where a cifar100 archive/folder already lies (default
    <data_root>/<id>/raw). `url`/`md5` None mean the source's official archive; `mean`/`std` None
    mean the source's usual statistics. `image_size` is the stored size (synthetic renders at it;
    CIFAR is 32); for an image folder it is the size prepare-data decodes it at when it caches it
    (shorter side resized, centre crop), None = the images' own size when they share one square size.
    `cache` (image folders): decode once into arrays (True), stream the files (False), or None
    ("auto") = cache when the arrays fit `cache_budget_gb` (None: caching.DEFAULT_BUDGET_GB); the
    rule is tas.data.caching's. The model input size is AugmentSpec.image_size."""

    id: str
    source: str
    num_classes: int | None = None
    train_size: int = 0
    test_size: int = 0
    image_size: int | None = None
    seed: int = 0
    root: str | None = None
    url: str | None = None
    md5: str | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    cache: bool | None = None
    cache_budget_gb: float | None = None

    def __post_init__(self) -> None:
        if self.source not in sources.names():
            raise TasError(
                f"dataset {self.id!r}: unknown source {self.source!r}; use one of {', '.join(sources.names())}"
            )
        if not self.id or "/" in self.id or self.id.startswith("."):
            raise TasError(f"dataset id {self.id!r} is not a plain folder name; use e.g. 'cifar100'")
        decl = sources.declaration(self.source)
        for name in ("train_size", "test_size"):
            if int(getattr(self, name)) < 0:
                raise TasError(f"dataset {self.id!r}: {name} must be >= 0 (0 = all/default)")
        if self.image_size is None:
            object.__setattr__(self, "image_size", decl.image_size)
        if self.image_size is not None and int(self.image_size) < 8:
            raise TasError(f"dataset {self.id!r}: image_size must be >= 8, got {self.image_size}")
        if self.cache == "auto":
            object.__setattr__(self, "cache", None)
        if self.cache not in (None, True, False):
            raise TasError(f"dataset {self.id!r}: cache must be true, false or auto, got {self.cache!r}")
        for key in ("cache", "cache_budget_gb"):
            if getattr(self, key) is not None and not decl.folder:
                raise TasError(f"dataset {self.id!r}: {key} applies to image folders only "
                               f"({', '.join(sources.folder_sources())}); {self.source} is always kept as arrays, "
                               f"drop {key}")
        if self.cache_budget_gb is not None:
            budget = self.cache_budget_gb
            if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0:
                raise TasError(f"dataset {self.id!r}: cache_budget_gb must be a number of GB > 0, got {budget!r}")
        if self.num_classes is not None and int(self.num_classes) < 2:
            raise TasError(f"dataset {self.id!r}: num_classes must be >= 2, got {self.num_classes}")
        if "image_size" in decl.fixed and self.image_size != decl.image_size:
            raise TasError(
                f"dataset {self.id!r}: {self.source} is stored at {decl.image_size} px; set image_size: "
                f"{decl.image_size} (or drop it) "
                "and choose the model input size in the augmentation (augment.image_size)"
            )
        if "num_classes" in decl.fixed and self.num_classes not in (None, decl.num_classes):
            raise TasError(f"dataset {self.id!r}: {self.source} has {decl.num_classes} classes; drop num_classes")
        if self.num_classes is None:
            object.__setattr__(self, "num_classes", decl.num_classes)
        object.__setattr__(self, "mean", _triple("mean", decl.mean if self.mean is None else self.mean, self.id))
        object.__setattr__(self, "std", _triple("std", decl.std if self.std is None else self.std, self.id))
        if min(self.std) <= 0:
            raise TasError(f"dataset {self.id!r}: std values must be > 0, got {self.std}")

    @property
    def effective_url(self) -> str | None:
        """`url`, else the source's archive (None: a source with nothing to download)."""
        archive = sources.declaration(self.source).archive
        return self.url or (archive[0] if archive else None)

    @property
    def effective_md5(self) -> str | None:
        archive = sources.declaration(self.source).archive
        md5 = self.md5 or (archive[1] if archive else None)
        return md5.lower() if md5 else None

    @property
    def is_folder(self) -> bool:
        return sources.declaration(self.source).folder

    @property
    def is_subset(self) -> bool:
        """Some samples only: drawn class-stratified with `seed`."""
        return self.train_size > 0 or self.test_size > 0


@lru_cache(maxsize=None)
def _cache_planner(source: str):
    mod = sources.module(source)
    if not hasattr(mod, "cache_plan"):
        raise TasError(f"dataset source module {mod.__name__} is a folder source but does not define "
                       "cache_plan(spec, data_root); add it (see tas/data/sources/__init__.py)")
    return mod.cache_plan


def folder_cache(spec: DatasetSpec, data_root="data"):
    """An image folder's caching.CachePlan (cached?, stored size, why), from its source's `cache_plan`
    (the source knows where its files are). Planning, prepare-data and the loaders all ask here."""
    return _cache_planner(spec.source)(spec, data_root)


def prepare_writes_arrays(spec: DatasetSpec, data_root="data") -> bool:
    """True when `prepare-data` writes the uint8 array files (synthetic, cifar100, and image folders
    cached as arrays: tas.data.caching's rule); False when it writes only an index of the files (an
    image folder streamed per sample). `data_root`: where a folder without `root:` lies (Config.data_root).
    Light: no torch/numpy; a folder's answer lists its files and reads a few image headers, once per process."""
    if not spec.is_folder:
        return True
    return folder_cache(spec, data_root).cached


INTERPOLATIONS = ("bilinear", "bicubic")
# "random": bilinear or bicubic, drawn per image (timm's train_interpolation 'random', OFA's default)
TRAIN_INTERPOLATIONS = (*INTERPOLATIONS, "random")


@dataclass(frozen=True)
class AugmentSpec:
    """Training augmentation and the eval resize that goes with it.

    crop_flip: CIFAR recipe at the stored size (pad `padding` with `pad_mode`, random crop back,
      horizontal flip), then a plain resize when `image_size` differs; eval = that resize only.
    rrc: the paper's 224 protocol: random-resized-crop (`scale`, `ratio`) + flip straight to
      `image_size`; eval = resize to image_size / crop_pct, centre crop image_size.
    interpolation: of the training crops: bilinear, bicubic, or random (either, drawn per image, as
      timm's 'random'); eval_interpolation: of the eval resize (a recipe may take both from the model).
    none: no random geometry (train == eval transform).
    randaugment: a timm RandAugment string (e.g. 'rand-m9-mstd0.5-inc1').
    random_erasing: probability of timm-style per-pixel random erasing (after normalisation).
    """

    train: str = "crop_flip"
    image_size: int = 32
    crop_pct: float = 0.875
    scale: tuple[float, float] = (0.08, 1.0)
    randaugment: str | None = None
    random_erasing: float = 0.0
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    hflip: float = 0.5
    padding: int = 4
    pad_mode: str = "reflect"
    interpolation: str = "bilinear"
    eval_interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.train not in TRAIN_AUGMENTS:
            raise TasError(f"augment.train {self.train!r} unknown; use one of {', '.join(TRAIN_AUGMENTS)}")
        if int(self.image_size) < 8:
            raise TasError(f"augment.image_size must be >= 8, got {self.image_size}")
        if not 0.0 < float(self.crop_pct) <= 1.0:
            raise TasError(f"augment.crop_pct must be in (0, 1], got {self.crop_pct}")
        scale = tuple(float(s) for s in self.scale)
        if len(scale) != 2 or not 0.0 < scale[0] <= scale[1] <= 1.0:
            raise TasError(f"augment.scale must be [lo, hi] with 0 < lo <= hi <= 1, got {self.scale}")
        object.__setattr__(self, "scale", scale)
        ratio = tuple(float(r) for r in self.ratio)
        if len(ratio) != 2 or not 0.0 < ratio[0] <= ratio[1]:
            raise TasError(f"augment.ratio must be [lo, hi] with 0 < lo <= hi, got {self.ratio}")
        object.__setattr__(self, "ratio", ratio)
        if not 0.0 <= float(self.random_erasing) <= 1.0:
            raise TasError(f"augment.random_erasing must be a probability in [0, 1], got {self.random_erasing}")
        if not 0.0 <= float(self.hflip) <= 1.0:
            raise TasError(f"augment.hflip must be a probability in [0, 1], got {self.hflip}")
        if int(self.padding) < 0:
            raise TasError(f"augment.padding must be >= 0, got {self.padding}")
        if self.pad_mode not in ("reflect", "zero"):
            raise TasError(f"augment.pad_mode {self.pad_mode!r} unknown; use 'reflect' or 'zero'")
        if self.interpolation not in TRAIN_INTERPOLATIONS:
            raise TasError(f"augment.interpolation {self.interpolation!r} unknown; "
                           f"use one of {', '.join(TRAIN_INTERPOLATIONS)}")
        if self.eval_interpolation not in INTERPOLATIONS:
            raise TasError(f"augment.eval_interpolation {self.eval_interpolation!r} unknown; "
                           f"use one of {', '.join(INTERPOLATIONS)}")
        if self.randaugment:
            parse_randaugment(self.randaugment)  # fail at config time, not mid-training

    @property
    def eval_resize(self) -> int:
        """Shorter-side size before the centre crop (rrc protocol), as timm computes it."""
        return int(math.floor(self.image_size / self.crop_pct))


@dataclass(frozen=True)
class RandAugmentParams:
    """timm's RandAugment string, parsed (see timm.data.auto_augment.rand_augment_transform)."""

    magnitude: float = 10.0
    num_layers: int = 2
    prob: float = 0.5
    magnitude_std: float = 0.0
    magnitude_max: float = 10.0
    increasing: bool = False


def parse_randaugment(text: str) -> RandAugmentParams:
    """Parse 'rand-m9-n2-mstd0.5-mmax10-inc1-p0.5' (timm's grammar; weighted 't' sets unsupported)."""
    parts = str(text).split("-")
    if parts[0] != "rand":
        raise TasError(
            f"augment.randaugment {text!r} must start with 'rand-' (timm syntax, e.g. 'rand-m9-mstd0.5-inc1')"
        )
    out: dict = {}
    for part in parts[1:]:
        match = re.fullmatch(r"(mstd|mmax|inc|m|n|p)(\d+(?:\.\d*)?)", part)
        if match is None:
            raise TasError(
                f"augment.randaugment {text!r}: section {part!r} not supported; use m<int>, n<int>, "
                "p<float>, mstd<float>, mmax<int>, inc<0|1>"
            )
        key, val = match.groups()
        if key == "mstd":
            mstd = float(val)
            out["magnitude_std"] = float("inf") if mstd > 100 else mstd
        elif key == "mmax":
            out["magnitude_max"] = float(int(float(val)))
        elif key == "inc":
            out["increasing"] = bool(int(float(val)))
        elif key == "m":
            out["magnitude"] = float(int(float(val)))
        elif key == "n":
            out["num_layers"] = int(float(val))
        elif key == "p":
            out["prob"] = float(val)
    return RandAugmentParams(**out)
