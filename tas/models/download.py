"""Fetch a checkpoint given by URL once, into a local cache folder, and verify its sha256.

The file lands at `cache_path(url)` (`<cache>/<URL hash>/<file name>`) only when it is complete and its
checksum is right (streamed into a temp file by `tas.io.atomic_path`, renamed at the end). Concurrent jobs that need
the same file take an exclusive lock on `<file>.lock`; whoever holds it also removes temp files a
killed download left behind, so an interrupted download restarts cleanly. With no pinned sha256, the
first download records its hash in `<file>.sha256` (sha256sum format) and later runs verify against
it. Pure standard library (urllib): http(s):// and file:// URLs.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import sys
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tas.errors import TasError
from tas.paths import URL_SCHEMES as SCHEMES, is_url  # noqa: F401  (is_url: this module's API too)
from tas.io import atomic_path, file_digest, write_text

CHUNK = 1 << 20
TIMEOUT_S = 60


def cache_path(url: str, cache_dir: str | Path) -> Path:
    """Where `url` is kept: `<cache_dir>/<12 hex of the URL's sha256>/<file name of the URL>`. The
    folder keeps two URLs that end in the same file name apart; the name stays readable."""
    name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    if not name or name.startswith("."):
        raise TasError(f"checkpoint URL {url!r} names no file; give the URL of the .pth/.pt/.safetensors file itself")
    return Path(cache_dir) / hashlib.sha256(url.encode()).hexdigest()[:12] / name


def file_sha256(path: str | Path) -> str:
    return file_digest(path, "sha256")


def recorded_sha256(path: Path) -> str | None:
    record = _record_path(path)
    if not record.is_file():
        return None
    fields = record.read_text().split()
    return fields[0].lower() if fields else None


def verify(path: str | Path, sha256: str, source: str) -> None:
    """A local file against a pinned hash: one line naming both hashes when they differ."""
    actual = file_sha256(path)
    if actual != sha256.lower():
        raise TasError(f"checkpoint {str(path)!r} ({source}) has sha256 {actual}, expected {sha256.lower()}; "
                       "replace the file with the right one, or fix the pinned sha256")


def resolve_checkpoint(checkpoint: str, cache_dir: str | Path, sha256: str | None = None) -> Path:
    """The local file of a teacher's `checkpoint:` (a path, or a URL fetched into `cache_dir`), verified
    against `sha256` when one is pinned."""
    if is_url(checkpoint):
        return fetch(checkpoint, cache_dir, sha256)
    path = Path(checkpoint)
    if not path.is_file():
        raise TasError(f"checkpoint {checkpoint!r} not found; fix the path in params.yaml, "
                       "or give an http(s):// URL to download it")
    if sha256:
        verify(path, sha256, "pinned in params.yaml")
    return path


def fetch(url: str, cache_dir: str | Path, sha256: str | None = None) -> Path:
    """The local copy of `url`, downloaded on first use and verified every time."""
    path = cache_path(url, cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        expected = (sha256 or "").lower() or recorded_sha256(path)
        if path.is_file():
            if expected is None or file_sha256(path) == expected:
                return path
            # A pinned hash that the cached file does not match: the pin changed, or the file is bad.
            print(f"{path}: sha256 differs from {expected}; downloading {url} again", file=sys.stderr)
            path.unlink()
        for stale in path.parent.glob(f".{path.name}.*.tmp"):
            stale.unlink(missing_ok=True)  # left by a killed download; we hold the lock, nobody writes it
        actual = _download(url, path, expected)
        # The record always names the file on disk, so a pin removed later still verifies this file.
        write_text(_record_path(path), f"{actual}  {path.name}\n")
        if expected is None:
            print(f"downloaded {url} to {path}; sha256 {actual} (recorded in {_record_path(path).name}; "
                  f"pin it with `sha256: {actual}` beside the checkpoint in params.yaml)", file=sys.stderr)
    return path


def _download(url: str, path: Path, expected: str | None) -> str:
    digest, received = hashlib.sha256(), 0
    with atomic_path(path) as tmp:
        try:
            response = urllib.request.urlopen(url, timeout=TIMEOUT_S)  # noqa: S310 - callers pass is_url() URLs
        except (OSError, ValueError) as err:  # URLError and HTTPError are OSErrors
            raise TasError(f"cannot download {url} ({_reason(err)}); check the URL and the network, or download "
                           "the file yourself and give its path as `checkpoint:`") from None
        with response, open(tmp, "wb") as out:
            size = _content_length(response)
            try:
                for block in iter(lambda: response.read(CHUNK), b""):
                    digest.update(block)
                    out.write(block)
                    received += len(block)
            except (OSError, http.client.HTTPException) as err:  # a reset connection, IncompleteRead, a timeout
                raise _interrupted(url, received, size, err) from None
            if size is not None and received != size:
                raise _interrupted(url, received, size, None)
        actual = digest.hexdigest()
        if expected is not None and actual != expected:
            # atomic_path removes the temp file on the way out: nothing unverified reaches `path`.
            raise TasError(f"checksum mismatch for {url}: sha256 {actual}, expected {expected}; the downloaded file "
                           "was deleted. Fix the pinned sha256, or the URL if it serves another file")
    return actual


def _interrupted(url: str, received: int, size: int | None, err: BaseException | None) -> TasError:
    of = f" of {size}" if size is not None else ""
    why = f" ({_reason(err)})" if err is not None else ""
    return TasError(f"download of {url} was interrupted after {received}{of} bytes{why}; the partial file was "
                    "deleted, rerun to download it again")


def _content_length(response) -> int | None:
    value = response.headers.get("Content-Length") if getattr(response, "headers", None) is not None else None
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _reason(err: BaseException) -> str:
    reason = getattr(err, "reason", None) or str(err) or type(err).__name__
    return str(reason).splitlines()[0][:160]


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path.with_name(path.name + ".lock"), "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


__all__ = ["SCHEMES", "cache_path", "fetch", "file_sha256", "is_url", "recorded_sha256", "resolve_checkpoint", "verify"]
