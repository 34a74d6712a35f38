"""What one table shows: frozen specs the CLI builds from the config (no config import here)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from tas.errors import TasError
from tas.report import kinds
from tas.runs import Run

# Which top-1 of a run a table shows (`experiments.<id>.table.report`). `last` is our rule, fixed before
# training; `best` exists only to set our runs beside papers that report the best epoch (OFA's train.py
# keeps the best test top-1 over epochs), which is a selection on the test set.
READOUTS = {
    "last": "last epoch (fixed rule)",
    "best": "best epoch over training, as OFA's train.py reports — selected on the test set, "
            "for comparison with the paper only",
}
# The eval JSON field each readout reads (evaluate copies best_epoch_top1 from the trainer's metrics.json).
READOUT_FIELDS = {"last": "top1", "best": "best_epoch_top1"}
DEFAULT_REGIME_MARGIN = 2.0  # points of top-1 a teacher must lead its student's scratch run by


@dataclass(frozen=True)
class PairRef:
    """One teacher -> student pair: ids (paths, and the keys paper values are joined on) and display names (labels
    only)."""

    pair: str
    teacher: str
    student: str
    teacher_name: str
    student_name: str

    @property
    def label(self) -> str:
        return f"{self.teacher_name} -> {self.student_name}"


@dataclass(frozen=True)
class TableSpec:
    """One experiment's table: which pairs (rows), methods, seeds, and which paper table to compare to.

    `teacher_free` names the methods run once per student (scratch): each pair row reads its student's run.
    `regime_margin`: a row whose teacher is not above its student's scratch top-1 by this many points is
    marked as outside the papers' regime. `report`: which top-1 of each run the table shows (READOUTS).
    """

    experiment: str
    kind: str
    pairs: tuple[PairRef, ...]
    methods: tuple[str, ...]
    method_names: Mapping[str, str] = field(default_factory=dict, hash=False)
    seeds: tuple[int, ...] = (0,)
    paper_table: str | None = None
    teacher_free: frozenset[str] = frozenset()
    smoke: bool = False  # a smoke study (tas.smoke): its tables' captions say SMOKE
    # the auxiliary classifiers the methods report (their declarations' `auxiliaries`; TAS: assistant)
    auxiliaries: tuple[str, ...] = ()
    regime_margin: float = DEFAULT_REGIME_MARGIN
    report: str = "last"

    def __post_init__(self) -> None:
        # Frozen dataclass: normalise through object.__setattr__ so lists from YAML become tuples
        # and the name map cannot be mutated behind the table's back.
        object.__setattr__(self, "pairs", tuple(self.pairs))
        object.__setattr__(self, "methods", tuple(self.methods))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "method_names", MappingProxyType(dict(self.method_names)))
        object.__setattr__(self, "teacher_free", frozenset(self.teacher_free))
        object.__setattr__(self, "auxiliaries", tuple(self.auxiliaries))
        if self.kind not in kinds.names():
            raise TasError(f"table kind {self.kind!r} of experiment {self.experiment!r} is unknown; use one of "
                           f"{', '.join(kinds.names())} (a new kind is one file in tas/report/kinds/)")
        if not self.pairs or not self.methods or not self.seeds:
            raise TasError(f"experiment {self.experiment!r} has no pairs, methods or seeds to tabulate; "
                           "list them in params.yaml")
        for name, items in (("pair", [p.pair for p in self.pairs]), ("method", self.methods), ("seed", self.seeds)):
            if len(set(items)) != len(items):
                raise TasError(f"experiment {self.experiment!r} lists a {name} twice ({list(items)}); "
                               "remove the duplicate")
        margin = self.regime_margin
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin) or margin < 0:
            raise TasError(f"experiments.{self.experiment}.table.regime_margin is {margin!r}; give a number of top-1 "
                           f"points >= 0 (default {DEFAULT_REGIME_MARGIN})")
        if self.report not in READOUTS:
            raise TasError(f"experiments.{self.experiment}.table.report is {self.report!r}; "
                           f"use one of {', '.join(READOUTS)}")

    @property
    def readout(self) -> str:
        """What the table's top-1 is, in words (caption and notes)."""
        return READOUTS[self.report]

    def method_name(self, method: str) -> str:
        """Display name of a method; its id when the config gives none."""
        return self.method_names.get(method, method)

    def run(self, ref: PairRef, method: str, seed: int) -> Run:
        """The run behind a (pair row, method, seed) cell: the student's shared run for a teacher-free method."""
        teacher = None if method in self.teacher_free else ref.teacher
        return Run(self.experiment, ref.student, method, int(seed), teacher)
