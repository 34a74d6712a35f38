"""KD (Hinton et al. 2015): CE + weight * T^2 * KL at temperature T."""

from __future__ import annotations

import torch

from tas import losses
from tas.distillers.base import Distiller
from tas.distillers.registry import register


@register("kd")
class KD(Distiller):
    # T 1: the OFA harness's --kd-temperature default, which its KD baselines ran with (docs/protocol.md).
    defaults = {"T": 1.0, "weight": 1.0, "ce_weight": 1.0}
    rules = {"T": {"type": "number", "exclusiveMinimum": 0}, "weight": {"type": "number", "minimum": 0},
             "ce_weight": {"type": "number", "minimum": 0}}

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        z_t = self.teacher_knowledge(x).logits
        z_s = self.student(x).logits
        o = self.options
        return {
            "logits": z_s,
            "loss_ce": o["ce_weight"] * self.criterion(z_s, y),
            "loss_kd": o["weight"] * losses.kd(z_s, z_t, o["T"]),
        }
