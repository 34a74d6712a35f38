"""tas: cross-architecture knowledge distillation with a hybrid assistant, as a reproducible pipeline."""

from tas._torchvision_guard import install as _install_torchvision_guard

_install_torchvision_guard()

__version__ = "0.1.0"
