"""Prepare a dataset once into data/<id>/ and load it back, checksum-verified.

In-memory sources (synthetic, cifar100) and image folders cached as arrays (those that fit the cache
budget, see tas.data.caching) become four .npy arrays (uint8 NHWC images, int64 labels) plus
meta.json; a streamed image folder becomes meta.json holding the file index. Every image of a
folder is decoded here (in parallel), so a corrupt file stops prepare-data with the list of bad
files instead of a training job later. meta.json is written last: its presence means the rest is
complete. `meta["spec"]` records every setting that shapes the data, so a changed params.yaml
re-prepares instead of silently reusing stale arrays.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tas.data import imagefolder, sources
from tas.data.spec import DatasetSpec, folder_cache
from tas.errors import TasError
from tas.io import atomic_path, write_json
from tas.paths import dataset_dir, dataset_meta

FORMAT_VERSION = 1
# Images per task of the parallel decode (large enough to amortise the pickling of results).
DECODE_CHUNK = 256
ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")


def _prepare_cmd(spec: DatasetSpec, download: bool = False) -> str:
    return f"python -m tas prepare-data --dataset {spec.id}" + (" --download" if download else "")


def fingerprint(spec: DatasetSpec, data_root: str | Path) -> dict:
    """Everything that changes the prepared bytes (not mean/std, which only the loader uses): the sizes,
    and what the source says shapes its data (its module's `fingerprint`)."""
    fp: dict = {"format": FORMAT_VERSION, "source": spec.source, "train_size": spec.train_size,
                "test_size": spec.test_size}
    fp.update(sources.module(spec.source).fingerprint(spec, data_root))
    return fp


def array_checksum(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over each array's name, dtype, shape and C-order bytes, in ARRAYS order."""
    digest = hashlib.sha256()
    for name in ARRAYS:
        arr = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{arr.dtype.str}:{list(arr.shape)}\n".encode())
        digest.update(memoryview(arr).cast("B"))
    return digest.hexdigest()


def index_checksum(class_names: list[str], train: list, test: list) -> str:
    blob = json.dumps({"class_names": class_names, "train": train, "test": test},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def stratified_subset(labels: np.ndarray, n: int, seed: int, salt: int) -> np.ndarray:
    """Sorted indices of n samples drawn round-robin over classes (balanced to +-1 where the
    classes allow), in a seeded random order; n <= 0 or >= len means all."""
    total = len(labels)
    if n <= 0 or n >= total:
        return np.arange(total)
    order = np.random.default_rng([seed, salt]).permutation(total)
    lab = np.asarray(labels)[order]
    sorter = np.argsort(lab, kind="stable")
    sorted_lab = lab[sorter]
    rank = np.empty(total, dtype=np.int64)
    rank[sorter] = np.arange(total) - np.searchsorted(sorted_lab, sorted_lab, side="left")
    return np.sort(order[np.argsort(rank, kind="stable")[:n]])


def _read_meta(path: Path) -> dict | None:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _arrays_intact(out: Path, meta: dict) -> bool:
    """Cheap completeness test: every listed file present with its recorded size."""
    files = meta.get("files")
    if not isinstance(files, dict):
        return False
    for name, info in files.items():
        f = out / name
        if not f.is_file() or f.stat().st_size != info.get("bytes"):
            return False
    return True


def prepare_dataset(spec: DatasetSpec, data_root: str | Path, download: bool = False) -> Path:
    """Write data/<id>/ for `spec`; a no-op when already prepared with the same settings and
    intact (an imagefolder is not rescanned then: delete its meta.json to pick up new files)."""
    out = dataset_dir(data_root, spec.id)
    meta_path = dataset_meta(data_root, spec.id)
    source = sources.module(spec.source)
    fp = fingerprint(spec, data_root)
    meta = _read_meta(meta_path) if meta_path.exists() else None
    if meta is not None and meta.get("spec") == fp and _arrays_intact(out, meta):
        try:
            load_dataset(spec, data_root, verify=True)
            return out
        except TasError:
            pass  # corrupt: fall through and rebuild
    if meta_path.exists():
        meta_path.unlink()  # from here until the end the directory is "not prepared"

    extra: dict = {}
    if spec.is_folder:
        root = source.root(spec, data_root, download)
        # Whether a folder is cached, and at which size, is read from its files (tas.data.caching): again
        # now that the folder is there (it may just have been extracted), and recorded by the fingerprint.
        fp = fingerprint(spec, data_root)
        plan = folder_cache(spec, data_root)
        names, splits = _folder_index(spec, root)
        if not plan.cached:
            _check_folder(root, splits)
            _write_index(spec, data_root, fp, root, names, splits, plan)
            return out
        arrays = _decode_folder(root, splits, plan.size)
        extra["root"] = str(root.resolve())
        extra["cache"] = {"cached": True, "size": plan.size, "reason": plan.reason}
    else:
        arrays, names, extra = source.prepare(spec, data_root, download)

    files = {}
    for name in ARRAYS:
        arr = np.ascontiguousarray(arrays[name])
        fname = f"{name}.npy"
        with atomic_path(out / fname) as tmp:
            with open(tmp, "wb") as fh:  # a file object: np.save(path) would append '.npy'
                np.save(fh, arr)
        files[fname] = {"bytes": (out / fname).stat().st_size, "dtype": arr.dtype.name, "shape": list(arr.shape)}
    meta = {
        "format": FORMAT_VERSION,
        "id": spec.id,
        "source": spec.source,
        "num_classes": len(names),
        "class_names": list(names),
        "n_train": int(len(arrays["train_labels"])),
        "n_test": int(len(arrays["test_labels"])),
        "image_size": int(arrays["train_images"].shape[1]),
        "checksum": array_checksum(arrays),
        "files": files,
        "spec": fp,
        **extra,
    }
    write_json(meta_path, meta)  # last: its presence marks the arrays complete
    return out


def _folder_index(spec: DatasetSpec, root: Path) -> tuple[list[str], dict]:
    """(class names, {split: [[relative path, label]]}) after the class-stratified subset."""
    index = imagefolder.scan(root, spec)
    splits = {"eval_dir": index["eval_dir"]}
    for split, n, salt in (("train", spec.train_size, 0), ("test", spec.test_size, 1)):
        items = index[split]
        keep = stratified_subset(np.array([lab for _, lab in items]), n, spec.seed, salt)
        splits[split] = [items[i] for i in keep]
    return index["class_names"], splits


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask; the count PyTorch checks workers against)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _map_chunks(fn, chunks: list) -> list:
    """fn over chunks, in parallel over this process's cores when there is more than one chunk."""
    return list(_iter_chunks(fn, chunks))


def _iter_chunks(fn, chunks: list):
    """fn over chunks in order, each result as it comes (parallel as _map_chunks)."""
    workers = min(available_cores(), len(chunks))
    if workers <= 1:
        yield from (fn(c) for c in chunks)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(fn, chunks)


def _check_chunk(paths: list[str]) -> list[tuple[str, str]]:
    return [(p, why) for p in paths if (why := imagefolder.check_decodes(p)) is not None]


def _decode_chunk(task: tuple[list[str], int]) -> tuple[np.ndarray, list[tuple[str, str]]]:
    paths, size = task
    out = np.zeros((len(paths), size, size, 3), dtype=np.uint8)
    bad = []
    for k, path in enumerate(paths):
        try:
            out[k] = imagefolder.decode_stored(path, size)
        except TasError:
            bad.append((path, imagefolder.check_decodes(path) or "cannot be decoded"))
    return out, bad


def _fail_on_bad(root: Path, bad: list[tuple[str, str]], total: int) -> None:
    if not bad:
        return
    shown = "; ".join(f"{Path(p).relative_to(root)} ({why})" for p, why in bad[:10])
    more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
    raise TasError(f"{len(bad)} of {total} images under {root} do not decode: {shown}{more}; "
                   "replace or delete them and run prepare-data again")


def _split_paths(root: Path, splits: dict) -> list[str]:
    return [str(root / rel) for split in ("train", "test") for rel, _ in splits[split]]


def _check_folder(root: Path, splits: dict) -> None:
    paths = _split_paths(root, splits)
    chunks = [paths[i:i + DECODE_CHUNK] for i in range(0, len(paths), DECODE_CHUNK)]
    _fail_on_bad(root, [b for part in _map_chunks(_check_chunk, chunks) for b in part], len(paths))


def _decode_folder(root: Path, splits: dict, size: int) -> dict[str, np.ndarray]:
    """Every image at the stored size (imagefolder.decode_stored), as the ARRAYS."""
    size = int(size)
    paths = _split_paths(root, splits)
    chunks = [(paths[i:i + DECODE_CHUNK], size) for i in range(0, len(paths), DECODE_CHUNK)]
    # Filled chunk by chunk: prepare-data holds the arrays once (the cache budget), not twice.
    images = np.empty((len(paths), size, size, 3), np.uint8)
    bad: list = []
    for k, (part, part_bad) in enumerate(_iter_chunks(_decode_chunk, chunks)):
        images[k * DECODE_CHUNK:k * DECODE_CHUNK + len(part)] = part
        bad += part_bad
    _fail_on_bad(root, bad, len(paths))
    n_train = len(splits["train"])
    return {
        "train_images": images[:n_train], "test_images": images[n_train:],
        "train_labels": np.array([lab for _, lab in splits["train"]], dtype=np.int64),
        "test_labels": np.array([lab for _, lab in splits["test"]], dtype=np.int64),
    }


def _write_index(spec: DatasetSpec, data_root: str | Path, fp: dict, root: Path, names: list[str],
                 splits: dict, plan) -> None:
    meta = {
        "format": FORMAT_VERSION,
        "id": spec.id,
        "source": spec.source,
        "root": str(root.resolve()),
        "eval_dir": splits["eval_dir"],
        "num_classes": len(names),
        "class_names": names,
        "n_train": len(splits["train"]),
        "n_test": len(splits["test"]),
        "image_size": spec.image_size,
        "checksum": index_checksum(names, splits["train"], splits["test"]),
        "files": {},
        "spec": fp,
        "cache": {"cached": False, "size": None, "reason": plan.reason},
        "index": {"train": splits["train"], "test": splits["test"]},
    }
    write_json(dataset_meta(data_root, spec.id), meta)


@dataclass
class LoadedDataset:
    """A prepared dataset. In-memory sources fill the image tensors (uint8 NHWC, memory-mapped
    copy-on-write); imagefolder fills `root` and the file lists instead."""

    spec: DatasetSpec
    num_classes: int
    class_names: list[str]
    checksum: str
    train_labels: "torch.Tensor"  # noqa: F821
    test_labels: "torch.Tensor"  # noqa: F821
    image_size: int
    train_images: "torch.Tensor | None" = None  # noqa: F821
    test_images: "torch.Tensor | None" = None  # noqa: F821
    root: Path | None = None
    train_files: list[str] = field(default_factory=list)
    test_files: list[str] = field(default_factory=list)

    @property
    def in_memory(self) -> bool:
        return self.train_images is not None

    @property
    def n_train(self) -> int:
        return int(len(self.train_labels))

    @property
    def n_test(self) -> int:
        return int(len(self.test_labels))


def load_dataset(spec: DatasetSpec, data_root: str | Path, verify: bool = True) -> LoadedDataset:
    """Open data/<id>/ as prepared by `prepare_dataset`; `verify` re-hashes it against meta.json."""
    import torch

    out = dataset_dir(data_root, spec.id)
    meta_path = dataset_meta(data_root, spec.id)
    redo = f"run `{_prepare_cmd(spec)}`"
    if not meta_path.exists():
        raise TasError(f"dataset {spec.id!r} is not prepared ({meta_path} missing); {redo}")
    meta = _read_meta(meta_path)
    if meta is None or meta.get("source") != spec.source:
        raise TasError(f"{meta_path} is unreadable or for another source; delete it and {redo}")
    fp = fingerprint(spec, data_root)
    if meta.get("spec") != fp:
        old = meta.get("spec") or {}
        changed = sorted(k for k in set(fp) | set(old) if fp.get(k) != old.get(k))
        raise TasError(
            f"dataset {spec.id!r} at {out} was prepared with other settings ({', '.join(changed)} differ); {redo}"
        )
    common = dict(spec=spec, num_classes=int(meta["num_classes"]), class_names=list(meta["class_names"]),
                  checksum=meta["checksum"], image_size=int(meta["image_size"] or 0))

    if spec.is_folder and not folder_cache(spec, data_root).cached:
        index = meta.get("index") or {}
        train, test = index.get("train", []), index.get("test", [])
        if verify and index_checksum(meta["class_names"], train, test) != meta["checksum"]:
            raise TasError(f"the index in {meta_path} does not match its checksum; delete it and {redo}")
        root = Path(meta["root"])
        if not root.is_dir():
            raise TasError(f"imagefolder root {root} of dataset {spec.id!r} is gone; restore it or {redo}")
        return LoadedDataset(
            **common, root=root,
            train_files=[f for f, _ in train], test_files=[f for f, _ in test],
            train_labels=torch.tensor([lab for _, lab in train], dtype=torch.int64),
            test_labels=torch.tensor([lab for _, lab in test], dtype=torch.int64),
        )

    if not _arrays_intact(out, meta):
        raise TasError(f"prepared data in {out} is incomplete (a .npy file is missing or truncated); "
                       f"delete {meta_path} and {redo}")
    arrays = {}
    for name in ARRAYS:
        try:
            # Copy-on-write mapping: lazily paged, shared between processes, and writable so that
            # torch.from_numpy does not warn.
            arrays[name] = np.load(out / f"{name}.npy", mmap_mode="c", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise TasError(f"cannot read {out / name}.npy ({exc}); delete {meta_path} and {redo}") from None
    if verify:
        actual = array_checksum(arrays)
        if actual != meta["checksum"]:
            raise TasError(
                f"checksum mismatch for prepared data in {out}: expected {meta['checksum'][:16]}..., got "
                f"{actual[:16]}... (corrupt arrays); delete {meta_path} and {redo}"
            )
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or labels.dtype != np.int64 \
                or len(images) != len(labels):
            raise TasError(
                f"prepared {split} arrays in {out} have unexpected dtype/shape; delete {meta_path} and {redo}"
            )
    return LoadedDataset(
        **common,
        train_images=torch.from_numpy(arrays["train_images"]),
        test_images=torch.from_numpy(arrays["test_images"]),
        train_labels=torch.from_numpy(np.array(arrays["train_labels"])),
        test_labels=torch.from_numpy(np.array(arrays["test_labels"])),
    )
