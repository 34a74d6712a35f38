"""RSD (ICCV 2025): redundancy suppression between the projected student and the teacher pooled features.

As its authors' code builds it (spacewanderx/RSD distillers/rsd.py, train.py defaults): the student's
pooled feature passes a projector Linear(d_s -> expansion * d_s, no bias) - BatchNorm - GELU -
Linear(-> d_t, no bias), initialised like OFA's heads; loss weight 0.1, kappa 0.01, expansion 2.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from tas import losses
from tas.distillers.base import Distiller
from tas.distillers.registry import register
from tas.distillers.weight_init import ofa_init


@register("rsd")
class RSD(Distiller):
    # kd_weight: an optional KD term on the logits (not in RSD's recipe; 0 = off).
    defaults = {"kappa": 0.01, "weight": 0.1, "expansion": 2, "ce_weight": 1.0, "kd_weight": 0.0, "T": 4.0}
    # expansion: the projector's hidden width / d_s
    rules = {"kappa": {"type": "number", "minimum": 0}, "weight": {"type": "number", "minimum": 0},
             "expansion": {"type": "integer", "minimum": 1}, "ce_weight": {"type": "number", "minimum": 0},
             "kd_weight": {"type": "number", "minimum": 0}, "T": {"type": "number", "exclusiveMinimum": 0}}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        expansion = self.options["expansion"]
        d_s, d_t = self.student.feature_dim, self.teacher.feature_dim
        hidden = expansion * d_s
        self.projector = nn.Sequential(nn.Linear(d_s, hidden, bias=False), nn.BatchNorm1d(hidden), nn.GELU(),
                                       nn.Linear(hidden, d_t, bias=False))
        ofa_init(self.projector)

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
