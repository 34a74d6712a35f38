"""The initialisation the OFA harness gives every module a method adds (OFAKD distillers/utils.py
init_weights; RSD's code reuses it): kaiming fan-out convs, unit/zero BatchNorm, truncated-normal
(std 0.02) linears with zero bias. LayerNorms keep PyTorch's ones/zeros."""

from __future__ import annotations

import torch.nn as nn
from timm.layers import trunc_normal_


def ofa_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
