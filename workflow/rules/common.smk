# Shared by every rule file: the frozen Config, the job index from tas.matrix and small helpers.
#
# Only `experiment` may be overridden with --config (a name or a list); every other setting comes
# from params.yaml, which is also the file each job's command reads (--params params.yaml).

import sys

sys.path.insert(0, workflow.basedir)  # import the tas package of this checkout

from snakemake.exceptions import WorkflowError

from tas import matrix
from tas.config import load_config
from tas.errors import TasError

PARAMS_FILE = matrix.PARAMS_FILE


def _selected_experiments():
    chosen = config.get("experiment")
    return list(chosen) if isinstance(chosen, (list, tuple)) else [chosen]


def _load():
    if workflow.overwrite_configfiles:
        raise WorkflowError(f"--configfile is not supported: jobs read {PARAMS_FILE}; edit it, or select experiments with --config experiment=<id>")
    extra = sorted(k for k in workflow.config_settings.config if k != "experiment")  # the --config keys
    if extra:
        raise WorkflowError(f"--config may only set `experiment`, not {', '.join(extra)}: jobs read {PARAMS_FILE}; edit it (or `python -m tas <stage> --set key=value` for one job)")
    try:
        return load_config(PARAMS_FILE, experiments=_selected_experiments())
    except TasError as err:
        raise WorkflowError(str(err)) from None


CFG = _load()
INDEX = matrix.index(CFG, CFG.selected, PARAMS_FILE)
TARGETS = matrix.targets(CFG, CFG.selected)


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

# Which ready job Snakemake starts first (DVC runs stages one at a time and has no such notion).
# Teachers gate every distillation, so they go first; evaluations are a few seconds each, so they go
# last, where they fill the cores that the long training jobs leave idle at the end of a study.
PRIORITY = {"train_teacher": 30, "load_teacher": 30, "build_assistant": 20, "distill": 10, "distill_student": 10}
