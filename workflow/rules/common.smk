# Shared by every rule file: the frozen Config, the job index from tas.matrix and small helpers.
#
# Only `experiment` may be overridden with --config (a name or a list); every other setting comes
# from params.yaml, which is also the file each job's command reads (--params params.yaml).

import sys

sys.path.insert(0, workflow.basedir)  # import the tas package of this checkout

from snakemake.exceptions import WorkflowError

from tas import matrix, preflight
from tas.config import load_config
from tas.errors import TasError

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
    extra = sorted(k for k in workflow.config_settings.config if k != "experiment")  # the --config keys
    if extra:
        _stop(f"--config may only set `experiment`, not {', '.join(extra)}: jobs read {PARAMS_FILE}; edit it (or `python -m tas <subcommand> --set key=value` for one job)")
    try:
        return load_config(PARAMS_FILE, experiments=_selected_experiments())
    except TasError as err:
        _stop(str(err))


def _index():
    """The job index, once every existing output it plans from is readable and every file named in
    params.yaml exists: a broken upstream file would otherwise look newer than its downstream results
    and Snakemake would delete those before the first job fails on it (tas.preflight)."""
    try:
        index = matrix.index(CFG, CFG.selected, PARAMS_FILE)
        preflight.check_outputs(index.jobs)
        problems = preflight.missing_inputs(CFG, CFG.selected, check_data=False)
    except TasError as err:
        _stop(str(err))
    if problems:
        _stop(problems[0] + (f" (and {len(problems) - 1} more missing file(s))" if len(problems) > 1 else ""))
    return index


CFG = _load()
INDEX = _index()
TARGETS = matrix.targets(CFG, CFG.selected)


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


def inputs_of(rule_name):
    find = job_of(rule_name)
    return lambda wildcards: find(wildcards).inputs


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
    return matrix.log_path(rule_name, matrix.placeholders(rule_name))


def benchmark_of(rule_name):
    return matrix.benchmark_path(rule_name, matrix.placeholders(rule_name))


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
PRIORITY = {"train_teacher": 30, "load_teacher": 30, "build_assistant": 20, "distill": 10, "distill_student": 10}
