"""prepare-data: generate / verify / convert one dataset into data/<dataset>/."""

from __future__ import annotations

import sys
from pathlib import Path

from tas import settings
from tas.config import Config
from tas.data.prepare import prepare_dataset
from tas.data.spec import folder_cache
from tas.errors import TasError
from tas.settings import Reader


def prepare_data(cfg: Config, dataset_id: str, download: bool = False) -> Path:
    if dataset_id not in cfg.datasets:
        raise TasError(f"unknown dataset {dataset_id!r}; choose one of: {', '.join(cfg.datasets)}")
    spec = settings.prepare_data(Reader(cfg), dataset_id)
    out = prepare_dataset(spec, cfg.data_root, download=download)
    if spec.is_folder:  # cached or streamed, and why (tas.data.caching): one line on stderr
        print(folder_cache(spec, cfg.data_root).reason, file=sys.stderr)
    return out
