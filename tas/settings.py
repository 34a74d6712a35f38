"""What each job reads of params.yaml: one pure function per job kind, the job's settings.

A job's behaviour depends on its settings and on nothing else of the config but paths and the runtime
switches that leave its numbers alone (threads, num_workers, progress). The functions read the config
through a `Reader`, which notes the params.yaml key of every read, so the keys that make a job's identity
(tas.matrix: `Job.params`, its params hash, dvc.yaml's `params:`) are the keys its settings were read from,
never a second list. The job calls the same function on its own `Reader` and runs on what it returns.

A reference (an experiment's protocol, a teacher's recipe, a student's recipe key) is noted with what it
points to. Light on purpose: the matrix calls these for every job of the plan, so nothing here imports torch
or a plugin; what a plugin declares about a value read here (whether a method type needs a teacher, a
dataset source's class count) the job looks up itself.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping

from tas.config import (Config, DatasetSpec, ExperimentSpec, MethodSpec, ModelSpec, PairSpec, ProtocolSpec,
                        RecipeSpec, TeacherSpec)
from tas.data.spec import prepare_writes_arrays


class Reader:
    """Reads of a `Config`, each noting the dotted params.yaml key it reads (`keys`, in order)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.keys: dict[str, None] = {}

    def _note(self, key: str, value):
        self.keys[key] = None
        return value

    def experiment(self, experiment_id: str) -> ExperimentSpec:
        """The spec to name what is read of it (`field`, `teacher`, ...): taking it reads nothing."""
        return self.cfg.experiment(experiment_id)

    def field(self, exp: ExperimentSpec, name: str):
        """A field of an experiment named as in params.yaml (teacher_seed, gpus_per_job, seeds, methods, pairs)."""
        return self._note(f"experiments.{exp.id}.{name}", getattr(exp, name))

    def table(self, exp: ExperimentSpec) -> tuple[str, str | None, Mapping[str, Any]]:
        """`experiments.<id>.table`: its kind, its paper table and the options as written (the report's own,
        e.g. regime_margin, whose defaults tas.report holds)."""
        raw = ((self.cfg.raw.get("experiments") or {}).get(exp.id) or {}).get("table") or {}
        return self._note(f"experiments.{exp.id}.table", (exp.table_kind, exp.paper_table, raw))

    def teacher(self, exp: ExperimentSpec, teacher_id: str) -> TeacherSpec:
        return self._note(f"experiments.{exp.id}.teachers.{teacher_id}", exp.teacher(teacher_id))

    def teacher_recipe(self, exp: ExperimentSpec, teacher_id: str) -> RecipeSpec:
        """The recipe a teacher names, without its `epochs:` (what reads only the recipe, e.g. evaluation)."""
        name = self._note(f"experiments.{exp.id}.teachers.{teacher_id}.recipe", exp.teacher(teacher_id).recipe)
        return self.recipe(name)

    def student_recipe(self, exp: ExperimentSpec, student_id: str) -> RecipeSpec:
        """The recipe of a student: named for the student itself, else for its model family."""
        by = student_id if student_id in exp.student_recipes else self.model_field(student_id, "family")
        return self.recipe(self._note(f"experiments.{exp.id}.student_recipes.{by}", exp.student_recipes[by]))

    def protocol(self, exp: ExperimentSpec) -> ProtocolSpec:
        protocol = self.cfg.protocols[self._note(f"experiments.{exp.id}.protocol", exp.protocol)]
        self._note(f"protocols.{protocol.id}", protocol)
        self._note(f"datasets.{protocol.dataset.id}", protocol.dataset)
        return protocol

    def dataset(self, dataset_id: str) -> DatasetSpec:
        return self._note(f"datasets.{dataset_id}", self.cfg.datasets[dataset_id])

    def model(self, model_id: str) -> ModelSpec:
        return self._note(f"models.{model_id}", self.cfg.model(model_id))

    def model_field(self, model_id: str, name: str):
        return self._note(f"models.{model_id}.{name}", getattr(self.cfg.model(model_id), name))

    def method(self, method_id: str) -> MethodSpec:
        return self._note(f"methods.{method_id}", self.cfg.method(method_id))

    def method_field(self, method_id: str, name: str):
        return self._note(f"methods.{method_id}.{name}", getattr(self.cfg.method(method_id), name))

    def recipe(self, recipe_id: str) -> RecipeSpec:
        return self._note(f"recipes.{recipe_id}", self.cfg.recipes[recipe_id])

    def runtime(self, name: str):
        return self._note(f"runtime.{name}", getattr(self.cfg.runtime, name))

    def smoke(self) -> bool:
        return self._note("smoke", self.cfg.smoke)


# ------------------------------------------------------------------------------------ the parts


@dataclass(frozen=True)
class Numerics:
    """The runtime switches that change a training or evaluation job's numbers: what
    tas.engine.devices.resolve reads (besides `threads`, which the job passes itself)."""

    device: str
    amp: str
    channels_last: str
    compile: bool
    deterministic: bool


@dataclass(frozen=True)
class Data:
    """What a job's loaders read: the protocol (its dataset and augmentation) and, for an image folder
    streamed per sample, where its small crops are upsampled (the pixels differ); None for data held
    in memory, which that switch does not touch."""

    protocol: ProtocolSpec
    upsample_on: str | None


def _numerics(r: Reader) -> Numerics:
    return Numerics(*(r.runtime(name) for name in ("device", "amp", "channels_last", "compile", "deterministic")))


def _data(r: Reader, exp: ExperimentSpec) -> Data:
    protocol = r.protocol(exp)
    # the plan's answer (tas.matrix.prepare_rule): a folder without `root:` lies under paths.data
    streamed = not prepare_writes_arrays(protocol.dataset, r.cfg.data_root)
    return Data(protocol, r.runtime("upsample_on") if streamed else None)


# ------------------------------------------------------------------------------------ per job


@dataclass(frozen=True)
class Teacher:
    """train-teacher / load-teacher. `recipe` is the recipe as named; `teacher.epochs` overrides its epochs
    (`effective_recipe`). `processes`: the job runs on gpus_per_job processes (the CLI launches them), and
    BatchNorm's running statistics (rank 0's) and the all-reduce's float sums follow the count."""

    teacher: TeacherSpec
    model: ModelSpec
    recipe: RecipeSpec
    data: Data
    seed: int
    processes: int
    numerics: Numerics
    sync_bn: bool

    @property
    def effective_recipe(self) -> RecipeSpec:
        epochs = self.teacher.epochs
        return self.recipe if epochs is None else replace(self.recipe, epochs=epochs)


def teacher(r: Reader, experiment: str, teacher_id: str) -> Teacher:
    exp = r.experiment(experiment)
    spec = r.teacher(exp, teacher_id)
    return Teacher(teacher=spec, model=r.model(teacher_id), recipe=r.recipe(spec.recipe), data=_data(r, exp),
                   seed=r.field(exp, "teacher_seed"), processes=r.field(exp, "gpus_per_job"),
                   numerics=_numerics(r), sync_bn=r.runtime("sync_bn"))


@dataclass(frozen=True)
class PrepareRun:
    """prepare-run: the pair's models built fresh from `seed` (the teacher seed), at the protocol's image
    size, with the class count of its dataset."""

    teacher: ModelSpec
    student: ModelSpec
    method: MethodSpec
    protocol: ProtocolSpec
    seed: int


def prepare_run(r: Reader, experiment: str, teacher_id: str, student_id: str, method_id: str) -> PrepareRun:
    exp = r.experiment(experiment)
    return PrepareRun(teacher=r.model(teacher_id), student=r.model(student_id), method=r.method(method_id),
                      protocol=r.protocol(exp), seed=r.field(exp, "teacher_seed"))


@dataclass(frozen=True)
class Distill:
    """distill: one run's student (`teacher` None for a teacher-free method); the run's seed is its id.
    `processes` as in `Teacher`."""

    student: ModelSpec
    teacher: ModelSpec | None
    method: MethodSpec
    recipe: RecipeSpec
    data: Data
    processes: int
    numerics: Numerics
    sync_bn: bool


def distill(r: Reader, experiment: str, teacher_id: str | None, student_id: str, method_id: str) -> Distill:
    exp = r.experiment(experiment)
    return Distill(student=r.model(student_id), teacher=r.model(teacher_id) if teacher_id else None,
                   method=r.method(method_id), recipe=r.student_recipe(exp, student_id), data=_data(r, exp),
                   processes=r.field(exp, "gpus_per_job"), numerics=_numerics(r), sync_bn=r.runtime("sync_bn"))


@dataclass(frozen=True)
class Evaluate:
    """evaluate: one trained model on the test split; `recipe` gives the eval batch, resize and crop."""

    model: ModelSpec
    recipe: RecipeSpec
    data: Data
    numerics: Numerics


def evaluate_teacher(r: Reader, experiment: str, teacher_id: str) -> Evaluate:
    exp = r.experiment(experiment)
    return Evaluate(r.model(teacher_id), r.teacher_recipe(exp, teacher_id), _data(r, exp), _numerics(r))


def evaluate_run(r: Reader, experiment: str, student_id: str) -> Evaluate:
    """Every run of a student is evaluated alike: its method, teacher and seed are in its weights."""
    exp = r.experiment(experiment)
    return Evaluate(r.model(student_id), r.student_recipe(exp, student_id), _data(r, exp), _numerics(r))


@dataclass(frozen=True)
class Tables:
    """tables: the rows and columns of an experiment's tables and what they are called. `method_types` say
    which runs are read per student (teacher-free) and which auxiliary accuracies a method reports."""

    pairs: tuple[PairSpec, ...]
    model_names: Mapping[str, str]
    methods: tuple[str, ...]
    method_names: Mapping[str, str]
    method_types: Mapping[str, str]
    seeds: tuple[int, ...]
    kind: str
    paper: str | None
    table: Mapping[str, Any]  # experiments.<id>.table as written
    smoke: bool


def tables(r: Reader, experiment: str) -> Tables:
    exp = r.experiment(experiment)
    pairs = r.field(exp, "pairs")
    methods = r.field(exp, "methods")
    models = dict.fromkeys(m for p in pairs for m in (p.teacher, p.student))
    kind, paper, table = r.table(exp)
    return Tables(pairs=pairs, model_names={m: r.model_field(m, "name") for m in models}, methods=methods,
                  method_names={m: r.method_field(m, "name") for m in methods},
                  method_types={m: r.method_field(m, "type") for m in methods}, seeds=r.field(exp, "seeds"),
                  kind=kind, paper=paper, table=table, smoke=r.smoke())


def prepare_data(r: Reader, dataset_id: str) -> DatasetSpec:
    return r.dataset(dataset_id)
