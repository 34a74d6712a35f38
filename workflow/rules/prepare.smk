# prepare-run: one job per (pair, method) of a method that declares something `built_first` (TAS: its
# hybrid assistant), before that method's runs of the pair.


rule prepare_run:
    output:
        **outputs("prepare_run"),
    log:
        log_of("prepare_run"),
    benchmark:
        benchmark_of("prepare_run")
    params:
        cmd=command_of("prepare_run"),
        hash=hash_of("prepare_run"),
    threads: THREADS
    priority: PRIORITY["prepare_run"]
    wildcard_constraints:
        **constraints_of("prepare_run"),
    shell:
        "{params.cmd} --threads {threads} > {log} 2>&1"
