"""ImageFolder datasets: root/{train,val}/<class>/<image>, decoded with PIL at load time.

Class index = position of the folder name in the sorted list of train class folders (as
torchvision's ImageFolder does). The prepared form is only an index (relative path, label) kept in
meta.json; the images stay where they are.
"""

from __future__ import annotations

from pathlib import Path

from tas.data.spec import DatasetSpec
from tas.errors import TasError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
TRAIN_DIR = "train"
EVAL_DIRS = ("val", "test")


def resolve_root(spec: DatasetSpec, data_root: str | Path) -> Path:
    """spec.root (relative paths are taken from the working directory) or <data_root>/<id>/raw."""
    from tas.paths import dataset_dir

    return Path(spec.root) if spec.root else dataset_dir(data_root, spec.id) / "raw"


def _layout_hint(root: Path) -> str:
    return f"expected {root}/train/<class>/<image> and {root}/val/<class>/<image>"


def scan(root: Path, spec: DatasetSpec) -> dict:
    """Index the folder tree: {class_names, train: [[rel, label]], test: [[rel, label]], eval_dir}."""
    root = Path(root)
    where = f"set datasets.{spec.id}.root in params.yaml to the folder"
    if not root.is_dir():
        raise TasError(f"imagefolder dataset {spec.id!r}: {root} does not exist; {_layout_hint(root)} ({where})")
    train_dir = root / TRAIN_DIR
    eval_dir = next((root / d for d in EVAL_DIRS if (root / d).is_dir()), None)
    if not train_dir.is_dir() or eval_dir is None:
        raise TasError(f"imagefolder dataset {spec.id!r}: {root} lacks train/ or val/; {_layout_hint(root)}")
    class_names = sorted(p.name for p in train_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_names) < 2:
        raise TasError(
            f"imagefolder dataset {spec.id!r}: {train_dir} has {len(class_names)} class folders, "
            f"need >= 2; {_layout_hint(root)}"
        )
    if spec.num_classes is not None and spec.num_classes != len(class_names):
        raise TasError(
            f"imagefolder dataset {spec.id!r}: num_classes is {spec.num_classes} but {train_dir} has "
            f"{len(class_names)} class folders; fix num_classes or the folder"
        )
    index = {name: i for i, name in enumerate(class_names)}
    extra = sorted(
        p.name for p in eval_dir.iterdir() if p.is_dir() and p.name not in index and not p.name.startswith(".")
    )
    if extra:
        raise TasError(
            f"imagefolder dataset {spec.id!r}: {eval_dir} has classes missing from train/: {', '.join(extra[:5])}; "
            "both splits must use the same class folder names"
        )
    out = {"class_names": class_names, "eval_dir": eval_dir.name}
    for split, split_dir in (("train", train_dir), ("test", eval_dir)):
        items = []
        for name in class_names:
            cdir = split_dir / name
            if not cdir.is_dir():
                continue
            for f in sorted(cdir.rglob("*")):
                if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file():
                    items.append([f.relative_to(root).as_posix(), index[name]])
        if not items:
            raise TasError(
                f"imagefolder dataset {spec.id!r}: no images ({', '.join(IMAGE_EXTENSIONS)}) under {split_dir}; "
                f"{_layout_hint(root)}"
            )
        out[split] = items
    return out


def open_rgb(path: str | Path):
    """Decode one image to RGB with PIL; a broken file names itself."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise TasError(f"cannot decode image {path} ({exc}); replace or delete it and prepare the data again") from None


class ImageFolderDataset:
    """Map-style dataset over an index: returns (transform(PIL image), label)."""

    def __init__(self, root: Path, files: list[str], labels, transform=None):
        self.root = Path(root)
        self.files = list(files)
        self.labels = [int(v) for v in labels]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        img = open_rgb(self.root / self.files[i])
        if self.transform is not None:
            img = self.transform(img)
        return img, self.labels[i]
