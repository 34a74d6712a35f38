"""Atomic writes (a final output either exists complete or not at all) and file content hashes."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from tas.errors import TasError

# OSError numbers of a full disk / an exhausted quota.
_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
# How torch.save reports a failed write: its C++ stream writer raises RuntimeError
# ("[enforce fail at inline_container.cc:...] ... file write failed") instead of OSError.
_TORCH_WRITE_FAILED = ("file write failed", "No space left on device", "unexpected pos")


class DiskFull(TasError):
    pass


def is_disk_full(err: BaseException) -> bool:
    if isinstance(err, OSError):
        return err.errno in _NO_SPACE
    return isinstance(err, RuntimeError) and any(text in str(err) for text in _TORCH_WRITE_FAILED)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def disk_full_error(path: Path, size_hint: int | None) -> DiskFull:
    """One line: which file, how much room there is and about how much it needs."""
    try:
        free = human_bytes(shutil.disk_usage(path.parent).free)
    except OSError:
        free = "unknown"
    need = f"; it needs about {human_bytes(size_hint)}" if size_hint else ""
    return DiskFull(f"disk full while writing {path} ({free} free on its file system{need}); nothing was written "
                    "there: free some space (or point paths.results/paths.data elsewhere) and rerun, the job "
                    "resumes from its last checkpoint")


@contextmanager
def atomic_path(path: str | Path, size_hint: int | None = None) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success fsync it and rename it into place. A full disk (while
    writing or syncing) becomes one DiskFull line naming `path` and, given `size_hint` bytes, what it needs;
    the temp file is removed either way, so `path` keeps its previous content or stays absent."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600 files; give the final file the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    except (OSError, RuntimeError) as err:
        if not is_disk_full(err):
            raise
        raise disk_full_error(path, size_hint) from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path, size_hint=len(text.encode())) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's content, read in chunks (a checkpoint or archive never sits in memory whole)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, algorithm).hexdigest()


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
