"""Synthetic image classification: shape x texture x colour palette, rendered with numpy.

Each class is one (shape, texture, palette) combination. Every image draws its own position,
scale, rotation, aspect, texture frequency/phase, colour jitter, background (base colour +
gradient), clutter (small discs and thin lines in random colours) and pixel noise, so a small CNN
learns it well above chance in a few epochs but not perfectly, and pixel statistics alone (colour)
only get part of the way. Rendering is vectorised over chunks of images (10k+ images/s at 32 px).
The class list is fixed (independent of the data seed); the data is a pure function of the spec.
"""

from __future__ import annotations

import numpy as np

from tas.data.spec import DatasetSpec
from tas.errors import TasError

SHAPES = ("disc", "square", "triangle", "ring", "cross", "frame", "bar", "halfdisc")
TEXTURES = ("solid", "stripes", "checker", "dots")
PALETTES = {
    "red": ((215, 40, 40), (250, 215, 60)),
    "blue": ((40, 60, 215), (90, 215, 230)),
    "green": ((35, 165, 60), (235, 235, 225)),
    "purple": ((175, 45, 190), (25, 25, 30)),
    "orange": ((245, 135, 30), (30, 40, 115)),
}
NUM_COMBINATIONS = len(SHAPES) * len(TEXTURES) * len(PALETTES)

# Fixed class order: a constant-seed permutation of all combinations, so that the first k
# classes mix every attribute (a plain mixed-radix order would give 20 solid-only classes).
_ORDER_SEED = 20241016
_PIXEL_BUDGET = 1 << 20  # pixels per rendering chunk: bounds memory at any image size


def _combinations() -> list[tuple[int, int, int]]:
    combos = [
        (s, t, p)
        for s in range(len(SHAPES))
        for t in range(len(TEXTURES))
        for p in range(len(PALETTES))
    ]
    order = np.random.default_rng(_ORDER_SEED).permutation(len(combos))
    return [combos[i] for i in order]


def class_table(num_classes: int) -> np.ndarray:
    """(num_classes, 3) int array of (shape, texture, palette) indices."""
    if not 2 <= num_classes <= NUM_COMBINATIONS:
        raise TasError(
            f"synthetic data supports 2..{NUM_COMBINATIONS} classes "
            f"({len(SHAPES)} shapes x {len(TEXTURES)} textures x {len(PALETTES)} palettes), "
            f"got num_classes={num_classes}; lower num_classes"
        )
    return np.array(_combinations()[:num_classes], dtype=np.int64)


def class_names(num_classes: int) -> list[str]:
    palettes = list(PALETTES)
    return [f"{palettes[p]}-{SHAPES[s]}-{TEXTURES[t]}" for s, t, p in class_table(num_classes)]


def generate(spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_images, train_labels, test_images, test_labels): uint8 NHWC and int64, spec.train_size and
    spec.test_size of them (the source, tas.data.sources.synthetic, fills in its defaults)."""
    table = class_table(int(spec.num_classes))
    n_train, n_test = int(spec.train_size or 0), int(spec.test_size or 0)
    if n_train < 1 or n_test < 1:
        raise TasError(f"synthetic dataset {spec.id!r}: train_size and test_size must be >= 1, "
                       f"got {n_train} and {n_test}")
    # Separate streams per split so test data does not depend on the train size.
    train = _render_split(table, n_train, spec.image_size, np.random.default_rng([spec.seed, 0]))
    test = _render_split(table, n_test, spec.image_size, np.random.default_rng([spec.seed, 1]))
    return train[0], train[1], test[0], test[1]


def _render_split(table: np.ndarray, n: int, size: int, rng: np.random.Generator):
    num_classes = len(table)
    labels = rng.permutation(np.arange(n, dtype=np.int64) % num_classes)  # balanced to +-1
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    chunk = max(1, _PIXEL_BUDGET // (size * size))
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        images[start:stop] = _render(table[labels[start:stop]], size, rng)
    return images, labels


def _render(attrs: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    n = len(attrs)
    shape_id, texture_id, palette_id = attrs[:, 0], attrs[:, 1], attrs[:, 2]
    f32 = np.float32
    coords = ((np.arange(size, dtype=f32) + 0.5) / size * 2.0 - 1.0).astype(f32)
    yy = coords[None, :, None]
    xx = coords[None, None, :]

    def u(lo, hi, *shape):
        return rng.uniform(lo, hi, size=(n, *shape)).astype(f32)

    # Background: muted base colour + a linear gradient.
    grey = u(60, 190, 1)
    base = np.clip(grey + u(-35, 35, 3), 0, 255)
    gx, gy = u(-40, 40, 1, 1), u(-40, 40, 1, 1)
    img = base[:, None, None, :] + (gx * xx + gy * yy)[..., None]

    # Clutter: two small discs and two thin lines in random colours, behind the object.
    for _ in range(2):
        cx, cy, r = u(-1, 1, 1, 1), u(-1, 1, 1, 1), u(0.06, 0.16, 1, 1)
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        img = np.where(mask[..., None], u(0, 255, 3)[:, None, None, :], img)
    for _ in range(2):
        cx, cy, ang, w = u(-1, 1, 1, 1), u(-1, 1, 1, 1), u(0, np.pi, 1, 1), u(0.03, 0.07, 1, 1)
        dist = np.abs(-(xx - cx) * np.sin(ang) + (yy - cy) * np.cos(ang))
        along = np.abs((xx - cx) * np.cos(ang) + (yy - cy) * np.sin(ang))
        mask = (dist < w) & (along < u(0.3, 0.8, 1, 1))
        img = np.where(mask[..., None], u(0, 255, 3)[:, None, None, :], img)

    # Object frame: position, scale, aspect, rotation (limited so square/bar stay distinct
    # from their rotations and textures keep an orientation).
    cx, cy = u(-0.35, 0.35, 1, 1), u(-0.35, 0.35, 1, 1)
    radius = u(0.42, 0.68, 1, 1)
    aspect = u(0.85, 1.15, 1, 1)
    theta = u(-np.pi / 7, np.pi / 7, 1, 1)
    dx, dy = xx - cx, yy - cy
    cos, sin = np.cos(theta), np.sin(theta)
    lu = (cos * dx + sin * dy) / (radius * aspect)
    lv = (-sin * dx + cos * dy) / (radius / aspect)

    inside = np.zeros((n, size, size), dtype=bool)
    for s, name in enumerate(SHAPES):
        sel = np.nonzero(shape_id == s)[0]
        if len(sel):
            inside[sel] = _shape_mask(name, lu[sel], lv[sel])

    freq = u(2.2, 3.6, 1, 1) * np.float32(np.pi)
    ph1, ph2 = u(0, 2 * np.pi, 1, 1), u(0, 2 * np.pi, 1, 1)
    pattern = np.ones((n, size, size), dtype=bool)
    for t, name in enumerate(TEXTURES):
        sel = np.nonzero(texture_id == t)[0]
        if len(sel) and name != "solid":
            pattern[sel] = _texture(name, lu[sel], lv[sel], freq[sel], ph1[sel], ph2[sel])

    colours = np.array(list(PALETTES.values()), dtype=f32)  # (P, 2, 3)
    col = colours[palette_id] + u(-28, 28, 2, 3)  # per-image colour jitter
    col *= u(0.8, 1.2, 1, 1)  # brightness
    fg = np.where(pattern[..., None], col[:, None, None, 0, :], col[:, None, None, 1, :])
    img = np.where(inside[..., None], fg, img)

    img += rng.standard_normal(img.shape, dtype=f32) * u(3, 14, 1, 1, 1)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _shape_mask(name: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    r2 = x * x + y * y
    ax, ay = np.abs(x), np.abs(y)
    if name == "disc":
        return r2 < 1.0
    if name == "square":
        return np.maximum(ax, ay) < 0.8
    if name == "triangle":
        # equilateral: inside the three half-planes with normals at 90, 210, 330 degrees
        out = y < 0.5
        for ang in (7 * np.pi / 6, 11 * np.pi / 6):
            out &= x * np.cos(ang) + y * np.sin(ang) < 0.5
        return out
    if name == "ring":
        return (r2 < 1.0) & (r2 > 0.55**2)
    if name == "cross":
        return ((ax < 0.28) & (ay < 0.95)) | ((ay < 0.28) & (ax < 0.95))
    if name == "frame":
        m = np.maximum(ax, ay)
        return (m < 0.85) & (m > 0.55)
    if name == "bar":
        return (ax < 1.0) & (ay < 0.38)
    if name == "halfdisc":
        return (r2 < 1.0) & (y > -0.15)
    raise AssertionError(name)


def _texture(name, x, y, freq, ph1, ph2) -> np.ndarray:
    if name == "stripes":
        return np.sin(freq * x + ph1) > 0
    if name == "checker":
        return np.sin(freq * x + ph1) * np.sin(freq * y + ph2) > 0
    if name == "dots":
        return np.cos(freq * x + ph1) * np.cos(freq * y + ph2) > 0.45
    raise AssertionError(name)
