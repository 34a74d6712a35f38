"""Model construction: params.yaml model ids -> `timm.create_model` -> a `StageView`.

Importing this package registers our own timm entry points (Swin-P/N, 32-px and tiny variants).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import timm
import torch.nn as nn

from tas.errors import TasError
from tas.models import entrypoints as _entrypoints  # noqa: F401  (registers entry points)
from tas.models.stages import Knowledge, StageLayout, StageView

if TYPE_CHECKING:
    from tas.config import ModelSpec


def create_model(spec: "ModelSpec", num_classes: int, image_size: int, drop_path: float = 0.0, pretrained: bool = False,
                 pretrained_file: str | None = None) -> StageView:
    """Build the timm model of `spec` and wrap it in a stage view checked at `image_size`. `pretrained`:
    timm's weights (classifier re-initialised when `num_classes` differs), read from `pretrained_file`
    when given instead of timm's hub."""
    kwargs = dict(spec.kwargs)
    if pretrained and pretrained_file:
        kwargs["pretrained_cfg_overlay"] = {"file": str(pretrained_file)}
    # Always explicit: some timm families (Swin) default to drop_path_rate=0.1.
    kwargs.setdefault("drop_path_rate", drop_path)
    if not timm.is_model(spec.timm):
        raise TasError(f"models.{spec.id}.timm: {spec.timm!r} is not a timm model; list candidates with "
                       f"`python -c \"import timm; print(timm.list_models('*{spec.timm[:4]}*'))\"`")
    try:
        model: nn.Module = timm.create_model(spec.timm, pretrained=pretrained, num_classes=num_classes, **kwargs)
    except TypeError as err:
        raise TasError(f"models.{spec.id}.kwargs: {err}; remove or rename the argument") from None
    except (OSError, RuntimeError) as err:
        if pretrained:
            where = f"pretrained_file {str(pretrained_file)!r}" if pretrained_file else "timm's hub"
            raise TasError(f"models.{spec.id}: timm's pretrained weights for {spec.timm} could not be loaded from "
                           f"{where} ({str(err).splitlines()[0][:160] if str(err) else type(err).__name__}); "
                           "give a local copy with `pretrained_file:` or a `checkpoint:`") from None
        raise
    view = StageView(model, image_size)
    if view.family != spec.family:
        raise TasError(f"models.{spec.id}.family is {spec.family!r} but {spec.timm} is a {view.family!r} model; "
                       f"set family: {view.family}")
    return view


__all__ = ["create_model", "Knowledge", "StageLayout", "StageView"]
