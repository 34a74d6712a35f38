"""DKD (Zhao et al. CVPR 2022): CE + alpha * TCKD + beta * NCKD, with mdistiller's linear warm-up."""

from __future__ import annotations

import torch

from tas import losses
from tas.distillers.base import Distiller
from tas.distillers.registry import register


@register("dkd")
class DKD(Distiller):
    # warmup_steps: the DKD terms ramp in linearly over this many steps (mdistiller warms up over 20
    # epochs); 0 = off, as in the OFA harness whose DKD runs the paper tables quote.
    defaults = {"alpha": 1.0, "beta": 2.0, "T": 1.0, "ce_weight": 1.0, "warmup_steps": 0}
    rules = {"alpha": {"type": "number", "minimum": 0}, "beta": {"type": "number", "minimum": 0},
             "T": {"type": "number", "exclusiveMinimum": 0}, "ce_weight": {"type": "number", "minimum": 0},
             "warmup_steps": {"type": "integer", "minimum": 0}}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        o = self.options
        z_t = self.teacher_knowledge(x).logits
        z_s = self.student(x).logits
        ramp = 1.0
        if self.training and o["warmup_steps"]:
            self.step += 1
            # on the device: reading the counter back each step would stall a GPU's queue
            ramp = (self.step / o["warmup_steps"]).clamp(max=1.0)
        tckd, nckd = losses.dkd_terms(z_s, z_t, y, o["T"])
        return {
            "logits": z_s,
            "loss_ce": o["ce_weight"] * self.criterion(z_s, y),
            "loss_tckd": ramp * o["alpha"] * tckd,
            "loss_nckd": ramp * o["beta"] * nckd,
        }
