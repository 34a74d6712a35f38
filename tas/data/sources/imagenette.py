"""Imagenette (fast.ai's 10-class ImageNet subset), 160-px release: downloaded and extracted by
tas.data.imagenette, then an ordinary image folder (see imagefolder.py in this folder).
"""

from __future__ import annotations

from pathlib import Path

from tas.data.sources.imagefolder import folder_fingerprint
from tas.data.spec import IMAGENET_MEAN, IMAGENET_STD, DatasetSpec
from tas.errors import TasError

FOLDER = True
NUM_CLASSES = None  # counted from the folder (tests use smaller stand-ins)
IMAGE_SIZE = None
FIXED = ()
TRAIN_IMAGES = 9_469  # imagenette2-160's train/ (what `describe` counts steps per epoch with before prepare-data)
MEAN = IMAGENET_MEAN
STD = IMAGENET_STD
# md5 as torchvision's Imagenette dataset lists it.
ARCHIVE = ("https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz", "e793b78cc4c9e9a4ccc0c1155377a412")


def fingerprint(spec: DatasetSpec, data_root: str | Path) -> dict:
    from tas.data import imagenette

    fp = folder_fingerprint(spec, imagenette.resolve_root(spec, data_root))
    if not spec.root:  # extracted from the archive: its checksum is part of what was prepared
        fp["md5"] = spec.effective_md5
    return fp


def cache_plan(spec: DatasetSpec, data_root: str | Path):
    """Cached or streamed, and at which size (tas.data.caching.plan on the extracted folder)."""
    from tas.data import caching, imagenette

    return caching.plan(spec, imagenette.resolve_root(spec, data_root))


def root(spec: DatasetSpec, data_root: str | Path, download: bool = False) -> Path:
    from tas.data import imagenette

    return imagenette.ensure_root(spec, data_root, download)


def missing_raw(spec: DatasetSpec, data_root: str | Path) -> str | None:
    try:
        root(spec, data_root, download=False)
    except TasError as err:
        return str(err)
    return None
