"""Scratch: the student alone with its cross-entropy (also how teachers are trained)."""

from __future__ import annotations

import torch

from tas.distillers.base import Distiller
from tas.distillers.registry import register


@register("scratch")
class Scratch(Distiller):
    needs_teacher = False

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.student(x).logits
        return {"logits": logits, "loss_ce": self.criterion(logits, y)}
