# distill: one job per (pair, method, seed). Inputs: the dataset, the teacher's weights (not for
# methods that need no teacher, e.g. scratch) and, for 'tas'-type methods, the pair's assistant.


rule distill:
    input:
        inputs_of("distill"),
    output:
        **outputs("distill"),
    log:
        log_of("distill"),
    benchmark:
        benchmark_of("distill")
    params:
        cmd=command_of("distill"),
        hash=hash_of("distill"),
    threads: THREADS
    resources:
        gpu=gpus_of("distill"),
    shell:
        "{params.cmd} --threads {threads} > {log} 2>&1"
