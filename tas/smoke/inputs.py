"""The self-made inputs of a smoke study: which ones the selected experiments need, made once, and where
the smoke params point to them.

Each input has a key that names what it is made from (a digest of its generator settings and VERSION), so
a changed model or class count is a new file, never a stale one. What was made is recorded in
`<smoke data>/smoke-inputs/manifest.json` with its checksum (md5 of the CIFAR archive, sha256 of a teacher
file): the smoke params pin those, so every job depends on the content of its inputs exactly as a real job
depends on a pinned download.

Why the inputs are made here, while the params are loaded: their checksums are param values (`md5`,
`sha256`), which Snakemake's parse, DVC and every job must agree on, so the files have to exist before the
first of them reads the params; and every entry point (snakemake, dvc, `python -m tas`) loads the params,
so no separate step can be forgotten. Only the first load of a checkout makes anything (about a minute:
it builds the real teacher architectures to save their weights); later loads read the manifest and stat
the files. An exclusive lock makes concurrent first loads (parallel jobs) make each file once.

Light on purpose: standard library only. The generator (tas.smoke.make, torch/timm/numpy/PIL) is imported
by name only when something is missing, so the code of a pipeline job does not include it (tas.codedeps
follows import statements): a job depends on the generated files through their pinned checksums and keyed
paths instead.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlsplit

from tas.paths import is_url

# Bump when tas.smoke.make makes an input differently: every key changes, so every input is made again.
VERSION = 1
FOLDER = "smoke-inputs"
MANIFEST = "manifest.json"
CIFAR_SOURCES = ("cifar100",)
# A self-made image folder has the dataset's class count, else its source's, else ImageNet's: the teachers
# used as given with timm's ImageNet weights keep their 1000-class heads only on 1000 classes.
DEFAULT_FOLDER_CLASSES = 1000
# Images per class of the self-made sets: enough for any smoke subset (tas.smoke sizes x gpus_per_job).
CIFAR_TRAIN_PER_CLASS, CIFAR_TEST_PER_CLASS = 5, 1
FOLDER_VAL_CLASSES = 100


def _digest(*parts) -> str:
    blob = json.dumps([VERSION, *parts], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def inputs_dir(data_root: str) -> Path:
    return Path(data_root) / FOLDER


# ------------------------------------------------------------------------------------------ needs


def _dataset_of(raw: dict, experiment: dict) -> tuple[str, dict]:
    dataset_id = raw["protocols"][experiment["protocol"]]["dataset"]
    return dataset_id, raw["datasets"][dataset_id]


def _declaration(source: str):
    import tas.data.sources as sources  # the source's constants (no numpy); tas.config has imported it already

    return sources.declaration(source)


def folder_classes(dataset: dict) -> int:
    return int(dataset.get("num_classes") or _declaration(dataset["source"]).num_classes or DEFAULT_FOLDER_CLASSES)


def _classes(dataset: dict) -> int:
    declared = _declaration(dataset["source"])
    if declared.folder:
        return folder_classes(dataset)
    return int(dataset.get("num_classes") or declared.num_classes)


def dataset_need(dataset_id: str, dataset: dict) -> dict | None:
    """The self-made raw input of a dataset (None: its source needs none, e.g. synthetic)."""
    source = dataset["source"]
    if source in CIFAR_SOURCES:
        key = (f"datasets/{dataset_id}/{_digest('cifar100', CIFAR_TRAIN_PER_CLASS, CIFAR_TEST_PER_CLASS)}/"
               "cifar-100-python.tar.gz")
        return {"key": key, "kind": "cifar100", "dataset": dataset_id, "train_per_class": CIFAR_TRAIN_PER_CLASS,
                "test_per_class": CIFAR_TEST_PER_CLASS}
    if _declaration(source).folder:
        classes = folder_classes(dataset)
        key = f"datasets/{dataset_id}/{_digest('folder', classes, FOLDER_VAL_CLASSES)}"
        return {"key": key, "kind": "folder", "dataset": dataset_id, "classes": classes,
                "val_classes": min(classes, FOLDER_VAL_CLASSES)}
    return None


def _file_name(location: str) -> str:
    path = urlsplit(location).path if is_url(location) else location
    return Path(unquote(path)).name or "teacher.pth"


def teacher_needs(raw: dict, experiment: dict) -> dict[str, dict]:
    """teacher id -> the weights file it starts from: its `checkpoint:` in the layout of OFA's release
    (timm 0.6.5 key names, timm's train.py dict), or timm-format weights for `pretrained: true`."""
    _, dataset = _dataset_of(raw, experiment)
    classes = _classes(dataset)
    out = {}
    for teacher_id, teacher in experiment["teachers"].items():
        model = raw["models"][teacher_id]
        arch = {"timm": model["timm"], "kwargs": model.get("kwargs", {})}
        if teacher.get("checkpoint"):
            name = _file_name(teacher["checkpoint"])
            key = f"teachers/{teacher_id}/{_digest('release', arch, classes, name)}/{name}"
            out[teacher_id] = {"key": key, "kind": "release", **arch, "num_classes": classes}
        elif teacher.get("pretrained"):
            key = f"pretrained/{teacher_id}/{_digest('pretrained', arch)}/{model['timm']}.pth"
            out[teacher_id] = {"key": key, "kind": "pretrained", **arch}
    return out


def needs(raw: dict, experiments: list[str]) -> dict[str, dict]:
    """key -> generator settings of every input the experiments need."""
    out: dict[str, dict] = {}
    for experiment_id in experiments:
        experiment = raw["experiments"][experiment_id]
        need = dataset_need(*_dataset_of(raw, experiment))
        if need is not None:
            out[need["key"]] = need
        for need in teacher_needs(raw, experiment).values():
            out[need["key"]] = need
    return out


# ------------------------------------------------------------------------------------------ making


def read_manifest(data_root: str) -> dict:
    try:
        manifest = json.loads((inputs_dir(data_root) / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _present(manifest: dict, key: str, data_root: str) -> bool:
    entry = manifest.get(key)
    return isinstance(entry, dict) and (inputs_dir(data_root) / key).exists()


def _raw_fetched(manifest: dict, need: dict, data_root: str) -> bool:
    """A CIFAR archive is also "downloaded" into the dataset's raw folder, where prepare-data looks."""
    if need["kind"] != "cifar100":
        return True
    entry = manifest.get(need["key"], {})
    fetched = manifest.get(f"raw/{need['dataset']}", {})
    raw_file = Path(data_root) / need["dataset"] / "raw" / "cifar-100-python.tar.gz"
    return fetched.get("md5") == entry.get("md5") and raw_file.is_file()


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def ensure(raw: dict, experiments: list[str], data_root: str) -> dict:
    """The manifest, after making whatever the experiments need that is missing (under a lock)."""
    wanted = needs(raw, experiments)
    manifest = read_manifest(data_root)
    if all(_present(manifest, k, data_root) and _raw_fetched(manifest, n, data_root) for k, n in wanted.items()):
        return manifest
    folder = inputs_dir(data_root)
    with _locked(folder):
        manifest = read_manifest(data_root)  # another process may have made them while we waited
        missing = {k: n for k, n in wanted.items() if not _present(manifest, k, data_root)}
        unfetched = [n for n in wanted.values() if not _raw_fetched(manifest, n, data_root)]
        if missing or unfetched:
            # Imported by name: the generator is not code of the pipeline's jobs (see the module docstring).
            make = importlib.import_module("tas.smoke.make")
            for key, need in missing.items():
                print(f"smoke: making {folder / key}", file=sys.stderr, flush=True)
                manifest[key] = make.make(need, folder / key)
                _write_manifest(folder, manifest)
            for need in unfetched:
                entry = manifest[need["key"]]
                make.fetch_cifar(need["dataset"], entry["url"], entry["md5"], data_root)
                manifest[f"raw/{need['dataset']}"] = {"md5": entry["md5"]}
                _write_manifest(folder, manifest)
    return manifest


def _write_manifest(folder: Path, manifest: dict) -> None:
    tmp = folder / f".{MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, folder / MANIFEST)


# ------------------------------------------------------------------------------------------ relocating


def relocate(raw: dict, manifest: dict, data_root: str) -> None:
    """Point every dataset and teacher whose self-made input exists at it, with its checksum, the way a
    user gives the real one: a dataset's `url` + `md5` (CIFAR) or `root` (folders); a teacher's checkpoint
    as a file:// URL (for a URL) or a path (for a path) + `sha256`; `pretrained_file` for timm's weights.
    Inputs of experiments that are not selected are left alone until a run selects them."""
    folder = inputs_dir(data_root)
    for dataset_id, dataset in raw["datasets"].items():
        need = dataset_need(dataset_id, dataset)
        entry = manifest.get(need["key"]) if need else None
        if not entry:
            continue
        dataset.pop("root", None)
        if need["kind"] == "cifar100":
            dataset["url"], dataset["md5"] = entry["url"], entry["md5"]
        else:
            dataset["root"] = (folder / need["key"]).as_posix()
    for experiment in raw["experiments"].values():
        for teacher_id, need in teacher_needs(raw, experiment).items():
            entry = manifest.get(need["key"])
            if not entry:
                continue
            teacher = experiment["teachers"][teacher_id]
            path = folder / need["key"]
            if need["kind"] == "release":
                teacher["checkpoint"] = path.resolve().as_uri() if is_url(teacher["checkpoint"]) else path.as_posix()
                teacher["sha256"] = entry["sha256"]
            else:
                teacher["pretrained_file"] = path.as_posix()


__all__ = ["ensure", "relocate", "needs", "read_manifest", "inputs_dir", "VERSION"]
