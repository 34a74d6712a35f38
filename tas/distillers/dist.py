"""DIST (Huang et al. NeurIPS 2022): inter- and intra-class Pearson relations of the predictions."""

from __future__ import annotations

import torch

from tas import losses
from tas.distillers.base import Distiller
from tas.distillers.registry import register


@register("dist")
class DIST(Distiller):
    defaults = {"beta": 1.0, "gamma": 1.0, "T": 1.0, "ce_weight": 1.0}
    rules = {"beta": {"type": "number", "minimum": 0}, "gamma": {"type": "number", "minimum": 0},
             "T": {"type": "number", "exclusiveMinimum": 0}, "ce_weight": {"type": "number", "minimum": 0}}

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        o = self.options
        z_t = self.teacher_knowledge(x).logits
        z_s = self.student(x).logits
        return {
            "logits": z_s,
            "loss_ce": o["ce_weight"] * self.criterion(z_s, y),
            "loss_dist": losses.dist(z_s, z_t, o["beta"], o["gamma"], o["T"]),
        }
