"""Imagenette (fast.ai's 10-class ImageNet subset), 160-px release: download, verify, extract.

`prepare-data --dataset <id> --download` fetches `url` (default the official imagenette2-160.tgz,
md5 as torchvision lists it) into <data_root>/<id>/raw/, checks its md5, and extracts it there
(tar members filtered: no absolute paths, links out of the folder or devices) into a temporary
folder renamed into place once complete. `root:` points at an already extracted copy instead
(root/{train,val}/<wnid>/*.JPEG); nothing is downloaded then. After that the folder is an
ordinary image folder (tas.data.imagefolder): indexed, or decoded once into arrays when small.
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from tas.data.download import check_md5, fetch, md5_file
from tas.data.spec import DatasetSpec
from tas.errors import TasError

def _raw_dir(spec: DatasetSpec, data_root: str | Path) -> Path:
    from tas.paths import dataset_dir

    return dataset_dir(data_root, spec.id) / "raw"


def archive_name(spec: DatasetSpec) -> str:
    name = Path(urlparse(spec.effective_url).path).name
    return name or "imagenette.tgz"


def _folder_name(spec: DatasetSpec) -> str:
    name = archive_name(spec)
    for suffix in (".tar.gz", ".tgz", ".tar"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name + ".d"


def resolve_root(spec: DatasetSpec, data_root: str | Path) -> Path:
    """spec.root, or where the archive extracts to: <data_root>/<id>/raw/<archive name without .tgz>."""
    return Path(spec.root) if spec.root else _raw_dir(spec, data_root) / _folder_name(spec)


def _cmd(spec: DatasetSpec) -> str:
    return f"python -m tas prepare-data --dataset {spec.id} --download"


def ensure_root(spec: DatasetSpec, data_root: str | Path, download: bool = False) -> Path:
    """The extracted folder: as it is when present, else extracted from the (downloaded) archive."""
    root = resolve_root(spec, data_root)
    if (root / "train").is_dir():
        return root
    if spec.root:
        raise TasError(
            f"imagenette root {root} of dataset {spec.id!r} has no train/ folder; point datasets.{spec.id}.root "
            f"at the extracted imagenette2-160 folder (train/ and val/ inside), or drop root and run `{_cmd(spec)}`"
        )
    archive = _raw_dir(spec, data_root) / archive_name(spec)
    fix = f"delete {archive} and run `{_cmd(spec)}`"
    if archive.is_file():
        check_md5(archive, md5_file(archive), spec.effective_md5, fix)
    elif download:
        fetch(spec.effective_url, archive, spec.effective_md5)
    else:
        raise TasError(
            f"Imagenette for dataset {spec.id!r} not found: expected the extracted folder {root} or the archive "
            f"{archive} (md5 {spec.effective_md5}); run `{_cmd(spec)}`, download {spec.effective_url} there by "
            f"hand, or set datasets.{spec.id}.root to an extracted copy"
        )
    extract(archive, root)
    return root


def extract(archive: Path, root: Path) -> None:
    """Extract `archive` so that its top folder (the one holding train/) becomes `root`, atomically."""
    root.parent.mkdir(parents=True, exist_ok=True)
    fix = f"delete {archive} and download it again"
    with tempfile.TemporaryDirectory(prefix=".extract-", dir=root.parent) as tmp:
        try:
            with tarfile.open(archive, "r:*") as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise TasError(f"cannot extract {archive} ({exc}); {fix}") from None
        tops = [Path(tmp)] if (Path(tmp) / "train").is_dir() else \
            [p for p in Path(tmp).iterdir() if (p / "train").is_dir()]
        if len(tops) != 1:
            raise TasError(f"{archive} does not hold one folder with train/ and val/ "
                           f"as Imagenette's archive does; {fix}")
        if root.exists():
            shutil.rmtree(root)  # left by an earlier run, without train/ (else ensure_root returned)
        tops[0].rename(root)  # same filesystem: the folder appears complete or not at all
