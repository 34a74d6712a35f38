"""Resume checkpoints and weights files: written atomically, the same state always as the same bytes.

`ckpt/last.pt` (and a job's `model.pt`) is replaced by temp file + fsync + rename, so a kill at any moment
leaves either the previous complete file or the new one. torch.save names the records of its zip archive
after the file it writes to (`<stem>/data.pkl`), so saving to the temp file's path would put that random
name into the bytes; `save` writes through a file object instead, whose archive name is always `archive`:
identical weights give an identical file, whatever the temp name (DVC's and the resume identity's content
hashes see no change that is not there). It records the identity of the job that wrote it
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
    """torch.save into `path` atomically; a full disk is one line with the room the state needs. The bytes
    depend only on `state` (never on the temp file's name: see the module docstring)."""
    with atomic_path(path, size_hint=tensor_bytes(state)) as tmp:
        with open(tmp, "wb") as fh:
            torch.save(state, fh)


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
        raise TasError(f"resume checkpoint {str(path)!r} is unreadable ({load_error_reason(err, path)}); delete it to "
                       "restart the job from scratch") from None


def load_error_reason(err: BaseException, path: str | Path | None = None, limit: int = 160) -> str:
    """Why torch.load failed, in a few words: torch's own first line is a paragraph on `weights_only` (advice
    that does not apply to a broken file); a file that is no zip archive is named as such, the unpickler's
    refusal by its reason, anything else by its first line cut at a word boundary."""
    if path is not None:
        try:
            if Path(path).is_file() and not zipfile.is_zipfile(path):
                return "not a zip archive as torch.save writes: truncated, or another format"
        except OSError:
            pass
    text = str(err)
    if "WeightsUnpickler error:" in text:
        rest = [line.strip() for line in text.split("WeightsUnpickler error:", 1)[1].splitlines() if line.strip()]
        return clip(f"the weights-only unpickler refused it: {rest[0] if rest else 'unknown reason'}", limit)
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return clip(first, limit) if first else type(err).__name__


def clip(text: str, limit: int) -> str:
    """`text` of at most `limit` characters, cut after a whole word (with an ellipsis) when it is longer."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if " " in cut:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:") + "…"

