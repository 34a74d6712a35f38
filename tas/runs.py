"""Which student training run a job means: a pair's student taught by its teacher, or a student alone.

A method whose distiller needs no teacher (`needs_teacher = False`: scratch) depends only on the
experiment (its data protocol), the student (model and, by its family, recipe), the method and the
seed. Its run therefore exists once per student and every pair with that student shares it
(`paths.student_run_dir`); a method that needs a teacher runs once per pair (`paths.run_dir`).

`experiment_runs` lists an experiment's runs, each once (what tas.matrix turns into jobs);
`resolve` turns the ids a user gives the CLI into one of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tas import paths
from tas.config import Config, ExperimentSpec
from tas.errors import TasError


@dataclass(frozen=True)
class Run:
    """One student training run; `teacher` is None for a teacher-free run (shared by its student's pairs)."""

    experiment: str
    student: str
    method: str
    seed: int
    teacher: str | None = None

    @property
    def pair(self) -> str | None:
        return None if self.teacher is None else paths.pair_id(self.teacher, self.student)

    def dir(self, results_root: str | Path) -> Path:
        if self.pair is None:
            return paths.student_run_dir(results_root, self.experiment, self.student, self.method, self.seed)
        return paths.run_dir(results_root, self.experiment, self.pair, self.method, self.seed)

    def eval_path(self, results_root: str | Path) -> Path:
        if self.pair is None:
            return paths.student_run_eval(results_root, self.experiment, self.student, self.method, self.seed)
        return paths.run_eval(results_root, self.experiment, self.pair, self.method, self.seed)

    def ids(self) -> dict:
        """The identifying fields recorded in metrics.json and the eval JSON (no pair/teacher when teacher-free)."""
        teacher = {} if self.pair is None else {"pair": self.pair, "teacher": self.teacher}
        return {"experiment": self.experiment, **teacher, "student": self.student, "method": self.method,
                "seed": self.seed}


def needs_teacher(cfg: Config, method_id: str) -> bool:
    from tas.distillers.registry import needs_teacher as declared  # read from the method's file, not imported

    return declared(cfg.method(method_id).type)


def pair_run(cfg: Config, exp: ExperimentSpec, pair_id: str, method: str, seed: int) -> Run:
    """The run of `method` on a pair; for a teacher-free method, the student's shared run."""
    pair = exp.pair(pair_id)
    teacher = pair.teacher if needs_teacher(cfg, method) else None
    return Run(exp.id, pair.student, method, int(seed), teacher)


def experiment_runs(cfg: Config, exp: ExperimentSpec) -> list[Run]:
    """Every run of the experiment once, in (pair, method, seed) order of first appearance."""
    runs = (pair_run(cfg, exp, p.id, m, s) for p in exp.pairs for m in exp.methods for s in exp.seeds)
    return list(dict.fromkeys(runs))


def resolve(cfg: Config, experiment: str, method: str, seed: int, *, pair: str | None = None,
            student: str | None = None) -> Run:
    """The run that `--pair` or `--student` with `--method` and `--seed` names; one-line TasError when
    the ids do not name one (unknown id, seed outside the experiment, a teacher method without a pair)."""
    if (pair is None) == (student is None):
        raise TasError("name the run with exactly one of --pair <teacher>-<student> or --student <model>")
    exp = cfg.experiment(experiment)
    exp.method(method)
    if seed not in exp.seeds:
        raise TasError(f"seed {seed} is not in experiments.{exp.id}.seeds ({', '.join(map(str, exp.seeds))})")
    if pair is not None:
        return pair_run(cfg, exp, pair, method, seed)
    exp.student(student)
    if needs_teacher(cfg, method):
        pairs = ", ".join(p.id for p in exp.pairs if p.student == student)
        raise TasError(f"method {method!r} needs a teacher, so it runs per pair: use --pair instead of --student "
                       f"(pairs with student {student} in experiment {exp.id}: {pairs})")
    return Run(exp.id, student, method, int(seed))


__all__ = ["Run", "needs_teacher", "pair_run", "experiment_runs", "resolve"]
