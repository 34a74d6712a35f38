"""ImageFolder datasets: root/{train,val}/<class>/<image>: the index, and decoding.

Class index = position of the folder name in the sorted list of train class folders (as
torchvision's ImageFolder does). Prepared either as an index (relative path, label) in meta.json,
the images staying where they are (streamed), or decoded once into arrays (when they fit the cache
budget; see tas.data.caching). JPEGs are decoded by simplejpeg (libjpeg-turbo; PIL for other
formats), at a reduced size when the crop allows; one PIL call then crops and resizes.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

from tas.data.caching import EVAL_DIRS, IMAGE_EXTENSIONS, TRAIN_DIR
from tas.data.spec import DatasetSpec
from tas.errors import TasError
# Bump when decode_stored decodes differently, so cached folders are decoded again.
DECODE_VERSION = 2  # 2: JPEGs through simplejpeg (the same pixels with the pinned versions)


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
        raise TasError(f"{spec.source} dataset {spec.id!r}: {root} does not exist; {_layout_hint(root)} ({where})")
    train_dir = root / TRAIN_DIR
    eval_dir = next((root / d for d in EVAL_DIRS if (root / d).is_dir()), None)
    if not train_dir.is_dir() or eval_dir is None:
        raise TasError(f"{spec.source} dataset {spec.id!r}: {root} lacks train/ or val/; {_layout_hint(root)}")
    class_names = sorted(p.name for p in train_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_names) < 2:
        raise TasError(
            f"{spec.source} dataset {spec.id!r}: {train_dir} has {len(class_names)} class folders, "
            f"need >= 2; {_layout_hint(root)}"
        )
    if spec.num_classes is not None and spec.num_classes != len(class_names):
        raise TasError(
            f"{spec.source} dataset {spec.id!r}: num_classes is {spec.num_classes} but {train_dir} has "
            f"{len(class_names)} class folders; fix num_classes or the folder"
        )
    index = {name: i for i, name in enumerate(class_names)}
    extra = sorted(
        p.name for p in eval_dir.iterdir() if p.is_dir() and p.name not in index and not p.name.startswith(".")
    )
    if extra:
        raise TasError(
            f"{spec.source} dataset {spec.id!r}: {eval_dir} has classes missing from train/: {', '.join(extra[:5])}; "
            "both splits must use the same class folder names"
        )
    out = {"class_names": class_names, "eval_dir": eval_dir.name}
    for split, split_dir in (("train", train_dir), ("test", eval_dir)):
        items = []
        for name in class_names:
            cdir = split_dir / name
            if not cdir.is_dir():
                continue
            before = len(items)
            for f in sorted(cdir.rglob("*")):
                if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file():
                    items.append([f.relative_to(root).as_posix(), index[name]])
            if len(items) == before:  # a class of no images would be a label the model never sees (or a hole in val)
                raise TasError(
                    f"{spec.source} dataset {spec.id!r}: class folder {cdir} has no images "
                    f"({', '.join(IMAGE_EXTENSIONS)}); add its images or remove the folder"
                    + (" (from train/ and val/ alike)" if split == "train" else "")
                )
        if not items:
            raise TasError(
                f"{spec.source} dataset {spec.id!r}: no images ({', '.join(IMAGE_EXTENSIONS)}) under {split_dir}; "
                f"{_layout_hint(root)}"
            )
        out[split] = items
    return out


# The resampling of the deterministic "decode to the stored size" step (cache and streamed eval alike,
# so the two give the same pixels); random crops use the augmentation's interpolation.
STORE_RESAMPLE = "bilinear"


def centre_box(w: int, h: int, out: int, resize_to: int | None = None) -> tuple[float, float, float, float]:
    """(left, top, width, height) in source pixels of "resize the shorter side to `resize_to`
    (default `out`), then centre-crop out x out"."""
    short = min(w, h)
    side = short * out / float(resize_to or out)
    return (w - side) / 2.0, (h - side) / 2.0, side, side


def rrc_box(w: int, h: int, scale, ratio, rng) -> tuple[float, float, float, float]:
    """torchvision's RandomResizedCrop.get_params (10 attempts, then the ratio-clamped centre crop),
    drawn from `rng` (a random.Random) instead of torch's global generator."""
    area = w * h
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return rng.randint(0, w - cw), rng.randint(0, h - ch), cw, ch
    return rrc_fallback(w, h, ratio)


def rrc_fallback(w: int, h: int, ratio) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box when none of its 10 attempts fits (torchvision's get_params): the whole
    image, clamped to the ratio range, centred, as (left, top, width, height). Both samplers end here:
    rrc_box above and the batched tas.data.augment.rrc_params, whose draws come from a torch.Generator
    in another order (so their attempts cannot be one function without changing every run's crops)."""
    in_ratio = w / h
    if in_ratio < ratio[0]:
        cw, ch = w, int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        cw, ch = int(round(h * ratio[1])), h
    else:
        cw, ch = w, h
    return (w - cw) // 2, (h - ch) // 2, cw, ch


def _undecodable(path, exc) -> TasError:
    return TasError(f"cannot decode image {path} ({exc}); replace or delete it and prepare the data again")


# Source pixels kept around a deferred box: PIL's bilinear upsampling reads one pixel outside the box,
# and the device resize must see the same neighbours.
DEFER_MARGIN = 1


def decode_box(path: str | Path, out: int, box_of, resample: str = STORE_RESAMPLE, flip: bool = False):
    """Decode one image and resize the box `box_of(w, h)` of it to out x out: a uint8 (out, out, 3)
    numpy array. JPEGs are decoded by libjpeg-turbo through simplejpeg (less Python around the same
    library as PIL's: the same pixels, in a fraction of the time on small photos), at a reduced size
    (DCT scaling by 1/2, 1/4 or 1/8, as PIL's draft) whenever the box still covers `out` pixels at that
    size: most of the decode and resize cost of a large photo goes away. Other formats, and JPEGs
    simplejpeg refuses (CMYK), go to PIL."""
    return decode_crop(path, out, box_of, resample, flip)[0]


def decode_crop(path: str | Path, out: int, box_of, resample: str = STORE_RESAMPLE, flip: bool = False,
                defer_upsample: bool = False):
    """decode_box, except that with `defer_upsample` a bilinear box smaller than the output (an
    upsampling: no antialiasing, so a batched bilinear resize on the GPU does what PIL does; torch's
    bicubic kernel is not PIL's, so bicubic is always resized here) is not resized here. Returns
    (array, region): region None means the array is the final (out, out, 3) crop; otherwise the array
    holds the box's source pixels at their own size, with DEFER_MARGIN pixels around them
    (edge-replicated past the image, as PIL clamps there), and region = (top, left, height, width)
    of the box in the array, for tas.data.augment.resize_crops to finish on the device."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f:  # one read; decoding from memory spares PIL's many small reads
            data = f.read()
        size = _jpeg_size(data)
        box = box_of(*size) if size is not None else None  # drawn once: box_of may consume a generator
        deferred = box is not None and _deferred(box, out, resample, defer_upsample)
        rgb = _decode_jpeg(data, size, box, out, deferred) if size is not None else None
        if rgb is None:
            with Image.open(io.BytesIO(data)) as img:
                w, h = img.size
                box = box if box is not None else box_of(w, h)
                deferred = _deferred(box, out, resample, defer_upsample)
                if img.format == "JPEG" and not deferred:
                    img.draft("RGB", _needed_size(w, h, box, out))
                rgb = img if img.mode == "RGB" else img.convert("RGB")
                return _crop(rgb, (w, h), box, out, resample, flip, deferred)
        return _crop(rgb, size, box, out, resample, flip, deferred)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise _undecodable(path, exc) from None


def _deferred(box, out: int, resample: str, defer_upsample: bool) -> bool:
    return defer_upsample and resample == "bilinear" and box[2] <= out and box[3] <= out


def _needed_size(w: int, h: int, box, out: int) -> tuple[int, int]:
    """The decoded size at which the box still spans `out` pixels each way."""
    return max(1, math.ceil(w * out / box[2])), max(1, math.ceil(h * out / box[3]))


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(w, h) of a JPEG simplejpeg can decode; None for anything else (PIL's turn)."""
    import simplejpeg

    if data[:3] != b"\xff\xd8\xff":
        return None
    try:
        h, w, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    return (w, h) if colorspace in ("Gray", "YCbCr", "RGB") else None  # CMYK / YCCK: PIL converts those


def _decode_jpeg(data: bytes, size: tuple[int, int], box, out: int, deferred: bool):
    """uint8 (H, W, 3), at the reduction PIL's draft would choose (none when deferred), or None when
    libjpeg reports damage (PIL then decodes it, or names what is wrong)."""
    import simplejpeg

    w, h = size
    scale = 1
    if not deferred:
        need_w, need_h = _needed_size(w, h, box, out)
        limit = min(w // need_w, h // need_h)
        scale = next((s for s in (8, 4, 2) if limit >= s), 1)
    try:
        if scale == 1:
            return simplejpeg.decode_jpeg(data, colorspace="RGB")
        return simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=-(-w // scale), min_height=-(-h // scale),
                                      min_factor=scale)
    except ValueError:
        return None


def _crop(rgb, size: tuple[int, int], box, out: int, resample: str, flip: bool, deferred: bool):
    """The final crop (PIL resize) or, deferred, the box's source pixels; rgb: an (H, W, 3) array or
    a PIL image, possibly decoded at a reduced size."""
    import numpy as np
    from PIL import Image

    if deferred:
        return _source_region(np.asarray(rgb), *box, flip)
    img = rgb if isinstance(rgb, Image.Image) else Image.fromarray(rgb)
    (w, h), (left, top, bw, bh) = size, box
    sx, sy = img.size[0] / w, img.size[1] / h
    filt = Image.Resampling.BICUBIC if resample == "bicubic" else Image.Resampling.BILINEAR
    res = img.resize((out, out), filt, box=(left * sx, top * sy, (left + bw) * sx, (top + bh) * sy))
    if flip:
        res = res.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.array(res, dtype=np.uint8), None  # a writable copy: torch.from_numpy needs one


def _source_region(rgb, left: float, top: float, bw: float, bh: float, flip: bool):
    """The box's pixels with DEFER_MARGIN around them (edge-replicated past the image) and the box
    in them; rgb: an (H, W, 3) array."""
    import numpy as np

    h, w = rgb.shape[:2]
    x0, y0 = math.floor(left) - DEFER_MARGIN, math.floor(top) - DEFER_MARGIN
    x1, y1 = math.ceil(left + bw) + DEFER_MARGIN, math.ceil(top + bh) + DEFER_MARGIN
    span = rgb[max(0, y0):min(h, y1), max(0, x0):min(w, x1)]
    pads = ((max(0, -y0), max(0, y1 - h)), (max(0, -x0), max(0, x1 - w)), (0, 0))
    if any(p for pair in pads[:2] for p in pair):
        span = np.pad(span, pads, mode="edge")
    box_left = left - x0
    if flip:  # mirror the pixels and the box: resizing the mirror = mirroring the resize
        span = span[:, ::-1]
        box_left = span.shape[1] - box_left - bw
    return span, (top - y0, box_left, bh, bw)


def decode_stored(path: str | Path, size: int):
    """The image at its stored size: shorter side resized to `size`, centre crop (prepare's cache; an
    image already size x size comes back with its decoded pixels unchanged)."""
    return decode_box(path, size, lambda w, h: centre_box(w, h, size))


def check_decodes(path: str | Path) -> str | None:
    """None when the image decodes completely (at 1/8 scale for a JPEG: every coefficient is still
    read, so truncation and corrupt data show), else the reason."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.format == "JPEG":
                img.draft("RGB", (1, 1))
            img.load()
        return None
    except Exception as exc:  # any failure to decode is what we report
        return f"{type(exc).__name__}: {exc}"
