"""The paper's reference numbers (paper_values.yaml), loaded read-only."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import yaml

from tas.errors import TasError

PAPER_VALUES = Path(__file__).with_name("paper_values.yaml")


@dataclass(frozen=True)
class PaperTable:
    """One paper table: cells[(teacher_name, student_name)][method] -> top-1 %, plus its summary gains."""

    name: str
    kind: str
    source: str
    cells: Mapping[tuple[str, str], Mapping[str, float]] = field(hash=False)
    avg_gain: Mapping[str, float] = field(hash=False, default_factory=dict)
    max_gain: Mapping[str, float] = field(hash=False, default_factory=dict)
    note: str = ""

    def value(self, teacher_name: str, student_name: str, method: str) -> float | None:
        """The paper's top-1 for that cell, or None where the paper (as transcribed) has none."""
        return self.cells.get((teacher_name, student_name), {}).get(method)

    def has_method(self, method: str) -> bool:
        return any(method in row for row in self.cells.values()) or method in self.avg_gain


def _number(table: str, where: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TasError(f"paper table {table!r}: {where} is {value!r}, not a number; fix {PAPER_VALUES.name}")
    return float(value)


def _numbers(table: str, where: str, mapping: Mapping) -> Mapping[str, float]:
    return MappingProxyType({str(k): _number(table, f"{where}.{k}", v) for k, v in (mapping or {}).items()})


def _parse(name: str, raw: dict, source: str) -> PaperTable:
    kind = raw.get("kind")
    if kind == "main":
        cells = {}
        for i, row in enumerate(raw.get("rows") or []):
            row = dict(row)
            key = (str(row.pop("teacher")), str(row.pop("student")))
            cells[key] = _numbers(name, f"rows[{i}]", row)
    elif kind == "ablation":
        pair = raw.get("pair") or {}
        key = (str(pair.get("teacher")), str(pair.get("student")))
        cells = {key: _numbers(name, "rows", raw.get("rows") or {})}
    else:
        raise TasError(f"paper table {name!r} has kind {kind!r}; use 'main' or 'ablation' in {PAPER_VALUES.name}")
    return PaperTable(
        name=name,
        kind=kind,
        source=source,
        cells=MappingProxyType(cells),
        avg_gain=_numbers(name, "avg_gain_over_scratch", raw.get("avg_gain_over_scratch")),
        max_gain=_numbers(name, "max_gain_over_scratch", raw.get("max_gain_over_scratch")),
        note=str(raw.get("note", "")),
    )


def load_paper_tables(path: str | Path = PAPER_VALUES) -> dict[str, PaperTable]:
    """All paper tables in the file, by name."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise TasError(f"cannot read paper values {path}: {err}; restore it from git") from None
    source = str(raw.get("source", ""))
    return {name: _parse(name, spec, source) for name, spec in (raw.get("tables") or {}).items()}


def load_paper_table(name: str, path: str | Path = PAPER_VALUES) -> PaperTable:
    """One paper table by name (TableSpec.paper_table)."""
    tables = load_paper_tables(path)
    if name not in tables:
        raise TasError(f"unknown paper table {name!r}; use one of {', '.join(sorted(tables))} (or none)")
    return tables[name]
