"""GPU slots for concurrent jobs: a non-blocking flock over one lock file per slot.

Snakemake counts `resources: gpu=k` but never says *which* GPUs a job may use (its open issue #281).
Each GPU job therefore takes k free slots here at start-up and sets CUDA_VISIBLE_DEVICES to them:

    with acquire_gpus(k) as held:      # before anything initialises CUDA in this process
        ...                            # held.slots == (2,), held.devices == ("2",); env is set

* A slot is a lock file `<lock_dir>/slot<i>.lock` held with `fcntl.flock(LOCK_EX | LOCK_NB)`; the
  kernel drops the lock when the process exits, however it exits, so no stale slot survives a crash.
* Devices: CUDA_VISIBLE_DEVICES when already set (a Slurm allocation, or the user restricting the box):
  slot i is its i-th entry; else `total` (argument or TAS_GPU_SLOTS) GPUs 0..total-1; else the GPUs
  the NVIDIA driver lists (/proc/driver/nvidia/gpus, then `nvidia-smi -L`). Counting never touches
  torch: a CUDA runtime initialised before CUDA_VISIBLE_DEVICES is set ignores it for good.
* No GPU (CPU box): CUDA_VISIBLE_DEVICES is left alone and slots are still distinct numbers
  (unbounded), so concurrent CPU jobs can be told apart in logs; nothing ever waits.
* All slots busy: wait (polling) up to `timeout` seconds (TAS_GPU_WAIT, default 600), then raise a
  one-line `TasError` naming the lock dir and the likely cause (more concurrent GPU jobs than GPUs).
* Lock dir: TAS_GPU_LOCK_DIR, else `.tas/gpu-slots/<host>` under the working directory (the project
  root for Snakemake and DVC jobs); inside a Slurm job `$TMPDIR/tas-gpu-slots-<uid>-<jobid>`, since
  Slurm already gave the allocation its own GPUs and a shared file system must not couple nodes.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator

from tas.errors import TasError

ENV_DEVICES = "CUDA_VISIBLE_DEVICES"
ENV_LOCK_DIR = "TAS_GPU_LOCK_DIR"
ENV_TOTAL = "TAS_GPU_SLOTS"
ENV_WAIT = "TAS_GPU_WAIT"
DEFAULT_WAIT_S = 600.0
POLL_S = 0.5


@dataclass
class GpuSlots:
    """What `acquire_gpus` handed out: slot numbers, the device ids they map to (None on CPU)."""

    slots: tuple[int, ...]
    devices: tuple[str, ...] | None
    lock_dir: Path
    _files: list[IO] = field(default_factory=list, repr=False)

    @property
    def cuda_visible_devices(self) -> str | None:
        return None if self.devices is None else ",".join(self.devices)


def default_lock_dir() -> Path:
    if os.environ.get(ENV_LOCK_DIR):
        return Path(os.environ[ENV_LOCK_DIR])
    job = os.environ.get("SLURM_JOB_ID")
    if job:
        return Path(tempfile.gettempdir()) / f"tas-gpu-slots-{os.getuid()}-{job}"
    return Path(".tas") / "gpu-slots" / socket.gethostname().split(".")[0]


def _driver_gpu_count() -> int:
    proc = Path("/proc/driver/nvidia/gpus")
    try:
        count = sum(1 for p in proc.iterdir() if p.is_dir())
        if count:
            return count
    except OSError:
        pass
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def visible_devices(total: int | None = None) -> tuple[str, ...] | None:
    """Device ids slots map to; None when the machine has no GPU (CPU mode)."""
    preset = os.environ.get(ENV_DEVICES)
    if preset is not None and preset.strip() != "":
        devices = tuple(d.strip() for d in preset.split(",") if d.strip())
        if total is not None:
            devices = devices[:total]
        return devices
    if preset is not None:  # set but empty: CUDA sees no device
        return None
    if total is None and os.environ.get(ENV_TOTAL):
        total = int(os.environ[ENV_TOTAL])
    if total is None:
        total = _driver_gpu_count()
    return tuple(str(i) for i in range(total)) if total > 0 else None


def _try_lock(path: Path) -> IO | None:
    fh = open(path, "a+")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        fh.close()
        if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return None
        raise
    fh.seek(0)
    fh.truncate()
    fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                         "argv": sys.argv[1:]}) + "\n")
    fh.flush()
    return fh


def _release(files: list[IO]) -> None:
    for fh in files:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        finally:
            fh.close()
    files.clear()


def _grab(k: int, lock_dir: Path, limit: int | None) -> tuple[list[int], list[IO]]:
    """Lock the k lowest free slots (all or nothing); limit None = unbounded (CPU mode)."""
    slots: list[int] = []
    files: list[IO] = []
    i = 0
    while len(slots) < k and (limit is None or i < limit):
        fh = _try_lock(lock_dir / f"slot{i}.lock")
        if fh is not None:
            slots.append(i)
            files.append(fh)
        i += 1
    if len(slots) < k:
        _release(files)
        return [], []
    return slots, files


@contextmanager
def acquire_gpus(k: int, total: int | None = None, lock_dir: str | Path | None = None,
                 timeout: float | None = None, poll: float = POLL_S) -> Iterator[GpuSlots]:
    """Hold k distinct GPU slots for the `with` block and expose them through CUDA_VISIBLE_DEVICES.

    k <= 0 holds nothing and changes nothing. `total` caps the slots (default: the visible GPUs).
    Call it before torch touches CUDA (`torch.cuda.is_available()` included) in this process."""
    lock_dir = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    if k <= 0:
        yield GpuSlots((), None, lock_dir)
        return
    devices = visible_devices(total)
    limit = None if devices is None else len(devices)
    if limit is not None and k > limit:
        raise TasError(f"this job needs {k} GPU(s) but only {limit} are visible ({ENV_DEVICES}="
                       f"{os.environ.get(ENV_DEVICES, 'unset')}); "
                       "lower experiments.<id>.gpus_per_job or run on a bigger node")
    lock_dir.mkdir(parents=True, exist_ok=True)
    wait = float(os.environ.get(ENV_WAIT, DEFAULT_WAIT_S)) if timeout is None else float(timeout)
    deadline = time.monotonic() + wait
    told = False
    while True:
        slots, files = _grab(k, lock_dir, limit)
        if slots:
            break
        if time.monotonic() >= deadline:
            raise TasError(
                f"no {k} free GPU slot(s) of {limit} after {wait:.0f} s: all held by other jobs "
                f"(lock files in {lock_dir}); "
                f"run Snakemake with --resources gpu=N where N is at most the number of GPUs, or raise {ENV_WAIT}")
        if not told:
            print(f"tas: waiting for {k} free GPU slot(s) of {limit} (locks in {lock_dir})",
                  file=sys.stderr, flush=True)
            told = True
        time.sleep(poll)
    held = GpuSlots(tuple(slots), None if devices is None else tuple(devices[i] for i in slots), lock_dir, files)
    previous = os.environ.get(ENV_DEVICES)
    if held.devices is not None:
        os.environ[ENV_DEVICES] = held.cuda_visible_devices
    try:
        yield held
    finally:
        if held.devices is not None:
            if previous is None:
                os.environ.pop(ENV_DEVICES, None)
            else:
                os.environ[ENV_DEVICES] = previous
        _release(files)


__all__ = ["acquire_gpus", "GpuSlots", "visible_devices", "default_lock_dir"]
