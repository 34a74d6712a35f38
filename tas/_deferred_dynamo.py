"""Import timm and torchvision without importing torch._dynamo.

Two imports pull in torch._dynamo (about 2.5 CPU-seconds: the tracer, sympy) that a process which builds
or evaluates a model never uses: torchvision's `ops.roi_align` imports `torch._dynamo.utils` for one
function, and timm decorates a few models' methods with `torch.compiler.disable` at import. That is a
third of the start of every evaluate and prepare-run job, of `describe` and of every `python -m tas`
command that builds a model. While those two modules import:
- `torch._dynamo` and `torch._dynamo.utils` are stand-ins whose one function calls the real one;
- `torch.compiler.disable` returns a wrapper that applies the real `torch.compiler.disable` at its first
  call (so what it wraps is still never compiled).
Both are undone right after, so `torch.compile` (runtime.compile) and every later import get the real
torch._dynamo. A training job still imports it: the optimizers' `step` does, at its first call.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import sys
import types
from typing import Callable

ROI_ALIGN = "torchvision.ops.roi_align"
TIMM = "timm"


def is_compile_supported(device_type):
    from torch._dynamo.utils import is_compile_supported as real  # by the time it is called: the real module

    return real(device_type)


def deferred_disable(fn=None, recursive=True, *, reason=None):
    """torch.compiler.disable, applied when `fn` is first called."""
    if fn is None:
        return functools.partial(deferred_disable, recursive=recursive, reason=reason)
    import torch

    disabled = None

    @functools.wraps(fn)
    def call(*args, **kwargs):
        nonlocal disabled
        if disabled is None:
            disabled = torch.compiler.disable(fn, recursive, reason=reason)
        return disabled(*args, **kwargs)

    return call


def _stand_in_dynamo() -> Callable[[], None]:
    """Put stand-ins for torch._dynamo(.utils) in place; returns what removes them."""
    package = types.ModuleType("torch._dynamo", "stand-in while torchvision.ops.roi_align imports (tas)")
    package.__path__ = []
    utils = types.ModuleType("torch._dynamo.utils", "stand-in (tas._deferred_dynamo)")
    utils.is_compile_supported = is_compile_supported
    package.utils = utils
    stand_ins = {"torch._dynamo": package, "torch._dynamo.utils": utils}
    sys.modules.update(stand_ins)

    def undo() -> None:
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
        torch = sys.modules.get("torch")
        if torch is not None and torch.__dict__.get("_dynamo") is package:
            del torch._dynamo

    return undo


def _defer_disable() -> Callable[[], None]:
    import torch.compiler

    real = torch.compiler.disable
    torch.compiler.disable = deferred_disable

    def undo() -> None:
        if torch.compiler.disable is deferred_disable:
            torch.compiler.disable = real

    return undo


class _Loader(importlib.abc.Loader):
    """The module's own loader, run with `setup` in place (undone afterwards)."""

    def __init__(self, real: importlib.abc.Loader, setup: Callable[[], Callable[[], None]]) -> None:
        self.real, self.setup = real, setup

    def create_module(self, spec):
        return self.real.create_module(spec)

    def exec_module(self, module) -> None:
        if "torch._dynamo" in sys.modules:  # already imported: nothing to save
            self.real.exec_module(module)
            return
        undo = self.setup()
        try:
            self.real.exec_module(module)
        finally:
            undo()


_SETUPS = {ROI_ALIGN: _stand_in_dynamo, TIMM: _defer_disable}


def find_spec(name: str, path=None):
    """The spec of torchvision.ops.roi_align or timm with a loader that defers torch._dynamo; else None."""
    setup = _SETUPS.get(name)
    if setup is None or "torch._dynamo" in sys.modules:
        return None
    spec = importlib.machinery.PathFinder.find_spec(name, path)
    if spec is None or spec.loader is None:
        return None
    spec.loader = _Loader(spec.loader, setup)
    return spec
