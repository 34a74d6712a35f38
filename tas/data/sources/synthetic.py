"""Synthetic images (shape x texture x palette, tas.data.synthetic): rendered, nothing to download.

The data is a pure function of the spec: class count, stored size, sizes and seed.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tas.data.spec import DatasetSpec

FOLDER = False
NUM_CLASSES = 20
IMAGE_SIZE = 32
FIXED = ()
# Rendered around mid-grey with a wide spread; fixed values keep the normalisation independent of the
# generated sample (and of its size).
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
ARCHIVE = None

TRAIN_IMAGES = 5000  # images when train_size / test_size are 0
TEST_IMAGES = 1000
# Bump when tas.data.synthetic renders differently, so old prepared data is regenerated.
VERSION = 1


def fingerprint(spec: DatasetSpec, data_root: str | Path) -> dict:
    return {"version": VERSION, "num_classes": spec.num_classes, "image_size": spec.image_size, "seed": spec.seed}


def missing_raw(spec: DatasetSpec, data_root: str | Path) -> str | None:
    return None  # rendered by prepare-data itself


def prepare(spec: DatasetSpec, data_root: str | Path, download: bool = False):
    from tas.data import synthetic
    from tas.data.prepare import ARRAYS

    sized = replace(spec, train_size=spec.train_size or TRAIN_IMAGES, test_size=spec.test_size or TEST_IMAGES)
    return dict(zip(ARRAYS, synthetic.generate(sized))), synthetic.class_names(int(spec.num_classes)), {}
