"""Reading params.yaml (and `--set` values): safe YAML with the two surprises of YAML 1.1 removed.

- A key given twice in one mapping is refused with both lines (PyYAML keeps the last silently, so a study
  could switch to other settings without a word).
- A number in exponent form without a dot (`1e-3`, `5E4`) is a float, as in YAML 1.2, JSON and DVC's
  reader (YAML 1.1 reads it as a string, which the schema then refuses as "expected number, got str").

Every problem is one TasError line naming the file, the line and, where there is one, the key path.
Imports nothing but PyYAML (Snakemake's parse of the Snakefile uses it).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tas.errors import TasError

_EXPONENT_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+
                                 |[-+]?\.[0-9_]+[eE][-+]?[0-9]+)$""", re.X)


class Loader(yaml.SafeLoader):
    """yaml.SafeLoader + exponent floats without a dot."""


# The same loader on libyaml's parser where PyYAML was built with it: params.yaml is read by Snakemake's
# parse and by every job, and the pure-Python parser took 0.18 s of each (a third of a no-op `snakemake`'s
# own work). Same resolvers and constructors, so the same values and the same line numbers in errors.
_Fast = type("_Fast", (yaml.CSafeLoader,), {}) if getattr(yaml, "__with_libyaml__", False) else Loader

for _loader in {Loader, _Fast}:
    _loader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789."))


def load_text(text: str, source: str = "params.yaml") -> Any:
    """The document in `text`; a syntax error or a duplicate key is one TasError naming `source` and the line."""
    try:
        node = yaml.compose(text, Loader=_Fast)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise TasError(f"{source}: not valid YAML{where}; fix the syntax") from None
    if node is None:
        return None
    _refuse_duplicates(node, (), source)
    loader = _Fast("")
    try:
        return loader.construct_document(node)
    except yaml.YAMLError as err:  # e.g. an unknown tag: never evaluated, refused
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise TasError(f"{source}: not valid YAML{where} ({getattr(err, 'problem', None) or 'cannot be read'}); "
                       "fix it") from None
    finally:
        loader.dispose()


def load_file(path: str | Path) -> Any:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise TasError(f"params file {str(path)!r} not found; "
                       "run from the project root or pass --params FILE") from None
    except (OSError, UnicodeDecodeError) as err:
        raise TasError(f"{path}: cannot be read ({err}); fix the file") from None
    return load_text(text, str(path))


def load_value(text: str) -> Any:
    """A `--set key=value` value: typed as in params.yaml (`3`, `0.1`, `1e-3`, `true`, `null`, `[a, b]`); text
    that is not valid YAML stays the text."""
    try:
        node = yaml.compose(text, Loader=Loader)
        if node is None:
            return None
        loader = Loader("")
        try:
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError:
        return text


def _refuse_duplicates(node: yaml.Node, path: tuple[str, ...], source: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = key_node.value
                line = key_node.start_mark.line + 1
                if key in seen:
                    dotted = ".".join((*path, key))
                    raise TasError(f"{source}: {dotted}: duplicate key at line {line} (first at line {seen[key]}); "
                                   "YAML would keep only the last one: give it once")
                seen[key] = line
                _refuse_duplicates(value_node, (*path, key), source)
            else:
                _refuse_duplicates(value_node, path, source)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _refuse_duplicates(item, (*path[:-1], f"{path[-1]}[{index}]") if path else (f"[{index}]",), source)


__all__ = ["Loader", "load_text", "load_file", "load_value"]
