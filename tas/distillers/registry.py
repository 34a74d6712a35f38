"""Method type -> distiller class, importing only the module that registers that type (found by
tas.codedeps without importing anything). Each class carries its option defaults (`defaults`), which
params.yaml may override key by key and `--set methods.<id>.<key>=...` after that."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Callable

from tas.codedeps import method_modules
from tas.errors import TasError

if TYPE_CHECKING:
    from tas.distillers.base import Distiller

_REGISTRY: dict[str, type["Distiller"]] = {}


def register(name: str) -> Callable[[type["Distiller"]], type["Distiller"]]:
    def wrap(cls: type["Distiller"]) -> type["Distiller"]:
        if name in _REGISTRY:
            raise RuntimeError(f"distiller {name!r} registered twice")
        cls.method_type = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def distiller_class(name: str) -> type["Distiller"]:
    if name not in _REGISTRY:
        module = method_modules().get(name)
        if module is None:
            raise TasError(f"unknown method type {name!r}; choose one of: {', '.join(method_types())}")
        # Only the method's own module: a job imports (and so depends on) the code of its method alone.
        importlib.import_module(module)
    return _REGISTRY[name]


def method_defaults(name: str) -> dict:
    return dict(distiller_class(name).defaults)


def method_types() -> list[str]:
    return sorted(set(method_modules()) | set(_REGISTRY))
