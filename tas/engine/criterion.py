"""The training criterion every job and `describe` use, apart from tas.engine.trainer: importing the trainer
imports timm.optim and with it torch._dynamo (about 1.5 CPU-seconds), which `describe` needs for nothing else."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from timm.loss import SoftTargetCrossEntropy


def make_criterion(label_smoothing: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """CE for hard labels (with smoothing) and soft labels (mixup already smoothed them)."""

    soft_target_ce = SoftTargetCrossEntropy()

    def criterion(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.ndim == 1:
            return F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)
        return soft_target_ce(logits.float(), target)

    return criterion
