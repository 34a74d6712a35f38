"""FitNet, heterogeneous (as OFA's issues describe it): a 1x1 regressor maps the student's stage map to
the teacher's width at the same stage; tokens become grids, resolutions are matched by interpolation."""

from __future__ import annotations

import torch
import torch.nn as nn

from tas import losses
from tas.distillers.base import Distiller
from tas.distillers.registry import register
from tas.errors import TasError


@register("fitnet")
class FitNet(Distiller):
    defaults = {"stage": 3, "weight": 1.0, "ce_weight": 1.0}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        stage = self.options["stage"]
        if stage not in (1, 2, 3, 4):
            raise TasError(f"fitnet stage must be 1-4, got {stage!r}")
        self.index = stage - 1
        s_ch = self.student.layouts[self.index].channels
        t_ch = self.teacher.layouts[self.index].channels
        self.regressor = nn.Sequential(nn.Conv2d(s_ch, t_ch, 1, bias=False), nn.BatchNorm2d(t_ch))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        o = self.options
        kt = self.teacher_knowledge(x)
        ks = self.student(x)
        hint = self.regressor(self.student.to_map(ks.stages[self.index], self.index))
        target = self.teacher.to_map(kt.stages[self.index], self.index)
        return {
            "logits": ks.logits,
            "loss_ce": o["ce_weight"] * self.criterion(ks.logits, y),
            "loss_hint": o["weight"] * losses.fitnet_hint(hint, target),
        }
