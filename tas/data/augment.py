"""Batched, on-device image augmentation for uint8 NHWC batches (the in-memory loader's path).

Random parameters are drawn on the CPU from a `torch.Generator` seeded per (seed, epoch, rank),
so a run draws the same augmentations on any device; only per-pixel noise (random erasing) uses a
device generator. Semantics follow torchvision/timm: RandomResizedCrop's 10-attempt sampler with
its centre-crop fallback, RandomCrop(padding) + RandomHorizontalFlip, timm's RandomErasing
(mode 'pixel', one box, 10 attempts), timm's eval resize (image_size / crop_pct) + centre crop.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tas.data.imagefolder import rrc_fallback
from tas.data.spec import AugmentSpec


def _uniform(gen: torch.Generator, lo: float, hi: float, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=gen, dtype=torch.float64) * (hi - lo) + lo


def crop_flip(x: torch.Tensor, padding: int, pad_mode: str, hflip: float, gen: torch.Generator) -> torch.Tensor:
    """Pad + random crop back to the input size + horizontal flip, as one gather on uint8 NHWC.

    The padded image is never materialised: source coordinates are reflected (or masked for
    zero padding) directly, which equals F.pad(mode='reflect'/'constant') then cropping."""
    b, h, w, _ = x.shape
    dev = x.device
    oy = torch.randint(0, 2 * padding + 1, (b,), generator=gen) - padding
    ox = torch.randint(0, 2 * padding + 1, (b,), generator=gen) - padding
    flip = torch.rand(b, generator=gen) < hflip
    rows = oy[:, None] + torch.arange(h)
    cols = ox[:, None] + torch.arange(w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    if pad_mode == "reflect":
        rows = _reflect(rows, h)
        cols = _reflect(cols, w)
        valid = None
    else:
        valid = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
        rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    rows, cols = rows.to(dev, non_blocking=True), cols.to(dev, non_blocking=True)
    bidx = torch.arange(b, device=dev)[:, None, None]
    out = x[bidx, rows[:, :, None], cols[:, None, :]]
    if valid is not None:
        out = out * valid.to(dev, non_blocking=True)[..., None].to(out.dtype)
    return out


def _reflect(idx: torch.Tensor, n: int) -> torch.Tensor:
    # Reflection without repeating the edge (torch 'reflect'); padding < n keeps one bounce enough.
    idx = torch.where(idx < 0, -idx, idx)
    return torch.where(idx > n - 1, 2 * (n - 1) - idx, idx)


def rrc_params(b: int, h: int, w: int, scale, ratio, gen: torch.Generator) -> torch.Tensor:
    """torchvision RandomResizedCrop.get_params for a batch: (b, 4) int64 of top, left, ch, cw.

    The same sampler as the folder loader's tas.data.imagefolder.rrc_box (and its fallback,
    rrc_fallback, is that one), but vectorised over the batch on a torch.Generator: all b x 10 area
    draws, then the b x 10 ratio draws, then top and left as floor(u * (n + 1)). That fixed draw
    order is part of every in-memory run's crops, so the two keep their own draws."""
    area = h * w
    target = area * _uniform(gen, scale[0], scale[1], b, 10)
    log_r = _uniform(gen, math.log(ratio[0]), math.log(ratio[1]), b, 10)
    aspect = torch.exp(log_r)
    cw = torch.round(torch.sqrt(target * aspect)).long()
    ch = torch.round(torch.sqrt(target / aspect)).long()
    ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = torch.argmax(ok.to(torch.int8), dim=1)  # first valid attempt (0 when none)
    found = ok.any(dim=1)
    cw = cw.gather(1, first[:, None])[:, 0]
    ch = ch.gather(1, first[:, None])[:, 0]
    # No attempt fits: the whole image, clamped to the ratio range (centre crop), as torchvision does.
    f_left, f_top, fw, fh = rrc_fallback(w, h, ratio)
    cw = torch.where(found, cw, torch.full_like(cw, fw))
    ch = torch.where(found, ch, torch.full_like(ch, fh))
    u_top = torch.rand(b, generator=gen, dtype=torch.float64)
    u_left = torch.rand(b, generator=gen, dtype=torch.float64)
    top = torch.where(found, torch.floor(u_top * (h - ch + 1)).long(), torch.full_like(ch, f_top))
    left = torch.where(found, torch.floor(u_left * (w - cw + 1)).long(), torch.full_like(cw, f_left))
    return torch.stack([top, left, ch, cw], dim=1)


def crop_theta(boxes: torch.Tensor, flip: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """affine_grid matrices (align_corners=False) mapping the output onto each crop box."""
    top, left, ch, cw = (boxes[:, i].to(torch.float64) for i in range(4))
    sx = cw / w
    sx = torch.where(flip, -sx, sx)
    theta = torch.zeros(len(boxes), 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = sx
    theta[:, 0, 2] = (2 * left + cw) / w - 1
    theta[:, 1, 1] = ch / h
    theta[:, 1, 2] = (2 * top + ch) / h - 1
    return theta


def random_resized_crop(x: torch.Tensor, aug: AugmentSpec, gen: torch.Generator) -> torch.Tensor:
    """x float NCHW -> (N, C, S, S): one affine grid_sample per batch, no per-image resize."""
    b, c, h, w = x.shape
    boxes = rrc_params(b, h, w, aug.scale, aug.ratio, gen)
    flip = torch.rand(b, generator=gen) < aug.hflip
    theta = crop_theta(boxes, flip, h, w).to(device=x.device, dtype=x.dtype, non_blocking=True)
    size = aug.image_size
    grid = F.affine_grid(theta, [b, c, size, size], align_corners=False)
    if aug.interpolation != "random":
        return F.grid_sample(x, grid, mode=aug.interpolation, padding_mode="border", align_corners=False)
    # Drawn only for 'random', after the boxes and flips: the other modes keep their draws unchanged.
    bicubic = (torch.rand(b, generator=gen) < 0.5).to(x.device, non_blocking=True)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if bool(bicubic.any()):
        out[bicubic] = F.grid_sample(x[bicubic], grid[bicubic], mode="bicubic", padding_mode="border",
                                     align_corners=False)
    return out


def resize_crops(src: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """The upsamplings a FolderLoader's workers leave to the device: uint8 (M, H, W, 3) source pixels
    and each one's box (M, 4) float (top, left, height, width) in them -> uint8 (M, size, size, 3).

    One bilinear affine grid_sample with half-pixel centres maps each box onto size x size: PIL's
    bilinear resize when upsampling (the workers keep the one pixel around the box that it reads),
    rounded back to uint8 as PIL's output is, so the crop is the workers' within one grey level."""
    m, h, w, _ = src.shape
    flip = torch.zeros(m, dtype=torch.bool)
    theta = crop_theta(boxes, flip, h, w).to(device=src.device, dtype=torch.float32, non_blocking=True)
    grid = F.affine_grid(theta, [m, 3, size, size], align_corners=False)
    out = F.grid_sample(src.permute(0, 3, 1, 2).float(), grid, mode="bilinear", padding_mode="border",
                        align_corners=False)
    return out.clamp_(0.0, 255.0).round_().to(torch.uint8).permute(0, 2, 3, 1)


def resize(x: torch.Tensor, size: int, mode: str = "bilinear") -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    down = size < min(x.shape[-2:])
    return F.interpolate(x, size=(size, size), mode=mode, align_corners=False, antialias=down)


def resize_center_crop(x: torch.Tensor, resize_to: int, crop: int, mode: str = "bilinear") -> torch.Tensor:
    """timm eval: resize the (square) image to `resize_to`, then a centre crop of `crop`."""
    x = resize(x, resize_to, mode)
    h, w = x.shape[-2:]
    top, left = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
    return x[..., top:top + crop, left:left + crop]


def random_erasing(x: torch.Tensor, prob: float, gen: torch.Generator, noise_gen: torch.Generator,
                   min_area: float = 0.02, max_area: float = 1 / 3, min_aspect: float = 0.3) -> torch.Tensor:
    """timm RandomErasing(prob, mode='pixel', max_count=1) on a normalised NCHW batch, batched:
    each sample gets at most one box filled with N(0, 1) noise."""
    b, c, h, w = x.shape
    apply = torch.rand(b, generator=gen) < prob
    target = h * w * _uniform(gen, min_area, max_area, b, 10)
    aspect = torch.exp(_uniform(gen, math.log(min_aspect), math.log(1 / min_aspect), b, 10))
    eh = torch.round(torch.sqrt(target * aspect)).long()
    ew = torch.round(torch.sqrt(target / aspect)).long()
    ok = (ew < w) & (eh < h)
    first = torch.argmax(ok.to(torch.int8), dim=1)
    apply &= ok.any(dim=1)
    eh = eh.gather(1, first[:, None])[:, 0]
    ew = ew.gather(1, first[:, None])[:, 0]
    top = torch.floor(torch.rand(b, generator=gen, dtype=torch.float64) * (h - eh + 1)).long()
    left = torch.floor(torch.rand(b, generator=gen, dtype=torch.float64) * (w - ew + 1)).long()
    if not bool(apply.any()):
        return x
    # Build the mask on the device from per-sample scalars (a CPU mask would be B*H*W bytes to copy).
    dev = x.device
    top, eh, left, ew, apply = (t.to(dev, non_blocking=True) for t in (top, eh, left, ew, apply))
    rows, cols = torch.arange(h, device=dev), torch.arange(w, device=dev)
    mask = (
        apply[:, None, None]
        & ((rows >= top[:, None]) & (rows < (top + eh)[:, None]))[:, :, None]
        & ((cols >= left[:, None]) & (cols < (left + ew)[:, None]))[:, None, :]
    )[:, None]
    noise = torch.randn(x.shape, generator=noise_gen, device=x.device, dtype=x.dtype)
    return torch.where(mask, noise, x)
