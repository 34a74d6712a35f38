"""Atomic writes (a final output either exists complete or not at all) and file content hashes.

A write goes to a temp file beside the final one (named after its writer: pid and host), is fsynced and
renamed into place; a temp file that a killed writer left is removed by the next write of the same file
(and by a training job's start, tas.engine.trainer, for its whole folder)."""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import time
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


# Temp files are named `.<final name>.<pid>@<host>.<random>.tmp`: the writer is known, so a later writer of
# the same file removes what a killed one left (a kill -9 skips every clean-up) and never a live one's.
_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>[0-9]+)@(?P<host>[A-Za-z0-9_-]+)\.[0-9a-f]{8}\.tmp$")
# Temp files of an earlier tas (tempfile.mkstemp: 8 characters, no writer recorded): removed once untouched
# for this long (a live writer keeps its file's mtime current).
_LEGACY_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")
LEGACY_TEMP_AGE_S = 600.0


def temp_name(path: Path) -> str:
    return f".{path.name}.{os.getpid()}@{_HOST}.{secrets.token_hex(4)}.tmp"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_temp(candidate: Path, now: float | None = None) -> bool:
    """Whether `candidate` (a `.*.tmp` file) was left by a writer that no longer runs: its pid is dead on this
    host, or (an earlier tas's name, without a writer) it has not been written to for LEGACY_TEMP_AGE_S.
    A temp file of another host (a shared file system) is left alone."""
    match = _TEMP_RE.match(candidate.name)
    if match:
        return match["host"] == _HOST and int(match["pid"]) != os.getpid() and not _pid_alive(int(match["pid"]))
    if _LEGACY_TEMP_RE.match(candidate.name):
        try:
            return (now if now is not None else time.time()) - candidate.stat().st_mtime > LEGACY_TEMP_AGE_S
        except OSError:
            return False
    return False


def temp_target(candidate: Path) -> str | None:
    """The final file name a tas temp file was written for (None: not a tas temp file)."""
    match = _TEMP_RE.match(candidate.name) or _LEGACY_TEMP_RE.match(candidate.name)
    return match["name"] if match else None


def remove_stale_temps(folder: str | Path, name: str | None = None) -> list[Path]:
    """Remove the temp files in `folder` (of the final file `name` only, when given) that a killed writer
    left behind (`stale_temp`); returns what was removed."""
    removed = []
    pattern = f".{glob.escape(name)}.*.tmp" if name else ".*.tmp"
    for candidate in Path(folder).glob(pattern):
        if (name is None or temp_target(candidate) == name) and stale_temp(candidate):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


@contextmanager
def atomic_path(path: str | Path, size_hint: int | None = None) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success fsync it and rename it into place. A full disk (while
    writing or syncing) becomes one DiskFull line naming `path` and, given `size_hint` bytes, what it needs;
    the temp file is removed either way, so `path` keeps its previous content or stays absent. A temp file of
    `path` that a killed writer left (kill -9 during the write) is removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent, path.name)
    tmp_path = path.parent / temp_name(path)
    fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    # The temp file is created 0600; give the final file the permissions a plain open() would.
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
