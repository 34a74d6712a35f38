# evaluate: one job per teacher and one per run (evaluate_run for a pair's run, evaluate_student_run
# for a teacher-free run shared by a student's pairs); each writes one JSON under results/<exp>/eval/.


rule evaluate_teacher:
    input:
        inputs_of("evaluate_teacher"),
    output:
        **outputs("evaluate_teacher"),
    log:
        log_of("evaluate_teacher"),
    benchmark:
        benchmark_of("evaluate_teacher")
    params:
        cmd=command_of("evaluate_teacher"),
        hash=hash_of("evaluate_teacher"),
    threads: THREADS
    resources:
        gpu=gpus_of("evaluate_teacher"),
    shell:
        "{params.cmd} --threads {threads} > {log} 2>&1"


rule evaluate_run:
    input:
        inputs_of("evaluate_run"),
    output:
        **outputs("evaluate_run"),
    wildcard_constraints:
        **constraints_of("evaluate_run"),
    log:
        log_of("evaluate_run"),
    benchmark:
        benchmark_of("evaluate_run")
    params:
        cmd=command_of("evaluate_run"),
        hash=hash_of("evaluate_run"),
    threads: THREADS
    resources:
        gpu=gpus_of("evaluate_run"),
    shell:
        "{params.cmd} --threads {threads} > {log} 2>&1"


rule evaluate_student_run:
    input:
        inputs_of("evaluate_student_run"),
    output:
        **outputs("evaluate_student_run"),
    wildcard_constraints:
        **constraints_of("evaluate_student_run"),
    log:
        log_of("evaluate_student_run"),
    benchmark:
        benchmark_of("evaluate_student_run")
    params:
        cmd=command_of("evaluate_student_run"),
        hash=hash_of("evaluate_student_run"),
    threads: THREADS
    resources:
        gpu=gpus_of("evaluate_student_run"),
    shell:
        "{params.cmd} --threads {threads} > {log} 2>&1"
