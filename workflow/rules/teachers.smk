# train-teacher: one job per teacher of each selected experiment that trains (or fine-tunes) it;
# load-teacher: one per teacher used as given (0 epochs: a released checkpoint or pretrained weights,
# downloaded once into data/checkpoints/ when a URL). Wildcard constraints on the teacher id keep the two
# rules apart (tas.matrix.loaded_teachers). Resume state (ckpt/) is not an
# output, so Snakemake never deletes it: a killed or failed job resumes from its last epoch.


rule train_teacher:
    input:
        inputs_of("train_teacher"),
    output:
        **outputs("train_teacher"),
    wildcard_constraints:
        **constraints_of("train_teacher"),
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
        "{params.cmd} --threads {threads} > {log} 2>&1 && " + ECHO_RESULT


rule load_teacher:
    input:
        inputs_of("load_teacher"),
    output:
        **outputs("load_teacher"),
    wildcard_constraints:
        **constraints_of("load_teacher"),
    log:
        log_of("load_teacher"),
    benchmark:
        benchmark_of("load_teacher")
    params:
        cmd=command_of("load_teacher"),
        hash=hash_of("load_teacher"),
    threads: THREADS
    priority: PRIORITY["load_teacher"]
    resources:
        gpu=gpus_of("load_teacher"),
    shell:
        "{params.cmd} --threads {threads} > {log} 2>&1 && " + ECHO_RESULT
