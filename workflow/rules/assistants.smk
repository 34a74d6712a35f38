# build-assistant: one job per pair of an experiment that runs a 'tas'-type method.


rule build_assistant:
    output:
        **outputs("build_assistant"),
    log:
        log_of("build_assistant"),
    benchmark:
        benchmark_of("build_assistant")
    params:
        cmd=command_of("build_assistant"),
        hash=hash_of("build_assistant"),
    threads: THREADS
    priority: PRIORITY["build_assistant"]
    shell:
        "{params.cmd} --threads {threads} > {log} 2>&1"
