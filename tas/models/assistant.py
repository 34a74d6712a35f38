"""The hybrid assistant (METHOD.md s.2): fuse before transfer.

    assistant(x) = head_B . pool . norm_B . stage4_B . L2G . stage3_A . stage2_A . stage1_A . stem_A (x)

Part A (the convolutional model of the pair) and part B (the other) are the real module objects of
the student and teacher, not copies. The assistant never runs part A itself: it takes the stage-3
output that the student's (or teacher's) own forward already produced, so its extra cost is L2G plus
one stage 4. The only new trainable modules are the L2G projector (and, for the ablation variants
that drop B's stage 4, a linear head).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.swin_transformer import SwinTransformerBlock
from torch.utils.flop_counter import FlopCounterMode

from tas.errors import TasError
from tas.models.stages import StageLayout, StageView, from_map, to_map

FUSIONS = ("full", "A", "B")
# How part B turns its stage-4 output into the assistant's feature when B is a ViT: its class token (the
# ViT's own head reads it; the default) or the mean of its patch tokens. Other families pool as their
# own head does.
B_READOUTS = ("token", "mean")


@dataclass(frozen=True)
class Roles:
    part_a: str  # 'student' or 'teacher'
    part_b: str


def assign_roles(teacher: StageView, student: StageView) -> Roles:
    """A = the CNN of a heterogeneous pair; otherwise A = student, B = teacher (METHOD.md s.2)."""
    if teacher.is_convolutional and not student.is_convolutional:
        return Roles("teacher", "student")
    return Roles("student", "teacher")


def channel_mlp_ratio(stage: nn.Module, default: float = 4.0) -> float:
    """hidden / input width of the first per-token channel MLP in a timm stage (`mlp` in ViT, DeiT and
    Swin blocks, `mlp_channels` in Mixer and ResMLP blocks); `default` when the stage has none."""
    for name, module in stage.named_modules():
        fc1 = getattr(module, "fc1", None)
        if name.rsplit(".", 1)[-1] in ("mlp", "mlp_channels") and isinstance(fc1, nn.Linear):
            return fc1.out_features / fc1.in_features
    return default


def _window_for(grid: tuple[int, int], preferred: int = 7) -> int:
    """Largest window <= preferred that tiles the grid, so the block never pads."""
    side = min(grid)
    for size in range(min(preferred, side), 0, -1):
        if grid[0] % size == 0 and grid[1] % size == 0:
            return size
    return 1


class L2G(nn.Module):
    """Local-to-global projector: A's stage-3 map -> the grid, width and layout B's stage 4 expects.

    To a token/window model: a strided conv patch embedding (kernel = stride = H3 / grid) + LayerNorm,
    then one windowed-attention (Swin) block at that width whose MLP is `mlp_ratio` times wider.
    To a CNN: 1x1 conv + BN, resampled.
    """

    def __init__(self, source: StageLayout, target: StageLayout, target_is_conv: bool, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.source, self.target, self.target_is_conv = source, target, target_is_conv
        (h_src, w_src), (h_dst, w_dst) = source.grid, target.grid
        if target_is_conv:
            self.proj = nn.Sequential(nn.Conv2d(source.channels, target.channels, 1, bias=False),
                                      nn.BatchNorm2d(target.channels))
            self.norm, self.block, self.mlp_ratio = None, None, None
            return
        if h_src % h_dst == 0 and w_src % w_dst == 0 and h_src // h_dst == w_src // w_dst:
            self.resize_to = None
            stride = h_src // h_dst
        else:
            self.resize_to = (h_dst, w_dst)  # grids that do not divide: resample first, then a 1x1 embedding
            stride = 1
        self.proj = nn.Conv2d(source.channels, target.channels, kernel_size=stride, stride=stride)
        self.norm = nn.LayerNorm(target.channels)
        heads = max(1, target.channels // 32)
        while target.channels % heads:
            heads -= 1
        self.block = SwinTransformerBlock(dim=target.channels, input_resolution=target.grid, num_heads=heads,
                                          window_size=_window_for(target.grid), mlp_ratio=mlp_ratio)
        self.mlp_ratio = mlp_ratio

    def forward(self, a_map: torch.Tensor) -> torch.Tensor:
        """(B, C3, H3, W3) -> (B, C, H, W) for a CNN target, else NHWC (B, H, W, C)."""
        if self.target_is_conv:
            out = self.proj(a_map)
            if tuple(out.shape[-2:]) != tuple(self.target.grid):
                out = F.interpolate(out, size=self.target.grid, mode="bilinear", align_corners=False)
            return out
        if self.resize_to is not None:
            a_map = F.interpolate(a_map, size=self.resize_to, mode="bilinear", align_corners=False)
        out = self.norm(self.proj(a_map).permute(0, 2, 3, 1))
        return self.block(out)


class HybridAssistant(nn.Module):
    """Consumes A's stage-3 output and returns (stage-4 map, pooled feature f_a, logits z_a).

    `l2g_mlp_ratio`: the MLP width of L2G's attention block; None takes part B's own (the block stands
    in for one more block of B: 4 in every paper model, 2 in the tiny mini ViT and Mixer).
    `b_readout`: 'token' or 'mean', how a ViT part B reads the feature (B_READOUTS).
    """

    def __init__(self, teacher: StageView, student: StageView, num_classes: int, fusion: str = "full",
                 l2g_mlp_ratio: float | None = None, b_readout: str = "token") -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise TasError(f"assistant fusion {fusion!r} is unknown; use one of: {', '.join(FUSIONS)}")
        if b_readout not in B_READOUTS:
            raise TasError(f"assistant b_readout {b_readout!r} is unknown; use one of: {', '.join(B_READOUTS)}")
        self.roles = assign_roles(teacher, student)
        views = {"teacher": teacher, "student": student}
        part_a, part_b = views[self.roles.part_a], views[self.roles.part_b]
        # Plain tuple: the parts belong to the student/teacher; registering them here would make them
        # look like assistant parameters (and duplicate them in state dicts).
        self._parts = (part_a, part_b)
        self.fusion = fusion
        self.source_layout = part_a.layouts[2]
        self.target_layout = part_b.layouts[2]
        _check_fusable(part_a, part_b)
        if l2g_mlp_ratio is None:
            l2g_mlp_ratio = channel_mlp_ratio(part_b.stage_module(3))
        elif isinstance(l2g_mlp_ratio, bool) or not isinstance(l2g_mlp_ratio, (int, float)) or l2g_mlp_ratio <= 0:
            raise TasError(f"l2g_mlp_ratio must be a positive number (or null for part B's own), got {l2g_mlp_ratio!r}")
        self.l2g_mlp_ratio = float(l2g_mlp_ratio)
        self.num_classes = num_classes
        # the class-token readout is what B's own head does; 'mean' changes only a ViT's
        self.b_readout = b_readout if part_b.family == "vit" else "own"
        self.l2g, self.head = self._new_modules()
        if fusion == "full":
            self.feature_dim = part_b.feature_dim
        else:
            self.feature_dim = self.source_layout.channels if fusion == "A" else self.target_layout.channels

    def _new_modules(self) -> tuple[L2G | None, nn.Linear | None]:
        """The assistant's own trainable modules, freshly initialised from the current RNG state."""
        l2g = None if self.fusion == "A" else L2G(self.source_layout, self.target_layout, self.part_b.is_convolutional,
                                                   mlp_ratio=self.l2g_mlp_ratio)
        if self.fusion == "full":
            return l2g, None
        width = self.source_layout.channels if self.fusion == "A" else self.target_layout.channels
        return l2g, nn.Linear(width, self.num_classes)

    def reinitialise(self, seed: int) -> None:
        """Give L2G (and an ablation's head) fresh weights drawn from `seed` alone, whatever was built or
        drawn before: each run's assistant starts from its own seed. The global RNG is left as it was."""
        device = next(self.parameters()).device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.l2g, self.head = self._new_modules()
        self.to(device)

    @property
    def part_a(self) -> StageView:
        return self._parts[0]

    @property
    def part_b(self) -> StageView:
        return self._parts[1]

    def forward(self, stage3_a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a_map = to_map(stage3_a, self.source_layout)
        if self.fusion == "A":
            feature = a_map.mean(dim=(2, 3))
            return a_map, feature, self.head(feature)
        fused = self.l2g(a_map)
        if self.fusion == "B":
            fused_map = fused if self.part_b.is_convolutional else fused.permute(0, 3, 1, 2)
            feature = fused_map.mean(dim=(2, 3))
            return fused_map, feature, self.head(feature)
        h3 = self._to_native(fused)
        h4 = self.part_b.stage(3, h3)
        feature = self._readout(h4)
        return self.part_b.to_map(h4, 3), feature, self.part_b.classify(feature)

    def _readout(self, h4: torch.Tensor) -> torch.Tensor:
        if self.b_readout != "mean":
            return self.part_b.head_features(h4)
        vit = self.part_b.model  # timm ViT: final norm, then pooling, then fc_norm (as its forward_head)
        patches = vit.norm(h4)[:, self.part_b.layouts[3].prefix_tokens:]
        return vit.fc_norm(patches.mean(dim=1))

    def _to_native(self, fused: torch.Tensor) -> torch.Tensor:
        kind = self.target_layout.kind
        if kind in ("map", "nhwc"):
            return fused
        tokens = from_map(fused.permute(0, 3, 1, 2), self.target_layout)
        return self.part_b.embed_tokens(tokens)

    def new_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def cost(self, image_size: int) -> dict:
        """What the assistant costs: the student/teacher parameters on its path (those one backward through
        it reaches), the FLOPs of one image through part A and the assistant, and those it adds to a step
        (L2G + B's stage 4 + head: part A's stage-3 output is reused, never recomputed)."""
        probe = torch.zeros(2, 3, image_size, image_size)
        with torch.inference_mode():
            counter = FlopCounterMode(display=False)
            with counter:
                h3 = self.part_a.forward_until(probe[:1], 2)
            part_a_flops = int(counter.get_total_flops())
            counter = FlopCounterMode(display=False)
            with counter:
                self(h3)
            added = int(counter.get_total_flops())
        return {"shared_parameters": self._parameters_on_path(probe), "flops_total": part_a_flops + added,
                "flops_added_per_step": added}

    def _parameters_on_path(self, probe: torch.Tensor) -> int:
        params = {id(p): p for m in (self.part_a.model, self.part_b.model) for p in m.parameters()}
        saved = {key: p.requires_grad for key, p in params.items()}
        for p in params.values():
            p.requires_grad_(True)
            p.grad = None
        try:
            self(self.part_a.forward_until(probe, 2))[2].sum().backward()
            return sum(p.numel() for p in params.values() if p.grad is not None)
        finally:
            for key, p in params.items():
                p.grad = None
                p.requires_grad_(saved[key])

    def spec(self) -> dict:
        """The shape plan and ownership that prepare-run records (results/<exp>/prepared/<pair>/<method>.json)."""
        part_b_stage4 = sum(p.numel() for p in self.part_b.stage_module(3).parameters())
        return {
            "fusion": self.fusion,
            "part_a": self.roles.part_a,
            "part_b": self.roles.part_b,
            "part_a_family": self.part_a.family,
            "part_b_family": self.part_b.family,
            "stage3_a": self.source_layout.as_dict(),
            "stage3_b": self.target_layout.as_dict(),
            "l2g": None if self.l2g is None else {
                "kind": "conv1x1+bn" if self.l2g.target_is_conv else "patch-embed+layernorm+swin-block",
                "attention_block": self.l2g.block is not None,
                "mlp_ratio": self.l2g.mlp_ratio,
                "parameters": sum(p.numel() for p in self.l2g.parameters()),
            },
            "b_readout": self.b_readout if self.fusion == "full" else None,
            "new_parameters": self.new_parameters(),
            "shared_parameters_stage4_b": part_b_stage4 if self.fusion == "full" else 0,
        }


def _check_fusable(part_a: StageView, part_b: StageView) -> None:
    src, dst = part_a.layouts[2], part_b.layouts[2]
    if min(src.grid) < 1 or min(dst.grid) < 1:
        raise TasError("cannot fuse: a stage-3 output has an empty grid; use a larger image size")
    if dst.kind == "nhwc" and min(dst.grid) < 2:
        raise TasError(f"cannot fuse: part B's stage 4 downsamples a {dst.grid} grid; "
                       "use a larger image size for this pair")
