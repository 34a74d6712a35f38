"""Datasets (synthetic, CIFAR-100, ImageFolder, Imagenette), the prepare step, and device-side loaders.

    spec = DatasetSpec("cifar100", "cifar100"); aug = AugmentSpec("rrc", image_size=224)
    prepare_dataset(spec, "data", download=True)              # once: data/cifar100/
    train, test, info = build_loaders(spec, aug, "data", 128, 256, "cuda", seed=0)

Only `tas.data.spec` is imported eagerly (no torch), so config validation stays cheap.
"""

from tas.data.spec import AugmentSpec, DatasetSpec, prepare_writes_arrays

_LAZY = {
    "prepare_dataset": "tas.data.prepare",
    "load_dataset": "tas.data.prepare",
    "LoadedDataset": "tas.data.prepare",
    "InMemoryLoader": "tas.data.loader",
    "FolderLoader": "tas.data.loader",
    "DatasetInfo": "tas.data.loader",
    "BatchTransform": "tas.data.loader",
    "build_loaders": "tas.data.loader",
    "epoch_indices": "tas.data.loader",
}

__all__ = ["AugmentSpec", "DatasetSpec", "prepare_writes_arrays", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tas.data' has no attribute {name!r}")
