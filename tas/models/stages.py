"""A uniform four-stage view of any supported timm model.

Every model is seen as `stem -> stage1..4 -> post (final norm) -> pool -> head` (METHOD.md s.1).
Stage boundaries come from the model's own `feature_info`: a hierarchical model's last four feature
modules end its stages; an isotropic one (ViT, Mixer: every block at the same reduction) is split by
OFA's convention, ends at 1/6, 2/6, 5/6 and 6/6 of its depth (blocks 1, 3, 9, 11 of 12). Shapes and
layouts are measured with one dummy forward, never read from a table. The stage modules are the
model's own objects, so running them is running the model (a test checks that the composition equals
`model.forward`, and the stage outputs equal `forward_intermediates`).

Only the stem and the final norm differ between timm families; `_ADAPTERS` holds those two steps and
the family name that decides the assistant's roles (METHOD.md s.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
import torch.nn as nn
from timm.models.convnext import ConvNeXt
from timm.models.efficientnet import EfficientNet
from timm.models.mlp_mixer import MlpMixer
from timm.models.resnet import ResNet
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer

from tas.errors import TasError

CONV_FAMILIES = frozenset({"cnn"})


@dataclass(frozen=True)
class StageLayout:
    """How a stage output is laid out: 'map' (B,C,H,W), 'nhwc' (B,H,W,C) or 'tokens' (B,P+H*W,C)."""

    kind: str
    channels: int
    grid: tuple[int, int]
    prefix_tokens: int = 0

    def as_dict(self) -> dict:
        return {"kind": self.kind, "channels": self.channels, "grid": list(self.grid),
                "prefix_tokens": self.prefix_tokens}


class Knowledge(NamedTuple):
    """What one forward of a model yields: its four stage outputs (native layout), f and logits."""

    stages: tuple[torch.Tensor, ...]
    feature: torch.Tensor
    logits: torch.Tensor


@dataclass(frozen=True)
class _Adapter:
    family: str
    stem: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    post: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    layout: str


def _resnet_stem(m: ResNet, x: torch.Tensor) -> torch.Tensor:
    return m.maxpool(m.act1(m.bn1(m.conv1(x))))


def _vit_stem(m: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    return m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(x))))


_ADAPTERS: dict[type, _Adapter] = {
    ResNet: _Adapter("cnn", _resnet_stem, lambda m, x: x, "map"),
    EfficientNet: _Adapter("cnn", lambda m, x: m.bn1(m.conv_stem(x)), lambda m, x: m.bn2(m.conv_head(x)), "map"),
    ConvNeXt: _Adapter("cnn", lambda m, x: m.stem(x), lambda m, x: m.norm_pre(x), "map"),
    SwinTransformer: _Adapter("swin", lambda m, x: m.patch_embed(x), lambda m, x: m.norm(x), "nhwc"),
    VisionTransformer: _Adapter("vit", _vit_stem, lambda m, x: m.norm(x), "tokens"),
    MlpMixer: _Adapter("mlp", lambda m, x: m.stem(x), lambda m, x: m.norm(x), "tokens"),
}


def _adapter_for(model: nn.Module) -> _Adapter:
    for cls in type(model).__mro__:
        if cls in _ADAPTERS:
            return _ADAPTERS[cls]
    supported = ", ".join(sorted(c.__name__ for c in _ADAPTERS))
    raise TasError(f"model class {type(model).__name__} has no stage view; supported timm families: {supported}")


def stage_end_modules(model: nn.Module) -> list[str]:
    """Names (as in feature_info) of the modules that end stages 1-4."""
    info = list(model.feature_info)
    names = [entry["module"] for entry in info]
    if len({entry["reduction"] for entry in info}) == 1 and len(names) >= 4:
        depth = len(names)
        ends, previous = [], 0
        for sixth in (1, 2, 5, 6):
            end = max(previous + 1, round(depth * sixth / 6))
            ends.append(end)
            previous = end
        if ends[-1] > depth:
            raise TasError(f"{type(model).__name__} has {depth} blocks; at least 4 are needed for four stages")
        return [names[end - 1] for end in ends]
    if len(names) < 4:
        raise TasError(f"{type(model).__name__} exposes {len(names)} feature stages; four are needed")
    return names[-4:]


def _stage_modules(model: nn.Module, end_names: list[str]) -> list[nn.Module]:
    """Group the trunk into four modules; slices of an nn.Sequential share the block objects."""
    stages, previous_end = [], {}
    for name in end_names:
        if "." in name:
            seq_name, index = name.rsplit(".", 1)
            seq = model.get_submodule(seq_name)
            start = previous_end.get(seq_name, -1) + 1
            stages.append(seq[start : int(index) + 1])
            previous_end[seq_name] = int(index)
        else:
            stages.append(model.get_submodule(name))
    return stages


class StageView(nn.Module):
    """Wraps a timm model (registered as `.model`); the stage modules are views into it."""

    def __init__(self, model: nn.Module, image_size: int) -> None:
        super().__init__()
        self.model = model
        self._adapter = _adapter_for(model)
        self.family = self._adapter.family
        self.stage_names = stage_end_modules(model)
        self.rebind()
        self.image_size = image_size
        self.layouts, self.feature_dim = self._measure(image_size)

    def rebind(self) -> None:
        """Re-derive the stage views after `self.model`'s modules were replaced (e.g. SyncBatchNorm)."""
        # A plain tuple, not a ModuleList: registering the views again would duplicate state_dict keys.
        self._stages = tuple(_stage_modules(self.model, self.stage_names))

    @property
    def is_convolutional(self) -> bool:
        return self.family in CONV_FAMILIES

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self._adapter.stem(self.model, x)

    def stage(self, index: int, h: torch.Tensor) -> torch.Tensor:
        """Run stage `index` (0-based) on the previous stage's native output."""
        return self._stages[index](h)

    def stage_module(self, index: int) -> nn.Module:
        return self._stages[index]

    def forward_until(self, x: torch.Tensor, last: int) -> torch.Tensor:
        """Stem, then stages 0..`last` (0-based): `forward_until(x, 2)` is part A of the assistant."""
        h = self.stem(x)
        for stage in self._stages[: last + 1]:
            h = stage(h)
        return h

    def final_map(self, h4: torch.Tensor) -> torch.Tensor:
        """The stage-4 output after the model's final norm (for a CNN, the map its head pools)."""
        return self._adapter.post(self.model, h4)

    def head_features(self, h4: torch.Tensor) -> torch.Tensor:
        """Final norm + pooling: the pooled feature f (pre-logits) from the stage-4 output."""
        return self.model.forward_head(self.final_map(h4), pre_logits=True)

    def classify(self, feature: torch.Tensor) -> torch.Tensor:
        return self.model.get_classifier()(feature)

    def forward(self, x: torch.Tensor) -> Knowledge:
        h = self.stem(x)
        outputs = []
        for stage in self._stages:
            h = stage(h)
            outputs.append(h)
        feature = self.head_features(h)
        return Knowledge(tuple(outputs), feature, self.classify(feature))

    def to_map(self, h: torch.Tensor, index: int) -> torch.Tensor:
        """Stage output `index` as an NCHW map (prefix tokens dropped)."""
        return to_map(h, self.layouts[index])

    def embed_tokens(self, patch_tokens: torch.Tensor) -> torch.Tensor:
        """Add the prefix tokens and position embedding as the model's own stem would (ViT only)."""
        if self.family == "vit":
            return self.model._pos_embed(patch_tokens)
        return patch_tokens

    @torch.no_grad()
    def _measure(self, image_size: int) -> tuple[tuple[StageLayout, ...], int]:
        was_training = self.model.training
        self.eval()
        try:
            param = next(self.model.parameters())
            probe = torch.zeros(1, 3, image_size, image_size, device=param.device, dtype=param.dtype)
            knowledge = self.forward(probe)
        except (RuntimeError, AssertionError, ValueError) as err:
            raise TasError(f"{type(self.model).__name__} cannot run at {image_size} px ({err}); "
                           "set the model's img_size/patch_size for this protocol") from None
        finally:
            self.train(was_training)
        layouts = tuple(self._layout_of(h) for h in knowledge.stages)
        return layouts, knowledge.feature.shape[-1]

    def _layout_of(self, h: torch.Tensor) -> StageLayout:
        kind = self._adapter.layout
        if kind == "map":
            return StageLayout("map", h.shape[1], (h.shape[2], h.shape[3]))
        if kind == "nhwc":
            return StageLayout("nhwc", h.shape[3], (h.shape[1], h.shape[2]))
        prefix = int(getattr(self.model, "num_prefix_tokens", 0))
        patches = h.shape[1] - prefix
        side = int(round(patches**0.5))
        if side * side != patches:
            raise TasError(f"{type(self.model).__name__} has {patches} patch tokens, not a square grid")
        return StageLayout("tokens", h.shape[2], (side, side), prefix)


def to_map(h: torch.Tensor, layout: StageLayout) -> torch.Tensor:
    if layout.kind == "map":
        return h
    if layout.kind == "nhwc":
        return h.permute(0, 3, 1, 2)
    tokens = h[:, layout.prefix_tokens :]
    height, width = layout.grid
    return tokens.transpose(1, 2).reshape(h.shape[0], layout.channels, height, width)


def from_map(m: torch.Tensor, layout: StageLayout) -> torch.Tensor:
    """NCHW map -> the layout's patch part (prefix tokens are added by `StageView.embed_tokens`)."""
    if layout.kind == "map":
        return m
    if layout.kind == "nhwc":
        return m.permute(0, 2, 3, 1)
    return m.flatten(2).transpose(1, 2)
