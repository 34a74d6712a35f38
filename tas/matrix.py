"""Experiments -> jobs: the only place that knows the pipeline's DAG.

`expand(cfg)` turns the selected experiments of a `Config` into a flat, ordered list of `Job`s:

    prepare-data (one per dataset, shared by experiments) -> train-teacher -> prepare-run (pair x method,
    for a method that declares something `built_first`, e.g. TAS's assistant) -> distill (pair x method x
    seed; student x method x seed for a teacher-free method such as scratch) -> evaluate (teachers, runs)
    -> tables (one per experiment)

A teacher-free run depends only on the experiment, the student, the method and the seed (tas.runs), so
it is one job per student with its own rules (`distill_student`, `evaluate_student_run`, wildcard
`student`), shared by every pair with that student, and it has no teacher or prepared input.

Each `Job` carries everything a runner needs: the exact command line (the same one for Snakemake and
DVC), its inputs, outputs, metrics, plots, resume dirs, the dotted params.yaml keys it reads (those its
settings function in tas.settings reads), its GPU and thread needs, a unique name and the Snakemake rule +
wildcards that produce it. The Snakefile's
rules (workflow/rules/*.smk) and the generated dvc.yaml (tas/dvcyaml.py) are both thin views of it.

Every artifact path comes from `tas.paths`. The rule output patterns are the same functions called with
"{wildcard}" placeholders instead of ids, so a pattern and a concrete job can never disagree.

Threads: `Job.command` has no `--threads`; the CLI then defaults to `runtime.threads` (that is what
`dvc repro` runs). Snakemake appends `--threads {threads}` for the subcommands in `THREADED_SUBCOMMANDS`, so a job
uses exactly the cores Snakemake reserved for it (`Job.threads` = runtime.threads, lowered by Snakemake
when --cores is smaller).
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from tas import codedeps, paths, settings
from tas.config import Config, ExperimentSpec
from tas.data.spec import prepare_writes_arrays
from tas.distillers.registry import declaration, entry_point_version
from tas.errors import TasError
from tas.subcommands import TEACHER_METHOD_TYPE
from tas.runs import Run, experiment_runs, needs_teacher
from tas.settings import Reader

PARAMS_FILE = "params.yaml"

# Snakemake-only side files (DVC keeps its own run records in dvc.lock).
TOOL_LOG_ROOT = "logs/snakemake"
BENCHMARK_ROOT = "benchmarks/snakemake"

# Wildcard grammar (the same patterns as params.schema.yaml's ids; model ids never contain '-').
ID_RE = r"[a-z0-9][a-z0-9_]*"
PAIR_RE = rf"{ID_RE}-{ID_RE}"
SEED_RE = r"[0-9]+"
NO_MATCH_RE = r"(?!x)x"  # a constraint that matches nothing (a rule with no dataset of its kind)
# `student` is a bare id and `pair` needs a '-', so a student's run and a pair's run never match one path.
WILDCARD_CONSTRAINTS = {
    "experiment": ID_RE, "dataset": ID_RE, "teacher": ID_RE, "student": ID_RE, "method": ID_RE, "pair": PAIR_RE,
    "seed": SEED_RE,
}

# CLI subcommands that accept `--threads N` (Snakemake appends it; DVC lets the CLI default to runtime.threads).
THREADED_SUBCOMMANDS = frozenset({"train-teacher", "load-teacher", "prepare-run", "distill", "evaluate"})
# Snakemake rule -> (CLI subcommand, wildcard names in id order).
RULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "prepare_arrays": ("prepare-data", ("dataset",)),
    "prepare_index": ("prepare-data", ("dataset",)),
    "train_teacher": ("train-teacher", ("experiment", "teacher")),
    "load_teacher": ("load-teacher", ("experiment", "teacher")),
    "prepare_run": ("prepare-run", ("experiment", "pair", "method")),
    "distill": ("distill", ("experiment", "pair", "method", "seed")),
    "distill_student": ("distill", ("experiment", "student", "method", "seed")),
    "evaluate_teacher": ("evaluate", ("experiment", "teacher")),
    "evaluate_run": ("evaluate", ("experiment", "pair", "method", "seed")),
    "evaluate_student_run": ("evaluate", ("experiment", "student", "method", "seed")),
    "tables": ("tables", ("experiment",)),
}
# The rules of teacher-free runs (one per student); their counterparts per pair are distill / evaluate_run.
STUDENT_RUN_RULES = frozenset({"distill_student", "evaluate_student_run"})
TEACHER_RULES = frozenset({"train_teacher", "load_teacher"})
TRAINING_RULES = TEACHER_RULES | {"distill", "distill_student"}
EVAL_RULES = frozenset({"evaluate_teacher", "evaluate_run", "evaluate_student_run"})
# CLI flag of each wildcard.
_FLAGS = {"dataset": "--dataset", "experiment": "--experiment", "teacher": "--teacher", "pair": "--pair",
          "student": "--student", "method": "--method", "seed": "--seed"}


@dataclass(frozen=True)
class Job:
    """One command of the pipeline. Paths are strings relative to the project root (POSIX form).

    deps     every input: data files of other jobs, user files named in params (`external`) and the code
             (`code`, for DVC); `inputs` is deps minus code, which is what Snakemake sees.
    outs     every file/directory the job writes, including its `metrics` and `plots` (not `persist`).
    persist  resume state (ckpt/) kept across failures and reruns: never an output to delete.
    uncached outs kept in git rather than the DVC cache (small: metrics, evals, tables, prepared records).
    params   the dotted params.yaml keys the job's settings are read from (tas.settings; only keys present in
             the file); `reads` is that call: (settings function, its arguments after the reader).
    """

    subcommand: str
    rule: str
    experiment: str | None
    wildcards: Mapping[str, str]
    command: tuple[str, ...]
    deps: tuple[str, ...]
    outs: tuple[str, ...]
    persist: tuple[str, ...]
    metrics: tuple[str, ...]
    plots: tuple[str, ...]
    params: tuple[str, ...]
    gpus: int
    threads: int
    name: str
    code: tuple[str, ...] = ()
    external: tuple[str, ...] = ()
    # '<distribution>==<version>' of a third-party method (entry point): its code, which no file here holds
    code_version: str = ""
    uncached: tuple[str, ...] = ()
    directories: tuple[str, ...] = ()
    log: str = ""
    benchmark: str = ""
    reads: tuple = field(default=(), repr=False, compare=False)
    _hash: str = field(default="", repr=False, compare=False)

    @property
    def inputs(self) -> list[str]:
        """Data inputs (deps without code): Snakemake's `input:`."""
        return [d for d in self.deps if d not in self.code]

    @property
    def shell(self) -> str:
        """The command as one shell string (identical in dvc.yaml and in Snakemake's `shell:`)."""
        return shlex.join(self.command)

    @property
    def dvc_name(self) -> str:
        return dvc_stage_name(self.name)

    @property
    def params_hash(self) -> str:
        """Hash of the job's params keys and code: Snakemake's `params:` (its params rerun trigger), the
        `params_hash` of metrics.json and part of a training job's resume identity."""
        return self._hash

    @property
    def code_hash(self) -> str:
        return code_hash(self.code, self.code_version)


def dvc_stage_name(job_name: str) -> str:
    """'distill@mini/t-s/kd/seed0' -> 'distill--mini--t-s--kd--seed0' (DVC allows only [A-Za-z0-9_-];
    '--' never occurs in ids, so the name stays unique and readable)."""
    return job_name.replace("@", "--").replace("/", "--")


# ------------------------------------------------------------------------------------- patterns


def _p(path: Path | str) -> str:
    return Path(path).as_posix()


def _array_files() -> tuple[str, ...]:
    return tuple(f"{name}.npy" for name in paths.DATASET_ARRAYS)


def rule_outputs(cfg: Config, rule: str, wc: Mapping[str, str]) -> dict[str, str]:
    """Named outputs of `rule` for wildcard values `wc` (concrete ids, or "{name}" placeholders)."""
    res, data = cfg.results_root, cfg.data_root
    if rule == "prepare_arrays":
        out = {name.removesuffix(".npy"): _p(paths.dataset_dir(data, wc["dataset"]) / name) for name in _array_files()}
        out["meta"] = _p(paths.dataset_meta(data, wc["dataset"]))
        return out
    if rule == "prepare_index":
        return {"meta": _p(paths.dataset_meta(data, wc["dataset"]))}
    if rule in TRAINING_RULES:
        base = _train_dir(cfg, rule, wc)
        return {name.split(".")[0]: _p(base / name) for name in paths.TRAINING_OUTPUTS}
    if rule == "prepare_run":
        return {"prepared": _p(paths.prepared_record(res, wc["experiment"], wc["pair"], wc["method"]))}
    if rule == "evaluate_teacher":
        return {"eval": _p(paths.teacher_eval(res, wc["experiment"], wc["teacher"]))}
    if rule == "evaluate_run":
        return {"eval": _p(paths.run_eval(res, wc["experiment"], wc["pair"], wc["method"], wc["seed"]))}
    if rule == "evaluate_student_run":
        return {"eval": _p(paths.student_run_eval(res, wc["experiment"], wc["student"], wc["method"], wc["seed"]))}
    if rule == "tables":
        return {"tables": _p(paths.tables_dir(res, wc["experiment"])),
                "plots": _p(paths.plots_dir(res, wc["experiment"]))}
    raise KeyError(f"unknown rule {rule!r}")


def _train_dir(cfg: Config, rule: str, wc: Mapping[str, str]) -> Path:
    if rule in TEACHER_RULES:
        return paths.teacher_dir(cfg.results_root, wc["experiment"], wc["teacher"])
    if rule == "distill_student":
        return paths.student_run_dir(cfg.results_root, wc["experiment"], wc["student"], wc["method"], wc["seed"])
    return paths.run_dir(cfg.results_root, wc["experiment"], wc["pair"], wc["method"], wc["seed"])


def run_rules(run: Run) -> tuple[str, str]:
    """(training rule, evaluation rule) of a run: teacher-free runs have their own, keyed by student."""
    return ("distill", "evaluate_run") if run.pair else ("distill_student", "evaluate_student_run")


def run_wildcards(run: Run) -> dict[str, str]:
    owner = {"pair": run.pair} if run.pair else {"student": run.student}
    return {"experiment": run.experiment, **owner, "method": run.method, "seed": str(run.seed)}


def _id_parts(rule: str, wc: Mapping[str, str]) -> list[str]:
    return [f"seed{wc[w]}" if w == "seed" else wc[w] for w in RULES[rule][1]]


def job_name(rule: str, wc: Mapping[str, str]) -> str:
    return f"{RULES[rule][0]}@{'/'.join(_id_parts(rule, wc))}"


def log_path(rule: str, wc: Mapping[str, str], smoke: bool = False) -> str:
    """Snakemake `log:` (the job's stdout/stderr; the job's own log.txt is an output)."""
    return f"{TOOL_LOG_ROOT}{paths.SMOKE_SUFFIX * smoke}/{rule}/{'/'.join(_id_parts(rule, wc))}.log"


def benchmark_path(rule: str, wc: Mapping[str, str], smoke: bool = False) -> str:
    return f"{BENCHMARK_ROOT}{paths.SMOKE_SUFFIX * smoke}/{rule}/{'/'.join(_id_parts(rule, wc))}.tsv"


def placeholders(rule: str) -> dict[str, str]:
    return {w: "{" + w + "}" for w in RULES[rule][1]}


def output_patterns(cfg: Config, rule: str) -> dict[str, str]:
    return rule_outputs(cfg, rule, placeholders(rule))


def prepare_rule(cfg: Config, dataset: str) -> str:
    """Sources read in memory (synthetic, cifar100, image folders cached as arrays: tas.data.caching) write
    arrays + meta.json; an image folder streamed per sample writes meta.json (an index) only."""
    return "prepare_arrays" if prepare_writes_arrays(cfg.datasets[dataset], cfg.data_root) else "prepare_index"


def dataset_constraint(cfg: Config, rule: str) -> str:
    """Regex of the dataset ids `rule` prepares (keeps the two prepare rules unambiguous)."""
    ids = [d for d in cfg.datasets if prepare_rule(cfg, d) == rule]
    return "|".join(ids) if ids else NO_MATCH_RE


def teacher_is_loaded(cfg: Config, exp: ExperimentSpec, teacher: str) -> bool:
    """A teacher used as given (0 epochs: its checkpoint or pretrained weights, evaluated, never trained)."""
    return cfg.teacher_recipe(exp, teacher).epochs == 0


def loaded_teachers(cfg: Config, experiments: Iterable[str] | str | None = None) -> frozenset[str]:
    """Teacher ids planned with `load_teacher` (the others with `train_teacher`). Snakemake tells the two
    rules apart by the teacher id alone, so an id loaded in one selected experiment and trained in another
    is planned as `train_teacher` in both (the job does the same either way: it trains for 0 epochs)."""
    chosen = [cfg.experiment(e) for e in selected_experiments(cfg, experiments)]
    loaded = {t for exp in chosen for t in exp.teachers if teacher_is_loaded(cfg, exp, t)}
    trained = {t for exp in chosen for t in exp.teachers if not teacher_is_loaded(cfg, exp, t)}
    return frozenset(loaded - trained)


def teacher_rule(cfg: Config, teacher: str, loaded: frozenset[str]) -> str:
    return "load_teacher" if teacher in loaded else "train_teacher"


def rule_constraints(cfg: Config, rule: str) -> dict[str, str]:
    """A rule's own wildcard constraints (on top of WILDCARD_CONSTRAINTS): with them every output path
    matches exactly one rule."""
    wildcards = RULES[rule][1]
    if rule in TEACHER_RULES:
        loaded = loaded_teachers(cfg)
        ids = sorted({t for e in cfg.selected for t in cfg.experiment(e).teachers
                      if teacher_rule(cfg, t, loaded) == rule})
        return {"teacher": "|".join(ids) if ids else NO_MATCH_RE}
    if "dataset" in wildcards:  # the two prepare rules
        return {"dataset": dataset_constraint(cfg, rule)}
    if rule == "prepare_run":
        ids = [m for m in cfg.methods if built_first(cfg, m)]
        return {"method": "|".join(ids) if ids else NO_MATCH_RE}
    if "method" in wildcards:  # the run rules, per pair or per student
        return {"method": method_constraint(cfg, rule)}
    return {}


def method_constraint(cfg: Config, rule: str) -> str:
    """Regex of the method ids a run rule trains or evaluates: teacher-free methods only per student,
    the others only per pair, so a teacher-free method's run is never also planned under a pair."""
    teacher_free = rule in STUDENT_RUN_RULES
    ids = [m for m in cfg.methods if needs_teacher(cfg, m) != teacher_free]
    return "|".join(ids) if ids else NO_MATCH_RE


# ----------------------------------------------------------------------------------------- code


def code_deps(subcommand: str, method_type: str | None = None, dataset_source: str | None = None,
              table_kind: str | None = None) -> tuple[str, ...]:
    """The tas code (and the data files it reads) that a job of `subcommand` runs: tas.codedeps.job_code."""
    return codedeps.job_code(subcommand, method_type, dataset_source, table_kind)


def code_hash(deps: Sequence[str], version: str = "") -> str:
    """Content hash of the code files (what DVC's md5 of the code deps tracks), and of a third-party
    method's version."""
    files = codedeps.files_hash(deps)
    return files if not version else hashlib.sha256(f"{files}:{version}".encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------ expansion


def _has_key(cfg: Config, dotted: str) -> bool:
    node: Any = cfg.raw
    for part in dotted.split("."):
        try:
            node = node[part]
        except (KeyError, TypeError):  # no such key, or a value (a list, a string) where a section would be
            return False
    return True


def _keys(cfg: Config, keys: Iterable[str]) -> tuple[str, ...]:
    """Only keys present in params.yaml (DVC fails on a listed key that is missing), deduplicated, and none
    under another listed key (its value is part of that key's)."""
    present = [k for k in dict.fromkeys(keys) if _has_key(cfg, k)]
    listed = set(present)
    return tuple(k for k in present if not any(parent in listed for parent in _parents(k)))


def _parents(key: str) -> Iterator[str]:
    """'a.b.c' -> 'a', 'a.b'."""
    dot = key.find(".")
    while dot != -1:
        yield key[:dot]
        dot = key.find(".", dot + 1)


def job_settings(cfg: Config, job: Job):
    """What the job's behaviour depends on of `cfg` (tas.settings), read as the job reads it."""
    read, *args = job.reads
    return read(Reader(cfg), *args)


def built_first(cfg: Config, method_id: str) -> str | None:
    """What the method builds per (pair, method) before its runs train (its declaration), or None."""
    return declaration(cfg.method(method_id).type).built_first


class _Builder:
    def __init__(self, cfg: Config, params_file: str) -> None:
        self.cfg = cfg
        self.params_file = params_file
        self.threads = int(cfg.runtime.threads)
        self.code_hashes: dict[tuple, str] = {}  # a dozen code sets among hundreds of jobs: each hashed once
        # (settings function, arguments) -> (keys, their values' hash): a run's seeds, a student's evaluations
        # share one
        self.read_keys: dict[tuple, tuple[tuple[str, ...], str]] = {}
        self.data_files_of: dict[str, tuple[str, ...]] = {}

    def make(self, rule: str, wc: Mapping[str, str], reads: tuple, *, deps: Iterable[str] = (),
             external: Iterable[str] = (), gpus: int = 0, experiment: str | None = None,
             method_type: str | None = None, dataset_source: str | None = None, table_kind: str | None = None) -> Job:
        """`reads`: (the job's settings function in tas.settings, its arguments after the reader)."""
        subcommand = RULES[rule][0]
        wc = {k: str(v) for k, v in wc.items()}
        outs_map = rule_outputs(self.cfg, rule, wc)
        outs = tuple(outs_map.values())
        metrics: tuple[str, ...] = ()
        plots: tuple[str, ...] = ()
        persist: tuple[str, ...] = ()
        uncached: tuple[str, ...] = ()
        directories: tuple[str, ...] = ()
        if rule in TRAINING_RULES:
            metrics, plots = (outs_map["metrics"],), (outs_map["history"],)
            persist = (_p(paths.checkpoint_dir(_train_dir(self.cfg, rule, wc))),)
            uncached = (*metrics, *plots, outs_map["provenance"])
        elif rule == "prepare_run":
            uncached = (outs_map["prepared"],)
        elif rule in EVAL_RULES:
            metrics = uncached = (outs_map["eval"],)
        elif rule == "tables":
            uncached = directories = outs
        # The plugins a job picks by name (method, dataset source, table kind): their modules are its code too.
        code = code_deps(subcommand, method_type, dataset_source, table_kind)
        code_version = (entry_point_version(method_type) or "") if method_type else ""
        external = tuple(external)
        all_deps = tuple(dict.fromkeys([*deps, *external, *code]))
        keys, keys_hash = self.keys(reads)
        command = ["python", "-m", "tas", subcommand, "--params", self.params_file]
        if self.cfg.smoke:  # the file says `smoke: false`; the job runs the smoke study it was planned for
            command += ["--set", "smoke=true"]
        for w in RULES[rule][1]:
            command += [_FLAGS[w], wc[w]]
        return Job(
            subcommand=subcommand, rule=rule, experiment=experiment, wildcards=wc, command=tuple(command),
            deps=all_deps, outs=outs, persist=persist, metrics=metrics, plots=plots, params=keys, gpus=int(gpus),
            threads=self.threads if subcommand in THREADED_SUBCOMMANDS else 1, name=job_name(rule, wc), code=code,
            external=external, uncached=uncached, directories=directories, log=log_path(rule, wc, self.cfg.smoke),
            benchmark=benchmark_path(rule, wc, self.cfg.smoke),
            code_version=code_version, reads=reads,
            _hash=hashlib.sha256(f"{keys_hash}:{self.code_hash(code, code_version)}".encode()).hexdigest()[:16],
        )

    def keys(self, reads: tuple) -> tuple[tuple[str, ...], str]:
        """The params keys the settings call `reads` reads, and the hash of their values."""
        hit = self.read_keys.get(reads)
        if hit is None:
            reader = Reader(self.cfg)
            reads[0](reader, *reads[1:])
            keys = _keys(self.cfg, reader.keys)
            hit = self.read_keys[reads] = (keys, self.cfg.section_hash(*keys))
        return hit

    def code_hash(self, code: tuple[str, ...], version: str) -> str:
        if (code, version) not in self.code_hashes:
            self.code_hashes[code, version] = code_hash(code, version)
        return self.code_hashes[code, version]

    # -- per subcommand: each job's params are what its settings function reads (tas.settings)

    def prepare(self, dataset: str) -> Job:
        return self.make(prepare_rule(self.cfg, dataset), {"dataset": dataset}, (settings.prepare_data, dataset),
                         dataset_source=self.cfg.datasets[dataset].source)

    def source(self, exp: ExperimentSpec) -> str:
        """The dataset source whose module the experiment's data-loading jobs import."""
        return self.cfg.protocol_of(exp).dataset.source

    def data_files(self, exp: ExperimentSpec) -> list[str]:
        if exp.id not in self.data_files_of:  # the same for every job of the experiment
            dataset = self.cfg.protocol_of(exp).dataset.id
            self.data_files_of[exp.id] = tuple(
                rule_outputs(self.cfg, prepare_rule(self.cfg, dataset), {"dataset": dataset}).values())
        return list(self.data_files_of[exp.id])

    def teacher_out(self, exp: ExperimentSpec, teacher: str, name: str) -> str:
        return _p(paths.teacher_dir(self.cfg.results_root, exp.id, teacher) / name)

    def teacher(self, exp: ExperimentSpec, teacher: str, loaded: frozenset[str]) -> Job:
        spec = exp.teacher(teacher)
        return self.make(
            teacher_rule(self.cfg, teacher, loaded), {"experiment": exp.id, "teacher": teacher},
            (settings.teacher, exp.id, teacher), experiment=exp.id,
            # A local checkpoint is an input file; a URL's (and its sha256's) change is in the params, and
            # the job downloads it into data/checkpoints/ itself.
            deps=self.data_files(exp),
            external=[spec.checkpoint] if spec.checkpoint and not paths.is_url(spec.checkpoint) else [],
            gpus=exp.gpus_per_job, method_type=TEACHER_METHOD_TYPE, dataset_source=self.source(exp),
        )

    def prepare_run(self, exp: ExperimentSpec, pair, method: str) -> Job:
        return self.make(
            "prepare_run", {"experiment": exp.id, "pair": pair.id, "method": method},
            (settings.prepare_run, exp.id, pair.teacher, pair.student, method), experiment=exp.id,
            method_type=self.cfg.method(method).type, dataset_source=self.source(exp),  # the class count's source
        )

    def distill(self, exp: ExperimentSpec, run: Run) -> Job:
        deps = self.data_files(exp)
        if run.teacher:
            deps.append(self.teacher_out(exp, run.teacher, paths.MODEL_FILE))
        if built_first(self.cfg, run.method):
            deps += list(rule_outputs(self.cfg, "prepare_run", {"experiment": exp.id, "pair": run.pair,
                                                                 "method": run.method}).values())
        return self.make(run_rules(run)[0], run_wildcards(run),
                         (settings.distill, exp.id, run.teacher, run.student, run.method), experiment=exp.id,
                         deps=deps, gpus=exp.gpus_per_job, method_type=self.cfg.method(run.method).type,
                         dataset_source=self.source(exp))

    def evaluate_teacher(self, exp: ExperimentSpec, teacher: str) -> Job:
        return self.make(
            "evaluate_teacher", {"experiment": exp.id, "teacher": teacher},
            (settings.evaluate_teacher, exp.id, teacher), experiment=exp.id,
            deps=[*self.data_files(exp), self.teacher_out(exp, teacher, paths.MODEL_FILE)],
            gpus=1, dataset_source=self.source(exp),
        )

    def evaluate_run(self, exp: ExperimentSpec, run: Run) -> Job:
        train_rule, eval_rule = run_rules(run)
        trained = rule_outputs(self.cfg, train_rule, run_wildcards(run))
        deps = [*self.data_files(exp), trained["model"], trained["metrics"]]
        if run.teacher:
            # The eval of a pair's run copies the teacher's top-1 from its metrics.json into the record:
            # declared for every such method so the record never depends on which job finished first.
            deps.append(self.teacher_out(exp, run.teacher, paths.METRICS_FILE))
        return self.make(eval_rule, run_wildcards(run), (settings.evaluate_run, exp.id, run.student),
                         experiment=exp.id, deps=deps, gpus=1, dataset_source=self.source(exp))

    def tables(self, exp: ExperimentSpec, evals: list[Job], trainings: list[Job]) -> Job:
        """Reads every evaluation, and of every training job (teachers and runs) its history (curves) and
        metrics.json and provenance.json (provenance.csv)."""
        deps = [o for j in evals for o in j.outs] + [o for j in trainings for o in (*j.metrics, *j.plots)]
        deps += [o for j in trainings for o in j.outs if o.endswith("/" + paths.PROVENANCE_FILE)]
        return self.make("tables", {"experiment": exp.id}, (settings.tables, exp.id), experiment=exp.id,
                         deps=deps, table_kind=exp.table_kind)


def selected_experiments(cfg: Config, experiments: Iterable[str] | str | None = None) -> list[str]:
    if experiments is None:
        chosen = list(cfg.selected)
    elif isinstance(experiments, str):
        chosen = [experiments]
    else:
        chosen = list(experiments)
    for experiment in chosen:
        cfg.experiment(experiment)  # TasError naming the choices when unknown
    return list(dict.fromkeys(chosen))


def expand(cfg: Config, experiments: Iterable[str] | str | None = None, params_file: str = PARAMS_FILE) -> list[Job]:
    """All jobs of the experiments (default: cfg.selected), in dependency order, each exactly once."""
    build = _Builder(cfg, params_file)
    chosen = [cfg.experiment(e) for e in selected_experiments(cfg, experiments)]
    jobs: list[Job] = []
    for dataset in dict.fromkeys(cfg.protocol_of(exp).dataset.id for exp in chosen):
        jobs.append(build.prepare(dataset))
    loaded = loaded_teachers(cfg, [exp.id for exp in chosen])
    for exp in chosen:
        teachers = [build.teacher(exp, t, loaded) for t in exp.teachers]
        jobs += teachers
        jobs += [build.prepare_run(exp, p, m) for p in exp.pairs for m in exp.methods if built_first(cfg, m)]
        runs = experiment_runs(cfg, exp)
        trainings = [build.distill(exp, run) for run in runs]
        jobs += trainings
        evals = [build.evaluate_teacher(exp, t) for t in exp.teachers]
        evals += [build.evaluate_run(exp, run) for run in runs]
        jobs += evals
        jobs.append(build.tables(exp, evals, teachers + trainings))
    return jobs


# --------------------------------------------------------------------------------- lookups


class Index:
    """Jobs of one expansion, looked up by name, by (rule, wildcards) and by output path."""

    def __init__(self, jobs: list[Job]) -> None:
        self.jobs = jobs
        self.by_name: dict[str, Job] = {}
        self.by_output: dict[str, Job] = {}
        for job in jobs:
            if job.name in self.by_name:
                raise RuntimeError(f"two jobs named {job.name}")
            self.by_name[job.name] = job
            for out in job.outs:
                if out in self.by_output:
                    raise RuntimeError(f"{out} is an output of both {self.by_output[out].name} and {job.name}")
                self.by_output[out] = job

    def find(self, rule: str, wildcards: Mapping[str, Any]) -> Job:
        wc = {w: str(wildcards[w]) for w in RULES[rule][1]}
        name = job_name(rule, wc)
        job = self.by_name.get(name)
        if job is None or job.rule != rule:
            raise TasError(f"{name} is not a job of the selected experiment(s); check the ids against params.yaml")
        return job


_INDEXES: dict[tuple[int, tuple[str, ...], str], tuple[Config, Index]] = {}


def index(cfg: Config, experiments: Iterable[str] | str | None = None, params_file: str = PARAMS_FILE) -> Index:
    """Cached `Index` of `expand(cfg, experiments)` (Snakemake calls the input functions once per job)."""
    key = (id(cfg), tuple(selected_experiments(cfg, experiments)), params_file)
    hit = _INDEXES.get(key)
    if hit is None or hit[0] is not cfg:
        hit = (cfg, Index(expand(cfg, key[1], params_file)))
        _INDEXES[key] = hit
    return hit[1]


def find_job(cfg: Config, rule: str, wildcards: Mapping[str, Any], experiments=None,
             params_file: str = PARAMS_FILE) -> Job:
    return index(cfg, experiments, params_file).find(rule, wildcards)


def job_for_output(cfg: Config, path: str | Path, experiments=None, params_file: str = PARAMS_FILE) -> Job | None:
    """The job that writes `path` (a file, or a directory output), or None."""
    return index(cfg, experiments, params_file).by_output.get(_p(path))


def targets(cfg: Config, experiments: Iterable[str] | str | None = None) -> list[str]:
    """Final outputs of the selected experiments: their tables and plots directories (`rule all`)."""
    out: list[str] = []
    for experiment in selected_experiments(cfg, experiments):
        out += list(rule_outputs(cfg, "tables", {"experiment": experiment}).values())
    return out


__all__ = [
    "Job", "expand", "index", "find_job", "job_for_output", "targets", "rule_outputs", "output_patterns",
    "dvc_stage_name", "code_deps", "code_hash", "run_rules", "run_wildcards", "rule_constraints", "RULES",
    "STUDENT_RUN_RULES", "WILDCARD_CONSTRAINTS", "THREADED_SUBCOMMANDS", "PARAMS_FILE",
]
