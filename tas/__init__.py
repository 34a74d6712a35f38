"""tas: cross-architecture knowledge distillation with a hybrid assistant, as a reproducible pipeline.

Importing tas imports no torch (planning: `check`, `dvc-yaml`, Snakemake's parse). The torchvision guard
(tas/_torchvision_guard.py) runs just before the first import of torchvision or timm, which imports it.
"""

import importlib.abc
import sys


class _GuardBeforeTorchvision(importlib.abc.MetaPathFinder):
    """Finds nothing itself; on the first import of torchvision or timm it installs the guard once. It stays
    in sys.meta_path (removing itself while Python iterates that list would skip the next finder)."""

    done = False

    def find_spec(self, name, path=None, target=None):
        if not self.done and name in ("torchvision", "timm"):
            type(self).done = True
            from tas._torchvision_guard import install

            install()
        return None


if "torchvision" in sys.modules:  # imported before tas: the guard can only do what it still can
    from tas._torchvision_guard import install as _install

    _install()
else:
    sys.meta_path.insert(0, _GuardBeforeTorchvision())

__version__ = "0.1.0"
