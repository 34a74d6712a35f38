"""Plugin discovery, read from the package's files without importing them: the method types registered
in tas/distillers/ (`@register("<type>")`), and the one-module-per-name plugin packages (dataset sources,
table kinds), with the import of one plugin by name.

The bottom layer of the package (it imports nothing of tas but its errors): configuration, the registries
and the code-closure hashing (tas.codedeps) all read plugins through it.
"""

from __future__ import annotations

import ast
import importlib
from functools import lru_cache
from pathlib import Path

from tas.errors import TasError

PACKAGE = "tas"
PACKAGE_DIR = Path(__file__).resolve().parent
ROOT = PACKAGE_DIR.parent
# Plugin packages: one module per name (the file's stem), imported by name when a job runs.
SOURCES_PACKAGE = "tas.data.sources"
TABLE_KINDS_PACKAGE = "tas.report.kinds"


def module_file(module: str) -> Path | None:
    """tas.a.b -> tas/a/b.py or tas/a/b/__init__.py (None for a name outside the package)."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = ROOT.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@lru_cache(maxsize=None)
def parse_module(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@lru_cache(maxsize=None)
def method_classes() -> dict[str, tuple[str, list[ast.stmt]]]:
    """Method type -> (module, class body) of the class decorated `@register("<type>")` in tas/distillers/:
    read from the source, nothing imported."""
    found: dict[str, tuple[str, list[ast.stmt]]] = {}
    for path in sorted((PACKAGE_DIR / "distillers").glob("*.py")):
        for node in ast.walk(parse_module(path)):
            if not isinstance(node, ast.ClassDef):
                continue
            for deco in node.decorator_list:
                if (isinstance(deco, ast.Call)
                    and getattr(deco.func, "id", getattr(deco.func, "attr", None)) == "register"
                        and deco.args and isinstance(deco.args[0], ast.Constant)):
                    found[deco.args[0].value] = (module_name(path), node.body)
    return found


def method_modules() -> dict[str, str]:
    """Method type -> the tas.distillers module that registers it."""
    return {name: module for name, (module, _) in method_classes().items()}


def plugin_modules(package: str) -> dict[str, str]:
    """Name -> module of a plugin package: every `<name>.py` in its folder but `_private.py` ones."""
    folder = module_file(package).parent
    return {path.stem: f"{package}.{path.stem}" for path in sorted(folder.glob("*.py"))
            if not path.stem.startswith("_")}


def import_plugin(package: str, name: str, what: str):
    """Import one plugin of `package` by name (only this one: a job's code holds its own plugin), or one
    error line naming the choices and where a new `what` goes."""
    modules = plugin_modules(package)
    if name not in modules:
        folder = module_file(package).parent.relative_to(ROOT).as_posix()
        raise TasError(f"unknown {what} {name!r}; use one of {', '.join(modules)} (a new one is one file in {folder}/)")
    return importlib.import_module(modules[name])


__all__ = ["module_file", "method_classes", "method_modules", "plugin_modules", "import_plugin", "PACKAGE_DIR", "ROOT",
           "SOURCES_PACKAGE", "TABLE_KINDS_PACKAGE"]
