"""Dataset sources: one module per source in this folder, `<source>.py`; its file name is the source's name.

A source module declares, in upper-case module constants, what planning and config validation need:

    FOLDER = False           # True: an image folder (prepare-data indexes it, or caches it as arrays when they fit)
    NUM_CLASSES = 100        # its class count (None: counted from the data)
    IMAGE_SIZE = 32          # its stored size (None: the folder's files as they are)
    FIXED = ("image_size", "num_classes")   # settings a dataset of this source cannot change
    MEAN, STD = (...), (...) # its usual per-channel statistics (0..1 scale)
    ARCHIVE = (url, md5)     # the archive `--download` fetches (None: nothing to download)

and the functions a job calls: `fingerprint(spec, data_root) -> dict` (every setting that shapes the
prepared bytes, beyond sizes), `missing_raw(spec, data_root) -> str | None` (the raw data is absent: the
error to show before any job runs), and either `prepare(spec, data_root, download) -> (arrays, class
names, extra meta)` (array sources) or, for image folders (whose index and decoding are the same for all:
tas.data.prepare), `root(spec, data_root, download) -> Path` and `cache_plan(spec, data_root)` (cached as
arrays or streamed: tas.data.caching.plan on where the folder is, without downloading anything). Loading
back is the same for every source.

A source module imports nothing heavy at module level (numpy, PIL, torch load inside its functions), so
that config validation and planning, which read these declarations, stay light; jobs import a source by
name (`module()`), so a job's code (tas.codedeps) holds its own source only.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType

from tas.plugins import SOURCES_PACKAGE, import_plugin, plugin_modules
from tas.errors import TasError

_SETTINGS = ("image_size", "num_classes")


@dataclass(frozen=True)
class SourceDeclaration:
    name: str
    folder: bool
    num_classes: int | None
    image_size: int | None
    fixed: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    archive: tuple[str, str] | None


def names() -> tuple[str, ...]:
    """Every source, sorted. The schema has no enum of them (a new source is one file): DatasetSpec checks a
    dataset's `source` against this list (tests/test_plugin_sources_kinds.py: an unknown one stops config in
    one line), and tests/test_codedeps.py checks that the schema's description names each of them."""
    return tuple(plugin_modules(SOURCES_PACKAGE))


def module(name: str) -> ModuleType:
    """The source's module, imported by name (only this one: a job's code holds its own source)."""
    return import_plugin(SOURCES_PACKAGE, name, "dataset source")


@lru_cache(maxsize=None)
def declaration(name: str) -> SourceDeclaration:
    mod = module(name)

    def get(attr, default=...):
        if not hasattr(mod, attr) and default is ...:
            raise TasError(f"dataset source module {mod.__name__} does not declare {attr}; "
                           f"add it (see tas/data/sources/__init__.py)")
        return getattr(mod, attr, default)

    fixed = tuple(get("FIXED", ()))
    unknown = [f for f in fixed if f not in _SETTINGS]
    if unknown:
        raise TasError(f"{mod.__name__}.FIXED names {unknown}; only {', '.join(_SETTINGS)} can be fixed")
    archive = get("ARCHIVE", None)
    return SourceDeclaration(name=name, folder=bool(get("FOLDER")), num_classes=get("NUM_CLASSES"),
                             image_size=get("IMAGE_SIZE"), fixed=fixed, mean=tuple(get("MEAN")),
                             std=tuple(get("STD")), archive=None if archive is None else tuple(archive))


def train_images(spec, data_root) -> int | None:
    """The training images of dataset `spec` (a DatasetSpec): its prepared meta.json's count, else the size
    params.yaml asks for, else what its source declares (`TRAIN_IMAGES`: the full official set); None for
    an image folder not indexed yet. Light: planning (`describe`, the step benchmark's projection) uses it."""
    import json

    from tas.paths import dataset_meta

    meta = dataset_meta(data_root, spec.id)
    if meta.is_file():
        try:
            return int(json.loads(meta.read_text())["n_train"])
        except (ValueError, KeyError, TypeError):
            pass  # a damaged meta.json: prepare-data rewrites it; planning falls back to the declaration
    if spec.train_size:
        return int(spec.train_size)
    return getattr(module(spec.source), "TRAIN_IMAGES", None)


def folder_sources() -> tuple[str, ...]:
    return tuple(n for n in names() if declaration(n).folder)


__all__ = ["SourceDeclaration", "names", "module", "declaration", "folder_sources", "train_images"]
