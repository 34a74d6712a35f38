"""How busy the machine is with other processes: a timed window that they disturbed is timed again once
the machine is quiet, so that a shared machine does not pass its load off as this code's speed."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Callable

from tas.errors import TasError


def loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


class ForeignLoad:
    """How busy the machine was with other processes while the block ran: their CPU seconds per
    wall second per core (0 = this benchmark had the machine to itself; 1 = every core was busy
    with something else). Needs psutil; None without it."""

    def __enter__(self) -> "ForeignLoad":
        self.fraction = None
        try:
            import psutil
        except ImportError:
            self._psutil = None
            return self
        self._psutil = psutil
        self._t0 = time.perf_counter()
        self._busy0 = self._busy()
        self._own0 = self._own()
        return self

    def _busy(self) -> float:
        t = self._psutil.cpu_times()
        return sum(getattr(t, k, 0.0) for k in ("user", "nice", "system", "irq", "softirq", "steal"))

    def _own(self) -> float:
        proc = self._psutil.Process()
        t = proc.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for child in proc.children(recursive=True):  # live loader workers are ours too
            with contextlib.suppress(self._psutil.Error):
                c = child.cpu_times()
                total += c.user + c.system
        return total

    def __exit__(self, *exc) -> None:
        if self._psutil is None:
            return
        wall = time.perf_counter() - self._t0
        foreign = (self._busy() - self._busy0) - (self._own() - self._own0)
        cores = self._psutil.cpu_count() or 1
        self.fraction = round(max(0.0, foreign) / max(wall * cores, 1e-9), 3)


def guard_settings() -> tuple[float, int]:
    """(max foreign CPU fraction, retries) for a timed window: TAS_BENCH_MAX_FOREIGN (default 0.05)
    and TAS_BENCH_RETRIES (default 5). A window during which other processes used more than that
    share of the machine is timed again once the machine is quiet (wait_idle), up to `retries`
    times; the last attempt is kept and its foreign fraction recorded."""
    try:
        return float(os.environ.get("TAS_BENCH_MAX_FOREIGN", "0.05")), int(os.environ.get("TAS_BENCH_RETRIES", "5"))
    except ValueError:
        raise TasError("TAS_BENCH_MAX_FOREIGN must be a number and TAS_BENCH_RETRIES an integer") from None


def guarded(measure: Callable[[], object], label: str = "") -> tuple[object, float | None, int]:
    """Run `measure` (one timed window); redo it while other processes disturbed it.
    Returns (value, foreign CPU fraction of the kept attempt, attempts redone)."""
    max_foreign, retries = guard_settings()
    for attempt in range(retries + 1):
        with ForeignLoad() as load:
            value = measure()
        if load.fraction is None or load.fraction <= max_foreign or attempt == retries:
            return value, load.fraction, attempt
        print(f"bench: {label} window disturbed (other processes used {100 * load.fraction:.0f}% of the CPU); "
              "waiting for a quiet machine, then timing it again", file=sys.stderr)
        wait_idle(max_foreign)
    raise AssertionError("unreachable")


def wait_idle(max_foreign: float, sample_s: float = 1.0, max_wait_s: float | None = None) -> float | None:
    """Sleep until other processes use at most `max_foreign` of the machine over `sample_s`
    (TAS_BENCH_MAX_WAIT seconds at most, default 120). Returns the last sample."""
    if max_wait_s is None:
        max_wait_s = float(os.environ.get("TAS_BENCH_MAX_WAIT", "120"))
    deadline = time.monotonic() + max_wait_s
    fraction = None
    while time.monotonic() < deadline:
        with ForeignLoad() as load:
            time.sleep(sample_s)
        fraction = load.fraction
        if fraction is None or fraction <= max_foreign:
            break
    return fraction
