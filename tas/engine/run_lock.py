"""One writer per job folder: a training job holds `<job dir>/ckpt/run.lock` while it runs.

Snakemake's own lock keeps a second `snakemake` in the same folder out, but `--nolock`, a
`--rerun-incomplete` from another shell, a hand-run `python -m tas distill` or a `dvc repro` beside a
running Snakemake would start a second writer of the same resume checkpoint and outputs. The lock is an
exclusive POSIX record lock (`lockf`) on a file that names its holder (pid, host, start time): the kernel
drops it when the holder exits however it exits, so a dead process's lock is taken over by the next job
without any clean-up, and a live one's is refused with one line naming the holder. A record lock, not
`flock`: it belongs to the process, so data-loader workers forked after it do not keep it alive after a
killed job (a restarted job would otherwise be refused until they noticed and exited).
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tas.errors import TasError
from tas.paths import RUN_LOCK_FILE, checkpoint_dir


class RunFolderBusy(TasError):
    pass


def lock_path(job_dir: Path) -> Path:
    return checkpoint_dir(Path(job_dir)) / RUN_LOCK_FILE


@contextmanager
def hold(job_dir: Path, enabled: bool = True) -> Iterator[Path | None]:
    """Hold the job folder's lock for the duration of the block (no-op when not `enabled`, e.g. DDP ranks > 0)."""
    if not enabled:
        yield None
        return
    path = lock_path(job_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")
    try:
        try:
            fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno == errno.ENOLCK:  # a file system without locks (some NFS setups): run unguarded
                yield None
                return
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise RunFolderBusy(f"{job_dir} is being written by {holder} (lock {path}); wait for that job to finish "
                                "or stop it; never run a second Snakemake here with --nolock") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        fh.flush()
        try:
            yield path
        finally:
            fh.seek(0)
            fh.truncate()  # kept as a file (removing a locked file races with a waiter); emptied = free
    finally:
        fh.close()  # releases the lock


__all__ = ["hold", "lock_path", "RunFolderBusy"]
