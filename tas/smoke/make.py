"""Makes the self-made inputs of a smoke study (tas.smoke.inputs decides which and when).

Each maker writes its file(s) atomically and returns the manifest entry: what the smoke params pin.

- `cifar100`: an archive in the official CIFAR-100 python format (`cifar-100-python/{train,test,meta}`,
  protocol-2 pickles with byte keys, uint8 rows of 1024 R, G, B values), deterministic bytes, and its md5;
- `folder`: an image folder `train/<class>/*.JPEG`, `val/<class>/*.JPEG` of JPEGs of a few sizes, both
  smaller and larger than the 224-px input (the upsampling and the reduced-decode paths);
- `release`: a teacher checkpoint as OFA released its CIFAR-100 teachers: timm's train.py CheckpointSaver dict
  (`state_dict`, `epoch`, `arch`, `version`, `metric`, `args` Namespace) holding timm 0.6.5 key names (Swin:
  patch merging at the end of the previous stage, a bare `head` Linear, the relative-position index and
  attention-mask buffers saved), and its sha256;
- `pretrained`: a timm state dict (timm's own hub format) of the model with its pretrained class count.

Weights are the architecture's own initialisation (seeded): the numbers a smoke study reports are
meaningless, the files' layout is the real one.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import pickle
import re
import tarfile
from pathlib import Path

from tas.io import atomic_path, file_digest

SEED = 0
# JPEG sizes (w, h) of the self-made folder: below and above the 224-px model input.
FOLDER_SIZES = ((96, 72), (160, 120), (320, 256))


def make(need: dict, path: Path) -> dict:
    makers = {"cifar100": cifar_archive, "folder": image_folder, "release": release_teacher,
              "pretrained": pretrained_weights}
    return makers[need["kind"]](need, Path(path))


# --------------------------------------------------------------------------------------------- CIFAR


def _cifar_split(rng, classes: int, per_class: int, split: str) -> tuple[dict, "object"]:
    import numpy as np

    labels = np.repeat(np.arange(classes), per_class)
    rng.shuffle(labels)
    # A per-class colour plus noise: learnable in principle, and every pixel value in use.
    colours = np.random.default_rng([SEED, 1]).integers(0, 256, size=(classes, 3))
    noise = rng.integers(-60, 61, size=(len(labels), 3, 1024))
    data = np.clip(colours[labels][:, :, None] + noise, 0, 255).astype(np.uint8).reshape(len(labels), 3072)
    return {
        b"filenames": [f"smoke_{split}_{i:05d}.png".encode() for i in range(len(labels))],
        b"batch_label": f"{split} batch (tas smoke)".encode(),
        b"fine_labels": labels.tolist(),
        b"coarse_labels": (labels // 5).tolist(),
        b"data": data,
    }, labels


def cifar_archive(need: dict, path: Path) -> dict:
    import numpy as np

    rng = np.random.default_rng(SEED)
    classes = 100
    members = {
        "train": _cifar_split(rng, classes, need["train_per_class"], "training")[0],
        "test": _cifar_split(rng, classes, need["test_per_class"], "testing")[0],
        "meta": {b"fine_label_names": [f"class_{i:03d}".encode() for i in range(classes)],
                 b"coarse_label_names": [f"superclass_{i:02d}".encode() for i in range(classes // 5)]},
    }
    buffer = io.BytesIO()
    # Fixed mtimes and owners: the same settings give the same bytes, hence the same md5.
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for name, obj in members.items():
            blob = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size, info.mtime, info.mode = len(blob), 0, 0o644
            tar.addfile(info, io.BytesIO(blob))
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    md5 = hashlib.md5(buffer.getvalue()).hexdigest()
    return {"url": path.resolve().as_uri(), "md5": md5}


def fetch_cifar(dataset_id: str, url: str, md5: str, data_root: str) -> Path:
    """Into <data>/<id>/raw/ with the download code `prepare-data --download` runs (urllib, md5-checked)."""
    from tas.data import cifar
    from tas.data.spec import DatasetSpec

    spec = DatasetSpec(id=dataset_id, source="cifar100", url=url, md5=md5)
    target = cifar.raw_dir(data_root, spec) / cifar.ARCHIVE_NAME
    target.unlink(missing_ok=True)  # an archive of an earlier smoke version
    return cifar.download(spec, target)


# --------------------------------------------------------------------------------------------- folder


def image_folder(need: dict, path: Path) -> dict:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(SEED)
    classes = need["classes"]
    names = [f"n{i:08d}" for i in range(classes)]  # ImageNet's wnid spelling
    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    for split, count in (("train", classes), ("val", need["val_classes"])):
        for index, name in enumerate(names[:count]):
            w, h = FOLDER_SIZES[index % len(FOLDER_SIZES)]
            ramp = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
            colour = rng.integers(0, 256, size=(1, 1, 3))
            pixels = np.clip(0.5 * ramp + 0.5 * colour + rng.normal(0, 12, size=(h, w, 3)), 0, 255).astype(np.uint8)
            folder = tmp / split / name
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(folder / f"{name}_{split}_{index:05d}.JPEG", quality=90)
    if path.exists():  # made before, but the manifest that records it was lost: the rebuilt copy wins
        shutil.rmtree(path)
    tmp.rename(path)
    return {"classes": classes}


# --------------------------------------------------------------------------------------------- teachers


def _model(need: dict, num_classes: int | None):
    import tas  # noqa: F401  (the torchvision guard, before timm)
    import timm
    import torch

    import tas.models  # noqa: F401  (registers our timm entry points)

    torch.manual_seed(SEED)
    kwargs = dict(need.get("kwargs") or {})
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    return timm.create_model(need["timm"], pretrained=False, **kwargs)


def _timm065_layout(state: dict, model) -> dict:
    """timm 1.0 key names -> timm 0.6.5's (what OFA's harness saved). Swin changed: a stage's patch merging
    sat at the END of the previous stage, `head` was a bare Linear, and the relative-position index and the
    shifted blocks' attention masks were saved buffers. ViT, Mixer and ConvNeXt kept their names."""
    from timm.models.swin_transformer import SwinTransformer

    if not isinstance(model, SwinTransformer):
        return dict(state)
    old = {}
    for key, value in state.items():
        key = re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", key)
        old[key.replace("head.fc.", "head.")] = value
    for name, module in model.named_modules():
        if getattr(module, "relative_position_index", None) is not None:
            old[f"{name}.relative_position_index"] = module.relative_position_index.clone()
        if getattr(module, "attn_mask", None) is not None:
            old[f"{name}.attn_mask"] = module.attn_mask.clone()
    return old


def _save(obj, path: Path) -> str:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return file_digest(path, "sha256")


def release_teacher(need: dict, path: Path) -> dict:
    model = _model(need, need["num_classes"])
    arch = need["timm"].split(".")[0]
    state = {k: v.detach().clone().contiguous() for k, v in _timm065_layout(model.state_dict(), model).items()}
    saved = {"epoch": 299, "arch": arch, "state_dict": state, "version": 2, "metric": 0.0,
             "args": argparse.Namespace(model=arch, num_classes=need["num_classes"], dataset="cifar100", smoke=True)}
    return {"sha256": _save(saved, path)}


def pretrained_weights(need: dict, path: Path) -> dict:
    model = _model(need, None)  # the pretrained configuration's own head (1000 ImageNet classes)
    return {"sha256": _save({k: v.detach().contiguous() for k, v in model.state_dict().items()}, path)}


__all__ = ["make", "fetch_cifar", "cifar_archive", "image_folder", "release_teacher", "pretrained_weights"]
