"""OFA (Hao et al. NeurIPS 2023): every chosen student stage gets a branch head into logit space, and
each branch (plus the final logits) learns from the teacher's logits with the target-enhanced loss.
Branches differ only by feature layout: conv stacks on maps, a transformer block on tokens."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from timm.models.vision_transformer import Block

from tas import losses
from tas.distillers.base import Distiller
from tas.distillers.registry import register
from tas.errors import TasError
from tas.models.stages import StageLayout


class _MapBranch(nn.Module):
    """Depthwise-separable stride-2 convs down to the student's final grid, then pool + linear."""

    def __init__(self, layout: StageLayout, width: int, final_side: int, num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(layout.channels, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        side = min(layout.grid)
        for _ in range(max(0, int(math.log2(max(1, side // max(1, final_side)))))):
            layers += [nn.Conv2d(width, width, 3, 2, 1, groups=width, bias=False), nn.BatchNorm2d(width),
                       nn.Conv2d(width, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(m).mean(dim=(2, 3)))


class _TokenBranch(nn.Module):
    """Linear to the branch width, one transformer block, mean over patch tokens, norm + linear."""

    def __init__(self, layout: StageLayout, width: int, num_classes: int) -> None:
        super().__init__()
        heads = max(1, width // 64)
        while width % heads:
            heads -= 1
        self.proj = nn.Linear(layout.channels, width)
        self.block = Block(width, num_heads=heads, mlp_ratio=2.0)
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(self.block(self.proj(tokens)).mean(dim=1)))


@register("ofa")
class OFA(Distiller):
    # stages: student stages (1-3) that get a branch; the final logits always learn too.
    defaults = {"eps": 1.0, "T": 1.0, "weight": 1.0, "ce_weight": 1.0, "stages": [1, 2, 3]}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        stages = list(self.options["stages"])
        if any(s not in (1, 2, 3) for s in stages):
            raise TasError(f"ofa stages must be among 1, 2, 3 (stage 4 is the student's own head), got {stages}")
        self.stage_indices = [s - 1 for s in stages]
        width = self.student.feature_dim
        final_side = min(self.student.layouts[3].grid)
        branches = {}
        for index in self.stage_indices:
            layout = self.student.layouts[index]
            if layout.kind == "map":
                branches[str(index + 1)] = _MapBranch(layout, width, final_side, self.num_classes)
            else:
                branches[str(index + 1)] = _TokenBranch(layout, width, self.num_classes)
        self.branches = nn.ModuleDict(branches)

    def _branch_input(self, h: torch.Tensor, index: int) -> torch.Tensor:
        layout = self.student.layouts[index]
        if layout.kind == "map":
            return h
        if layout.kind == "nhwc":
            return h.flatten(1, 2)
        return h[:, layout.prefix_tokens:]

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        o = self.options
        z_t = self.teacher_knowledge(x).logits
        ks = self.student(x)
        out = {"logits": ks.logits, "loss_ce": o["ce_weight"] * self.criterion(ks.logits, y)}
        for index in self.stage_indices:
            z_b = self.branches[str(index + 1)](self._branch_input(ks.stages[index], index))
            out[f"loss_ofa{index + 1}"] = o["weight"] * losses.ofa(z_b, z_t, y, o["eps"], o["T"])
        out["loss_ofa4"] = o["weight"] * losses.ofa(ks.logits, z_t, y, o["eps"], o["T"])
        return out

