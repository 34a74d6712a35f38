"""Settings that pass the schema but would produce nonsense, refused with one line naming the key.

The JSON Schema (tas/params.schema.yaml) checks each value on its own; these depend on how a
value is used: a recipe may have 0 epochs for a teacher used as given (it is loaded, not trained), but a
recipe that trains a student must train it (a student after 0 epochs is its random initialisation, and its
chance-level top-1 would be recorded as a result). Checked by every subcommand (tas.cli, so `check`, every
job under Snakemake or DVC) and by the Snakefile before anything runs.
"""

from __future__ import annotations

from tas.config import Config
from tas.errors import TasError


def problems(cfg: Config) -> list[str]:
    """One line per nonsensical setting of the selected experiments."""
    out = []
    for experiment_id in cfg.selected:
        exp = cfg.experiment(experiment_id)
        for student in exp.students:
            recipe = cfg.student_recipe(exp, student)
            if recipe.epochs < 1:
                key = cfg.student_recipe_key(exp, student)
                out.append(f"recipes.{recipe.id}.epochs: {recipe.epochs}, but it trains student {student} of "
                           f"experiment {exp.id} (experiments.{exp.id}.student_recipes.{key}); "
                           "a student after 0 epochs is its random initialisation, recorded as a result: "
                           "set epochs >= 1 (only a teacher may have 0 epochs: it is then used as given)")
    return list(dict.fromkeys(out))


def check(cfg: Config, source: str = "params.yaml") -> None:
    found = problems(cfg)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise TasError(f"{source}: {found[0]}{more}")


def check_threads(threads: int | None) -> None:
    """`--threads N` of a job: at least one (Snakemake passes the cores it reserved)."""
    if threads is not None and threads < 1:
        raise TasError(f"--threads {threads}: a job needs at least 1 thread; give --threads 1 or more "
                       "(or leave it out: runtime.threads)")


__all__ = ["problems", "check", "check_threads"]
