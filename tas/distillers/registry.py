"""Method type -> distiller class. Each class carries its option defaults (`defaults`), which
params.yaml may override key by key and `--set methods.<id>.<key>=...` after that."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

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
    _load_all()
    if name not in _REGISTRY:
        raise TasError(f"unknown method type {name!r}; choose one of: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def method_defaults(name: str) -> dict:
    return dict(distiller_class(name).defaults)


def method_types() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def _load_all() -> None:
    # Importing the modules runs their @register decorators.
    from tas.distillers import dist, dkd, fitnet, kd, ofa, rsd, scratch, tas  # noqa: F401
