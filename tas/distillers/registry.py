"""Method types: what planning needs to know about each, read from the method's own file without importing
it, and the distiller class, imported only when a job runs.

A method is one file in tas/distillers/ with a class decorated `@register("<type>")`, whose literal class
attributes `defaults` (its options and their defaults), `rules` (each option's JSON Schema: type, range,
choices), `needs_teacher` (default True), `built_first` (what it builds per pair before training, e.g. TAS's
assistant; default None) and `auxiliaries` (the extra classifiers it reports) are its declaration.
`declaration()` reads them with `ast` (tas.codedeps finds the file), so `check`, `dvc-yaml` and Snakemake's
parse import no torch; a test checks that every declaration equals its imported class.
params.yaml may override the defaults key by key, and `--set methods.<id>.<key>=...` after that.

A method of another package registers through the entry-point group `tas.methods` (name = method type,
value = `module:Class`, a `tas.distillers.base.Distiller` subclass): its class is imported to read its
declaration; its distribution's version and a hash of its package's files stand in for its code in the
job hash (tas.matrix), and the tas modules its files import join the job's code list (tas.codedeps).
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.metadata
import importlib.util
import operator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from tas.plugins import method_classes, method_modules
from tas.errors import TasError
from tas.validation import problem

if TYPE_CHECKING:
    from tas.distillers.base import Distiller

_REGISTRY: dict[str, type["Distiller"]] = {}
ENTRY_POINT_GROUP = "tas.methods"
BASE_CLASS = "tas.distillers.base.Distiller"


@dataclass(frozen=True)
class MethodDeclaration:
    type: str
    module: str
    needs_teacher: bool
    defaults: Mapping[str, Any]
    rules: Mapping[str, Any] = None  # option -> JSON Schema; an option without one is typed by its default
    built_first: str | None = None  # what the method builds once per (pair, method) before its runs (prepare-run)
    auxiliaries: tuple[str, ...] = ()  # the auxiliary classifiers whose top-1 it reports

    def option_schema(self) -> dict:
        """The JSON Schema of this method's options: `check` and the distiller's constructor both apply it."""
        rules = self.rules or {}
        return {"type": "object", "additionalProperties": False,
                "properties": {name: rules.get(name, _type_of(default)) for name, default in self.defaults.items()}}

    def problem(self, options: Mapping[str, Any], prefix: tuple = ()) -> str | None:
        """One line naming the first bad option (its key path under `prefix`), or None."""
        return problem(_plain(options), self.option_schema(), prefix)


def _type_of(default: Any) -> dict:
    """The schema an option without a rule gets from its default (None: anything)."""
    if default is None:
        return {}
    if isinstance(default, bool):
        return {"type": "boolean"}
    if isinstance(default, int):
        return {"type": "integer"}
    if isinstance(default, float):
        return {"type": "number"}
    if isinstance(default, (list, tuple)):
        return {"type": "array"}
    if isinstance(default, dict):
        return {"type": "object"}
    return {"type": "string"}


def _plain(value: Any) -> Any:
    """Frozen mappings and tuples (tas.config's) as the dicts and lists JSON Schema knows."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def register(name: str) -> Callable[[type["Distiller"]], type["Distiller"]]:
    def wrap(cls: type["Distiller"]) -> type["Distiller"]:
        if name in _REGISTRY:
            raise RuntimeError(f"distiller {name!r} registered twice")
        cls.method_type = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """Third-party method types; one of tas's own names is never shadowed."""
    own = method_modules()
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name not in own}


def method_types() -> list[str]:
    return sorted(set(method_modules()) | set(_entry_points()) | set(_REGISTRY))


def entry_point_files(name: str) -> list[Path]:
    """The Python files of the package that provides a third-party method (located, not imported)."""
    ep = _entry_points().get(name)
    if ep is None:
        return []
    top = ep.module.split(".")[0]
    spec = importlib.util.find_spec(top)
    if spec is None:
        return []
    if spec.submodule_search_locations:
        return sorted(p for base in spec.submodule_search_locations for p in Path(base).rglob("*.py"))
    return [Path(spec.origin)] if spec.origin else []


def entry_point_version(name: str) -> str | None:
    """What stands in a job hash for a third-party method's code: '<distribution>==<version>' and a hash of
    its package's files (an editable install changes its code without changing its version)."""
    ep = _entry_points().get(name) if name not in method_modules() else None
    if ep is None:
        return None
    digest = hashlib.sha256()
    for path in entry_point_files(name):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    dist = ep.dist
    label = f"{dist.name}=={dist.version}" if dist is not None else ep.value
    return f"{label} {digest.hexdigest()[:16]}"


def _unknown(name: str) -> TasError:
    return TasError(f"unknown method type {name!r}; choose one of: {', '.join(method_types())}")


def distiller_class(name: str) -> type["Distiller"]:
    if name not in _REGISTRY:
        module = method_modules().get(name)
        if module is not None:
            # Only the method's own module: a job imports (and so depends on) the code of its method alone.
            importlib.import_module(module)
        else:
            _load_entry_point(name)
    return _REGISTRY[name]


def _load_entry_point(name: str) -> None:
    ep = _entry_points().get(name)
    if ep is None:
        raise _unknown(name)
    try:
        cls = ep.load()
    except Exception as err:  # a broken third-party package: say which, not a traceback
        raise TasError(f"method type {name!r} from entry point {ep.value!r} does not import ({type(err).__name__}: "
                       f"{err}); fix or reinstall the package that provides it") from None
    # by name: the declarations' module stays below the distillers it declares (and imports no torch)
    if not (isinstance(cls, type) and BASE_CLASS in {f"{k.__module__}.{k.__qualname__}" for k in cls.__mro__}):
        raise TasError(f"entry point {name} = {ep.value} is not a tas Distiller subclass; "
                       "point it at the method's class")
    if name not in _REGISTRY:
        register(name)(cls)


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
    if name not in classes:  # a third-party method: its class is the declaration
        cls = distiller_class(name)
        return MethodDeclaration(name, cls.__module__, bool(cls.needs_teacher), dict(cls.defaults), dict(cls.rules),
                                 cls.built_first, tuple(cls.auxiliaries))
    module, body = classes[name]
    values: dict[str, Any] = {"defaults": {}, "rules": {}, "needs_teacher": True, "built_first": None,
                              "auxiliaries": ()}
    for statement in body:
        targets = statement.targets if isinstance(statement, ast.Assign) else \
            [statement.target] if isinstance(statement, ast.AnnAssign) and statement.value is not None else []
        for target in targets:
            if isinstance(target, ast.Name) and target.id in values:
                try:
                    values[target.id] = _constant(statement.value)
                except (ValueError, TypeError, SyntaxError):
                    raise TasError(f"{module.replace('.', '/')}.py line {statement.lineno}: method {name!r} "
                                   f"must declare `{target.id}` as a literal (planning reads it without importing "
                                   "the file); "
                                   f"write the values out instead of computing them") from None
    return MethodDeclaration(name, module, bool(values["needs_teacher"]), values["defaults"], values["rules"],
                             values["built_first"], tuple(values["auxiliaries"]))


def method_defaults(name: str) -> dict:
    return dict(declaration(name).defaults)


def needs_teacher(name: str) -> bool:
    return declaration(name).needs_teacher
