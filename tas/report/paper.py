"""The paper's reference numbers (paper_values.yaml), loaded read-only and joined on model / method ids.

The file transcribes each table verbatim under the paper's own model labels ("Swin-T"), and one map
(`models:`) says which of our model ids stand for each label. Lookups take our ids, so renaming a
model's display `name` in params.yaml never changes which paper number a cell is compared with.
"""

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
    """One paper table: cells[(teacher_label, student_label)][method_id] -> top-1 %, plus its average gains.

    `labels` maps each of our model ids to the paper's label it stands for."""

    name: str
    kind: str
    source: str
    dataset: str
    cells: Mapping[tuple[str, str], Mapping[str, float]] = field(hash=False)
    labels: Mapping[str, str] = field(hash=False, default_factory=dict)
    avg_gain: Mapping[str, float] = field(hash=False, default_factory=dict)
    note: str = ""

    def value(self, teacher: str, student: str, method: str) -> float | None:
        """The paper's top-1 for our (teacher id, student id, method id), or None where it has none."""
        key = (self.labels.get(teacher), self.labels.get(student))
        return self.cells.get(key, {}).get(method)


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


def _parse(name: str, raw: dict, source: str, labels: Mapping[str, str]) -> PaperTable:
    known = set(labels.values())

    def key(teacher, student, where):
        for label in (teacher, student):
            if str(label) not in known:
                raise TasError(f"paper table {name!r}: {where} names model {label!r}, which models: does not map "
                               f"to any of our model ids; add it under models: in {PAPER_VALUES.name}")
        return str(teacher), str(student)

    kind = raw.get("kind")
    if kind == "main":
        cells = {}
        for i, row in enumerate(raw.get("rows") or []):
            row = dict(row)
            cell = key(row.pop("teacher"), row.pop("student"), f"rows[{i}]")
            cells[cell] = _numbers(f"{name}.rows[{i}]", row)
    elif kind == "ablation":
        pair = raw.get("pair") or {}
        cells = {key(pair.get("teacher"), pair.get("student"), "pair"): _numbers(f"{name}.rows", raw.get("rows"))}
    else:
        raise TasError(f"paper table {name!r} has kind {kind!r}; use 'main' or 'ablation' in {PAPER_VALUES.name}")
    return PaperTable(name=name, kind=kind, source=source, dataset=str(raw.get("dataset", "")),
                      cells=MappingProxyType(cells), labels=labels,
                      avg_gain=_numbers(f"{name}.avg_gain_over_scratch", raw.get("avg_gain_over_scratch")),
                      note=str(raw.get("note", "")))


def _read(path: str | Path) -> dict:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise TasError(f"cannot read paper values {path}: {err}; restore it from git") from None
    if not isinstance(raw, dict):
        raise TasError(f"paper values {path} hold no mapping; restore it from git")
    return raw


def load_paper_tables(path: str | Path = PAPER_VALUES) -> dict[str, PaperTable]:
    """All paper tables in the file, by name."""
    raw = _read(path)
    source, labels = str(raw.get("source", "")), _labels(raw.get("models"))
    return {name: _parse(name, spec, source, labels) for name, spec in (raw.get("tables") or {}).items()}


def load_paper_table(name: str, path: str | Path = PAPER_VALUES) -> PaperTable:
    """One paper table by name (TableSpec.paper_table)."""
    tables = load_paper_tables(path)
    if name not in tables:
        raise TasError(f"unknown paper table {name!r}; use one of {', '.join(sorted(tables))} (or none)")
    return tables[name]


def _top1(where: str, value: object) -> float:
    # A published teacher entry may be a bare number or a record with its source ({top1: .., source: ..}).
    return _number(where, value.get("top1") if isinstance(value, Mapping) else value)


def teacher_values(keys: tuple[str, ...], path: str | Path = PAPER_VALUES) -> dict[str, float]:
    """Published teacher top-1 by model id from the file's `teachers:` key, for the first of `keys`
    (experiment id, then dataset) that groups them; entries directly under `teachers:` apply to all."""
    raw = _read(path).get("teachers") or {}
    if not isinstance(raw, Mapping):
        raise TasError(f"paper values: teachers: must map model ids (or experiment / dataset ids) to top-1; fix {PAPER_VALUES.name}")
    out = {str(k): _top1(f"teachers.{k}", v) for k, v in raw.items()
           if not (isinstance(v, Mapping) and "top1" not in v)}
    for group in keys:
        entries = raw.get(group)
        if isinstance(entries, Mapping) and "top1" not in entries:
            out.update({str(k): _top1(f"teachers.{group}.{k}", v) for k, v in entries.items()})
            break
    return out
