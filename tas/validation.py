"""JSON Schema validation with one error line: the key path (`methods.kd.T`), what is wrong, what is allowed.

params.yaml is checked against tas/params.schema.yaml (tas.config), and a method's options
against the rules its own file declares (tas.distillers.registry): both report through `problem`.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import jsonschema


def problem(instance: Any, schema: Mapping[str, Any], prefix: Iterable[Any] = ()) -> str | None:
    """The first (shallowest) violation of `schema` by `instance` as one line, or None; `prefix` is the
    key path of `instance` in the file (a method's options sit at methods.<id>)."""
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(instance),
                    key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    return describe(_most_specific(errors[0]), tuple(prefix)) if errors else None


def _most_specific(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    # oneOf/anyOf report the whole branch set; the deepest sub-error says what is actually wrong, and of
    # equally deep ones a range or choice beats "expected null" (`null | number >= 0` given -1: the range).
    if error.context:
        return _most_specific(max(error.context, key=lambda e: (len(e.absolute_path), e.validator != "type")))
    return error


def key_path(path: Iterable[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def describe(error: jsonschema.ValidationError, prefix: tuple = ()) -> str:
    where = key_path((*prefix, *error.absolute_path))
    validator = error.validator
    if validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        return (f"unknown key {'.'.join([where, extra[0]]) if where != '(top level)' else extra[0]!s}; "
                f"allowed keys here: {', '.join(allowed)}")
    if validator == "required":
        return f"{where}: {error.message}"
    if validator == "enum":
        # The boolean spellings of on/off are accepted but not advertised.
        words = [str(v) for v in error.validator_value if not isinstance(v, bool)]
        hint = " (YAML reads a bare on/off/yes/no as true/false)" if isinstance(error.instance, bool) else ""
        return f"{where}: {error.instance!r} is not allowed{hint}; use one of: {', '.join(words)}"
    if validator == "pattern" and isinstance(error.instance, str):
        if error.validator_value.startswith("^[a-z0-9]"):
            return f"{where}: {error.instance!r} is not a path-safe id; use lower-case letters, digits and '_' only"
        return f"{where}: {error.instance!r} does not match {error.validator_value}"
    if validator == "type":
        return f"{where}: expected {error.validator_value}, got {type(error.instance).__name__} {error.instance!r}"
    if validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return f"{where}: {error.instance!r} is out of range ({validator} {error.validator_value})"
    if validator == "maxLength" and isinstance(error.instance, str):
        return (f"{where}: {error.instance[:20]!r}... is {len(error.instance)} characters long; at most "
                f"{error.validator_value} (ids become file and stage names)")
    if validator == "uniqueItems":
        return f"{where}: {error.instance!r} lists a value twice; give each once"
    if validator in ("minItems", "maxItems"):
        return (f"{where}: {error.instance!r} has too {'few' if validator == 'minItems' else 'many'} items "
                f"({validator} {error.validator_value})")
    return f"{where}: {error.message}"


__all__ = ["problem", "describe", "key_path"]
