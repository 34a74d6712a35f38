"""The papers' regime: is each row's teacher clearly above its student trained from scratch?

A distillation row compares methods that transfer a teacher's knowledge; it means what the papers mean
only when the teacher knows more than the student learns alone (OFA's CIFAR-100 teachers: 87.6-92.4 %
against students' 66.6-74.0 % from scratch). A teacher below, or barely above, its student's scratch
run makes "KD beats scratch" a statement about regularisation, not transfer. Nothing stops such a row
from being tabulated, so every table checks it: a row whose teacher does not lead the student's scratch
top-1 (mean over seeds) by `margin` points gets MARK beside its pair, a note saying why, a CSV column,
and one warning line from `python -m tas tables`.

Pure functions over numbers the report has already read; no file access.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import pandas as pd

from tas.errors import TasError
from tas.report.render import Display
from tas.report.spec import PairRef

MARK = "†"
PAIR_COLUMN = "Pair"  # the display column the mark goes into (every kind has one)
GAP, OUTSIDE = "regime_gap", "outside_regime"  # CSV columns


@dataclass(frozen=True)
class RegimeCheck:
    """One pair row's check. `outside` is None when it could not be checked (`reason` says why)."""

    pair: str
    label: str
    teacher_top1: float
    scratch_top1: float  # mean over the seeds measured
    n_scratch: int
    margin: float
    outside: bool | None
    reason: str = ""

    @property
    def gap(self) -> float:
        return self.teacher_top1 - self.scratch_top1


def outside_regime(teacher_top1: float, scratch_top1: float, margin: float) -> bool | None:
    """True when the teacher is not above the student's scratch top-1 by `margin` points; None when
    either number is unknown (NaN)."""
    if math.isnan(teacher_top1) or math.isnan(scratch_top1):
        return None
    # Rounded so that 73.2 - 71.2 (2.0000000000000284 or 1.99999...) reads as the 2 points it is.
    return round(teacher_top1 - scratch_top1, 6) < margin


def check_rows(pairs: Sequence[PairRef], teacher_top1: Mapping[str, float],
               scratch: Mapping[str, Sequence[float]] | None, margin: float) -> dict[str, RegimeCheck]:
    """One check per pair row. `teacher_top1`: by teacher id (NaN or absent = not evaluated); `scratch`: the
    student's scratch top-1 over seeds by pair id, or None when the table has no scratch method."""
    checks = {}
    for ref in pairs:
        teacher = float(teacher_top1.get(ref.teacher, math.nan))
        samples = [] if scratch is None else [float(v) for v in scratch.get(ref.pair, ())]
        mean = sum(samples) / len(samples) if samples else math.nan
        verdict = outside_regime(teacher, mean, margin)
        reason = "" if verdict is not None else (
            "no scratch run in this table" if scratch is None else
            "teacher not evaluated" if math.isnan(teacher) else "student's scratch run not measured")
        checks[ref.pair] = RegimeCheck(ref.pair, ref.label, teacher, mean, len(samples), margin, verdict, reason)
    return checks


def flagged(checks: Mapping[str, RegimeCheck]) -> list[RegimeCheck]:
    return [c for c in checks.values() if c.outside]


def _why(c: RegimeCheck) -> str:
    seeds = f"mean over {c.n_scratch} seed{'s' if c.n_scratch != 1 else ''}"
    return (f"teacher top-1 {c.teacher_top1:.2f} is not above the student's scratch top-1 {c.scratch_top1:.2f} "
            f"({seeds}) by {c.margin:.2f} points (gap {c.gap:+.2f})")


def warning(experiment: str, c: RegimeCheck) -> str:
    """The one stderr line `tables` prints for a flagged row."""
    return (f"warning: {experiment}: {c.label} ({c.pair}): {_why(c)}; its distillation comparison is outside the "
            f"papers' regime (table marked {MARK}; "
            f"set experiments.{experiment}.table.regime_margin to change the margin)")


def with_columns(table: pd.DataFrame, checks: Mapping[str, RegimeCheck]) -> pd.DataFrame:
    """The numeric table plus regime_gap (teacher - scratch mean) and outside_regime (empty where unchecked
    or not a pair row, e.g. the average row), right after the row's label."""
    if "pair" not in table:
        raise TasError("a table kind's table() must have a 'pair' column (tas/report/kinds/__init__.py) so the regime "
                       "check can mark its rows")
    got = [checks.get(p) for p in table["pair"]]
    gap = [c.gap if c is not None and c.outside is not None else math.nan for c in got]
    out = pd.Series([pd.NA if c is None or c.outside is None else c.outside for c in got], dtype="boolean")
    at = table.columns.get_loc("label") + 1 if "label" in table else len(table.columns)
    table = table.copy()
    table.insert(at, GAP, gap)
    table.insert(at + 1, OUTSIDE, out.to_numpy())
    return table


def notes(checks: Mapping[str, RegimeCheck], margin: float, experiment: str) -> list[str]:
    """The footnote of each flagged row; else one line saying the check passed; rows it could not check."""
    lines = [f"{MARK} {c.label}: {_why(c)}: the distillation comparison of this row is outside the papers' regime "
             f"(teacher not clearly above the student from scratch); its numbers are shown as measured."
             for c in flagged(checks)]
    checked = [c for c in checks.values() if c.outside is not None]
    if checked and not lines:
        lines.append(f"Regime: every teacher is above its student's scratch top-1 by at least {margin:.2f} points "
                     f"(experiments.{experiment}.table.regime_margin).")
    unchecked: dict[str, list[str]] = {}
    for c in checks.values():
        if c.outside is None:
            unchecked.setdefault(c.reason, []).append(c.label)
    for reason, labels in unchecked.items():
        lines.append(f"Regime (teacher above the student's scratch top-1) not checked, {reason}: {'; '.join(labels)}.")
    return lines


def mark(display: Display, row_pairs: Sequence[str], checks: Mapping[str, RegimeCheck], margin: float,
         experiment: str) -> Display:
    """The display with MARK after the pair of every flagged row, and the regime notes after its own."""
    if PAIR_COLUMN not in display.frame or len(display.frame) != len(row_pairs):
        raise TasError(f"a table kind's display() must keep one '{PAIR_COLUMN}' cell per row of its table "
                       f"(tas/report/kinds/__init__.py) so the regime check can mark its rows")
    frame = display.frame.copy()
    outside = {c.pair for c in flagged(checks)}
    frame[PAIR_COLUMN] = [f"{text} {MARK}" if pair in outside else text
                          for text, pair in zip(frame[PAIR_COLUMN], row_pairs)]
    return replace(display, frame=frame, notes=(*display.notes, *notes(checks, margin, experiment)))


def summary(checks: Mapping[str, RegimeCheck], margin: float) -> dict:
    """summary.json's `regime`: the margin and each row's numbers and verdict (null where unchecked)."""
    def num(x):
        return None if math.isnan(x) else round(x, 6)
    return {"margin": margin, "rows": {c.pair: {
        "teacher_top1": num(c.teacher_top1), "scratch_top1": num(c.scratch_top1), "scratch_seeds": c.n_scratch,
        "gap": num(c.gap), "outside": c.outside, "unchecked": c.reason or None} for c in checks.values()}}
