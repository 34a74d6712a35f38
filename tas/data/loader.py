"""Loaders yielding (x float32 normalised NCHW, y int64), both on the target device.

In-memory datasets (synthetic, CIFAR-100) use `InMemoryLoader`: index a uint8 NHWC tensor (kept
on the GPU when it fits), then augment the whole batch on the device (augment.py,
randaugment.py). ImageFolder datasets use a torch DataLoader with PIL decoding and timm
transforms. Both take the same shard of the same per-(seed, epoch) permutation (`epoch_indices`),
so DDP ranks see disjoint data and a run is reproducible whatever the worker count.
"""

from __future__ import annotations

import math
import random
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tas.data import augment as A
from tas.data.prepare import load_dataset
from tas.data.randaugment import BatchRandAugment
from tas.data.spec import AugmentSpec, DatasetSpec
from tas.errors import TasError

# Keep a dataset on the GPU when it is at most this big (CIFAR-100 train is 150 MiB).
DEVICE_CACHE_BYTES = 4 << 30


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (numpy SeedSequence: well mixed, platform independent)."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts] + [len(parts)]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def epoch_indices(n: int, seed: int, epoch: int, train: bool, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """This rank's sample order for an epoch.

    train: a permutation seeded by (seed, epoch), padded with its own head to a multiple of
    world_size (as DistributedSampler does, so every rank has the same number of steps), then
    rank::world_size. eval: 0..n-1, rank::world_size, no padding (exact metrics once per-rank
    sums are all-reduced)."""
    if not 0 <= rank < world_size:
        raise TasError(f"rank {rank} is outside 0..{world_size - 1}; check the launcher's world size")
    if train:
        gen = torch.Generator().manual_seed(mix_seed(seed, epoch, 0x5EED))
        order = torch.randperm(n, generator=gen)
        total = math.ceil(n / world_size) * world_size
        if total > n:
            order = torch.cat([order, order.repeat(math.ceil((total - n) / n))[: total - n]])
    else:
        order = torch.arange(n)
    return order[rank::world_size]


def shard_size(n: int, train: bool, rank: int = 0, world_size: int = 1) -> int:
    """len(epoch_indices(n, ..., train, rank, world_size)) without building it."""
    if train:
        return math.ceil(n / world_size)
    return len(range(rank, n, world_size))


def _as_device(device) -> torch.device:
    return device if isinstance(device, torch.device) else torch.device(device)


def _norm_consts(mean, std, device) -> tuple[torch.Tensor, torch.Tensor]:
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    # x / 255 -> (x - mean) / std folded into one multiply-add
    return (1.0 / (255.0 * std_t)).to(device), (mean_t / std_t).to(device)


class InMemoryLoader:
    """Batches from a uint8 (N, H, W, 3) tensor with batched on-device augmentation.

    Train: crop_flip (pad + random crop + flip at native size, then a resize when
    augment.image_size differs), rrc (random-resized-crop + flip straight to image_size via one
    affine grid_sample), or none; then RandAugment (per sample, batched), normalisation and
    random erasing. Eval: a resize (crop_flip/none) or resize to image_size / crop_pct + centre
    crop (rrc); no randomness. Augmentation parameters come from a CPU generator seeded by
    (seed, epoch, rank), so the same run draws the same augmentations on CPU and GPU.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, train: bool,
                 augment: AugmentSpec, mean, std, device, seed: int, drop_last: bool | None = None,
                 rank: int = 0, world_size: int = 1, channels_last: bool = False,
                 device_cache: bool | None = None):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise TasError(f"images must be uint8 (N, H, W, 3), got {tuple(images.shape)} {images.dtype}")
        if len(images) != len(labels):
            raise TasError(f"{len(images)} images but {len(labels)} labels")
        if batch_size < 1:
            raise TasError(f"batch_size must be >= 1, got {batch_size}")
        self.images, self.labels = images, labels.to(torch.int64)
        self.batch_size, self.train, self.augment = int(batch_size), bool(train), augment
        self.device = _as_device(device)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.drop_last = self.train if drop_last is None else bool(drop_last)
        self.channels_last = channels_last
        self.epoch = 0
        self._scale, self._shift = _norm_consts(mean, std, self.device)
        self._ra = None
        if train and augment.randaugment:
            fill = tuple(min(255, round(255 * m)) for m in mean)  # timm's img_mean
            self._ra = BatchRandAugment(augment.randaugment, fill=fill)
        cuda = self.device.type == "cuda"
        if device_cache is None:
            device_cache = cuda and images.numel() <= DEVICE_CACHE_BYTES
        self._pin = cuda and not device_cache
        if device_cache and self.device.type != "cpu":
            self._src_images = images.to(self.device)
            self._src_labels = self.labels.to(self.device)
        else:
            self._src_images, self._src_labels = images, self.labels
        self._per_rank = shard_size(len(images), self.train, self.rank, self.world_size)
        if self.train and len(self) == 0:
            raise TasError(
                f"{self._per_rank} training samples per rank is fewer than batch_size {batch_size}; "
                "lower the batch size or use more data"
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        if self.drop_last:
            return self._per_rank // self.batch_size
        return math.ceil(self._per_rank / self.batch_size)

    @property
    def num_samples(self) -> int:
        """Samples this rank yields per epoch."""
        return len(self) * self.batch_size if self.drop_last else self._per_rank

    def indices(self) -> torch.Tensor:
        return epoch_indices(len(self.images), self.seed, self.epoch, self.train, self.rank, self.world_size)

    def __iter__(self):
        order = self.indices()
        gen = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, self.rank, 0xA06))
        noise_gen = None
        if self.train and self.augment.random_erasing > 0:
            noise_gen = torch.Generator(device=self.device)
            noise_gen.manual_seed(mix_seed(self.seed, self.epoch, self.rank, 0xE7A5))
        on_device = self._src_images.device == self.device and self.device.type != "cpu"
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            if on_device:
                idx_dev = idx.to(self.device, non_blocking=True)
                xb, yb = self._src_images[idx_dev], self._src_labels[idx_dev]
            else:
                xb, yb = self._src_images[idx], self._src_labels[idx]
                if self._pin:
                    xb, yb = xb.pin_memory(), yb.pin_memory()
                xb = xb.to(self.device, non_blocking=True)
                yb = yb.to(self.device, non_blocking=True)
            yield self.transform(xb, gen, noise_gen), yb

    def transform(self, xb: torch.Tensor, gen: torch.Generator | None = None,
                  noise_gen: torch.Generator | None = None) -> torch.Tensor:
        """uint8 NHWC batch (on device) -> normalised float NCHW at augment.image_size."""
        aug, size = self.augment, self.augment.image_size
        if self.train and aug.train == "crop_flip":
            xb = A.crop_flip(xb, aug.padding, aug.pad_mode, aug.hflip, gen)
        x = xb.permute(0, 3, 1, 2).float()
        if self.train and aug.train == "rrc":
            x = A.random_resized_crop(x, aug, gen)
        elif not self.train and aug.train == "rrc":
            x = A.resize_center_crop(x, aug.eval_resize, size, aug.interpolation)
        else:
            x = A.resize(x, size, aug.interpolation)
        if self._ra is not None:
            x = self._ra(x.clamp(0.0, 255.0).round(), gen)
        x = x * self._scale - self._shift
        if self.train and aug.random_erasing > 0:
            x = A.random_erasing(x, aug.random_erasing, gen, noise_gen)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=fmt)


class _ShardSampler(torch.utils.data.Sampler):
    """`epoch_indices` as a Sampler; yields (index, epoch) so that worker processes, which never
    see set_epoch, can still seed each sample's augmentation by (seed, epoch, index)."""

    def __init__(self, n: int, seed: int, train: bool, rank: int, world_size: int):
        self.n, self.seed, self.train, self.rank, self.world_size = n, seed, train, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        epoch = self.epoch
        for i in epoch_indices(self.n, self.seed, epoch, self.train, self.rank, self.world_size).tolist():
            yield (i, epoch)

    def __len__(self) -> int:
        return shard_size(self.n, self.train, self.rank, self.world_size)


@contextmanager
def _seeded(seed: int):
    """Seed python, numpy and torch global RNGs (which timm/torchvision transforms use) for one
    sample, restoring them afterwards so the caller's streams are untouched."""
    py, np_state, th = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(np_state)
        torch.set_rng_state(th)


class _SeededFolderDataset(torch.utils.data.Dataset):
    def __init__(self, root: Path, files: list[str], labels: torch.Tensor, transform, seed: int, train: bool):
        from tas.data.imagefolder import ImageFolderDataset

        self.inner = ImageFolderDataset(root, files, labels.tolist(), None)
        self.transform, self.seed, self.train = transform, seed, train

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, key):
        i, epoch = key if isinstance(key, tuple) else (key, 0)
        img, label = self.inner[i]
        if self.train:
            with _seeded(mix_seed(self.seed, epoch, i)):
                return self.transform(img), label
        return self.transform(img), label


def folder_transform(augment: AugmentSpec, train: bool, mean, std):
    """PIL -> normalised tensor transform equivalent to the in-memory protocol (timm/torchvision)."""
    from timm.data import create_transform
    from torchvision import transforms as T

    size = augment.image_size
    if augment.train == "rrc":
        if train:
            return create_transform(
                input_size=size, is_training=True, scale=augment.scale, ratio=augment.ratio,
                hflip=augment.hflip, color_jitter=None, auto_augment=augment.randaugment,
                interpolation=augment.interpolation, mean=mean, std=std,
                re_prob=augment.random_erasing, re_mode="pixel", re_count=1,
            )
        return create_transform(input_size=size, is_training=False, interpolation=augment.interpolation,
                                mean=mean, std=std, crop_pct=augment.crop_pct)
    interp = T.InterpolationMode.BICUBIC if augment.interpolation == "bicubic" else T.InterpolationMode.BILINEAR
    steps = [T.Resize(size, interpolation=interp), T.CenterCrop(size)]
    if train and augment.train == "crop_flip":
        steps += [T.RandomCrop(size, padding=augment.padding,
                               padding_mode="reflect" if augment.pad_mode == "reflect" else "constant"),
                  T.RandomHorizontalFlip(augment.hflip)]
    if train and augment.randaugment:
        from timm.data.auto_augment import rand_augment_transform

        steps.append(rand_augment_transform(augment.randaugment, dict(
            translate_const=int(size * 0.45), img_mean=tuple(min(255, round(255 * m)) for m in mean))))
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    if train and augment.random_erasing > 0:
        from timm.data.random_erasing import RandomErasing

        steps.append(RandomErasing(augment.random_erasing, mode="pixel", max_count=1, device="cpu"))
    return T.Compose(steps)


class FolderLoader:
    """DataLoader over an ImageFolder index (PIL decode + timm transforms), moved to device."""

    def __init__(self, root: Path, files: list[str], labels: torch.Tensor, batch_size: int, train: bool,
                 augment: AugmentSpec, mean, std, device, seed: int, num_workers: int = 0,
                 drop_last: bool | None = None, rank: int = 0, world_size: int = 1,
                 channels_last: bool = False):
        self.device = _as_device(device)
        self.train, self.channels_last = bool(train), channels_last
        dataset = _SeededFolderDataset(root, files, labels, folder_transform(augment, train, mean, std), seed, train)
        self.sampler = _ShardSampler(len(dataset), int(seed), self.train, int(rank), int(world_size))
        self.drop_last = self.train if drop_last is None else bool(drop_last)
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_size=int(batch_size), sampler=self.sampler, num_workers=int(num_workers),
            pin_memory=self.device.type == "cuda", drop_last=self.drop_last,
            persistent_workers=num_workers > 0,
        )
        if self.train and len(self.loader) == 0:
            raise TasError(f"{len(self.sampler)} training images per rank is fewer than batch_size {batch_size}; "
                           "lower the batch size")

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        for x, y in self.loader:
            x = x.to(self.device, non_blocking=True).contiguous(memory_format=fmt)
            yield x, y.to(self.device, non_blocking=True)


@dataclass(frozen=True)
class DatasetInfo:
    num_classes: int
    checksum: str
    n_train: int
    n_test: int
    image_size: int
    class_names: tuple[str, ...] = ()


def build_loaders(spec: DatasetSpec, augment: AugmentSpec, data_root, batch_size: int, eval_batch_size: int,
                  device, seed: int, num_workers: int = 0, rank: int = 0, world_size: int = 1,
                  channels_last: bool = False):
    """(train_loader, test_loader, DatasetInfo) for a prepared dataset."""
    ds = load_dataset(spec, data_root)
    common = dict(augment=augment, mean=spec.mean, std=spec.std, device=device, seed=seed, rank=rank,
                  world_size=world_size, channels_last=channels_last)
    if ds.in_memory:
        train = InMemoryLoader(ds.train_images, ds.train_labels, batch_size, True, **common)
        test = InMemoryLoader(ds.test_images, ds.test_labels, eval_batch_size, False, **common)
    else:
        train = FolderLoader(ds.root, ds.train_files, ds.train_labels, batch_size, True,
                             num_workers=num_workers, **common)
        test = FolderLoader(ds.root, ds.test_files, ds.test_labels, eval_batch_size, False,
                            num_workers=num_workers, **common)
    info = DatasetInfo(num_classes=ds.num_classes, checksum=ds.checksum, n_train=ds.n_train, n_test=ds.n_test,
                       image_size=augment.image_size, class_names=tuple(ds.class_names))
    return train, test, info
