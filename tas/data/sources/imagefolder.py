"""Any folder of images laid out as root/{train,val}/<class>/<image> (tas.data.imagefolder indexes and decodes it).

`root:` names the folder (default <data_root>/<id>/raw); the class count is the number of train class folders.
"""

from __future__ import annotations

from pathlib import Path

from tas.data.spec import IMAGENET_MEAN, IMAGENET_STD, DatasetSpec

FOLDER = True
NUM_CLASSES = None
IMAGE_SIZE = None
FIXED = ()
MEAN = IMAGENET_MEAN
STD = IMAGENET_STD
ARCHIVE = None


def folder_fingerprint(spec: DatasetSpec, root: Path) -> dict:
    """What shapes any image folder's prepared data: where it is, which classes and samples, and, when
    cached as arrays, the decoder's version and the stored size (when image_size does not give it)."""
    from tas.data import caching
    from tas.data.imagefolder import DECODE_VERSION

    fp = {"root": str(root.resolve()), "num_classes": spec.num_classes, "image_size": spec.image_size,
          "seed": spec.seed if spec.is_subset else None}
    plan = caching.plan(spec, root)
    if plan.cached:
        fp["cached"] = DECODE_VERSION
        if spec.image_size is None:
            fp["stored_size"] = plan.size
    return fp


def fingerprint(spec: DatasetSpec, data_root: str | Path) -> dict:
    from tas.data import imagefolder

    return folder_fingerprint(spec, imagefolder.resolve_root(spec, data_root))


def cache_plan(spec: DatasetSpec, data_root: str | Path):
    """Cached or streamed, and at which size (tas.data.caching.plan on this source's folder)."""
    from tas.data import caching, imagefolder

    return caching.plan(spec, imagefolder.resolve_root(spec, data_root))


def root(spec: DatasetSpec, data_root: str | Path, download: bool = False) -> Path:
    from tas.data import imagefolder

    return imagefolder.resolve_root(spec, data_root)


def missing_raw(spec: DatasetSpec, data_root: str | Path) -> str | None:
    folder = root(spec, data_root)
    if (folder / "train").is_dir():
        return None
    return (f"imagefolder dataset {spec.id!r}: {folder}/train not found; set datasets.{spec.id}.root in "
            "params.yaml to a folder with train/<class>/ and val/<class>/")
