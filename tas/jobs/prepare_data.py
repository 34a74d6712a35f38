"""prepare-data: generate / verify / convert one dataset into data/<dataset>/."""

from __future__ import annotations

from pathlib import Path

from tas import settings
from tas.config import Config
from tas.data.prepare import prepare_dataset
from tas.errors import TasError
from tas.settings import Reader


def prepare_data(cfg: Config, dataset_id: str, download: bool = False) -> Path:
    if dataset_id not in cfg.datasets:
        raise TasError(f"unknown dataset {dataset_id!r}; choose one of: {', '.join(cfg.datasets)}")
    return prepare_dataset(settings.prepare_data(Reader(cfg), dataset_id), cfg.data_root, download=download)
