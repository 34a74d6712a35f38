# Shared by every rule file: the frozen Config, the job index from tas.matrix and small helpers.
#
# Only `experiment` (a name or a list) and `smoke` (true: the selected studies in miniature, tas/smoke/)
# may be set with --config; every other setting comes from params.yaml, which is also the file each job's
# command reads (--params params.yaml; a smoke job's command adds --set smoke=true, tas.matrix).

import gc
import json
import os
import subprocess
import sys

import yaml

# Everything Snakemake has built so far (its modules, the plugins', pandas' through the Slurm executor
# plugin: ~140,000 objects) lives as long as the process: moved out of the cyclic collector's reach, so
# the full collections that planning's allocations trigger, and the ones at interpreter exit, no longer
# walk it. That walking was ~0.5 of the ~1.7 CPU-seconds of a no-op `snakemake` on the mini study
# (0.1 s in tas.config's schema check alone, 0.4 s at exit). Objects made from here on are collected as
# before; of the frozen ones about ten are unreachable cycles (measured with gc.collect()), which stay.
gc.freeze()

sys.path.insert(0, workflow.basedir)  # import the tas package of this checkout

from snakemake.exceptions import WorkflowError
from snakemake_interface_executor_plugins.settings import ExecMode

from tas import matrix, preflight, sanity
from tas.config import load_config
from tas.errors import TasError
from tas.yamlload import load_file as load_params_file

PARAMS_FILE = matrix.PARAMS_FILE


def _stop(message):
    """Stop with `message` as the console's last line and exit status 2. Snakemake prints an exception
    raised while it parses the Snakefile with traceback frames after the message; a plain exit does not."""
    print(f"Error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def _selected_experiments():
    chosen = config.get("experiment")
    return list(chosen) if isinstance(chosen, (list, tuple)) else [chosen]


def _load():
    if workflow.overwrite_configfiles:
        _stop(f"--configfile is not supported: jobs read {PARAMS_FILE}; edit it, or select experiments with --config experiment=<id>")
    extra = sorted(k for k in workflow.config_settings.config if k not in ("experiment", "smoke"))  # the --config keys
    if extra:
        _stop(f"--config may only set `experiment` and `smoke`, not {', '.join(extra)}: jobs read {PARAMS_FILE}; edit it (or `python -m tas <subcommand> --set key=value` for one job)")
    overrides = []
    if "smoke" in workflow.config_settings.config:
        # --config keeps `true` a string: read it as --set does (YAML), so that the Snakefile's schema check
        # sees a boolean; tas.config refuses anything else in one line.
        config["smoke"] = yaml.safe_load(str(workflow.config_settings.config["smoke"]))
        overrides.append(f"smoke={config['smoke']}")
    try:
        return load_config(PARAMS_FILE, overrides, experiments=_selected_experiments())
    except TasError as err:
        _stop(str(err))


def _index():
    """The job index, once every file named in params.yaml exists (tas.preflight). Missing and damaged
    outputs are rebuilt before Snakemake plans (`_rebuild_first`)."""
    try:
        sanity.check(CFG, PARAMS_FILE)
        index = matrix.index(CFG, CFG.selected, PARAMS_FILE)
        problems = preflight.missing_inputs(CFG, CFG.selected, check_data=False)
    except TasError as err:
        _stop(str(err))
    if problems:
        _stop(problems[0] + (f" (and {len(problems) - 1} more missing file(s))" if len(problems) > 1 else ""))
    return index


def _params_into_config():
    """What `configfile: "params.yaml"` did, read by tas (tas.yamlload): a syntax error or a key given twice
    stops with tas's line (file, line, key) instead of Snakemake's "Config file is not valid JSON or YAML".
    --config values win over the file's, as they did over a configfile."""
    try:
        params = load_params_file(PARAMS_FILE)
    except TasError as err:
        _stop(str(err))
    if not isinstance(params, dict):
        _stop(f"{PARAMS_FILE}: expected a mapping of sections at the top level")
    for key, value in params.items():
        config.setdefault(key, value)


_params_into_config()
CFG = _load()
INDEX = _index()
TARGETS = matrix.targets(CFG, CFG.selected)


# ------------------------------------------------------------------ what is on disk is what is done
#
# Snakemake plans from modification times and its own records (.snakemake/), DVC from content hashes. Four
# things keep them in agreement (docs/pipeline.md, "Mixing the two tools"):
# - Snakemake compares an input that is newer than a job's outputs by content (the checksum it recorded when
#   the job ran) up to CHECKSUM_MAX_BYTES, not the default 1 MB: a `dvc commit` or `dvc checkout` that
#   rewrites a file's mtime without changing its bytes reruns nothing.
# - Data arrays are `ancient` inputs: their meta.json records their checksum and is the input that changes
#   with them (a big dataset is never hashed per job); the preflight verifies the arrays against it.
# - Before Snakemake plans, missing outputs that it would skip (their dependents are complete) and damaged
#   outputs (truncated, rewritten) are rebuilt in a first Snakemake pass of their own; the plan that follows
#   reruns a dependent only if the rebuilt content differs from what it was made from.
# - A job Snakemake plans although DVC ran or restored it (`dvc status`: unchanged) is recorded as done in
#   Snakemake's records, as `snakemake --touch` would, without touching a file.

CHECKSUM_MAX_BYTES = 1 << 30
REBUILD_ENV = "TAS_REBUILD_PASS"
_DEFAULT_CHECKSUM_MAX = 1000000  # Snakemake's --max-checksum-file-size default


def _snakemake_args_without_targets():
    targets = set((workflow.dag_settings.targets if workflow.dag_settings is not None else None) or ())
    return [arg for arg in sys.argv[1:] if arg not in targets]


def _rebuild_first():
    """Rebuild missing/damaged outputs (tas.preflight.rebuild_plan) in a Snakemake pass of their own, with this
    run's options (cores, resources, profile, -n), before this run plans."""
    plan = preflight.rebuild_plan(INDEX.jobs, preflight.Verifier())
    if not plan:
        return
    dry = workflow.dryrun
    for line in plan.lines():
        print(f"tas: {line}", file=sys.stderr, flush=True)
    print(f"tas: {'would rebuild' if dry else 'rebuilding'} {'it' if len(plan.targets) == 1 else 'them'} first, in a "
          "Snakemake pass of its own; then what depends on it reruns only if the rebuilt content differs",
          file=sys.stderr, flush=True)
    if plan.missing and os.path.isfile("dvc.lock"):
        print("tas: (files that DVC tracks can be restored instead of rebuilt: `dvc pull`, or `dvc checkout --force "
              "FILE`, then run snakemake again)", file=sys.stderr, flush=True)
    cmd = [sys.executable, "-m", "snakemake", *_snakemake_args_without_targets(), *plan.targets]
    if plan.forced:
        cmd += ["--forcerun", *plan.forced]
    code = subprocess.call(cmd, env=dict(os.environ, **{REBUILD_ENV: "1"}))
    if code != 0:
        sys.exit(code)  # the pass's console already ends with its error
    if not dry:
        print("tas: rebuilt; planning the rest", file=sys.stderr, flush=True)


def _dvc_up_to_date(stages):
    """The stages (of `stages`) that `dvc status` reports unchanged: dvc.lock records exactly their current
    deps, params and outputs. Empty when this is no DVC project or DVC is not installed."""
    if not stages or not os.path.isdir(".dvc") or not os.path.isfile("dvc.lock"):
        return set()
    try:
        with open("dvc.lock") as fh:
            locked = set((yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}).get("stages") or {})
    except (OSError, yaml.YAMLError):
        return set()
    stages = [s for s in stages if s in locked]
    if not stages:
        return set()
    import importlib.util
    import shutil

    dvc = [sys.executable, "-m", "dvc"] if importlib.util.find_spec("dvc") else ([shutil.which("dvc")] if shutil.which("dvc") else None)
    if dvc is None:
        return set()
    # Two or more stages: one `dvc status` of the whole project. DVC parses dvc.yaml and dvc.lock again for
    # every stage named on its command line (~1.3 CPU-s each on the mini study's lock file): 14 named stages
    # took 18.6 CPU-s, the whole project 5.7, with the same answer for each stage (its own deps, params, outs).
    named = stages if len(stages) == 1 else []
    proc = subprocess.run([*dvc, "status", "--json", *named], capture_output=True, text=True,
                          env=dict(os.environ, DVC_NO_ANALYTICS="1"))
    if proc.returncode != 0:
        return set()
    try:
        changed = set(json.loads(proc.stdout or "{}"))
    except ValueError:
        return set()
    return set(stages) - changed


def _adopt_what_dvc_vouches_for(build_dag):
    """Wraps Workflow._build_dag. DVC runs jobs too (`dvc exp run`, `dvc repro`) and restores outputs (`dvc
    checkout`, `dvc exp apply`), without Snakemake's records knowing: Snakemake would plan those jobs again
    (params changed, or inputs newer with other checksums than it recorded) until a `snakemake --touch`. A job
    Snakemake plans although its outputs exist and `dvc status` reports its stage unchanged (dvc.lock records
    exactly its current params, code, inputs and outputs) is recorded as done in Snakemake's records (what
    --touch records, without touching any file), and the plan is made again."""

    def wrapped(*args, **kwargs):
        result = build_dag(*args, **kwargs)
        dag = workflow.dag
        candidates = {}
        for job in dag.needrun_jobs():
            reason = dag.reason(job)
            if job.rule.name not in matrix.RULES or reason.missing_output or reason.forced:
                continue
            try:
                tas_job = INDEX.find(job.rule.name, job.wildcards)
            except TasError:
                continue
            candidates[tas_job.dvc_name] = (job, tas_job.name)
        adopted = [candidates[stage] for stage in sorted(_dvc_up_to_date(sorted(candidates)))]
        if adopted:
            for job, _ in adopted:
                workflow.async_run(workflow.persistence.finished(job))
            workflow.persistence._clear_cache()  # the records just written, not the ones read before
            dag._reason.clear()
            workflow.async_run(dag.update_needrun())
            dag.update_jobids()
            names = sorted(name for _, name in adopted)
            print(f"tas: {len(names)} job(s) that DVC ran or restored are up to date in dvc.lock; recorded as done for "
                  f"Snakemake: {', '.join(names[:4])}{' ...' if len(names) > 4 else ''}", file=sys.stderr, flush=True)
        return result

    return wrapped


def _before_dag(prepare_dag):
    """Wraps Workflow._prepare_dag: every mode prepares its DAG through it, once the DAG settings and the
    executor are known and before Snakemake's records (.snakemake/: locks, checksum settings) are opened."""

    def wrapped(*args, **kwargs):
        settings = workflow.dag_settings
        if settings is not None and settings.max_checksum_file_size == _DEFAULT_CHECKSUM_MAX:
            settings.max_checksum_file_size = CHECKSUM_MAX_BYTES
        executing = workflow.executor_plugin is not None and not workflow.touch
        if executing and workflow.exec_mode == ExecMode.DEFAULT and not os.environ.get(REBUILD_ENV):
            _rebuild_first()
        return prepare_dag(*args, **kwargs)

    return wrapped


workflow._prepare_dag = _before_dag(workflow._prepare_dag)
workflow._build_dag = _adopt_what_dvc_vouches_for(workflow._build_dag)


def _failed_job_lines():
    """(line, is a tas error) per failed job: the last `error: ...` line of its log (the job's one-line TasError,
    which the console otherwise shows only as Snakemake's "check log file" block), else its log's last line."""
    failed = sorted(getattr(getattr(workflow, "scheduler", None), "failed", None) or (), key=str)
    lines = []
    for job in failed:
        for log in job.log:
            try:
                with open(log, "rb") as fh:
                    fh.seek(0, 2)
                    fh.seek(max(0, fh.tell() - 65536))
                    tail = fh.read().decode(errors="replace").splitlines()
            except OSError:
                continue
            errors = [line for line in tail if line.startswith("error: ")]
            if errors:
                lines.append((errors[-1][len("error: "):].strip(), True))
            else:
                last = next((line.strip() for line in reversed(tail) if line.strip()), "")
                lines.append((f"{job.rule.name} failed; its log {log} ends: {last}" if last else
                              f"{job.rule.name} failed; see its log {log}", False))
    return lines


onerror:
    # Snakemake ends a failed run with its own block ("Error in rule ...: check log file(s)"); the job's own line
    # is what says what went wrong and how to fix it: it ends the console (`Error: ...`, exit 2 for a tas error).
    _lines = _failed_job_lines()
    if _lines:
        for _line, _ in _lines:
            print(f"Error: {_line}", file=sys.stderr, flush=True)
        sys.exit(2 if all(_tas for _, _tas in _lines) else 1)


onstart:
    # Raw data is looked for only when jobs are about to run (a dry run plans without any data), and
    # before the first of them: otherwise the data job fails after hours of teachers and assistants.
    _missing = preflight.missing_inputs(CFG, CFG.selected)
    if _missing:
        _stop(_missing[0])


wildcard_constraints:
    **matrix.WILDCARD_CONSTRAINTS,


def job_of(rule_name):
    """wildcards -> the tas.matrix Job of this rule (raises for ids outside the selected experiments)."""

    def get(wildcards):
        try:
            return INDEX.find(rule_name, wildcards)
        except TasError as err:
            raise WorkflowError(str(err)) from None

    return get


_ARRAY_INPUTS = frozenset(p for job in INDEX.jobs if job.rule == "prepare_arrays" for p in job.outs if p.endswith(".npy"))


def inputs_of(rule_name):
    """The job's data inputs; data arrays `ancient` (their meta.json is the input that changes with them)."""
    find = job_of(rule_name)
    return lambda wildcards: [ancient(p) if p in _ARRAY_INPUTS else p for p in find(wildcards).inputs]


def command_of(rule_name):
    find = job_of(rule_name)
    return lambda wildcards: find(wildcards).shell


def hash_of(rule_name):
    """params.yaml keys + code the job reads: a change reruns it (Snakemake's params trigger), like DVC."""
    find = job_of(rule_name)
    return lambda wildcards: find(wildcards).params_hash


def gpus_of(rule_name):
    find = job_of(rule_name)
    return lambda wildcards: find(wildcards).gpus


def outputs(rule_name):
    return matrix.output_patterns(CFG, rule_name)


def constraints_of(rule_name):
    """The rule's own wildcard constraints (tas.matrix.rule_constraints): one rule per output path."""
    return matrix.rule_constraints(CFG, rule_name)


def log_of(rule_name):
    return matrix.log_path(rule_name, matrix.placeholders(rule_name), CFG.smoke)


def benchmark_of(rule_name):
    return matrix.benchmark_path(rule_name, matrix.placeholders(rule_name), CFG.smoke)


# Threads each torch job uses (runtime.threads); Snakemake lowers it when --cores is smaller and the
# job receives the actual value as --threads {threads}.
THREADS = int(CFG.runtime.threads)

# A training job's log ends with "done <folder>: top1 ... in ... s" (tas.engine.trainer); echoing it puts
# one line per finished training job on the console, which otherwise shows only job blocks. The job's
# exit status is the command's; the echo never fails a job.
ECHO_RESULT = "(grep ' done ' {log} | tail -n 1 || true)"

# Which ready job Snakemake starts first (DVC runs stages one at a time and has no such notion).
# Teachers gate every distillation, so they go first; evaluations are a few seconds each, so they go
# last, where they fill the cores that the long training jobs leave idle at the end of a study.
PRIORITY = {"train_teacher": 30, "load_teacher": 30, "prepare_run": 20, "distill": 10, "distill_student": 10}
