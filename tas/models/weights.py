"""Load weights from the checkpoints researchers actually have.

Accepted: a plain state dict; `{'state_dict' | 'model' | 'model_ema' | 'module': ...}` wrappers;
keys prefixed by `module.` (DDP) or `model.` (our StageView); the classifier of a different class
count (ImageNet weights, OFA's released CIFAR teachers) replaced when asked. Always
`torch.load(weights_only=True)`: a checkpoint is data, never code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
import torch.nn as nn

from tas.errors import TasError

_WRAPPER_KEYS = ("state_dict", "model", "model_ema", "module", "net")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise TasError(f"checkpoint {str(path)!r} not found; fix the path in params.yaml (or run the stage that writes it)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch.load raises many types (KeyError, IndexError, ...) on foreign files
        reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise TasError(f"checkpoint {str(path)!r} is truncated or not a weights-only PyTorch file ({reason}); re-create or re-download it") from None
    return unwrap_state_dict(obj, str(path))


def unwrap_state_dict(obj: object, source: str) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(obj, Mapping) and not _is_tensor_mapping(obj):
            inner = next((obj[k] for k in _WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not _is_tensor_mapping(obj):
        raise TasError(f"checkpoint {source!r} holds no state dict (expected tensors, or one under {', '.join(_WRAPPER_KEYS)})")
    state = dict(obj)
    for prefix in ("module.", "model."):
        if state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix):]: value for key, value in state.items()}
    return state


def _is_tensor_mapping(obj: Mapping) -> bool:
    return bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def load_weights(model: nn.Module, path: str | Path, replace_head: bool = False) -> list[str]:
    """Load `path` into `model`. Returns the names of the head tensors that were left re-initialised."""
    state = read_state_dict(path)
    own = model.state_dict()
    classifier = _classifier_keys(model)
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    head_mismatch = [k for k in mismatched if k in classifier]
    other_mismatch = [k for k in mismatched if k not in classifier]
    if other_mismatch:
        key = other_mismatch[0]
        raise TasError(f"checkpoint {str(path)!r} does not fit {type(model).__name__}: {key} is {tuple(state[key].shape)}, model has {tuple(own[key].shape)}; check the model id/kwargs")
    if head_mismatch and not replace_head:
        key = head_mismatch[0]
        raise TasError(f"checkpoint {str(path)!r} has {state[key].shape[0]} classes, the model {own[key].shape[0]}; set replace_head: true for this teacher to re-initialise the classifier")
    for key in head_mismatch:
        del state[key]
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in head_mismatch]
    if missing or unexpected:
        sample = (missing or unexpected)[:3]
        what = "misses" if missing else "has unknown"
        raise TasError(f"checkpoint {str(path)!r} {what} keys for {type(model).__name__} (e.g. {', '.join(sample)}); it was saved from another architecture")
    return head_mismatch


def _classifier_keys(model: nn.Module) -> set[str]:
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    keys = set()
    for name, module in model.named_modules():
        if module is classifier:
            keys = {f"{name}.{p}" for p, _ in module.named_parameters()}
    return keys
