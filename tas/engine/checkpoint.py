"""Resume checkpoints: the whole training state each epoch, written atomically.

`ckpt/last.pt` is replaced by temp file + fsync + rename, so a kill at any moment leaves either the
previous complete checkpoint or the new one. It records the identity of the job that wrote it
(tas.jobs.identity); the trainer resumes only a checkpoint of the same job.
Everything is saved as tensors / plain containers and loaded with `weights_only=True`.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from tas.errors import TasError
from tas.io import atomic_path


def save(path: Path, state: Any) -> None:
    """torch.save into `path` atomically; a full disk is one line with the room the state needs."""
    with atomic_path(path, size_hint=tensor_bytes(state)) as tmp:
        torch.save(state, tmp)


def tensor_bytes(state: Any) -> int:
    """Bytes of the tensors in a nested state (what dominates the file torch.save writes)."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(tensor_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(tensor_bytes(v) for v in state)
    return 0


def load(path: Path) -> dict[str, Any] | None:
    """The checkpoint at `path`, or None when there is none (a fresh start)."""
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError) as err:
        raise TasError(f"resume checkpoint {str(path)!r} is unreadable ({str(err).splitlines()[0][:120]}); delete it to restart the job from scratch") from None

