"""Method types: what planning needs to know about each, read from the method's own file without importing
it, and the distiller class, imported only when a job runs.

A method is one file in tas/distillers/ with a class decorated `@register("<type>")`, whose literal class
attributes `defaults` (its options and their defaults) and `needs_teacher` (default True) are its
declaration. `declaration()` reads them with `ast` (tas.codedeps finds the file), so `check`, `dvc-yaml`
and Snakemake's parse import no torch; a test checks that every declaration equals its imported class.
params.yaml may override the defaults key by key, and `--set methods.<id>.<key>=...` after that.
"""

from __future__ import annotations

import ast
import importlib
import operator
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable, Mapping

from tas.codedeps import method_classes, method_modules
from tas.errors import TasError

if TYPE_CHECKING:
    from tas.distillers.base import Distiller

_REGISTRY: dict[str, type["Distiller"]] = {}


@dataclass(frozen=True)
class MethodDeclaration:
    type: str
    module: str
    needs_teacher: bool
    defaults: Mapping[str, Any]


def register(name: str) -> Callable[[type["Distiller"]], type["Distiller"]]:
    def wrap(cls: type["Distiller"]) -> type["Distiller"]:
        if name in _REGISTRY:
            raise RuntimeError(f"distiller {name!r} registered twice")
        cls.method_type = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def method_types() -> list[str]:
    return sorted(set(method_modules()) | set(_REGISTRY))


def _unknown(name: str) -> TasError:
    return TasError(f"unknown method type {name!r}; choose one of: {', '.join(method_types())}")


def distiller_class(name: str) -> type["Distiller"]:
    if name not in _REGISTRY:
        module = method_modules().get(name)
        if module is None:
            raise _unknown(name)
        # Only the method's own module: a job imports (and so depends on) the code of its method alone.
        importlib.import_module(module)
    return _REGISTRY[name]


_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
              ast.USub: operator.neg, ast.UAdd: operator.pos}


def _constant(node: ast.AST) -> Any:
    """A literal, allowing arithmetic on numbers (`1 / 0.07`): what a `defaults` dict may hold."""
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_constant(node.left), _constant(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_constant(node.operand))
    if isinstance(node, ast.Dict):
        return {_constant(k): _constant(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.List):
        return [_constant(e) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_constant(e) for e in node.elts)
    return ast.literal_eval(node)


@lru_cache(maxsize=None)
def declaration(name: str) -> MethodDeclaration:
    """The method's `defaults` and `needs_teacher`, read from its class body (no import)."""
    classes = method_classes()
    if name not in classes:
        if name in _REGISTRY:  # registered at run time without a file here
            cls = _REGISTRY[name]
            return MethodDeclaration(name, cls.__module__, bool(cls.needs_teacher), dict(cls.defaults))
        raise _unknown(name)
    module, body = classes[name]
    values: dict[str, Any] = {"defaults": {}, "needs_teacher": True}
    for statement in body:
        targets = statement.targets if isinstance(statement, ast.Assign) else \
            [statement.target] if isinstance(statement, ast.AnnAssign) and statement.value is not None else []
        for target in targets:
            if isinstance(target, ast.Name) and target.id in values:
                values[target.id] = _constant(statement.value)
    return MethodDeclaration(name, module, bool(values["needs_teacher"]), values["defaults"])


def method_defaults(name: str) -> dict:
    return dict(declaration(name).defaults)


def needs_teacher(name: str) -> bool:
    return declaration(name).needs_teacher
