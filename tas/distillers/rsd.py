"""RSD (ICCV 2025): redundancy suppression between projected student and teacher pooled features."""

from __future__ import annotations

import torch
import torch.nn as nn

from tas import losses
from tas.distillers.base import Distiller
from tas.distillers.registry import register


@register("rsd")
class RSD(Distiller):
    defaults = {"kappa": 0.01, "weight": 1.0, "ce_weight": 1.0, "kd_weight": 0.0, "T": 4.0}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        d_s, d_t = self.student.feature_dim, self.teacher.feature_dim
        hidden = max(d_s, d_t)
        self.projector = nn.Sequential(nn.Linear(d_s, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, d_t))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        o = self.options
        kt = self.teacher_knowledge(x)
        ks = self.student(x)
        out = {
            "logits": ks.logits,
            "loss_ce": o["ce_weight"] * self.criterion(ks.logits, y),
            "loss_rsd": o["weight"] * losses.rsd(self.projector(ks.feature), kt.feature, o["kappa"]),
        }
        if o["kd_weight"]:
            out["loss_kd"] = o["kd_weight"] * losses.kd(ks.logits, kt.logits, o["T"])
        return out
