"""Fetch one archive to a path, md5-verified before it appears there (urllib: https and file:// URLs)."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from pathlib import Path

from tas.errors import TasError
from tas.io import atomic_path, file_digest

CHUNK = 1 << 20


def md5_file(path: str | Path) -> str:
    return file_digest(path, "md5")  # the archives' published checksums are md5


def check_md5(name: str | Path, actual: str, expected: str, fix: str) -> None:
    if actual.lower() != expected.lower():
        raise TasError(f"md5 mismatch for {name}: expected {expected}, got {actual}; {fix}")


def fetch(url: str, dest: Path, md5: str, timeout: float = 60.0) -> Path:
    """Stream `url` to `dest`; a failed or mismatching download leaves nothing at `dest`."""
    by_hand = f"download {url} by hand to {dest} (md5 {md5}) and run the command again"
    digest = hashlib.md5()
    with atomic_path(dest) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                for block in iter(lambda: response.read(CHUNK), b""):
                    digest.update(block)
                    out.write(block)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise TasError(f"could not download {url} ({reason}); {by_hand}") from None
        check_md5(f"{dest.name} downloaded from {url}", digest.hexdigest(), md5,
                  f"nothing was written; check the url/md5 in params.yaml or {by_hand}")
    return dest
