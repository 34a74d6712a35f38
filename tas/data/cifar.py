"""CIFAR-100 in its official python-pickle format: md5-checked reading and download.

Accepted raw inputs (looked for in this order): the archive `cifar-100-python.tar.gz` (members
read straight from the tar, nothing extracted) or the extracted folder `cifar-100-python/` with
`train`, `test`, `meta`. The archive is checked against `spec.md5` (default: the official md5);
the folder, file by file, against the official per-file md5s (a custom archive has no per-file
md5s, so a custom-md5 spec given only the folder is read unchecked, and says so in the meta).
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from tas.data.download import check_md5 as _check_md5
from tas.data.download import fetch, md5_file
from tas.data.spec import DatasetSpec
from tas.errors import TasError

ARCHIVE_NAME = "cifar-100-python.tar.gz"
FOLDER_NAME = "cifar-100-python"
# md5 of each member of the official release, to check an extracted folder file by file.
FILE_MD5 = {
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "meta": "7973b15100ade9c7d40fb424638fde48",
}
_MEMBERS = ("train", "test", "meta")


def raw_dir(data_root: str | Path, spec: DatasetSpec) -> Path:
    from tas.paths import dataset_dir

    return dataset_dir(data_root, spec.id) / "raw"




class _CifarUnpickler(pickle.Unpickler):
    """Only what the official files (and faithful re-pickles of them) reference: pickle runs
    code otherwise, and the md5 is not a security boundary for a custom url/md5."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes at protocol 2
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR file")
        if module == "numpy.core.multiarray":
            module = "numpy._core.multiarray"  # numpy 2 name; avoids the deprecation shim
        return super().find_class(module, name)


def _unpickle(data: bytes, name: str) -> dict:
    try:
        obj = _CifarUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:  # any decoding failure means the file is not a CIFAR pickle
        raise TasError(f"{name} is not a CIFAR-100 python pickle ({exc}); re-download it") from None
    if not isinstance(obj, dict):
        raise TasError(f"{name} does not hold a dict as CIFAR-100 files do; re-download it")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _split_arrays(d: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        data = np.asarray(d["data"], dtype=np.uint8)
        labels = np.asarray(d["fine_labels"], dtype=np.int64)
    except KeyError as exc:
        raise TasError(f"{name} lacks the key {exc.args[0]!r} of CIFAR-100 files; re-download it") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise TasError(f"{name} has data of shape {data.shape} for {len(labels)} labels, expected (N, 3072)")
    # Official layout: each row is 1024 R, then G, then B values, row-major 32 x 32.
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels


def _class_names(d: dict, name: str) -> list[str]:
    try:
        names = d["fine_label_names"]
    except KeyError:
        raise TasError(f"{name} lacks 'fine_label_names'; re-download the archive") from None
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


def find_raw(data_root: str | Path, spec: DatasetSpec) -> Path | None:
    """The archive or the extracted folder under <data_root>/<id>/raw, or spec.root when set."""
    bases = [Path(spec.root)] if spec.root else []
    bases.append(raw_dir(data_root, spec))
    for base in bases:
        if base.is_file() and base.name.endswith(".tar.gz"):
            return base
        for cand in (base / ARCHIVE_NAME, base / FOLDER_NAME):
            if cand.exists():
                return cand
        if base.is_dir() and all((base / m).is_file() for m in _MEMBERS):
            return base
    return None


def read(path: str | Path, spec: DatasetSpec) -> dict:
    """Read and verify raw CIFAR-100 at `path` (archive or folder).

    Returns dict(train_images, train_labels, test_images, test_labels, class_names, raw_md5)."""
    path = Path(path)
    fix = f"delete {path} and download it again (python -m tas prepare-data --dataset {spec.id} --download)"
    blobs: dict[str, bytes] = {}
    if path.is_file():
        actual = md5_file(path)
        _check_md5(path, actual, spec.effective_md5, fix)
        raw_md5: dict[str, str] = {path.name: actual}
        try:
            with tarfile.open(path, "r:*") as tar:
                for member in _MEMBERS:
                    try:
                        fh = tar.extractfile(f"{FOLDER_NAME}/{member}")
                    except KeyError:
                        fh = None
                    if fh is None:
                        raise TasError(f"{path} has no member {FOLDER_NAME}/{member}; {fix}")
                    blobs[member] = fh.read()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise TasError(f"cannot read the archive {path} ({exc}); {fix}") from None
    elif path.is_dir():
        raw_md5 = {}
        for member in _MEMBERS:
            fpath = path / member
            if not fpath.is_file():
                raise TasError(f"{fpath} is missing; the folder must hold {', '.join(_MEMBERS)} ({fix})")
            blobs[member] = fpath.read_bytes()
            actual = hashlib.md5(blobs[member]).hexdigest()
            raw_md5[member] = actual
            if spec.md5 is None:  # the official release: its members' md5s are known
                _check_md5(fpath, actual, FILE_MD5[member], fix)
    else:
        raise TasError(f"{path} does not exist; {fix}")
    train_images, train_labels = _split_arrays(_unpickle(blobs["train"], f"{path}:train"), f"{path}:train")
    test_images, test_labels = _split_arrays(_unpickle(blobs["test"], f"{path}:test"), f"{path}:test")
    names = _class_names(_unpickle(blobs["meta"], f"{path}:meta"), f"{path}:meta")
    for split, labels in (("train", train_labels), ("test", test_labels)):
        if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
            raise TasError(f"{path}:{split} has labels outside 0..{len(names) - 1}; re-download it")
    return dict(
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        class_names=names,
        raw_md5=raw_md5,
    )


def download(spec: DatasetSpec, dest: str | Path, timeout: float = 60.0) -> Path:
    """Fetch spec's archive (official by default) to `dest` (a file path, or a folder to put
    cifar-100-python.tar.gz in), md5-checked before it appears at its final path."""
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / ARCHIVE_NAME
    return fetch(spec.effective_url, dest, spec.effective_md5, timeout)
