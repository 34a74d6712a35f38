"""FitNet as the OFA harness runs it: hints on student stages 1-4 (OFAKD train.py --fitnet-stage
default), each a bias-free 1x1 conv regressor from the student's stage map to the teacher's width at
the same stage, MSE summed over the stages (weight 1). The harness's own FitNet takes CNN pairs only;
for heterogeneous pairs tokens become grids (prefix tokens dropped) and the regressed student map is
resized to the teacher's grid by bilinear interpolation (docs/protocol.md says how this differs from
the patchify alignment of OFAKD issue #10)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from tas import losses
from tas.distillers.base import Distiller
from tas.distillers.registry import register
from tas.distillers.weight_init import ofa_init


@register("fitnet")
class FitNet(Distiller):
    defaults = {"stages": [1, 2, 3, 4], "weight": 1.0, "ce_weight": 1.0}
    rules = {"stages": {"type": "array", "items": {"enum": [1, 2, 3, 4]}, "minItems": 1, "uniqueItems": True},
             "weight": {"type": "number", "minimum": 0}, "ce_weight": {"type": "number", "minimum": 0}}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.stages = sorted(self.options["stages"])  # distinct stages among 1-4: `rules`, checked by the base
        self.regressors = nn.ModuleDict({
            str(s): nn.Conv2d(self.student.layouts[s - 1].channels, self.teacher.layouts[s - 1].channels, 1, bias=False)
            for s in self.stages})
        ofa_init(self.regressors)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        o = self.options
        kt = self.teacher_knowledge(x)
        ks = self.student(x)
        hints = []
        for s in self.stages:
            m_s, m_t = self.student.to_map(ks.stages[s - 1], s - 1), self.teacher.to_map(kt.stages[s - 1], s - 1)
            if m_s.shape[-2] * m_s.shape[-1] > m_t.shape[-2] * m_t.shape[-1]:
                # A 1x1 conv and bilinear resizing commute: shrinking first gives the same hint at a
                # fraction of the cost (a CNN's 56x56 stage 1 against a ViT's 14x14 grid).
                m_s = F.interpolate(m_s, size=m_t.shape[-2:], mode="bilinear", align_corners=False)
            hints.append(losses.fitnet_hint(self.regressors[str(s)](m_s), m_t))
        return {
            "logits": ks.logits,
            "loss_ce": o["ce_weight"] * self.criterion(ks.logits, y),
            "loss_hint": o["weight"] * sum(hints),
        }
