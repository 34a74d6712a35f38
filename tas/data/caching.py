"""Whether an image folder is decoded once into arrays (cached) or streamed, and at which size: the one
rule that planning (tas.matrix, through spec.prepare_writes_arrays), prepare-data and the loaders call, so
a plan and its jobs never disagree.

    cache: false                      streamed
    cache: true                       cached, at `image_size`, else at the images' own size (below)
    cache unset / auto (the default)  cached when the decoded arrays fit the budget, else streamed:
        n_images x size x size x 3 bytes <= cache_budget_gb (default DEFAULT_BUDGET_GB) x 10^9

`size` is `image_size` when the dataset sets it (each image's shorter side resized to it, centre crop:
the override). Unset, it is the images' own size when the sampled images are all square and of one
size S: stored at S, every pixel as decoded, nothing resampled. Images that differ in size, or are not
square, are streamed as they are unless `image_size` says the size to decode them at (with `cache:
true` and no image_size, such a folder stops with one line saying so). An image the sample missed that
has another size is resized to S as `image_size: S` would resize it.

The sample: the first HEADER_PER_CLASS images (sorted names) of up to HEADER_CLASSES class folders
spread over the sorted classes, in train/ and in the eval folder; only their headers are read (JPEG and
PNG by the few bytes below, other formats by PIL, which reads headers without decoding). n_images is
counted (train/ then val/, capped by train_size/test_size; one directory listing and one regular
expression per folder) only until it passes what the budget holds, so a 1.28M-image ImageNet of mixed
sizes is decided from the sample alone (16 class folders listed) and a folder of tiny images after at
most budget / (3 S^2) names (benchmarks/folder_cache_planning.py). A root that does not exist yet
(nothing downloaded) plans as before sizes were read: cached when `image_size` <= LEGACY_MAX_SIZE or
`cache: true`. A folder that changes after prepare-data (images added) may change the decision: the
fingerprint records it, so the loaders then ask for prepare-data again.

Standard library only (no numpy, torch or PIL unless a header is not JPEG/PNG): planning calls it.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from tas.errors import TasError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
TRAIN_DIR = "train"
EVAL_DIRS = ("val", "test")
# Default memory budget of a cached folder's arrays, in GB (10^9 bytes): see docs/usage.md#data.
DEFAULT_BUDGET_GB = 2.0
HEADER_CLASSES = 8
HEADER_PER_CLASS = 2
# A root that is not there yet: cached when image_size is at most this (the rule before sizes were read).
LEGACY_MAX_SIZE = 64


@dataclass(frozen=True)
class CachePlan:
    """cached: prepare-data writes arrays; size: their side in pixels (None when streamed); reason: one line."""

    cached: bool
    size: int | None
    reason: str


def budget_bytes(spec) -> int:
    gb = DEFAULT_BUDGET_GB if spec.cache_budget_gb is None else float(spec.cache_budget_gb)
    return int(round(gb * 1e9))


def _is_image(name: str) -> bool:
    dot = name.rfind(".")
    return dot > 0 and name[dot:].lower() in IMAGE_EXTENSIONS


# A line of "\n".join(names) that is an image file name (as _is_image): counted in C, not name by name.
_IMAGE_LINE = re.compile(r"^.+\.(?:" + "|".join(e[1:] for e in IMAGE_EXTENSIONS) + ")$", re.IGNORECASE | re.MULTILINE)


def _class_names(split_dir: Path) -> list[str]:
    with os.scandir(split_dir) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def _subdirs(folder: str, names: list[str]) -> list[str]:
    """The folders among `names` (those without an image suffix only; symlinks not followed, as pathlib's rglob)."""
    paths = (os.path.join(folder, n) for n in names if not _is_image(n))
    return [p for p in paths if os.path.isdir(p) and not os.path.islink(p)]


def _images(folder: str, limit: int) -> list[str]:
    """The first `limit` image files under `folder`: sorted names, a folder's files before its subfolders."""
    out: list[str] = []
    todo = [folder]
    while todo and len(out) < limit:
        here = todo.pop()
        try:
            names = sorted(os.listdir(here))
        except OSError:
            continue
        for name in names:
            if _is_image(name) and os.path.isfile(path := os.path.join(here, name)):
                out.append(path)
                if len(out) == limit:
                    return out
        todo += reversed(_subdirs(here, names))
    return out


def _count(split_dir: Path, classes: list[str], stop_above: int) -> int:
    """Image files of `classes` under split_dir (names with an image suffix), counted until the count passes
    `stop_above`: a directory listing and one regular expression per folder."""
    n = 0
    for name in classes:
        todo = [os.path.join(split_dir, name)]
        while todo:
            here = todo.pop()
            try:
                names = os.listdir(here)
            except OSError:
                continue
            found = len(_IMAGE_LINE.findall("\n".join(names)))
            n += found
            if found < len(names):
                todo += _subdirs(here, names)
            if n > stop_above:
                return n
    return n


def _jpeg_size(f) -> tuple[int, int] | None:
    """(w, h) from a JPEG's SOF segment, reading only the segments before it."""
    if f.read(2) != b"\xff\xd8":
        return None
    while True:
        byte = f.read(1)
        while byte and byte != b"\xff":  # garbage between segments
            byte = f.read(1)
        while byte == b"\xff":  # fill bytes
            byte = f.read(1)
        if not byte:
            return None
        marker = byte[0]
        if marker in (0x01, *range(0xD0, 0xDA)):  # TEM, RSTn, SOI, EOI, SOS: no length of their own
            if marker in (0xD9, 0xDA):
                return None
            continue
        head = f.read(2)
        if len(head) < 2:
            return None
        length = struct.unpack(">H", head)[0]
        if length < 2:
            return None
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            sof = f.read(5)
            if len(sof) < 5:
                return None
            h, w = struct.unpack(">HH", sof[1:5])
            return (w, h) if w and h else None
        f.seek(length - 2, 1)


def image_size(path: str) -> tuple[int, int] | None:
    """(w, h) from the file's header (nothing decoded); None when it cannot be read (prepare-data's decode
    check names such a file)."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
            if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
                w, h = struct.unpack(">II", head[16:24])
                return (w, h) if w and h else None
            if head[:2] == b"\xff\xd8":
                f.seek(0)
                return _jpeg_size(f)
        from PIL import Image  # other formats: PIL reads their header only

        with Image.open(path) as img:
            return img.size
    except Exception:  # unreadable or not an image: not part of the sample
        return None


def sample_sizes(root: Path, classes: list[str], eval_dir: Path) -> list[tuple[int, int]]:
    """Header sizes of the sample (see the module docstring), in a fixed order."""
    step = max(1, len(classes) // HEADER_CLASSES)
    picked = classes[::step][:HEADER_CLASSES]
    sizes = []
    for split_dir in (root / TRAIN_DIR, eval_dir):
        for name in picked:
            for path in _images(os.path.join(split_dir, name), HEADER_PER_CLASS):
                size = image_size(path)
                if size is not None:
                    sizes.append(size)
    return sizes


def _describe_sizes(sizes: list[tuple[int, int]]) -> str:
    seen = sorted(set(sizes), key=sizes.index)
    return ", ".join(f"{w}x{h}" for w, h in seen[:4]) + (" ..." if len(seen) > 4 else "")


_MEMO: dict = {}
MEMO_SIZE = 64


def _stamp(root: str) -> tuple:
    """What a plan of `root` is remembered by: the (mtime, inode) of root, train/ and the eval folders."""
    out = []
    for path in (root, *(os.path.join(root, d) for d in (TRAIN_DIR, *EVAL_DIRS))):
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
            if path == root:
                break  # not there: nothing under it either
            continue
        out.append((st.st_mtime_ns, st.st_ino))
    return tuple(out)


def plan(spec, root: str | Path) -> CachePlan:
    """The decision for dataset `spec` (a DatasetSpec of a folder source) whose files are under `root`.
    Remembered per (spec, root) while root, train/ and the eval folder are unchanged: a planning process
    asks for every dataset several times and reads each folder once (a few stat calls per question)."""
    base = os.path.abspath(root)
    key = (spec, base, _stamp(base))
    found = _MEMO.get(key)
    if found is None:
        if len(_MEMO) >= MEMO_SIZE:
            _MEMO.clear()
        found = _MEMO[key] = _decide(spec, Path(base))
    return found


def _decide(spec, root: Path) -> CachePlan:
    where = f"dataset {spec.id!r}"
    eval_dir = next((root / d for d in EVAL_DIRS if (root / d).is_dir()), None)
    if spec.cache is False:
        return CachePlan(False, None, f"{where}: streamed (cache: false)")
    train_dir = root / TRAIN_DIR
    if not train_dir.is_dir() or eval_dir is None:  # not there yet: the rule that needs no files
        size = spec.image_size
        if spec.cache:
            return CachePlan(True, size, f"{where}: cached (cache: true; {root} not there yet)")
        if size is not None and int(size) <= LEGACY_MAX_SIZE:
            return CachePlan(True, int(size), f"{where}: cached at image_size {size} <= {LEGACY_MAX_SIZE} "
                                              f"({root} not there yet)")
        return CachePlan(False, None, f"{where}: streamed ({root} not there yet, image_size "
                                      f"{'unset' if size is None else f'{size} > {LEGACY_MAX_SIZE}'})")
    classes = _class_names(train_dir)
    size = spec.image_size
    if size is None:
        sizes = sample_sizes(root, classes, eval_dir)
        one_square = bool(sizes) and len(set(sizes)) == 1 and sizes[0][0] == sizes[0][1]
        if not one_square:
            what = (f"images of different or non-square sizes ({_describe_sizes(sizes)})" if sizes
                    else "no image header readable in the sample")
            if spec.cache:
                raise TasError(f"{where}: cache: true without image_size, but {root} has {what}; set "
                               "datasets.<id>.image_size to the size to decode every image at, or drop cache")
            return CachePlan(False, None, f"{where}: streamed ({what}; set image_size to cache them resized)")
        size = sizes[0][0]
    size = int(size)
    if spec.cache:
        return CachePlan(True, size, f"{where}: cached at {size} px (cache: true)")
    per_image = 3 * size * size
    budget = budget_bytes(spec)
    fits = budget // per_image
    train_cap = spec.train_size if spec.train_size else fits + 1
    n_train = min(_count(train_dir, classes, min(fits, train_cap)), train_cap)
    n_test = 0
    if n_train <= fits:
        test_cap = spec.test_size if spec.test_size else fits + 1
        n_test = min(_count(eval_dir, classes, min(fits - n_train, test_cap)), test_cap)
    n = n_train + n_test
    gb = f"{budget / 1e9:g} GB"
    if n > fits:
        return CachePlan(False, None, f"{where}: streamed (more than {fits:,} images at {size} px: the arrays "
                                      f"would exceed the cache budget of {gb}; cache_budget_gb raises it)")
    return CachePlan(True, size, f"{where}: cached at {size} px ({n:,} images, {n * per_image / 1e9:.3g} GB "
                                 f"<= the cache budget of {gb})")
