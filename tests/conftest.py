"""Shared pytest fixtures."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: as fast for tiny batches and far steadier when the cores are shared
    (pytest-xdist workers, other jobs); restored for the modules that follow."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    """Files with end-to-end (`slow`) tests run first. `--dist loadfile` hands files to the workers in
    this order, so the long ones start early instead of keeping one worker busy alone at the end."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: the order within each group stays
