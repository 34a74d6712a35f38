"""OFA (Hao et al., "One-for-All", NeurIPS 2023), with the branch heads of its public code.

Every chosen student stage (1-4 by default) gets a branch that maps the stage's features into logit
space; each branch learns from the teacher's logits with the target-enhanced loss (weight
`ofa_weight`), and so do the student's own final logits (weight `kd_weight`), beside CE.

Branch structure (d_s, d_t = the student's and teacher's pooled feature widths; docs/protocol.md):
- CNN student, stage k < 4: (4 - k) depthwise-separable stride-2 blocks, channels doubling, the last
  one to max(d_s, d_t); stage 4: a 1x1 conv to max(d_s, d_t) on the map the student's head pools;
  then global average pooling and a linear classifier.
- Token student (ViT, Swin, Mixer/ResMLP): patch merging down to the grid a stride-32 network has at
  this image size (7 x 7 at 224 px), the first merge to d_s; then max(4 - k, 1) transformer blocks
  (4 heads) at d_s; then the mean token (`branch_readout: mean`) or, for a ViT/DeiT student, its class
  token carried through the branch (`branch_readout: token`); a linear classifier.
The branches take OFA's initialisation (kaiming fan-out convs, unit BN, truncated-normal linears).

Why `mean` is the default: OFA's code carries a class token only when the student has `num_tokens`, an
attribute timm 0.6.5's VisionTransformer no longer has (it became `num_prefix_tokens`), so under the
timm OFA pins its DeiT-T branch gets no class token; the authors' fix (OFAKD #38) removes the class
token from the branch's input, which leaves OFA's mean-pooling readout (docs/protocol.md).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import Block

from tas import losses
from tas.distillers.base import Distiller
from tas.distillers.registry import register
from tas.distillers.weight_init import ofa_init
from tas.errors import TasError

# OFA's branch-loss weight per student kind for its CIFAR-100 runs (OFAKD issues #14 and #32: CNN
# students ran with --ofa-loss-weight 0.1; token students kept train.py's default 1).
FAMILY_OFA_WEIGHT = {"cnn": 0.1, "token": 1.0}
BRANCH_HEADS = 4
REFERENCE_GRID_STRIDE = 32  # 224 px / 32 = OFA's 7 x 7 final patch grid
BRANCH_READOUTS = ("mean", "token")


class SepConv(nn.Module):
    """Two depthwise-separable 3x3 convolutions, the first with stride 2 (halves the grid)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_in, 3, 2, 1, groups=c_in, bias=False), nn.Conv2d(c_in, c_in, 1, bias=False),
            nn.BatchNorm2d(c_in), nn.ReLU(),
            nn.Conv2d(c_in, c_in, 3, 1, 1, groups=c_in, bias=False), nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out), nn.ReLU(),
        )

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        return self.body(m)


class PatchMerge(nn.Module):
    """2 x 2 neighbouring tokens -> one: concat (4C), LayerNorm, bias-free linear to c_out, activation.
    An odd grid is zero-padded by one row/column first (timm's Swin merging does the same)."""

    def __init__(self, c_in: int, c_out: int, act: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * c_in)
        self.reduction = nn.Linear(4 * c_in, c_out, bias=False)
        self.act = nn.GELU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C) -> (B, ceil(H/2), ceil(W/2), c_out)
        h, w = x.shape[1:3]
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.act(self.reduction(self.norm(x)))


def cnn_branch(stage: int, c_in: int, width: int, num_classes: int) -> nn.Sequential:
    if stage == 4:
        body = [nn.Conv2d(c_in, width, 1)]
    else:
        body, c = [], c_in
        for i in range(4 - stage):
            last = i == 3 - stage
            body.append(SepConv(c, width if last else 2 * c))
            c *= 2
    return nn.Sequential(*body, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))


def merge_count(grid: int, final_grid: int) -> int:
    """How many 2x merges bring `grid` down to (not below) `final_grid`: floor(log2(grid / final))."""
    return max(int(math.floor(math.log2(grid / final_grid) + 1e-9)), 0) if grid > final_grid else 0


def _heads_for(width: int, preferred: int = BRANCH_HEADS) -> int:
    heads = min(preferred, width)
    while width % heads:
        heads -= 1
    return heads


class TokenBranch(nn.Module):
    """Patch merging to the final grid, transformer blocks, class-token or mean readout, linear.

    class_token=False: the prefix tokens are dropped before the branch (they take no part in its
    attention) and the branch reads the mean of its tokens. True: the prefix tokens are carried
    through unchanged, attend with the merged patches, and the branch reads the first (class) token."""

    def __init__(self, stage: int, c_in: int, grid: int, final_grid: int, width: int, class_token: bool,
                 num_classes: int) -> None:
        super().__init__()
        merges = merge_count(grid, final_grid)
        # OFA: the first merge projects to d_s; the last merge of a chain of several has no activation.
        self.merges = nn.ModuleList(
            PatchMerge(c_in if i == 0 else width, width, act=(i == 0 or i != merges - 1)) for i in range(merges))
        if merges == 0 and c_in != width:
            raise TasError(f"ofa: a stage of width {c_in} at the final grid cannot feed a branch of width {width}")
        self.blocks = nn.Sequential(*[Block(width, num_heads=_heads_for(width)) for _ in range(max(4 - stage, 1))])
        self.class_token = class_token
        self.fc = nn.Linear(width, num_classes)

    def forward(self, prefix: torch.Tensor | None, grid: torch.Tensor) -> torch.Tensor:
        """prefix: (B, P, C) prefix tokens (class/register), or None; grid: (B, H, W, C) patch tokens."""
        for merge in self.merges:
            grid = merge(grid)
        tokens = grid.flatten(1, 2)
        if not self.class_token:
            return self.fc(self.blocks(tokens).mean(dim=1))
        tokens = self.blocks(torch.cat([prefix, tokens], dim=1))
        return self.fc(tokens[:, 0])


def final_grid_for(image_size: int) -> int:
    return max(1, round(image_size / REFERENCE_GRID_STRIDE))


@register("ofa")
class OFA(Distiller):
    defaults = {
        "stages": [1, 2, 3, 4],  # student stages that get a branch
        "ofa_weight": None,      # branch losses; null = OFA's per-student default (0.1 CNN, 1.0 token)
        "kd_weight": 1.0,        # the student's final logits vs the teacher, same target-enhanced loss
        "ce_weight": 1.0,
        "eps": 1.0,              # target enhancement exponent (OFA: 1 on CIFAR-100, 1.5 for ImageNet CNN students)
        "T": 1.0,
        "branch_readout": "mean",  # a ViT/DeiT student's branches: mean (OFA under timm 0.6.5) | token (its
                                   # class token)
    }
    rules = {
        "stages": {"type": "array", "items": {"enum": [1, 2, 3, 4]}, "minItems": 1, "uniqueItems": True},
        "ofa_weight": {"oneOf": [{"type": "null"}, {"type": "number", "minimum": 0}]},
        "kd_weight": {"type": "number", "minimum": 0}, "ce_weight": {"type": "number", "minimum": 0},
        "eps": {"type": "number", "exclusiveMinimum": 0}, "T": {"type": "number", "exclusiveMinimum": 0},
        "branch_readout": {"enum": ["mean", "token"]},  # BRANCH_READOUTS (a literal: planning reads it unimported)
    }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        o = self.options
        stages, weight = list(o["stages"]), o["ofa_weight"]  # checked against `rules` by the base class
        self.kind = "cnn" if self.student.is_convolutional else "token"
        self.ofa_weight = FAMILY_OFA_WEIGHT[self.kind] if weight is None else float(weight)
        self.stages = sorted(stages)
        d_s, d_t = self.student.feature_dim, self.teacher.feature_dim
        branches = {}
        for stage in self.stages:
            layout = self.student.layouts[stage - 1]
            if self.kind == "cnn":
                c_in = d_s if stage == 4 else layout.channels  # stage 4 reads the map the head pools
                branches[str(stage)] = cnn_branch(stage, c_in, max(d_s, d_t), self.num_classes)
            else:
                # a student without a class token (Swin, Mixer, ResMLP) always reads the mean
                class_token = (o["branch_readout"] == "token"
                               and getattr(self.student.model, "cls_token", None) is not None)
                branches[str(stage)] = TokenBranch(stage, layout.channels, min(layout.grid),
                                                   final_grid_for(self.student.image_size),
                                                   d_s, class_token, self.num_classes)
        self.branches = nn.ModuleDict(branches)
        ofa_init(self.branches)

    def _branch_logits(self, stage: int, h: torch.Tensor) -> torch.Tensor:
        branch = self.branches[str(stage)]
        layout = self.student.layouts[stage - 1]
        if self.kind == "cnn":
            return branch(self.student.final_map(h) if stage == 4 else h)
        if layout.kind == "nhwc":
            return branch(None, h)
        prefix = h[:, :layout.prefix_tokens] if layout.prefix_tokens else None
        patches = h[:, layout.prefix_tokens:]
        return branch(prefix, patches.reshape(h.shape[0], *layout.grid, layout.channels))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        o = self.options
        z_t = self.teacher_knowledge(x).logits
        ks = self.student(x)
        out = {"logits": ks.logits, "loss_ce": o["ce_weight"] * self.criterion(ks.logits, y)}
        for stage in self.stages:
            z_b = self._branch_logits(stage, ks.stages[stage - 1])
            out[f"loss_ofa{stage}"] = self.ofa_weight * losses.ofa(z_b, z_t, y, o["eps"], o["T"])
        out["loss_ofa_logits"] = o["kd_weight"] * losses.ofa(ks.logits, z_t, y, o["eps"], o["T"])
        return out
