"""The user's cache of facts that tas derives from code and can always derive again (never results):
`$TAS_CACHE_DIR`, else `$XDG_CACHE_HOME/tas`, else `~/.cache/tas`; `TAS_CACHE_DIR=off` turns it off.

A file that is missing, unreadable or not what its reader expects counts as empty; a write goes through a
temporary file and a rename (two processes writing at once leave one whole file), and a write that fails
(read-only home) is skipped: the cache only ever saves time.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

ENV = "TAS_CACHE_DIR"
OFF = "off"


def root() -> Path | None:
    """The cache folder; None when TAS_CACHE_DIR is `off`."""
    base = os.environ.get(ENV, "")
    if base.strip().lower() == OFF:
        return None
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        base = Path(xdg) / "tas" if xdg else Path.home() / ".cache" / "tas"
    return Path(base).expanduser()


def read_json(name: str) -> Any:
    """The JSON value of cache file `name`, or None."""
    folder = root()
    if folder is None:
        return None
    try:
        return json.loads((folder / name).read_text())
    except (OSError, ValueError):
        return None


def write_json(name: str, value: Any) -> None:
    folder = root()
    if folder is None:
        return
    target = folder / name
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(value, fh, separators=(",", ":"))
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        pass
