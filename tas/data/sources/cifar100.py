"""CIFAR-100 in its official python-pickle format (tas.data.cifar reads and downloads it): 100 classes at 32 px.

A subset (train_size / test_size > 0) is class-stratified and drawn with the dataset's seed.
"""

from __future__ import annotations

from pathlib import Path

from tas.data.spec import DatasetSpec
from tas.errors import TasError

FOLDER = False
NUM_CLASSES = 100
IMAGE_SIZE = 32
FIXED = ("image_size", "num_classes")
TRAIN_IMAGES = 50_000  # of the official archive (what `describe` counts steps per epoch with before prepare-data)
MEAN = (0.5071, 0.4865, 0.4409)
STD = (0.2673, 0.2564, 0.2762)
ARCHIVE = ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85")


def _cmd(spec: DatasetSpec) -> str:
    return f"python -m tas prepare-data --dataset {spec.id} --download"


def fingerprint(spec: DatasetSpec, data_root: str | Path) -> dict:
    return {"md5": spec.effective_md5, "seed": spec.seed if spec.is_subset else None}


def missing_raw(spec: DatasetSpec, data_root: str | Path) -> str | None:
    from tas.data import cifar

    if cifar.find_raw(data_root, spec) is not None:
        return None
    target = cifar.raw_dir(data_root, spec) / cifar.ARCHIVE_NAME
    return (f"CIFAR-100 for dataset {spec.id!r} not found in {target}; run `{_cmd(spec)}` first "
            f"(or download {spec.effective_url} there by hand)")


def prepare(spec: DatasetSpec, data_root: str | Path, download: bool = False):
    from tas.data import cifar
    from tas.data.prepare import stratified_subset

    raw = cifar.find_raw(data_root, spec)
    if raw is None:
        target = cifar.raw_dir(data_root, spec) / cifar.ARCHIVE_NAME
        if not download:
            also = f" (nor in root {spec.root})" if spec.root else ""
            raise TasError(
                f"CIFAR-100 for dataset {spec.id!r} not found{also}: expected {target} (md5 {spec.effective_md5}) "
                f"or the extracted folder {target.parent / cifar.FOLDER_NAME}; run `{_cmd(spec)}` or download "
                f"{spec.effective_url} there by hand"
            )
        raw = cifar.download(spec, target)
    data = cifar.read(raw, spec)
    arrays = {}
    for split, n, salt in (("train", spec.train_size, 0), ("test", spec.test_size, 1)):
        keep = stratified_subset(data[f"{split}_labels"], n, spec.seed, salt)
        arrays[f"{split}_images"] = data[f"{split}_images"][keep]
        arrays[f"{split}_labels"] = data[f"{split}_labels"][keep]
    # A folder's files are md5-checked one by one only against the official release.
    extra = {"raw": {"path": str(raw), "md5": data["raw_md5"], "md5_checked": spec.md5 is None or Path(raw).is_file()}}
    return arrays, data["class_names"], extra
