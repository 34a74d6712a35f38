"""timm's RandAugment, re-implemented per sample on a batched float tensor (values 0..255).

Why not timm's own: it works on one PIL image at a time with Python's global RNGs, which would
force a CPU round trip per image and break per-(seed, epoch) reproducibility. This port keeps
timm's semantics: op sets (`_RAND_TRANSFORMS` / `_RAND_INCREASING_TRANSFORMS` with inc1), magnitude
to argument maps, per-op probability, magnitude noise (mstd) and clipping (mmax), random sign,
fill = the dataset mean (as timm's create_transform sets img_mean), output rounded to integers
after every op as PIL's uint8 would be. Each sample draws its own ops; samples that share an op
are processed together. Checked op by op against timm/PIL on 32-px images: identical or within one grey level. One
difference: geometric ops always interpolate bilinearly, where timm draws bilinear or bicubic.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tas.data.spec import RandAugmentParams, parse_randaugment

_LEVEL_DENOM = 10.0

RAND_TRANSFORMS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
    "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
)
RAND_INCREASING_TRANSFORMS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
    "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
    "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
)


def _col(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-sample scalars (n,) -> (n, 1, 1, 1) on x's device and dtype."""
    return v.to(device=x.device, dtype=x.dtype, non_blocking=True).view(-1, 1, 1, 1)


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    # PIL ImageEnhance: degenerate + factor * (image - degenerate), truncated to uint8.
    return torch.trunc(degenerate + _col(factor, x) * (x - degenerate))


def _gray(x: torch.Tensor) -> torch.Tensor:
    # PIL convert('L'): ITU-R 601-2 luma, rounded.
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return torch.round(r * 0.299 + g * 0.587 + b * 0.114)


def auto_contrast(x: torch.Tensor) -> torch.Tensor:
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    span = hi - lo
    scale = torch.where(span > 0, 255.0 / span.clamp_min(1), torch.ones_like(span))
    out = torch.floor((x - lo) * scale)
    return torch.where(span > 0, out, x)


def equalize(x: torch.Tensor) -> torch.Tensor:
    """PIL ImageOps.equalize per sample and channel, via batched histograms."""
    n, c, h, w = x.shape
    flat = x.reshape(n * c, h * w).long().clamp_(0, 255)
    hist = torch.zeros(n * c, 256, device=x.device, dtype=torch.long)
    hist.scatter_add_(1, flat, torch.ones_like(flat))
    last = hist.gather(1, flat.amax(dim=1, keepdim=True))  # count of the highest present value
    step = (h * w - last) // 255
    cum = torch.cumsum(hist, dim=1) - hist
    lut = torch.div(step // 2 + cum, step.clamp_min(1), rounding_mode="floor").clamp_(max=255)
    lut = torch.where(step > 0, lut, torch.arange(256, device=x.device).expand_as(lut))
    return lut.gather(1, flat).reshape(n, c, h, w).to(x.dtype)


def _affine(x: torch.Tensor, mats: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Apply PIL-style inverse affine maps (n, 2, 3) given in pixel coordinates (input pixel =
    M @ (output pixel, 1), pixel centres at +0.5) with `fill` outside the image."""
    n, c, h, w = x.shape
    mats = mats.to(torch.float64)
    d = torch.tensor([w / 2.0, h / 2.0], dtype=torch.float64)
    m2, t = mats[:, :, :2], mats[:, :, 2]
    theta = torch.empty(n, 2, 3, dtype=torch.float64)
    theta[:, :, :2] = m2 * d[None, None, :] / d[None, :, None]
    theta[:, :, 2] = (m2 @ d + t) / d[None, :] - 1.0
    theta = theta.to(device=x.device, dtype=x.dtype, non_blocking=True)
    grid = F.affine_grid(theta, [n, c, h, w], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # PIL: a sample whose source point falls outside the image takes the fill colour; inside,
    # bilinear with edge-clamped neighbours (= padding_mode 'border').
    inside = (grid.abs() <= 1.0).all(dim=-1, keepdim=True).permute(0, 3, 1, 2)
    return torch.where(inside, out, fill.view(1, -1, 1, 1))


def _identity_mats(n: int) -> torch.Tensor:
    m = torch.zeros(n, 2, 3, dtype=torch.float64)
    m[:, 0, 0] = 1.0
    m[:, 1, 1] = 1.0
    return m


class BatchRandAugment:
    """RandAugment(config string) applied to a float (N, 3, H, W) batch in 0..255."""

    def __init__(self, config: str | RandAugmentParams, fill=(128, 128, 128)):
        self.params = parse_randaugment(config) if isinstance(config, str) else config
        self.ops = RAND_INCREASING_TRANSFORMS if self.params.increasing else RAND_TRANSFORMS
        self.fill = tuple(float(v) for v in fill)

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        p = self.params
        b = x.shape[0]
        fill = torch.tensor(self.fill, device=x.device, dtype=x.dtype)
        for _ in range(p.num_layers):
            op = torch.randint(0, len(self.ops), (b,), generator=gen)
            apply = torch.rand(b, generator=gen, dtype=torch.float64) <= p.prob
            if math.isinf(p.magnitude_std):
                mag = torch.rand(b, generator=gen, dtype=torch.float64) * p.magnitude
            elif p.magnitude_std > 0:
                mag = p.magnitude + p.magnitude_std * torch.randn(b, generator=gen, dtype=torch.float64)
            else:
                mag = torch.full((b,), float(p.magnitude), dtype=torch.float64)
            mag = mag.clamp(0.0, p.magnitude_max or _LEVEL_DENOM)
            sign = torch.where(torch.rand(b, generator=gen) > 0.5, -1.0, 1.0).to(torch.float64)
            for k, name in enumerate(self.ops):
                sel = torch.nonzero(apply & (op == k)).flatten()  # CPU: no device sync
                if len(sel) == 0:
                    continue
                sel_dev = sel.to(x.device, non_blocking=True)
                out = self._apply(name, x.index_select(0, sel_dev), mag[sel], sign[sel], fill)
                x = x.index_copy(0, sel_dev, out.round_().clamp_(0.0, 255.0))
        return x

    def _apply(self, name: str, x: torch.Tensor, mag: torch.Tensor, sign: torch.Tensor, fill: torch.Tensor):
        level = mag / _LEVEL_DENOM
        n, _, h, w = x.shape
        if name == "AutoContrast":
            return auto_contrast(x)
        if name == "Equalize":
            return equalize(x)
        if name == "Invert":
            return 255.0 - x
        if name in ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"):
            m = _identity_mats(n)
            if name == "Rotate":
                # PIL Image.rotate(deg) about the centre: inverse map with phi = -radians(deg)
                phi = -torch.deg2rad(level * 30.0 * sign)
                cos, sin = torch.cos(phi), torch.sin(phi)
                cx, cy = w / 2.0, h / 2.0
                m[:, 0, 0], m[:, 0, 1] = cos, sin
                m[:, 1, 0], m[:, 1, 1] = -sin, cos
                m[:, 0, 2] = cx - cos * cx - sin * cy
                m[:, 1, 2] = cy + sin * cx - cos * cy
            elif name == "ShearX":
                m[:, 0, 1] = level * 0.3 * sign
            elif name == "ShearY":
                m[:, 1, 0] = level * 0.3 * sign
            elif name == "TranslateXRel":
                m[:, 0, 2] = level * 0.45 * sign * w
            else:
                m[:, 1, 2] = level * 0.45 * sign * h
            return _affine(x, m, fill)
        if name in ("Posterize", "PosterizeIncreasing"):
            bits = torch.floor(level * 4).long()
            if name == "PosterizeIncreasing":
                bits = 4 - bits
            q = _col(torch.pow(2.0, (8 - bits).clamp(0, 8).to(torch.float64)), x)
            return torch.floor(x / q) * q
        if name in ("Solarize", "SolarizeIncreasing"):
            thresh = torch.clamp(torch.floor(level * 256), max=256)
            if name == "SolarizeIncreasing":
                thresh = 256 - thresh
            return torch.where(x >= _col(thresh, x), 255.0 - x, x)
        if name == "SolarizeAdd":
            add = torch.clamp(torch.floor(level * 110), max=128)
            return torch.where(x < 128, torch.clamp(x + _col(add, x), max=255.0), x)
        if name in ("Color", "Contrast", "Brightness", "Sharpness"):
            factor = level * 1.8 + 0.1
        else:  # *Increasing: 1 +- 0.9 * level, kept >= 0.1
            factor = torch.clamp(1.0 + sign * level * 0.9, min=0.1)
        kind = name.replace("Increasing", "")
        if kind == "Color":
            degenerate = _gray(x).expand_as(x)
        elif kind == "Contrast":
            degenerate = torch.floor(_gray(x).mean(dim=(1, 2, 3), keepdim=True) + 0.5).expand_as(x)
        elif kind == "Brightness":
            degenerate = torch.zeros_like(x)
        elif kind == "Sharpness":
            # PIL ImageFilter.SMOOTH (3x3, centre 5, total 13); PIL leaves the 1-px border as is.
            k = torch.ones(3, 3, device=x.device, dtype=x.dtype)
            k[1, 1] = 5.0
            k = (k / 13.0).expand(x.shape[1], 1, 3, 3)
            smooth = torch.round(F.conv2d(x, k, padding=1, groups=x.shape[1]))
            degenerate = x.clone()
            degenerate[..., 1:-1, 1:-1] = smooth[..., 1:-1, 1:-1]
        else:
            raise AssertionError(name)
        return _blend(degenerate, x, factor)
