"""Heavy imports without Python's cyclic garbage collector.

torch and timm build ~350,000 objects while they import, none of them garbage, and the allocations keep
triggering the collector, which walks them again and again: 0.5-0.8 CPU-s of the ~3 s a job spends
importing (measured on this project's 2-core machine). They live until the process ends, so they are
frozen afterwards (gc.freeze) and later collections skip them too.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def imports_without_gc() -> Iterator[None]:
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if collecting:
            gc.enable()
