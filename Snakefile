# tas: cross-architecture knowledge distillation, as a Snakemake workflow.
#
#   snakemake --cores 8 --resources gpu=4                      # the experiment(s) params.yaml selects
#   snakemake --cores 8 --resources gpu=4 --config experiment=cifar100
#   snakemake ... --config 'experiment=[cifar100,ablation]'
#   snakemake --workflow-profile workflow/profiles/slurm      # on a Slurm cluster
#
# The DAG lives in tas/matrix.py; the rules in workflow/rules/ are thin views of it and run exactly
# the command that dvc.yaml runs for the same job (plus `--threads {threads}`). See docs/pipeline.md.

from snakemake.utils import min_version, validate

min_version("9.0")


# common.smk: reads params.yaml into `config` (what `configfile:` would do, with tas's error lines: file,
# line, key), refuses --config keys other than `experiment`, then loads it with tas.config (one-line errors
# for bad values or unknown ids) and expands the selected experiments (tas.matrix).
include: "workflow/rules/common.smk"


# Snakemake's own check against the JSON Schema that tas.config has just applied.
validate(config, "tas/params.schema.yaml")


include: "workflow/rules/data.smk"
include: "workflow/rules/teachers.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/distill.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/tables.smk"


report: "workflow/report/workflow.rst"


rule all:
    default_target: True
    input:
        TARGETS,
