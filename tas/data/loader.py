"""Loaders yielding (x float32 normalised NCHW, y int64), both on the target device.

In-memory datasets (synthetic, CIFAR-100, image folders cached as arrays) use `InMemoryLoader`:
index a uint8 NHWC tensor (kept on the GPU when it fits), then augment the whole batch on the
device (augment.py, randaugment.py). Streamed image folders use `FolderLoader`: DataLoader
workers decode each file straight to a uint8 crop at the model's size (libjpeg-turbo, reduced-size
JPEG decoding, PIL's resize; the random-resized crop is drawn per sample from a generator keyed by
(seed, epoch, index)), except that a random-resized crop smaller than the model's input may be left
at its source size for the device to upsample (`runtime.upsample_on`; on a GPU by default); the
batch then takes the same on-device steps as in memory (crop/flip, RandAugment, normalisation,
erasing; `BatchTransform`). Both take the same shard of the same per-(seed, epoch)
permutation (`epoch_indices`), and no global generator is touched: a run reads the same batches
whatever the worker count, and after a resume from an epoch's checkpoint.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from tas.data import augment as A
from tas.data.prepare import available_cores, load_dataset
from tas.data.randaugment import BatchRandAugment
from tas.data.spec import INTERPOLATIONS, AugmentSpec, DatasetSpec
from tas.errors import TasError

# Batches each DataLoader worker keeps ready (uint8 crops are small: prefetching more is cheap).
PREFETCH_BATCHES = 4

# Keep a dataset on the GPU when it is at most this big (CIFAR-100 train is 150 MiB).
DEVICE_CACHE_BYTES = 4 << 30


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (numpy SeedSequence: well mixed, platform independent)."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts] + [len(parts)]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's random.Random: (seed, epoch, index) packed into one integer, which
    MT19937's init_by_array mixes (a SeedSequence per sample, as mix_seed, costs ~7 % of a sample)."""
    return (int(seed) << 64) | ((int(epoch) & 0xFFFFFFFF) << 32) | (int(index) & 0xFFFFFFFF)


def epoch_indices(n: int, seed: int, epoch: int, train: bool, rank: int = 0, world_size: int = 1,
                  global_batch: int | None = None) -> torch.Tensor:
    """This rank's sample order for an epoch.

    train with `global_batch` G (a training job): a permutation seeded by (seed, epoch), cut to whole
    global batches (floor(n / G) optimizer steps: the partial last batch is dropped); global batch k is
    order[k G:(k + 1) G] and this rank takes its rank-th G / world_size slice of each. Read in
    micro-batches, every process count sees the same micro-batches: one process accumulating the
    whole slice, or world_size processes a slice each (tas.batching).
    train without it: the permutation padded with its own head to a multiple of world_size (as
    DistributedSampler does), then rank::world_size. eval: 0..n-1, rank::world_size, no padding
    (exact metrics once per-rank sums are all-reduced)."""
    if not 0 <= rank < world_size:
        raise TasError(f"rank {rank} is outside 0..{world_size - 1}; check the launcher's world size")
    if train:
        gen = torch.Generator().manual_seed(mix_seed(seed, epoch, 0x5EED))
        order = torch.randperm(n, generator=gen)
        if global_batch is not None:
            steps = n // global_batch
            return order[: steps * global_batch].view(steps, world_size,
                                                      global_batch // world_size)[:, rank].reshape(-1)
        total = math.ceil(n / world_size) * world_size
        if total > n:
            order = torch.cat([order, order.repeat(math.ceil((total - n) / n))[: total - n]])
    else:
        order = torch.arange(n)
    return order[rank::world_size]


def shard_size(n: int, train: bool, rank: int = 0, world_size: int = 1, global_batch: int | None = None) -> int:
    """len(epoch_indices(n, ..., train, rank, world_size, global_batch)) without building it."""
    if train and global_batch is not None:
        return n // global_batch * (global_batch // world_size)
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

    The batch steps are `BatchTransform`'s. Augmentation parameters come from a CPU generator
    seeded by (seed, epoch, rank), so the same run draws the same augmentations on CPU and GPU.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, train: bool,
                 augment: AugmentSpec, mean, std, device, seed: int, drop_last: bool | None = None,
                 rank: int = 0, world_size: int = 1, channels_last: bool = False,
                 device_cache: bool | None = None, global_batch: int | None = None):
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
        self.global_batch = (_checked_global_batch(global_batch, self.batch_size, self.world_size)
                             if self.train else None)
        self.drop_last = self.train if drop_last is None else bool(drop_last)
        self.channels_last = channels_last
        self.epoch = 0
        self._transform = BatchTransform(augment, self.train, mean, std, self.device, channels_last)
        cuda = self.device.type == "cuda"
        if device_cache is None:
            device_cache = cuda and images.numel() <= DEVICE_CACHE_BYTES
        self._pin = cuda and not device_cache
        if device_cache and self.device.type != "cpu":
            self._src_images = images.to(self.device)
            self._src_labels = self.labels.to(self.device)
        else:
            self._src_images, self._src_labels = images, self.labels
        self._per_rank = shard_size(len(images), self.train, self.rank, self.world_size, self.global_batch)
        if self.train and len(self) == 0:
            raise TasError(_too_few(len(images), batch_size, self.global_batch))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        if self.drop_last:
            return self._per_rank // self.batch_size
        return math.ceil(self._per_rank / self.batch_size)

    def indices(self) -> torch.Tensor:
        return epoch_indices(len(self.images), self.seed, self.epoch, self.train, self.rank, self.world_size,
                             self.global_batch)

    def __iter__(self):
        order = self.indices()
        gen, noise_gen = _batch_generators(self.seed, self.epoch, self.rank, self.device,
                                           self.train and self.augment.random_erasing > 0)
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
        return self._transform(xb, gen, noise_gen)


class BatchTransform:
    """The batch steps of both loaders, on the device: uint8 NHWC -> normalised float NCHW.

    Train: crop_flip (pad + random crop + flip at the batch's size, then a resize when
    augment.image_size differs), rrc (random-resized-crop + flip via one affine grid_sample), or
    none; then RandAugment, normalisation and random erasing. Eval: a resize (crop_flip/none) or
    resize to image_size / crop_pct + centre crop (rrc). `geometry_done`: the batch already holds
    the final crops (a FolderLoader's workers made them), so only crop_flip's pad-and-crop remains
    of the geometry."""

    def __init__(self, augment: AugmentSpec, train: bool, mean, std, device, channels_last: bool = False,
                 geometry_done: bool = False):
        self.augment, self.train, self.channels_last = augment, bool(train), channels_last
        self.geometry_done = geometry_done
        self._scale, self._shift = _norm_consts(mean, std, device)
        self._ra = None
        if self.train and augment.randaugment:
            fill = tuple(min(255, round(255 * m)) for m in mean)  # timm's img_mean
            self._ra = BatchRandAugment(augment.randaugment, fill=fill)

    def __call__(self, xb: torch.Tensor, gen: torch.Generator | None = None,
                 noise_gen: torch.Generator | None = None) -> torch.Tensor:
        aug, size = self.augment, self.augment.image_size
        if self.train and aug.train == "crop_flip":
            xb = A.crop_flip(xb, aug.padding, aug.pad_mode, aug.hflip, gen)
        # NHWC -> NCHW on the uint8 bytes (a quarter of the float traffic), then float in place.
        x = xb.permute(0, 3, 1, 2).contiguous().float()
        if not self.geometry_done:
            if self.train and aug.train == "rrc":
                x = A.random_resized_crop(x, aug, gen)
            elif not self.train and aug.train == "rrc":
                x = A.resize_center_crop(x, aug.eval_resize, size, aug.eval_interpolation)
            elif self.train:
                x = A.resize(x, size, "bilinear" if aug.interpolation == "random" else aug.interpolation)
            else:
                x = A.resize(x, size, aug.eval_interpolation)
        if self._ra is not None:
            x = self._ra(x.clamp(0.0, 255.0).round(), gen)
        x = x.mul_(self._scale).sub_(self._shift)  # x is always a fresh tensor here, never the source
        if self.train and aug.random_erasing > 0:
            x = A.random_erasing(x, aug.random_erasing, gen, noise_gen)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=fmt)


def _checked_global_batch(global_batch: int | None, micro_batch: int, world_size: int) -> int | None:
    if global_batch is not None and (global_batch % world_size or (global_batch // world_size) % micro_batch):
        raise TasError(f"global batch {global_batch} does not split into micro-batches of {micro_batch} over "
                       f"{world_size} process(es); see tas.batching.plan")
    return global_batch


def _too_few(n: int, micro_batch: int, global_batch: int | None) -> str:
    if global_batch is not None:
        return (f"{n} training samples is fewer than the global batch {global_batch}; lower the recipe's "
                "global_batch or use more data")
    return f"{n} training samples is too few for batch size {micro_batch}; lower the batch size or use more data"


def _batch_generators(seed: int, epoch: int, rank: int, device: torch.device, erasing: bool):
    """The per-(seed, epoch, rank) generators of the batch steps: parameters on the CPU (the same
    draws on any device), per-pixel noise on the device."""
    gen = torch.Generator().manual_seed(mix_seed(seed, epoch, rank, 0xA06))
    noise_gen = None
    if erasing:
        noise_gen = torch.Generator(device=device)
        noise_gen.manual_seed(mix_seed(seed, epoch, rank, 0xE7A5))
    return gen, noise_gen


class _ShardSampler(torch.utils.data.Sampler):
    """`epoch_indices` as a Sampler; yields (index, epoch) so that worker processes, which never
    see set_epoch, can still seed each sample's augmentation by (seed, epoch, index)."""

    def __init__(self, n: int, seed: int, train: bool, rank: int, world_size: int, global_batch: int | None = None):
        self.n, self.seed, self.train, self.rank, self.world_size = n, seed, train, rank, world_size
        self.global_batch = global_batch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        epoch = self.epoch
        for i in epoch_indices(self.n, self.seed, epoch, self.train, self.rank, self.world_size,
                               self.global_batch).tolist():
            yield (i, epoch)

    def __len__(self) -> int:
        return shard_size(self.n, self.train, self.rank, self.world_size, self.global_batch)


class FolderBatch(NamedTuple):
    """One batch as a FolderLoader's workers send it: the final crops, and the source pixels of the
    crops left for the device to upsample (`defer_upsample`), each with its positions in the batch.

    final: uint8 (K, S, S, 3); final_pos: (K,). deferred: uint8 (M, H, W, 3), zero-padded to the
    batch's tallest and widest (at most S + 3 each way); boxes: (M, 4) float64 (top, left, height,
    width) in them; deferred_pos: (M,). labels: (K + M,). A 96-px photo read at 224 px crosses the
    process boundary (and the PCIe bus) as at most ~99 x 99 pixels instead of 224 x 224."""

    final: torch.Tensor
    final_pos: torch.Tensor
    deferred: torch.Tensor
    boxes: torch.Tensor
    deferred_pos: torch.Tensor
    labels: torch.Tensor


class _FolderSamples(torch.utils.data.Dataset):
    """Map-style dataset over an index, keyed by (index, epoch). One sample (`[key]`): (uint8 array,
    region, label) as imagefolder.decode_crop returns them; a batch (`__getitems__`, what the
    DataLoader asks for): a FolderBatch.

    Train rrc: a random-resized crop + flip drawn from random.Random(sample_seed(seed, epoch, index)),
    so a sample's crop depends on nothing else (not the worker, not the global generators).
    Otherwise the deterministic geometry: shorter side to S + centre crop (eval rrc: to
    S / crop_pct first, as timm's eval transform does)."""

    def __init__(self, root: Path, files: list[str], labels: torch.Tensor, augment: AugmentSpec, train: bool,
                 seed: int, defer_upsample: bool = False):
        self.paths = [os.path.join(root, f) for f in files]  # str: no pathlib work per sample
        self.labels = labels.tolist()
        self.augment, self.train, self.seed = augment, bool(train), int(seed)
        self.defer_upsample = bool(defer_upsample)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key):
        from tas.data.imagefolder import centre_box, decode_crop, rrc_box

        i, epoch = key if isinstance(key, tuple) else (key, 0)
        aug, size, path = self.augment, self.augment.image_size, self.paths[i]
        defer = self.defer_upsample
        if self.train and aug.train == "rrc":
            rng = random.Random(sample_seed(self.seed, epoch, i))
            flip = rng.random() < aug.hflip
            # drawn only for 'random' (a draw for the fixed modes would shift every crop after it)
            resample = rng.choice(INTERPOLATIONS) if aug.interpolation == "random" else aug.interpolation
            pixels, region = decode_crop(path, size, lambda w, h: rrc_box(w, h, aug.scale, aug.ratio, rng),
                                         resample, flip, defer)
        elif not self.train and aug.train == "rrc":
            pixels, region = decode_crop(path, size, lambda w, h: centre_box(w, h, size, aug.eval_resize),
                                         aug.eval_interpolation, defer_upsample=defer)
        else:  # the geometry of prepare's cache: always PIL's pixels, so cached and streamed stay identical
            pixels, region = decode_crop(path, size, lambda w, h: centre_box(w, h, size))
        return pixels, region, self.labels[i]

    def __getitems__(self, keys) -> FolderBatch:
        samples = [self[key] for key in keys]
        size = self.augment.image_size
        final_pos = [j for j, (_, region, _) in enumerate(samples) if region is None]
        deferred_pos = [j for j, (_, region, _) in enumerate(samples) if region is not None]
        final = _batch_buffer((len(final_pos), size, size, 3))
        for row, j in enumerate(final_pos):
            final[row].numpy()[...] = samples[j][0]
        spans = [samples[j][0].shape for j in deferred_pos]
        deferred = _batch_buffer((len(spans), max((s[0] for s in spans), default=0),
                                  max((s[1] for s in spans), default=0), 3))
        deferred.zero_()  # the padding is never read; zeros keep every byte of a batch reproducible
        for row, j in enumerate(deferred_pos):
            pixels = samples[j][0]
            deferred[row, : pixels.shape[0], : pixels.shape[1]].numpy()[...] = pixels
        return FolderBatch(final, torch.tensor(final_pos, dtype=torch.int64), deferred,
                           torch.tensor([samples[j][1] for j in deferred_pos], dtype=torch.float64).reshape(-1, 4),
                           torch.tensor(deferred_pos, dtype=torch.int64),
                           torch.tensor([label for _, _, label in samples], dtype=torch.int64))


def _batch_buffer(shape: tuple[int, ...]) -> torch.Tensor:
    """A uint8 tensor for a batch; in a DataLoader worker allocated in shared memory, as
    default_collate does, so that handing it to the main process copies nothing."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=torch.uint8)
    storage = torch.UntypedStorage._new_shared(math.prod(shape))
    return torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)


def _as_batch(batch: FolderBatch) -> FolderBatch:
    """The DataLoader's collate_fn: __getitems__ already made the batch."""
    return batch


def resolve_num_workers(requested: int | str, threads: int | None = None) -> int:
    """Loader workers for a job: an int as given; 'auto' = the job's CPU share (its torch threads,
    which Snakemake's `threads` set) capped at the cores this process may use, so a 2-core machine
    never gets more workers than cores (PyTorch warns then)."""
    if requested == "auto":
        share = torch.get_num_threads() if threads is None else int(threads)
        return max(1, min(share, available_cores()))
    try:
        value = int(requested)
    except (TypeError, ValueError):
        value = -1
    if value < 0 or isinstance(requested, bool):
        raise TasError(f"runtime.num_workers must be 'auto' or an integer >= 0, got {requested!r}")
    return value


UPSAMPLE_ON = ("auto", "device", "workers")


def resolve_upsample_on(requested: str, device: torch.device) -> str:
    """Where a streamed folder's upsampled crops are resized: 'auto' = on the device when it is a GPU
    (a batched grid_sample there is nearly free), in the workers otherwise (on a CPU, PIL's resize
    in parallel workers is several times cheaper than grid_sample in the main process)."""
    if requested not in UPSAMPLE_ON:
        raise TasError(f"runtime.upsample_on must be one of {', '.join(UPSAMPLE_ON)}, got {requested!r}")
    if requested == "auto":
        return "device" if device.type == "cuda" else "workers"
    return requested


def _worker_error(exc: TasError) -> TasError:
    """A TasError raised in a DataLoader worker comes back with the worker's traceback folded into
    its message; give back the original one line (unchanged when raised in this process)."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    last = lines[-1] if lines else str(exc)
    prefix = f"{TasError.__module__}.{TasError.__name__}: "
    return TasError(last[len(prefix):] if last.startswith(prefix) else last)


class FolderLoader:
    """Batches from an image-folder index: workers decode and crop (uint8), the batch steps run on
    the device (`BatchTransform`). Workers persist across epochs; memory is pinned on CUDA.
    `upsample_on` (resolve_upsample_on): where crops smaller than the output are resized."""

    def __init__(self, root: Path, files: list[str], labels: torch.Tensor, batch_size: int, train: bool,
                 augment: AugmentSpec, mean, std, device, seed: int, num_workers: int | str = 0,
                 drop_last: bool | None = None, rank: int = 0, world_size: int = 1,
                 channels_last: bool = False, upsample_on: str = "auto", global_batch: int | None = None):
        self.device = _as_device(device)
        self.train, self.augment = bool(train), augment
        self.seed, self.rank = int(seed), int(rank)
        self.num_workers = resolve_num_workers(num_workers)
        self.upsample_on = resolve_upsample_on(upsample_on, self.device)
        dataset = _FolderSamples(root, files, labels, augment, self.train, self.seed,
                                 defer_upsample=self.upsample_on == "device")
        global_batch = _checked_global_batch(global_batch, int(batch_size), int(world_size)) if self.train else None
        self.sampler = _ShardSampler(len(dataset), self.seed, self.train, self.rank, int(world_size), global_batch)
        self.drop_last = self.train if drop_last is None else bool(drop_last)
        self._transform = BatchTransform(augment, self.train, mean, std, self.device, channels_last,
                                         geometry_done=True)
        workers = self.num_workers
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_size=int(batch_size), sampler=self.sampler, num_workers=workers,
            pin_memory=self.device.type == "cuda", drop_last=self.drop_last,
            persistent_workers=workers > 0, prefetch_factor=PREFETCH_BATCHES if workers > 0 else None,
            collate_fn=_as_batch,
            # Its own generator: the DataLoader draws a worker base seed per epoch, which would
            # otherwise advance torch's global generator (and shift the training run's draws).
            generator=torch.Generator().manual_seed(mix_seed(self.seed, self.rank, 0xD1)),
        )
        if self.train and len(self.loader) == 0:
            raise TasError(_too_few(len(dataset), int(batch_size), global_batch))

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        gen, noise_gen = _batch_generators(self.seed, self.sampler.epoch, self.rank, self.device,
                                           self.train and self.augment.random_erasing > 0)
        batches = iter(self.loader)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except TasError as exc:
                raise _worker_error(exc) from None
            xb = _assemble(batch, self.augment.image_size, self.device)
            yield self._transform(xb, gen, noise_gen), batch.labels.to(self.device, non_blocking=True)


def _assemble(batch: FolderBatch, size: int, device: torch.device) -> torch.Tensor:
    """A FolderBatch -> the uint8 (B, S, S, 3) batch on the device, deferred crops resized there."""
    final = batch.final.to(device, non_blocking=True)
    if len(batch.deferred_pos) == 0:
        return final  # final_pos is 0..B-1: nothing to place
    xb = torch.empty((len(batch.labels), size, size, 3), dtype=torch.uint8, device=device)
    xb[batch.deferred_pos.to(device, non_blocking=True)] = A.resize_crops(
        batch.deferred.to(device, non_blocking=True), batch.boxes, size)
    if len(batch.final_pos):
        xb[batch.final_pos.to(device, non_blocking=True)] = final
    return xb


@dataclass(frozen=True)
class DatasetInfo:
    num_classes: int
    checksum: str
    n_train: int
    n_test: int
    image_size: int
    class_names: tuple[str, ...] = ()


def build_loaders(spec: DatasetSpec, augment: AugmentSpec, data_root, batch_size: int, eval_batch_size: int,
                  device, seed: int, num_workers: int | str = "auto", rank: int = 0, world_size: int = 1,
                  channels_last: bool = False, upsample_on: str = "auto", global_batch: int | None = None):
    """(train_loader, test_loader, DatasetInfo) for a prepared dataset. `batch_size`: the training
    micro-batch; `global_batch`: the optimizer's batch over all ranks (whole global batches per epoch,
    epoch_indices). Streamed folders only: `num_workers`, an int or 'auto' = the job's CPU share
    (resolve_num_workers); `upsample_on` (resolve_upsample_on)."""
    ds = load_dataset(spec, data_root)
    common = dict(augment=augment, mean=spec.mean, std=spec.std, device=device, seed=seed, rank=rank,
                  world_size=world_size, channels_last=channels_last)
    if ds.in_memory:
        train = InMemoryLoader(ds.train_images, ds.train_labels, batch_size, True, global_batch=global_batch, **common)
        test = InMemoryLoader(ds.test_images, ds.test_labels, eval_batch_size, False, **common)
    else:
        train = FolderLoader(ds.root, ds.train_files, ds.train_labels, batch_size, True, num_workers=num_workers,
                             upsample_on=upsample_on, global_batch=global_batch, **common)
        test = FolderLoader(ds.root, ds.test_files, ds.test_labels, eval_batch_size, False,
                            num_workers=num_workers, upsample_on=upsample_on, **common)
    info = DatasetInfo(num_classes=ds.num_classes, checksum=ds.checksum, n_train=ds.n_train, n_test=ds.n_test,
                       image_size=augment.image_size, class_names=tuple(ds.class_names))
    return train, test, info
