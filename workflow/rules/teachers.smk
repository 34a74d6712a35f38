# train-teacher: one job per teacher of each selected experiment. Resume state (ckpt/) is not an
# output, so Snakemake never deletes it: a killed or failed job resumes from its last epoch.


rule train_teacher:
    input:
        inputs_of("train_teacher"),
    output:
        **outputs("train_teacher"),
    log:
        log_of("train_teacher"),
    benchmark:
        benchmark_of("train_teacher")
    params:
        cmd=command_of("train_teacher"),
        hash=hash_of("train_teacher"),
    threads: THREADS
    priority: PRIORITY["train_teacher"]
    resources:
        gpu=gpus_of("train_teacher"),
    shell:
        "{params.cmd} --threads {threads} > {log} 2>&1"
