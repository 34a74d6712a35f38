"""Load params.yaml, apply `--set key.path=value` overrides, validate, freeze.

Validation has two layers: the JSON Schema in tas/params.schema.yaml (types, ranges,
unknown keys; Snakemake validates the same file) and the cross-references a schema cannot express
(an experiment's teacher must be a known model, a method's options must be ones its distiller
knows). Every problem is one `TasError` line naming the key path and what is allowed.
"""

from __future__ import annotations

import copy
import importlib
import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from collections.abc import Iterable, Mapping  # not typing's: its isinstance is several times slower
from types import MappingProxyType
from typing import Any

import yaml

from tas import batching
from tas.data.spec import AugmentSpec, DatasetSpec
from tas.errors import TasError
from tas.validation import problem

# Package data beside this module (pyproject's package-data), so an installed wheel finds it with no checkout.
SCHEMA_PATH = Path(__file__).with_name("params.schema.yaml")
FAMILIES = ("cnn", "vit", "swin", "mlp")


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Frozen mapping/tuple -> plain dict/list (for JSON and hashing)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class ModelSpec:
    id: str
    timm: str
    family: str
    name: str
    kwargs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class RecipeSpec:
    """A training recipe. `global_batch` is the optimizer's batch; `micro_batch` the batch one process
    forwards at a time (what BatchNorm and in-batch losses see; None = the global batch split over the
    job's processes). A job accumulates global / (processes x micro) micro-batches per optimizer step
    (tas.batching), so the arithmetic does not depend on the number of GPUs."""

    id: str
    optimizer: str
    lr: float
    epochs: int
    global_batch: int
    micro_batch: int | None = None
    momentum: float = 0.9
    weight_decay: float = 0.0
    scheduler: str = "cosine"
    lr_update: str = "step"  # the LR changes every optimizer step, or once per epoch (timm 0.6.5's t_in_epochs)
    min_lr: float = 0.0
    warmup_epochs: int = 0
    warmup_lr: float = 1e-6
    step_epochs: int = 30
    step_gamma: float = 0.1
    eval_batch_size: int = 256
    label_smoothing: float = 0.0
    clip_grad: float | None = None
    randaugment: str | None = None
    mixup: float = 0.0
    cutmix: float = 0.0
    random_erasing: float = 0.0
    ema_decay: float | None = None
    drop_path: float = 0.0
    # of the random-resized crop: bilinear, bicubic, or random (either, per image)
    train_interpolation: str = "bilinear"
    eval_interpolation: str = "bilinear"  # or "model": the evaluated model's timm pretrained config
    eval_crop_pct: float | str = 0.875  # centre crop of the rrc protocols' eval; or "model"


@dataclass(frozen=True)
class MethodSpec:
    id: str
    type: str
    name: str
    options: Mapping[str, Any]


@dataclass(frozen=True)
class ProtocolSpec:
    id: str
    dataset: DatasetSpec
    augment: AugmentSpec


@dataclass(frozen=True)
class TeacherSpec:
    """Where a teacher's weights come from. `checkpoint`: a local path or an http(s)/file URL
    (downloaded once into <data>/checkpoints/), checked against `sha256` when given. `pretrained`:
    timm's ImageNet weights, from `pretrained_file` when given (a local copy), else timm's hub.
    `epochs` (None = the recipe's) > 0 fine-tunes; 0 uses the weights as they are."""

    model: str
    recipe: str
    checkpoint: str | None = None
    sha256: str | None = None
    pretrained: bool = False
    pretrained_file: str | None = None
    replace_head: bool = True
    epochs: int | None = None


@dataclass(frozen=True)
class PairSpec:
    id: str
    teacher: str
    student: str


@dataclass(frozen=True)
class ExperimentSpec:
    id: str
    protocol: str
    seeds: tuple[int, ...]
    gpus_per_job: int
    teachers: Mapping[str, TeacherSpec]
    pairs: tuple[PairSpec, ...]
    methods: tuple[str, ...]
    student_recipes: Mapping[str, str]
    table_kind: str
    paper_table: str | None
    # The seed of the teachers' training and the assistants' construction: one value, not the run seeds,
    # so adding a run seed never retrains a teacher (and with it every run).
    teacher_seed: int = 0

    def pair(self, pair_id: str) -> PairSpec:
        for pair in self.pairs:
            if pair.id == pair_id:
                return pair
        raise TasError(f"unknown pair {pair_id!r} in experiment {self.id!r}; choose one of: "
                       f"{', '.join(p.id for p in self.pairs)}")

    @property
    def students(self) -> tuple[str, ...]:
        """The distinct students of the pairs, in pair order."""
        return tuple(dict.fromkeys(pair.student for pair in self.pairs))

    def student(self, student_id: str) -> str:
        if student_id not in self.students:
            raise TasError(f"unknown student {student_id!r} in experiment {self.id!r}; choose one of: "
                           f"{', '.join(self.students)}")
        return student_id

    def teacher(self, teacher_id: str) -> TeacherSpec:
        if teacher_id not in self.teachers:
            raise TasError(f"unknown teacher {teacher_id!r} in experiment {self.id!r}; choose one of: "
                           f"{', '.join(self.teachers)}")
        return self.teachers[teacher_id]

    def method(self, method_id: str) -> str:
        if method_id not in self.methods:
            raise TasError(f"method {method_id!r} is not in experiment {self.id!r}; choose one of: "
                           f"{', '.join(self.methods)}")
        return method_id


@dataclass(frozen=True)
class RuntimeSpec:
    device: str = "auto"
    amp: str = "auto"
    channels_last: str = "auto"
    compile: bool = False
    threads: int = 2
    num_workers: int | str = "auto"  # streamed image folders; see tas.data.loader.resolve_num_workers
    upsample_on: str = "auto"  # streamed image folders; see tas.data.loader.resolve_upsample_on
    deterministic: bool = True
    progress: bool = True
    sync_bn: bool = False


@dataclass(frozen=True)
class Config:
    raw: Mapping[str, Any]
    selected: tuple[str, ...]
    data_root: Path
    results_root: Path
    runtime: RuntimeSpec
    datasets: Mapping[str, DatasetSpec]
    models: Mapping[str, ModelSpec]
    recipes: Mapping[str, RecipeSpec]
    methods: Mapping[str, MethodSpec]
    protocols: Mapping[str, ProtocolSpec]
    experiments: Mapping[str, ExperimentSpec]
    # `smoke: true`: every job of the selected studies, shrunk to minutes on a CPU (tas.smoke), under its own folders
    smoke: bool = False

    def experiment(self, experiment_id: str | None = None) -> ExperimentSpec:
        experiment_id = experiment_id or self.selected[0]
        if experiment_id not in self.experiments:
            raise TasError(f"unknown experiment {experiment_id!r}; choose one of: {', '.join(self.experiments)}")
        return self.experiments[experiment_id]

    def model(self, model_id: str) -> ModelSpec:
        if model_id not in self.models:
            raise TasError(f"unknown model {model_id!r}; choose one of: {', '.join(self.models)}")
        return self.models[model_id]

    def method(self, method_id: str) -> MethodSpec:
        if method_id not in self.methods:
            raise TasError(f"unknown method {method_id!r}; choose one of: {', '.join(self.methods)}")
        return self.methods[method_id]

    def protocol_of(self, experiment: ExperimentSpec) -> ProtocolSpec:
        return self.protocols[experiment.protocol]

    def teacher_recipe(self, experiment: ExperimentSpec, teacher_id: str) -> RecipeSpec:
        teacher = experiment.teacher(teacher_id)
        recipe = self.recipes[teacher.recipe]
        if teacher.epochs is not None:
            recipe = replace(recipe, epochs=teacher.epochs)
        return recipe

    def student_recipe(self, experiment: ExperimentSpec, student_id: str) -> RecipeSpec:
        return self.recipes[experiment.student_recipes[self.student_recipe_key(experiment, student_id)]]

    def student_recipe_key(self, experiment: ExperimentSpec, student_id: str) -> str:
        """The `student_recipes` key a student's recipe comes from: its model id when the experiment names
        one (a recipe for that student alone), else its family."""
        return student_id if student_id in experiment.student_recipes else self.model(student_id).family

    def section_hash(self, *keys: str) -> str:
        """sha256 of the named dotted keys' resolved values: what a job's result depends on."""
        picked = {key: thaw(_lookup(self.raw, key)) for key in keys}
        blob = json.dumps(picked, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _lookup(tree: Mapping[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        node = node[part]
    return node


# ---------------------------------------------------------------------------------------- loading


def load_config(path: str | Path = "params.yaml", overrides: Iterable[str] = (),
                experiments: Iterable[str] | None = None) -> Config:
    """Read, override, validate and freeze params.yaml."""
    path = Path(path)
    if not path.is_file():
        raise TasError(f"params file {str(path)!r} not found; run from the project root or pass --params FILE")
    from tas.yamlload import load_file  # duplicate keys refused with their lines; 1e-3 is a number

    raw = load_file(path)
    if not isinstance(raw, dict):
        raise TasError(f"{path}: expected a mapping of sections at the top level")
    raw = copy.deepcopy(raw)
    for override in overrides:
        apply_override(raw, override)
    if experiments:
        chosen = list(experiments)
        raw["experiment"] = chosen[0] if len(chosen) == 1 else chosen
    validate_schema(raw, source=str(path))
    if raw.get("smoke"):
        # Imported by name, so that tas.codedeps leaves the smoke code out of every job's code closure: a
        # smoke job depends on what shrink() makes of the params (hashed like any params), and an edit of
        # tas/smoke/ must not mark the real studies' jobs out of date.
        smoke = importlib.import_module("tas.smoke")
        raw = smoke.shrink(raw)  # sizes and input locations only: every model, method and recipe stays
        validate_schema(raw, source=f"{path} (smoke)")
    return _build(raw, source=str(path))


def _switch_words(runtime: dict) -> dict:
    """YAML 1.1 reads a bare `on`/`off` as a boolean; the runtime switches take the words."""
    words = {"amp": {False: "off"}, "channels_last": {True: "on", False: "off"}}
    return {key: words[key].get(value, value) if key in words and isinstance(value, bool) else value
            for key, value in runtime.items()}


def apply_override(raw: dict, override: str) -> None:
    """`a.b.c=value`; the value is parsed as YAML, so `3`, `0.1`, `true`, `null`, `[a, b]` are typed."""
    key, sep, text = override.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise TasError(f"--set {override!r}: expected key.path=value, e.g. --set recipes.mini.epochs=2")
    from tas.yamlload import load_value  # as params.yaml reads it: 1e-3 is a number

    value = load_value(text) if text != "" else ""
    node = raw
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part) if isinstance(node, dict) else None
        if child is None:
            child = {}
            node[part] = child
        if not isinstance(child, dict):
            raise TasError(f"--set {key}: {'.'.join(parts[:depth + 1])} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _schema() -> dict:
    # libyaml's parser where PyYAML has it: the schema is read at every Snakemake start and job start
    return yaml.load(SCHEMA_PATH.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def validate_schema(raw: Mapping[str, Any], source: str = "params.yaml") -> None:
    message = problem(raw, _schema())
    if message:
        raise TasError(f"{source}: {message}")


def _build(raw: dict, source: str) -> Config:
    from tas.distillers.registry import declaration  # light: reads the methods' files, imports none
    from tas.plugins import TABLE_KINDS_PACKAGE, plugin_modules  # the kinds' file names, nothing of the report imported

    def fail(message: str) -> None:
        raise TasError(f"{source}: {message}")

    runtime = RuntimeSpec(**_switch_words(raw.get("runtime", {})))
    paths = raw.get("paths", {})
    datasets = {key: _dataset(key, value) for key, value in raw["datasets"].items()}
    models = {key: ModelSpec(id=key, timm=v["timm"], family=v["family"], name=v["name"],
                             kwargs=_freeze(v.get("kwargs", {}))) for key, v in raw["models"].items()}
    recipes = {key: RecipeSpec(id=key, **value) for key, value in raw["recipes"].items()}

    methods = {}
    for key, value in raw["methods"].items():
        options = {k: v for k, v in value.items() if k not in ("type", "name")}
        try:
            method = declaration(value["type"])
        except TasError as err:
            fail(f"methods.{key}.type: {err}")
        if method.built_first and not method.needs_teacher:  # prepare-run builds it per (pair, method)
            fail(f"methods.{key}.type: method type {value['type']!r} declares built_first = {method.built_first!r} "
                 f"but needs no teacher; a method built first is built per teacher-student pair: fix {method.module}")
        for option in options:
            if option not in method.defaults:
                allowed = ", ".join(sorted(method.defaults)) or "none"
                fail(f"methods.{key}.{option}: unknown option for a {value['type']} method; allowed: {allowed}")
        bad = method.problem(options, ("methods", key))
        if bad:
            fail(bad)
        methods[key] = MethodSpec(id=key, type=value["type"], name=value.get("name", key),
                                  options=_freeze({**method.defaults, **options}))

    protocols = {}
    for key, value in raw["protocols"].items():
        if value["dataset"] not in datasets:
            fail(f"protocols.{key}.dataset: unknown dataset {value['dataset']!r}; choose one of: {', '.join(datasets)}")
        protocols[key] = ProtocolSpec(id=key, dataset=datasets[value["dataset"]],
                                      augment=AugmentSpec(**value["augment"]))

    experiments = {}
    for key, value in raw["experiments"].items():
        where = f"experiments.{key}"
        if value["protocol"] not in protocols:
            fail(f"{where}.protocol: unknown protocol {value['protocol']!r}; choose one of: {', '.join(protocols)}")
        teachers = {}
        for teacher_id, teacher in value["teachers"].items():
            if teacher_id not in models:
                fail(f"{where}.teachers.{teacher_id}: unknown model; choose one of: {', '.join(models)}")
            if teacher["recipe"] not in recipes:
                fail(f"{where}.teachers.{teacher_id}.recipe: unknown recipe {teacher['recipe']!r}; choose one of: "
                     f"{', '.join(recipes)}")
            teachers[teacher_id] = TeacherSpec(model=teacher_id, **teacher)
            _check_teacher(f"{where}.teachers.{teacher_id}", teachers[teacher_id], recipes[teacher["recipe"]], fail)
        pairs, seen = [], set()
        for index, pair in enumerate(value["pairs"]):
            if pair["teacher"] not in teachers:
                fail(f"{where}.pairs[{index}].teacher: {pair['teacher']!r} is not among this experiment's teachers "
                     f"({', '.join(teachers)})")
            if pair["student"] not in models:
                fail(f"{where}.pairs[{index}].student: unknown model {pair['student']!r}; choose one of: "
                     f"{', '.join(models)}")
            pid = f"{pair['teacher']}-{pair['student']}"
            if pid in seen:
                fail(f"{where}.pairs[{index}]: pair {pid} is listed twice")
            seen.add(pid)
            pairs.append(PairSpec(id=pid, teacher=pair["teacher"], student=pair["student"]))
        for method in value["methods"]:
            if method not in methods:
                fail(f"{where}.methods: unknown method {method!r}; choose one of: {', '.join(methods)}")
        students = {pair.student for pair in pairs}
        for family, recipe in value["student_recipes"].items():
            if recipe not in recipes:
                fail(f"{where}.student_recipes.{family}: unknown recipe {recipe!r}; choose one of: "
                     f"{', '.join(recipes)}")
            if family not in FAMILIES and family not in students:
                fail(f"{where}.student_recipes.{family}: neither a family ({', '.join(FAMILIES)}) "
                     f"nor a student of this experiment ({', '.join(sorted(students))})")
        gpus = value.get("gpus_per_job", 1)
        used = {value["student_recipes"][s if s in value["student_recipes"] else models[s].family] for s in students}
        used |= {t["recipe"] for t in value["teachers"].values()}
        for recipe_id in sorted(used):
            try:
                batching.plan(recipes[recipe_id], gpus)
            except TasError as err:
                fail(f"{where} (gpus_per_job {gpus}): {err}")
        table = value.get("table", {})
        kinds = plugin_modules(TABLE_KINDS_PACKAGE)
        if table.get("kind", "main") not in kinds:
            fail(f"{where}.table.kind: unknown table kind {table['kind']!r}; choose one of: {', '.join(kinds)} "
                 "(a new kind is one file in tas/report/kinds/)")
        experiments[key] = ExperimentSpec(
            id=key, protocol=value["protocol"], seeds=tuple(value.get("seeds", [0])),
            gpus_per_job=value.get("gpus_per_job", 1),
            teachers=MappingProxyType(teachers), pairs=tuple(pairs), methods=tuple(value["methods"]),
            student_recipes=MappingProxyType(dict(value["student_recipes"])), table_kind=table.get("kind", "main"),
            paper_table=table.get("paper"), teacher_seed=value.get("teacher_seed", 0),
        )

    selected = raw["experiment"] if isinstance(raw["experiment"], list) else [raw["experiment"]]
    for experiment_id in selected:
        if experiment_id not in experiments:
            fail(f"experiment: unknown experiment {experiment_id!r}; choose one of: {', '.join(experiments)}")

    return Config(
        raw=_freeze(raw), selected=tuple(selected), data_root=Path(paths.get("data", "data")),
        results_root=Path(paths.get("results", "results")), runtime=runtime,
        datasets=MappingProxyType(datasets), models=MappingProxyType(models), recipes=MappingProxyType(recipes),
        methods=MappingProxyType(methods), protocols=MappingProxyType(protocols),
        experiments=MappingProxyType(experiments), smoke=bool(raw.get("smoke", False)),
    )


def _check_teacher(where: str, teacher: TeacherSpec, recipe: RecipeSpec, fail) -> None:
    """A teacher must start from weights or be trained: distillation never starts from a random teacher."""
    epochs = recipe.epochs if teacher.epochs is None else teacher.epochs
    if teacher.checkpoint and teacher.pretrained:
        fail(f"{where}: give either checkpoint or pretrained: true, not both "
             "(the checkpoint would overwrite timm's weights)")
    if teacher.pretrained_file and not teacher.pretrained:
        fail(f"{where}.pretrained_file: set pretrained: true as well "
             "(pretrained_file is a local copy of timm's weights)")
    if teacher.sha256 and not teacher.checkpoint:
        fail(f"{where}.sha256: pins the file of `checkpoint:`, which is not set; remove sha256 or give the checkpoint")
    if epochs == 0 and not teacher.checkpoint and not teacher.pretrained:
        fail(f"{where}: would be used untrained (0 epochs, no checkpoint, no pretrained weights); give it a "
             f"`checkpoint:` (path or URL), set `pretrained: true`, or train it (epochs > 0 in recipe {recipe.id!r} "
             "or `epochs:` on the teacher)")


def _dataset(key: str, value: Mapping[str, Any]) -> DatasetSpec:
    fields = {k: v for k, v in value.items()}
    return DatasetSpec(id=key, **fields)
