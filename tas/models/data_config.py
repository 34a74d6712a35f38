"""A model's own evaluation transform: the interpolation and centre-crop fraction of its timm pretrained
config, which OFA's train.py (timm 0.6.5 `resolve_data_config`) evaluated every model with.

A recipe's `eval_interpolation` / `eval_crop_pct` take a value, or `model` for this. The model ids of the
paper studies name timm's weights tag (e.g. `resnet18.tv_in1k`), so the config is the one timm 0.6.5 gave
the same model by default (timm 1.0 changed some defaults: its plain `resnet18` is the a1_in1k weights,
bicubic 0.95, where 0.6.5's was bilinear 0.875).
"""

from __future__ import annotations

from typing import NamedTuple

import timm

import tas.models  # noqa: F401  registers tas's entry points, whose configs are looked up too
from tas.data.spec import INTERPOLATIONS
from tas.errors import TasError

MODEL = "model"


class EvalTransform(NamedTuple):
    interpolation: str
    crop_pct: float


def eval_transform(recipe, model_spec) -> EvalTransform:
    """The eval interpolation and crop fraction of `recipe` (a RecipeSpec) for `model_spec` (a ModelSpec)."""
    interpolation, crop_pct = recipe.eval_interpolation, recipe.eval_crop_pct
    if MODEL in (interpolation, crop_pct):
        cfg = timm.models.get_pretrained_cfg(model_spec.timm)
        if cfg is None:
            raise TasError(f"models.{model_spec.id}: timm has no pretrained config for {model_spec.timm!r}, which "
                           f"recipes.{recipe.id} reads (eval_interpolation/eval_crop_pct: model); give numbers instead")
        if interpolation == MODEL:
            interpolation = cfg.interpolation if cfg.interpolation in INTERPOLATIONS else "bicubic"
        if crop_pct == MODEL:
            crop_pct = float(cfg.crop_pct)
    return EvalTransform(interpolation, float(crop_pct))


__all__ = ["EvalTransform", "eval_transform", "MODEL"]
