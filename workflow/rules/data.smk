# prepare-data: one job per dataset that a selected experiment uses (shared between experiments).
# Two rules because the outputs differ by source: arrays + meta.json (synthetic, cifar100) or an index
# in meta.json (imagefolder). Raw inputs (data/<id>/raw, an ImageFolder root) are looked up by the job
# itself (see docs/pipeline.md), so a dry run plans without any data present.


rule prepare_arrays:
    output:
        **outputs("prepare_arrays"),
    wildcard_constraints:
        **constraints_of("prepare_arrays"),
    log:
        log_of("prepare_arrays"),
    benchmark:
        benchmark_of("prepare_arrays")
    params:
        cmd=command_of("prepare_arrays"),
        hash=hash_of("prepare_arrays"),
    threads: 1
    shell:
        "{params.cmd} > {log} 2>&1"


rule prepare_index:
    output:
        **outputs("prepare_index"),
    wildcard_constraints:
        **constraints_of("prepare_index"),
    log:
        log_of("prepare_index"),
    benchmark:
        benchmark_of("prepare_index")
    params:
        cmd=command_of("prepare_index"),
        hash=hash_of("prepare_index"),
    threads: 1
    shell:
        "{params.cmd} > {log} 2>&1"
