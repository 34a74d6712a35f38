"""timm entry points for the models timm lacks, registered with `timm.register_model`.

After `import tas.models`, `timm.create_model(name)` builds each of these like any stock model, so
the factory has one construction path. Names follow timm's own convention.

- Swin-P / Swin-N: the small Swins of OFA's benchmark (embed 48 / 64, depths 2-2-2-2).
- 32-px variants for the `cifar32` protocol: ResNet with a 3x3 stride-1 stem and no max-pool,
  MobileNetV2 with CIFAR strides, Mixer / ResMLP with patch 4 (their stock entry points reject
  `patch_size`).
- `tas_tiny_*`: one tiny member per family (CNN, ViT, Swin, MLP, ConvNeXt) for the `mini` study,
  each well under 1M parameters.
"""

from __future__ import annotations

import torch.nn as nn
from timm.models import generate_default_cfgs, register_model
from timm.models.convnext import _create_convnext
from timm.models.efficientnet import _gen_mobilenet_v2
from timm.models.mlp_mixer import ResBlock, Affine, _create_mixer
from timm.models.resnet import BasicBlock, _create_resnet
from timm.models.swin_transformer import _create_swin_transformer
from timm.models.vision_transformer import _create_vision_transformer


def _cfg(size: int, first_conv: str, classifier: str) -> dict:
    return {"url": "", "num_classes": 1000 if size == 224 else 100, "input_size": (3, size, size),
            "pool_size": None, "crop_pct": 0.9 if size == 224 else 1.0, "interpolation": "bicubic",
            "first_conv": first_conv, "classifier": classifier}


# timm looks these up by entry-point name when the module registers its models.
default_cfgs = generate_default_cfgs({
    "resnet18_cifar": _cfg(32, "conv1", "fc"),
    "tas_tiny_resnet": _cfg(32, "conv1", "fc"),
    "mobilenetv2_100_cifar": _cfg(32, "conv_stem", "classifier"),
    "swin_pico_patch4_window7_224": _cfg(224, "patch_embed.proj", "head.fc"),
    "swin_nano_patch4_window7_224": _cfg(224, "patch_embed.proj", "head.fc"),
    "tas_tiny_swin": _cfg(32, "patch_embed.proj", "head.fc"),
    "tas_tiny_vit": _cfg(32, "patch_embed.proj", "head"),
    "mixer_b4_32": _cfg(32, "stem.proj", "head"),
    "resmlp_12_patch4_32": _cfg(32, "stem.proj", "head"),
    "tas_tiny_mixer": _cfg(32, "stem.proj", "head"),
    "tas_tiny_convnext": _cfg(32, "stem.0", "head.fc"),
})


def _cifar_stem(model: nn.Module) -> nn.Module:
    """Replace ResNet's 7x7/2 conv + max-pool by a 3x3/1 conv: 32-px inputs keep their resolution."""
    model.conv1 = nn.Conv2d(3, model.bn1.num_features, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    for info in model.feature_info:
        info["reduction"] = max(1, info["reduction"] // 4)
    return model


@register_model
def resnet18_cifar(pretrained: bool = False, **kwargs) -> nn.Module:
    """ResNet-18 with the CIFAR stem (3x3 stride-1, no max-pool)."""
    model = _create_resnet("resnet18_cifar", pretrained, block=BasicBlock, layers=(2, 2, 2, 2), **kwargs)
    return _cifar_stem(model)


@register_model
def tas_tiny_resnet(pretrained: bool = False, **kwargs) -> nn.Module:
    """A ~0.3M-parameter ResNet (one basic block per stage, widths 16-128) with the CIFAR stem."""
    args = dict(block=BasicBlock, layers=(1, 1, 1, 1), channels=(16, 32, 64, 128))
    model = _create_resnet("tas_tiny_resnet", pretrained, **dict(args, **kwargs))
    return _cifar_stem(model)


@register_model
def mobilenetv2_100_cifar(pretrained: bool = False, **kwargs) -> nn.Module:
    """MobileNetV2 with CIFAR strides: stride-1 stem and stride-1 second stage (total stride 8)."""
    model = _gen_mobilenet_v2("mobilenetv2_100_cifar", 1.0, pretrained=pretrained, **kwargs)
    model.conv_stem.stride = (1, 1)
    model.blocks[1][0].conv_dw.stride = (1, 1)
    for info in model.feature_info:
        info["reduction"] = max(1, info["reduction"] // 4)
    return model


@register_model
def swin_pico_patch4_window7_224(pretrained: bool = False, **kwargs) -> nn.Module:
    """Swin-P (OFA's benchmark): embed 48, depths 2-2-2-2, heads 2-4-8-16."""
    args = dict(patch_size=4, window_size=7, embed_dim=48, depths=(2, 2, 2, 2), num_heads=(2, 4, 8, 16))
    return _create_swin_transformer("swin_pico_patch4_window7_224", pretrained, **dict(args, **kwargs))


@register_model
def swin_nano_patch4_window7_224(pretrained: bool = False, **kwargs) -> nn.Module:
    """Swin-N (OFA's benchmark): embed 64, depths 2-2-2-2, heads 2-4-8-16."""
    args = dict(patch_size=4, window_size=7, embed_dim=64, depths=(2, 2, 2, 2), num_heads=(2, 4, 8, 16))
    return _create_swin_transformer("swin_nano_patch4_window7_224", pretrained, **dict(args, **kwargs))


@register_model
def tas_tiny_swin(pretrained: bool = False, **kwargs) -> nn.Module:
    """A ~0.5M-parameter Swin for 32 px: patch 2, window 4, embed 24, one block per stage."""
    args = dict(img_size=32, patch_size=2, window_size=4, embed_dim=24, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8))
    return _create_swin_transformer("tas_tiny_swin", pretrained, **dict(args, **kwargs))


@register_model
def tas_tiny_vit(pretrained: bool = False, **kwargs) -> nn.Module:
    """A ~0.3M-parameter ViT for 32 px: patch 4, width 64, depth 6 (stage ends at blocks 1, 2, 5, 6)."""
    args = dict(img_size=32, patch_size=4, embed_dim=64, depth=6, num_heads=2, mlp_ratio=2.0)
    return _create_vision_transformer("tas_tiny_vit", pretrained, **dict(args, **kwargs))


def _mixer(variant: str, pretrained: bool, args: dict, kwargs: dict) -> nn.Module:
    img_size = kwargs.pop("img_size", args.pop("img_size", 32))
    return _create_mixer(variant, pretrained, img_size=img_size, **dict(args, **kwargs))


@register_model
def mixer_b4_32(pretrained: bool = False, **kwargs) -> nn.Module:
    """Mixer-B with patch 4 at 32 px (64 tokens)."""
    return _mixer("mixer_b4_32", pretrained, dict(patch_size=4, num_blocks=12, embed_dim=768), kwargs)


@register_model
def resmlp_12_patch4_32(pretrained: bool = False, **kwargs) -> nn.Module:
    """ResMLP-S12 with patch 4 at 32 px."""
    args = dict(patch_size=4, num_blocks=12, embed_dim=384, mlp_ratio=4, block_layer=ResBlock, norm_layer=Affine)
    return _mixer("resmlp_12_patch4_32", pretrained, args, kwargs)


@register_model
def tas_tiny_mixer(pretrained: bool = False, **kwargs) -> nn.Module:
    """A ~0.3M-parameter MLP-Mixer for 32 px: patch 4, width 96, 6 blocks."""
    args = dict(patch_size=4, num_blocks=6, embed_dim=96, mlp_ratio=(0.5, 2.0))
    return _mixer("tas_tiny_mixer", pretrained, args, kwargs)


@register_model
def tas_tiny_convnext(pretrained: bool = False, **kwargs) -> nn.Module:
    """A ~0.4M-parameter ConvNeXt for 32 px: patch-1 stem, widths 16-128, one block per stage."""
    args = dict(depths=(1, 1, 1, 1), dims=(16, 32, 64, 128), patch_size=1)
    return _create_convnext("tas_tiny_convnext", pretrained, **dict(args, **kwargs))

