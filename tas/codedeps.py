"""The exact code a pipeline job runs, from the package's import graph (read with `ast`, nothing imported).

A job's code is the import closure of:
- the entry point (`python -m tas`: tas/__main__.py, tas/cli.py), followed at module level only, because
  cli.py picks the subcommand's module by name at run time (`tas.jobs.SUBCOMMAND_MODULES`);
- its subcommand's module, `tas/jobs/<module>.py`;
- what it picks by name at run time: the module that registers its method type (`@register("<type>")` in
  tas/distillers/), its dataset source's module (tas/data/sources/<source>.py), and, for the tables, the
  report package and its table kind's module (tas/report/kinds/<kind>.py);
plus the data files those modules read (`DATA_FILES`). Inside the closure every import counts, also the
ones inside functions: reading a little more than runs is safe, missing a module is not.

Snakemake (the `hash` param of each rule), DVC (`deps:` in dvc.yaml) and a training job's resume identity
all use this one list, so the three can never disagree about what a code change reruns.
"""

from __future__ import annotations

import ast
import hashlib
import sys
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from tas import usercache
from tas.plugins import (PACKAGE_DIR, ROOT, SOURCES_PACKAGE, TABLE_KINDS_PACKAGE, method_modules, module_file,
                         module_name, parse_module, plugin_modules)
from tas.subcommands import SUBCOMMAND_MODULES


# Data files a module reads at run time (repo-relative): a change to one reruns every job whose code
# closure holds that module. tests/test_codedeps.py checks that every data file of the package is listed.
DATA_FILES = {
    "tas/config.py": ("tas/params.schema.yaml",),
    "tas/report/paper.py": ("tas/report/paper_values.yaml",),
}
ENTRY_MODULES = ("tas", "tas.__main__", "tas.cli")
# Modules picked by name at run time beyond the method: the tables subcommand hands its spec to the report.
SUBCOMMAND_EXTRA_ROOTS = {"tables": ("tas.report",)}


def _parents(module: str) -> list[str]:
    """Importing tas.a.b runs tas/__init__ and tas/a/__init__ first."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _resolve_from(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imported_names(nodes: Iterable[ast.AST], module: str | None = None, is_package: bool = False) -> list[str]:
    """The dotted names the import statements among `nodes` name: `import a.b` gives a.b, `from x import n`
    gives x and x.n (n may be a module). A relative import resolves against `module` (`is_package`: the
    file is its __init__.py); without `module` (a file outside the package) relative imports are skipped."""
    names: list[str] = []
    for node in nodes:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and (module is not None or not node.level):
            source = _resolve_from(module or "", is_package, node)
            names += [source] + [f"{source}.{alias.name}" for alias in node.names]
    return names


def _statements(tree: ast.AST):
    """Every statement of `tree`, nested ones included (an import is a statement): ast.walk would also visit
    every expression node, ten times as many, which planning paid for each module of each job's closure."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            todo.extend(child for child in getattr(node, field, ()) if isinstance(child, ast.AST))


@lru_cache(maxsize=None)  # every closure walks the same modules: once per process (each job plans its own matrix)
def direct_imports(module: str, module_level_only: bool = False) -> frozenset[str]:
    """tas modules that `module` imports (`from x import name` counts x.name when that is a module)."""
    path = module_file(module)
    if path is None:
        return frozenset()
    every, top = _import_names(path, module)
    found: set[str] = set()
    for name in top if module_level_only else every:
        if module_file(name) is not None:
            found.add(name)
            found.update(_parents(name))
    return frozenset(found)


# The dotted names each module's imports name (all statements, and module level only), by the module's name
# and content hash, kept in the user cache (tas.usercache) across processes: parsing the ~80 modules of the
# jobs' closures took 0.4 s of every Snakemake start and of every job's own plan. Names are kept unfiltered
# (whether a name is a tas module is decided at each use), so a module added later is still found.
IMPORTS_CACHE = "codedeps-imports-v1-py%d%d.json" % sys.version_info[:2]  # another Python's ast may differ
_IMPORTS_CACHE_MAX = 4096  # entries; old versions of edited files are dropped first
_imports_cache: dict[str, list] | None = None
_imports_cache_dirty = False


def _import_names(path: Path, module: str) -> tuple[list[str], list[str]]:
    global _imports_cache, _imports_cache_dirty
    if _imports_cache is None:
        loaded = usercache.read_json(IMPORTS_CACHE)
        _imports_cache = loaded if isinstance(loaded, dict) else {}
    data = path.read_bytes()
    key = f"{module}:{hashlib.sha256(data).hexdigest()[:32]}"
    hit = _imports_cache.get(key)
    if (isinstance(hit, list) and len(hit) == 2
            and all(isinstance(names, list) and all(isinstance(n, str) for n in names) for names in hit)):
        return hit[0], hit[1]
    tree = ast.parse(data, filename=str(path))
    package = path.name == "__init__.py"
    value = [_imported_names(_statements(tree), module, package), _imported_names(tree.body, module, package)]
    _imports_cache[key] = value
    _imports_cache_dirty = True
    return value[0], value[1]


def _save_imports_cache() -> None:
    global _imports_cache_dirty
    if not _imports_cache_dirty or _imports_cache is None:
        return
    keep = dict(list(_imports_cache.items())[-_IMPORTS_CACHE_MAX:])
    usercache.write_json(IMPORTS_CACHE, keep)
    _imports_cache_dirty = False


def _runtime_imports(tree: ast.Module) -> list[ast.stmt]:
    """The import statements of a module that can run: all of them, function-level included, except
    those under `if TYPE_CHECKING:` (annotations only)."""
    found: list[ast.stmt] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if (isinstance(child, ast.If)
                and getattr(child.test, "id", getattr(child.test, "attr", None)) == "TYPE_CHECKING"):
                for other in child.orelse:
                    visit_one(other)
                continue
            visit_one(child)

    def visit_one(node: ast.AST) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        visit(node)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    """Every tas module -> the tas modules its code can import at run time (not its own parent packages,
    which the import system runs first; not TYPE_CHECKING imports): the graph whose layers
    tests/test_layers.py checks."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        module = module_name(path)
        names = _imported_names(_runtime_imports(parse_module(path)), module, path.name == "__init__.py")
        graph[module] = {n for n in names if module_file(n) is not None and n != module
                         and not module.startswith(n + ".")}
    return graph


def closure(roots: Iterable[str], module_level_only: Iterable[str] = ()) -> set[str]:
    """Every tas module that importing `roots` can import (those in `module_level_only`: top-level imports)."""
    shallow = set(module_level_only)
    seen: set[str] = set()
    todo = [m for root in roots for m in (*_parents(root), root) if module_file(m) is not None]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(direct_imports(module, module_level_only=module in shallow) - seen)
    _save_imports_cache()
    return seen


def tas_imports(files: Iterable[Path]) -> list[str]:
    """tas modules that files outside the package (a third-party method's) import, read with ast."""
    found: set[str] = set()
    for path in files:
        tree = ast.parse(Path(path).read_text(), filename=str(path))
        found.update(n for n in _imported_names(ast.walk(tree)) if module_file(n) is not None)
    return sorted(found)


def subcommand_roots(subcommand: str, method_type: str | None = None, dataset_source: str | None = None,
                     table_kind: str | None = None) -> tuple[str, ...]:
    roots = [*ENTRY_MODULES, f"tas.jobs.{SUBCOMMAND_MODULES[subcommand]}", *SUBCOMMAND_EXTRA_ROOTS.get(subcommand, ())]
    if method_type is not None:
        modules = method_modules()
        if method_type in modules:
            roots.append(modules[method_type])
        else:  # a third-party method (entry point): the tas modules its own files import
            from tas.distillers.registry import entry_point_files

            roots.extend(tas_imports(entry_point_files(method_type)))
    for package, name in ((SOURCES_PACKAGE, dataset_source), (TABLE_KINDS_PACKAGE, table_kind)):
        if name is not None:
            roots.append(plugin_modules(package)[name])
    return tuple(roots)


@lru_cache(maxsize=None)
def job_code(subcommand: str, method_type: str | None = None, dataset_source: str | None = None,
             table_kind: str | None = None) -> tuple[str, ...]:
    """Repo-relative files (sorted) of the code a job of `subcommand` (method type, dataset source, table
    kind) runs, with its data files."""
    modules = closure(subcommand_roots(subcommand, method_type, dataset_source, table_kind),
                      module_level_only=("tas.cli",))
    files = {module_file(m).relative_to(ROOT).as_posix() for m in modules}
    for source in list(files):
        files.update(DATA_FILES.get(source, ()))
    return tuple(sorted(files))


def files_hash(files: Iterable[str]) -> str:
    """Content hash of repo-relative files (names included, so a moved module changes it too). Planning
    hashes the same few dozen files for every job: each file is read once per (mtime, size)."""
    digest = hashlib.sha256()
    for rel in files:
        stat = (ROOT / rel).stat()
        digest.update(rel.encode() + b"\0" + _file_sha(rel, stat.st_mtime_ns, stat.st_size).encode() + b"\0")
    return digest.hexdigest()[:16]


@lru_cache(maxsize=4096)
def _file_sha(rel: str, mtime_ns: int, size: int) -> str:
    return hashlib.sha256((ROOT / rel).read_bytes()).hexdigest()


__all__ = ["job_code", "files_hash", "closure", "direct_imports", "import_graph", "subcommand_roots", "DATA_FILES"]
