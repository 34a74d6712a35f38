"""One timed window: `torch.utils.benchmark.Timer.timeit` over a fixed number of calls. The Timer warms up
(max(number // 100, 2) untimed calls first) and synchronises the accelerator at the window's edges, which
a hand-written perf_counter loop had to do itself. Windows, not `blocked_autorange`: the benchmarks time
methods round-robin and redo a window that other processes disturbed (tas.bench.load.guarded)."""

from __future__ import annotations

import statistics
import time
from typing import Callable, Iterable

import torch
from torch.utils.benchmark import Timer, timer


def window_s(call: Callable[[], object], number: int) -> float:
    """Mean seconds per call over one window of `number` calls (after the Timer's warm-up calls)."""
    # num_threads: the Timer otherwise runs the statement on 1 thread; keep what the benchmark set.
    timer = Timer(stmt="call()", globals={"call": call}, num_threads=torch.get_num_threads())
    return float(timer.timeit(number).mean)


def run_s(call: Callable[[], object], number: int) -> float:
    """Seconds `number` calls take, the first ones included: what a warm-up costs (first-call compilation,
    caches), not a steady-state time. The Timer's clock, so the accelerator is drained at both ends."""
    start = timer()
    for _ in range(number):
        call()
    return timer() - start


def best_ms_per_item(call: Callable[[object], object], items: list, rounds: int) -> float:
    """Milliseconds per item of `call(item)` over `items`, the fastest of `rounds` passes: a CPU cost
    that other processes on a shared machine inflate as little as possible."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for item in items:
            call(item)
        best = min(best, (time.perf_counter() - start) / len(items))
    return 1000.0 * best


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def summarize(window_ms: list[float], batch_size: int) -> dict:
    """images/s at the median window, and how far apart the windows were."""
    median_ms = median(window_ms)
    return {
        "images_per_s": round(1000.0 * batch_size / median_ms, 2),
        "step_ms_median": round(median_ms, 3),
        "step_ms_windows": [round(v, 3) for v in window_ms],
        "step_ms_spread": round((max(window_ms) - min(window_ms)) / median_ms, 4),
    }
