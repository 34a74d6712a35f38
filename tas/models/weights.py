"""Load weights from the checkpoints researchers actually have.

Accepted: a plain state dict; `{'state_dict' | 'model' | 'model_ema' | 'module': ...}` wrappers
(timm's CheckpointSaver files included: their `args` Namespace is the one non-tensor object allowed);
keys prefixed by `module.` (DDP) or `model.` (our StageView); the classifier of a different class
count (ImageNet weights, OFA's released CIFAR teachers) replaced when asked. A teacher's checkpoint
from elsewhere first goes through the `checkpoint_filter_fn` of the model's timm module, the same
conversion timm applies to its own pretrained files (e.g. timm 0.6.5 Swin layouts -> timm 1.0).
Always `torch.load(weights_only=True)`: a checkpoint is data, never code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Mapping

import torch
import torch.nn as nn

from tas.errors import TasError

_WRAPPER_KEYS = ("state_dict", "model", "model_ema", "module", "net")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise TasError(f"checkpoint {str(path)!r} not found; fix the path in params.yaml "
                       "(or run the job that writes it)")
    try:
        # timm's train script (OFA's harness) stores its argparse Namespace beside the weights.
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch.load raises many types (KeyError, IndexError, ...) on foreign files
        # whole words, the reason rather than torch's weights_only notice
        from tas.engine.checkpoint import load_error_reason

        reason = load_error_reason(err, path)
        raise TasError(f"checkpoint {str(path)!r} is truncated or not a weights-only PyTorch file ({reason}); "
                       "re-create or re-download it") from None
    return unwrap_state_dict(obj, str(path))


def unwrap_state_dict(obj: object, source: str) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(obj, Mapping) and not _is_tensor_mapping(obj):
            inner = next((obj[k] for k in _WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not _is_tensor_mapping(obj):
        raise TasError(f"checkpoint {source!r} holds no state dict (expected tensors, "
                       f"or one under {', '.join(_WRAPPER_KEYS)})")
    state = dict(obj)
    for prefix in ("module.", "model."):
        if state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix):]: value for key, value in state.items()}
    return state


def _is_tensor_mapping(obj: Mapping) -> bool:
    return bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


_REPLACE_HINT = "set replace_head: true for this teacher to re-initialise the classifier"


def load_weights(model: nn.Module, path: str | Path, replace_head: bool = False) -> list[str]:
    """Load `path` into `model`. Returns the names of the head tensors that were left re-initialised."""
    return _load_state(model, read_state_dict(path), str(path), replace_head, _REPLACE_HINT)[0]


def load_teacher_checkpoint(model: nn.Module, path: str | Path, trained: bool, replace_head: bool = True) -> str | None:
    """A teacher's `checkpoint:` (ours, or another codebase's timm file) into `model`, through timm's
    filter for the model's module. The classifier may only be replaced when the teacher is then
    `trained`: a head at random would make a chance-level teacher. Returns the log line of a
    replaced head ("replaced head: 100 -> 10 classes"), else None."""
    state = read_state_dict(path)
    convert = timm_filter(model)
    if convert is not None:
        try:
            state = convert(state, model)
        except Exception as err:  # noqa: BLE001 - a filter meets foreign keys with KeyError, AttributeError, ...
            raise TasError(f"checkpoint {str(path)!r} cannot be converted by timm's "
                           f"{type(model).__module__}.checkpoint_filter_fn ({type(err).__name__}: {str(err)[:120]}); "
                           "it was saved from another architecture") from None
    if trained:
        fix = _REPLACE_HINT
    else:
        fix = ("a teacher used as it is (0 epochs) needs a head for the dataset's classes: give a checkpoint trained "
               "on this dataset, or train the teacher (epochs > 0) so that a replaced head is fine-tuned")
    replaced, old_classes, new_classes = _load_state(model, state, str(path), replace_head and trained, fix)
    return f"replaced head: {old_classes} -> {new_classes} classes" if replaced else None


def pretrained_head_note(timm_name: str, num_classes: int, trained: bool, replace_head: bool = True) -> str | None:
    """Before timm loads its pretrained weights: the log line of the classifier timm will re-initialise
    (its weights' class count differs from `num_classes`), or a TasError when that head would not be
    trained. None when the head is kept."""
    from timm.models import get_pretrained_cfg

    pretrained_cfg = get_pretrained_cfg(timm_name)
    old_classes = getattr(pretrained_cfg, "num_classes", None)
    if not old_classes or old_classes == num_classes:
        return None
    if not trained:
        raise TasError(f"timm's pretrained {timm_name} has {old_classes} classes, the dataset {num_classes}; "
                       "a teacher used as it is (0 epochs) needs a head for the dataset's classes: fine-tune it "
                       "(epochs > 0) or give a `checkpoint:` trained on this dataset")
    if not replace_head:
        raise TasError(f"timm's pretrained {timm_name} has {old_classes} classes, the dataset {num_classes}; "
                       f"{_REPLACE_HINT}")
    return f"replaced head: {old_classes} -> {num_classes} classes"


def timm_filter(model: nn.Module) -> Callable[[dict, nn.Module], dict] | None:
    """The `checkpoint_filter_fn` of the timm module that defines `model`'s class, if it has one."""
    module = sys.modules.get(type(model).__module__)
    return getattr(module, "checkpoint_filter_fn", None)


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str, replace_head: bool,
                fix: str) -> tuple[list[str], int | None, int | None]:
    """Returns the head keys left re-initialised and the class counts of checkpoint and model."""
    own = model.state_dict()
    classifier = _classifier_keys(model)
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    head_mismatch = [k for k in mismatched if k in classifier]
    other_mismatch = [k for k in mismatched if k not in classifier]
    if other_mismatch:
        key = other_mismatch[0]
        raise TasError(f"checkpoint {source!r} does not fit {type(model).__name__}: "
                       f"{key} is {tuple(state[key].shape)}, model has {tuple(own[key].shape)}; "
                       "check the model id/kwargs")
    old_classes = state[head_mismatch[0]].shape[0] if head_mismatch else None
    new_classes = own[head_mismatch[0]].shape[0] if head_mismatch else None
    if head_mismatch and not replace_head:
        raise TasError(f"checkpoint {source!r} has {old_classes} classes, the model {new_classes}; {fix}")
    for key in head_mismatch:
        del state[key]
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in head_mismatch]
    if missing or unexpected:
        sample = (missing or unexpected)[:3]
        what = "misses" if missing else "has unknown"
        raise TasError(f"checkpoint {source!r} {what} keys for {type(model).__name__} (e.g. {', '.join(sample)}); "
                       "it was saved from another architecture")
    return head_mismatch, old_classes, new_classes


def _classifier_keys(model: nn.Module) -> set[str]:
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    keys = set()
    for name, module in model.named_modules():
        if module is classifier:
            keys = {f"{name}.{p}" for p, _ in module.named_parameters()}
    return keys
