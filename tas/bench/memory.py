"""Memory a benchmarked method uses: CUDA allocator counters on a GPU, sampled resident set size on a CPU."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import threading

import torch


def release_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed heap back, so the next RSS baseline is lower


def rss_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        return None


def _high_water() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class RssPeak:
    """Peak resident set size of this process while the block runs, sampled every `interval` s
    (psutil; without it, the ru_maxrss high-water mark, which only ever grows)."""

    def __init__(self, interval: float = 0.003) -> None:
        self.interval, self.peak = interval, 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "RssPeak":
        first = rss_bytes()
        if first is None:
            self.peak = _high_water()
            return self
        self.peak = first
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            rss = rss_bytes() or 0
            if rss > self.peak:
                self.peak = rss

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, rss_bytes() or 0)
        else:
            self.peak = max(self.peak, _high_water())


class MethodMemory:
    """Per-method memory while several methods live in one process: what its build and warm-up
    added (models, optimizer state, EMA) plus the largest transient rise during its windows."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.cuda = device, device.type == "cuda"

    def now(self) -> int:
        if self.cuda:
            return torch.cuda.memory_allocated(self.device)
        return rss_bytes() or 0

    @contextlib.contextmanager
    def transient(self, into: list):
        """Append the peak rise above the current level while the block runs."""
        if not self.cuda:
            release_memory(self.device)
        before = self.now()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
            yield
            into.append(torch.cuda.max_memory_allocated(self.device) - before)
        else:
            with RssPeak() as rss:
                yield
            into.append(max(0, rss.peak - before))

    def kind(self) -> str:
        if self.cuda:
            return ("torch.cuda: memory_allocated added by the method's build + warm-up (models, optimizer state, "
                    "EMA) plus the max_memory_allocated rise during its steps")
        method = "psutil-sampled RSS" if rss_bytes() is not None else "ru_maxrss"
        return (f"cpu {method}: RSS added by the method's build + warm-up plus the peak RSS rise during its steps "
                "(approximate: the allocator keeps freed pages, so read it as an order of magnitude)")
