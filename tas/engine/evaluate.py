"""Top-1/top-5 accuracy, parameter counts, FLOPs and throughput, under inference mode."""

from __future__ import annotations

import time
from typing import Callable, Iterable

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from tas.stepflops import dynamo_deferred


@torch.inference_mode()
def accuracy(predict: Callable[[torch.Tensor], torch.Tensor], loader: Iterable, autocast) -> dict:
    """Top-1 / top-5 (%) of `predict` over `loader`, and the images/s it ran at."""
    hits1 = hits5 = None  # device counters: reading them per batch would stall the GPU queue
    total = 0
    start = time.perf_counter()
    for x, y in loader:
        with autocast():
            logits = predict(x)
        top5 = logits.float().topk(min(5, logits.shape[-1]), dim=-1).indices
        hits = top5 == y.view(-1, 1)
        batch1, batch5 = hits[:, 0].sum(), hits.any(dim=1).sum()
        hits1 = batch1 if hits1 is None else hits1 + batch1
        hits5 = batch5 if hits5 is None else hits5 + batch5
        total += y.shape[0]
    correct1 = 0 if hits1 is None else int(hits1)
    correct5 = 0 if hits5 is None else int(hits5)
    elapsed = time.perf_counter() - start
    return {
        "top1": 100.0 * correct1 / max(1, total),
        "top5": 100.0 * correct5 / max(1, total),
        "n": total,
        "correct1": correct1,
        "correct5": correct5,
        "images_per_s": total / elapsed if elapsed > 0 else 0.0,
    }


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def forward_flops(model: nn.Module, image_size: int, device: torch.device) -> int:
    """FLOPs of one forward pass of one image (torch's FLOP counter: 2 per multiply-add)."""
    was_training = model.training
    model.eval()
    try:
        probe = torch.zeros(1, 3, image_size, image_size, device=device)
        # torch._dynamo deferred: entering a FlopCounterMode imports it (1.4 of an evaluate job's ~4.5 CPU-s)
        # for nothing a count uses.
        with dynamo_deferred(), torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(probe)
        return int(counter.get_total_flops())
    finally:
        model.train(was_training)
