"""A 1-process NCCL run: what a multi-GPU job needs from the machine, on the one GPU there is.

    python -m torch.distributed.run --standalone --nproc_per_node=1 benchmarks/nccl_check.py --out F

Joins an NCCL process group from torchrun's environment, trains a ResNet-18 wrapped in DistributedDataParallel
for a few steps (the gradient all-reduce), all-reduces a tensor and meets a barrier; writes what ran and
how long it took. A job with `gpus_per_job: 1` never creates a process group (tas.engine.distributed), so this
is the first thing to fail on a machine whose NCCL does not work, before a 2-GPU job does.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    import torch
    import torch.distributed as dist

    import tas  # noqa: F401  (the torchvision guard, before timm)
    import timm

    if "WORLD_SIZE" not in os.environ:
        raise SystemExit("run me under torchrun: python -m torch.distributed.run --standalone --nproc_per_node=1 "
                         "benchmarks/nccl_check.py")
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: NCCL needs one")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local)
    t0 = time.perf_counter()
    dist.init_process_group("nccl")
    init_s = time.perf_counter() - t0
    device = torch.device("cuda", local)
    model = torch.nn.parallel.DistributedDataParallel(timm.create_model("resnet18", num_classes=100).to(device),
                                                      device_ids=[local])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(args.batch, 3, 224, 224, device=device)
    y = torch.randint(0, 100, (args.batch,), device=device)
    times = []
    for _ in range(args.steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # DDP all-reduces the gradients over NCCL here
        optimizer.step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    total = torch.tensor([float(dist.get_rank() + 1)], device=device)
    dist.all_reduce(total)
    dist.barrier()
    result = {
        "benchmark": "nccl", "backend": dist.get_backend(), "world_size": dist.get_world_size(),
        "nccl_version": ".".join(map(str, torch.cuda.nccl.version())), "gpu": torch.cuda.get_device_name(device),
        "init_s": round(init_s, 3), "ddp_steps": args.steps, "ddp_step_ms_last": round(1000 * times[-1], 2),
        "all_reduce_ok": bool(total.item() == sum(range(1, dist.get_world_size() + 1))),
        "loss_finite": bool(torch.isfinite(loss).item()),
    }
    dist.destroy_process_group()
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    if not (result["all_reduce_ok"] and result["loss_finite"]):
        raise SystemExit("nccl check failed: " + text)


if __name__ == "__main__":
    main()
