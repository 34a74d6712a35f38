"""Distillation methods: one small class per method, a registry, a uniform constructor."""

from __future__ import annotations

from typing import Mapping

from tas.distillers.base import Criterion, Distiller
from tas.distillers.registry import distiller_class, method_defaults, method_types
from tas.models.stages import StageView


def build_distiller(method_type: str, student: StageView, teacher: StageView | None, options: Mapping, num_classes: int, criterion: Criterion) -> Distiller:
    cls = distiller_class(method_type)
    return cls(student, teacher if cls.needs_teacher else None, options, num_classes, criterion)


__all__ = ["Distiller", "build_distiller", "distiller_class", "method_defaults", "method_types"]
