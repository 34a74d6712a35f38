"""The paper's reference numbers (paper_values.yaml), loaded read-only and joined on model / method ids.

The file transcribes each table verbatim under the paper's own model labels ("Swin-T"), and one map
(`models:`) says which of our model ids stand for each label. Lookups take our ids, so renaming a
model's display `name` in params.yaml never changes which paper number a cell is compared with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import yaml

from tas.errors import TasError
from tas.report import kinds

PAPER_VALUES = Path(__file__).with_name("paper_values.yaml")


# Why a paper cell has no number. A table shows each as '—' with its own footnote, never as 0.
NOT_TRANSCRIBED = "not transcribed"  # the paper prints a value; paper_values.yaml does not hold it (yet)
NOT_IN_PAPER = "not in the paper"  # the paper's table has no such row or column
NOT_IMPLEMENTED = "not implemented in tas"  # a column of the paper that no method of tas implements
NOT_RUN = "not run in this experiment"  # a column of the paper whose method this experiment does not list


@dataclass(frozen=True)
class PaperTable:
    """One paper table: cells[(teacher_label, student_label)][method_id] -> top-1 %, plus its average gains.

    `labels` maps each of our model ids to the paper's label it stands for. `columns`: the paper's columns
    as our method ids; `listed`: the paper's rows (pair labels), transcribed or not, so a missing number
    can say whether the paper has it. `not_implemented`: paper columns no method of tas implements;
    `names`: the paper's name of a column (for a column no method of an experiment names).
    `supplements`: columns whose numbers come from another paper's table (column -> that table), e.g.
    RSD's own results beside TAS's table."""

    name: str
    kind: str
    source: str
    dataset: str
    cells: Mapping[tuple[str, str], Mapping[str, float]] = field(hash=False)
    labels: Mapping[str, str] = field(hash=False, default_factory=dict)
    avg_gain: Mapping[str, float] = field(hash=False, default_factory=dict)
    note: str = ""
    columns: tuple[str, ...] = ()
    listed: frozenset[tuple[str, str]] = frozenset()
    not_implemented: frozenset[str] = frozenset()
    names: Mapping[str, str] = field(hash=False, default_factory=dict)
    supplements: Mapping[str, "PaperTable"] = field(hash=False, default_factory=dict)

    def _owner(self, method: str) -> "PaperTable":
        return self.supplements.get(method, self)

    def _key(self, teacher: str, student: str) -> tuple[str | None, str | None]:
        return self.labels.get(teacher), self.labels.get(student)

    def value(self, teacher: str, student: str, method: str) -> float | None:
        """The paper's top-1 for our (teacher id, student id, method id), or None where it has none."""
        owner = self._owner(method)
        return owner.cells.get(owner._key(teacher, student), {}).get(method)

    def absent(self, teacher: str, student: str, method: str) -> str | None:
        """Why the cell has no number (NOT_TRANSCRIBED / NOT_IN_PAPER), None where it has one."""
        if self.value(teacher, student, method) is not None:
            return None
        owner = self._owner(method)
        if method in owner.columns and owner._key(teacher, student) in owner.listed:
            return NOT_TRANSCRIBED
        return NOT_IN_PAPER

    @property
    def all_columns(self) -> tuple[str, ...]:
        """The paper's columns, then the supplemented ones."""
        return tuple(dict.fromkeys((*self.columns, *self.supplements)))

    def column_name(self, method: str) -> str:
        return self.names.get(method, method)

    def gain(self, method: str) -> float | None:
        """The average gain over scratch the column's own paper reports, or None."""
        return self._owner(method).avg_gain.get(method)

    def source_table(self, method: str) -> "PaperTable":
        """The table a column's numbers come from (this one, or a supplement)."""
        return self._owner(method)


def _number(where: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TasError(f"paper values: {where} is {value!r}, not a number; fix {PAPER_VALUES.name}")
    return float(value)


def _numbers(where: str, mapping: Mapping | None) -> Mapping[str, float]:
    return MappingProxyType({str(k): _number(f"{where}.{k}", v) for k, v in (mapping or {}).items()})


def _labels(raw: Mapping | None) -> Mapping[str, str]:
    """models: {paper label: [our ids]} -> {our id: paper label}; an id may stand for one label only."""
    out: dict[str, str] = {}
    for label, ids in (raw or {}).items():
        for model_id in [ids] if isinstance(ids, str) else list(ids or []):
            if out.setdefault(str(model_id), str(label)) != str(label):
                raise TasError(f"paper values: model id {model_id!r} stands for both {out[str(model_id)]!r} and "
                               f"{label!r} under models:; keep one in {PAPER_VALUES.name}")
    return MappingProxyType(out)


def _cells(where: str, mapping: Mapping | None) -> tuple[Mapping[str, float], tuple[str, ...]]:
    """A row's numbers, and every column it names: null = printed in the paper, not transcribed here."""
    mapping = dict(mapping or {})
    values = {str(k): _number(f"{where}.{k}", v) for k, v in mapping.items() if v is not None}
    return MappingProxyType(values), tuple(str(k) for k in mapping)


def _parse(name: str, raw: dict, source: str, labels: Mapping[str, str], names: Mapping[str, str]) -> PaperTable:
    known = set(labels.values())

    def key(teacher, student, where):
        for label in (teacher, student):
            if str(label) not in known:
                raise TasError(f"paper table {name!r}: {where} names model {label!r}, which models: does not map "
                               f"to any of our model ids; add it under models: in {PAPER_VALUES.name}")
        return str(teacher), str(student)

    kind, named, cells = raw.get("kind"), [], {}
    # The kind's module owns its layout in paper_values.yaml (a table kind is one file: tas/report/kinds/).
    layout = getattr(kinds.module(kind), "paper_rows", None) if kind in kinds.names() else None
    if layout is None:
        with_layout = [k for k in kinds.names() if hasattr(kinds.module(k), "paper_rows")]
        raise TasError(f"paper table {name!r} has kind {kind!r}; use one of {', '.join(with_layout)} (a table kind "
                       f"with a paper_rows layout) in {PAPER_VALUES.name}")
    for where, teacher, student, values in layout(raw):
        cell = key(teacher, student, where)
        if cell in cells:
            raise TasError(f"paper table {name!r}: {where} repeats the row {cell[0]} -> {cell[1]}; merge them "
                           f"in {PAPER_VALUES.name}")
        cells[cell], columns = _cells(f"{name}.{where}", values)
        named += columns
    # `columns:` lists the paper's columns so that a row without a number in one reads as not transcribed;
    # a row naming any other column is a typo that would silently drop a number.
    columns = tuple(str(c) for c in raw.get("columns") or dict.fromkeys(named))
    stray = sorted(set(named) - set(columns))
    if stray:
        raise TasError(f"paper table {name!r}: rows name {', '.join(stray)}, not in its columns: "
                       f"{list(columns)}; fix {PAPER_VALUES.name}")
    not_implemented = frozenset(str(c) for c in raw.get("not_implemented") or ())
    if not_implemented - set(columns):
        raise TasError(f"paper table {name!r}: not_implemented names {sorted(set(not_implemented) - set(columns))}, "
                       f"not among its columns; fix {PAPER_VALUES.name}")
    return PaperTable(name=name, kind=kind, source=str(raw.get("source", source)), dataset=str(raw.get("dataset", "")),
                      cells=MappingProxyType(cells), labels=labels,
                      avg_gain=_numbers(f"{name}.avg_gain_over_scratch", raw.get("avg_gain_over_scratch")),
                      note=str(raw.get("note", "")), columns=columns, listed=frozenset(cells),
                      not_implemented=not_implemented, names=names)


def _supplemented(tables: dict[str, PaperTable], raw: Mapping) -> dict[str, PaperTable]:
    """Attach each table's `supplements: {column: other table}` (one level: a supplement has none itself)."""
    out = dict(tables)
    for name, spec in raw.items():
        links = (spec or {}).get("supplements") or {}
        resolved = {}
        for column, other in links.items():
            column, other = str(column), str(other)
            if other not in tables or column not in tables[other].columns:
                raise TasError(f"paper table {name!r}: supplements.{column} names {other!r}, which is no table with "
                               f"a column {column!r}; fix {PAPER_VALUES.name}")
            if column in tables[name].columns:
                raise TasError(f"paper table {name!r}: column {column!r} is both its own and supplemented from "
                               f"{other!r}; keep one in {PAPER_VALUES.name}")
            if (raw.get(other) or {}).get("supplements"):
                raise TasError(f"paper table {name!r}: its supplement {other!r} has supplements of its own; "
                               f"link to the source table directly in {PAPER_VALUES.name}")
            resolved[column] = tables[other]
        if resolved:
            out[name] = replace(tables[name], supplements=MappingProxyType(resolved))
    return out


def _read(path: str | Path) -> dict:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise TasError(f"cannot read paper values {path}: {err}; restore it from git") from None
    if not isinstance(raw, dict):
        raise TasError(f"paper values {path} hold no mapping; restore it from git")
    return raw


def _parse_tables(raw: Mapping, specs: Mapping) -> dict[str, PaperTable]:
    """`specs` (some of raw's `tables:`) parsed with the file's shared model labels and column names."""
    source, labels = str(raw.get("source", "")), _labels(raw.get("models"))
    names = MappingProxyType({str(k): str(v) for k, v in (raw.get("column_names") or {}).items()})
    return _supplemented({name: _parse(name, spec, source, labels, names) for name, spec in specs.items()}, specs)


def load_paper_tables(path: str | Path = PAPER_VALUES) -> dict[str, PaperTable]:
    """All paper tables in the file, by name."""
    raw = _read(path)
    return _parse_tables(raw, raw.get("tables") or {})


def load_paper_table(name: str, path: str | Path = PAPER_VALUES) -> PaperTable:
    """One paper table by name (TableSpec.paper_table), with its supplements. Only those are parsed, so a
    tables job imports (and its code lists) its own table kind alone."""
    raw = _read(path)
    specs = raw.get("tables") or {}
    if name not in specs:
        raise TasError(f"unknown paper table {name!r}; use one of {', '.join(sorted(specs))} (or none)")
    wanted = {name: specs[name]}
    wanted.update({str(o): specs[str(o)] for o in ((specs[name] or {}).get("supplements") or {}).values()
                   if str(o) in specs})
    return _parse_tables(raw, wanted)[name]


def _top1(where: str, value: object) -> float:
    # A published teacher entry may be a bare number or a record with its source ({top1: .., source: ..}).
    return _number(where, value.get("top1") if isinstance(value, Mapping) else value)


def teacher_values(keys: tuple[str, ...], path: str | Path = PAPER_VALUES) -> dict[str, float]:
    """Published teacher top-1 by model id from the file's `teachers:` key, for the first of `keys`
    (experiment id, then dataset) that groups them; entries directly under `teachers:` apply to all."""
    raw = _read(path).get("teachers") or {}
    if not isinstance(raw, Mapping):
        raise TasError("paper values: teachers: must map model ids (or experiment / dataset ids) to top-1; "
                       f"fix {PAPER_VALUES.name}")
    out = {str(k): _top1(f"teachers.{k}", v) for k, v in raw.items()
           if not (isinstance(v, Mapping) and "top1" not in v)}
    for group in keys:
        entries = raw.get(group)
        if isinstance(entries, Mapping) and "top1" not in entries:
            out.update({str(k): _top1(f"teachers.{group}.{k}", v) for k, v in entries.items()})
            break
    return out
