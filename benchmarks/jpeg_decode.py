"""JPEG decoding per CPU core (simplejpeg, as the streamed loader decodes, and PIL) and, on a CUDA
machine, in batches on the GPU (torchvision.io.decode_jpeg with device='cuda', i.e. nvjpeg), on a
folder's own JPEGs and on ImageNet-size copies of them.

    python benchmarks/jpeg_decode.py ../shared/data/imagenette-96 [--n 512] [--batch 128] [--out F]

ImageNet's training JPEGs average about 400 x 350 px; the copies are the folder's images resized to
500 x 375 and saved at quality 90, so that the cost of decoding full-size photos is measured on real
content. What it answers: how many images per second one core decodes (the bound of any CPU loader:
a worker decodes every image it serves, whatever it does next), how long a worker needs just to read
the bytes (all a worker would do if the GPU decoded), and, with a GPU, how fast nvjpeg decodes a
batch. Without CUDA (or where torchvision's compiled codecs do not load, as with the CPU-only torch
of requirements.txt) the GPU part records why it was skipped.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

import tas  # noqa: F401  (torchvision guard)
from tas._torchvision_guard import install as torchvision_extension_loaded
from tas.bench.load import loadavg
from tas.bench.machine import header
from tas.bench.timing import best_ms_per_item
from tas.io import write_json

IMAGENET_SIZE = (500, 375)


def _pil_decode(data: bytes) -> None:
    from PIL import Image

    with Image.open(io.BytesIO(data), formats=["JPEG"]) as img:
        img.convert("RGB")


def _simplejpeg_decode(data: bytes) -> None:
    import simplejpeg

    simplejpeg.decode_jpeg(data, colorspace="RGB")


def _upsized_copies(files: list[Path], out_dir: Path) -> list[Path]:
    from PIL import Image

    copies = []
    for i, path in enumerate(files):
        dst = out_dir / f"{i:05d}.jpg"
        with Image.open(path) as img:
            img.convert("RGB").resize(IMAGENET_SIZE, Image.Resampling.BICUBIC).save(dst, quality=90)
        copies.append(dst)
    return copies


def _cpu(files: list[Path], rounds: int) -> dict:
    torch.set_num_threads(1)
    blobs = [p.read_bytes() for p in files]
    read_ms = best_ms_per_item(lambda p: p.read_bytes(), files, rounds)
    pil_ms = best_ms_per_item(_pil_decode, blobs, rounds)
    simplejpeg_ms = best_ms_per_item(_simplejpeg_decode, blobs, rounds)
    return {"read_bytes_ms": round(read_ms, 4), "pil_decode_ms": round(pil_ms, 4),
            "simplejpeg_decode_ms": round(simplejpeg_ms, 4),
            "pil_decode_images_per_s_per_core": round(1000.0 / pil_ms, 1),
            "simplejpeg_decode_images_per_s_per_core": round(1000.0 / simplejpeg_ms, 1),
            "read_bytes_images_per_s_per_core": round(1000.0 / read_ms, 1),
            "mean_file_kib": round(sum(map(len, blobs)) / len(blobs) / 1024, 1)}


def _gpu(files: list[Path], batch: int, rounds: int) -> dict:
    try:
        return _nvjpeg(files, batch, rounds)
    except (RuntimeError, OSError, ImportError) as exc:  # codecs that do not load: recorded, not fatal
        return {"skipped": f"{type(exc).__name__}: {exc}"}


def _nvjpeg(files: list[Path], batch: int, rounds: int) -> dict:
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    if not torchvision_extension_loaded():
        return {"skipped": "torchvision's compiled extension (and with it nvjpeg decoding) does not load here"}
    from torchvision.io import ImageReadMode, decode_jpeg

    device = torch.device("cuda")
    blobs = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in files]
    batches = [blobs[i:i + batch] for i in range(0, len(blobs) - batch + 1, batch)]
    if not batches:
        return {"skipped": f"fewer than --batch {batch} images"}
    decode_jpeg(batches[0], mode=ImageReadMode.RGB, device=device)  # nvjpeg's handles and buffers
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for chunk in batches:
            decode_jpeg(chunk, mode=ImageReadMode.RGB, device=device)
        torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t0) / (len(batches) * batch))
    return {"batch": batch, "nvjpeg_decode_ms": round(1000.0 * best, 4),
            "nvjpeg_images_per_s": round(1.0 / best, 1), "gpu": torch.cuda.get_device_name(device)}


def measure(root: Path, n: int, batch: int, rounds: int) -> dict:
    files = sorted(p for p in (root / "train").rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    files = files[:: max(1, len(files) // n)][:n]  # spread over the classes
    if not files:
        raise SystemExit(f"no JPEGs under {root}/train; pass an image folder (root/train/<class>/<image>.JPEG)")
    out = {}
    with tempfile.TemporaryDirectory(prefix="tas-jpeg-") as tmp:
        sets = {"folder": files,
                f"imagenet_size_{IMAGENET_SIZE[0]}x{IMAGENET_SIZE[1]}": _upsized_copies(files, Path(tmp))}
        for name, paths in sets.items():
            out[name] = {"n_images": len(paths), "cpu_one_core": _cpu(paths, rounds), "gpu": _gpu(paths, batch, rounds)}
            print(f"{name}: {json.dumps(out[name])}", file=sys.stderr)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--batch", type=int, default=128, help="images per decode_jpeg call on the GPU")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result = header("jpeg-decode", device)
    result.update({"folder": str(args.root), "load_before": loadavg(), "rounds": args.rounds,
                   "unit": "ms per image (min over rounds); images/s",
                   "sets": measure(args.root, args.n, args.batch, args.rounds)})
    if args.out:
        write_json(args.out, result)
    else:
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
