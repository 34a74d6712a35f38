"""tas: cross-architecture knowledge distillation with a hybrid assistant, as a reproducible pipeline.

Importing tas imports no torch (planning: `check`, `dvc-yaml`, Snakemake's parse). The torchvision guard
(tas/_torchvision_guard.py) runs just before the first import of torchvision or timm, which imports it.
"""

import importlib.abc
import sys


class _GuardBeforeTorchvision(importlib.abc.MetaPathFinder):
    """On the first import of torchvision or timm it installs the guard once; timm and torchvision's
    roi_align then load without torch._dynamo (tas/_deferred_dynamo.py: ~2.5 CPU-s off the start of every
    process that builds a model but trains none). It stays in sys.meta_path (removing itself while Python
    iterates that list would skip the next finder)."""

    done = False

    def find_spec(self, name, path=None, target=None):
        if not self.done and name in ("torchvision", "timm"):
            type(self).done = True
            from tas._torchvision_guard import install

            install()
        if name in ("timm", "torchvision.ops.roi_align"):
            from tas._deferred_dynamo import find_spec

            return find_spec(name, path)
        return None


if "torchvision" in sys.modules:  # imported before tas: the guard can only do what it still can
    from tas._torchvision_guard import install as _install

    _install()
else:
    sys.meta_path.insert(0, _GuardBeforeTorchvision())

__version__ = "0.1.0"
