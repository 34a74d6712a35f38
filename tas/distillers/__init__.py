"""Distillation methods: one small class per method, one file each, a leaf registry, a uniform constructor.

Importing this package imports no torch: planning reads the methods' declarations (registry.declaration);
`build_distiller` imports the one method it builds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from tas.distillers.registry import declaration, distiller_class, method_defaults, method_types, needs_teacher
from tas.errors import TasError

if TYPE_CHECKING:
    from tas.distillers.base import Criterion, Distiller
    from tas.models.stages import StageView


def build_distiller(method_type: str, student: "StageView", teacher: "StageView | None", options: Mapping,
                    num_classes: int, criterion: "Criterion") -> "Distiller":
    """The one way a distiller is built (jobs, describe, benchmarks): its options checked against its rules first."""
    cls = distiller_class(method_type)
    bad = declaration(method_type).problem({**cls.defaults, **dict(options)}, (method_type,))
    if bad:
        raise TasError(f"method option {bad}")
    return cls(student, teacher if cls.needs_teacher else None, options, num_classes, criterion)


def __getattr__(name: str):
    if name in ("Distiller", "Criterion"):  # the base class, imported (with torch) only when asked for
        from tas.distillers import base

        return getattr(base, name)
    raise AttributeError(f"module 'tas.distillers' has no attribute {name!r}")


__all__ = ["Distiller", "build_distiller", "declaration", "distiller_class", "method_defaults", "method_types",
           "needs_teacher"]
