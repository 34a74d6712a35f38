# distill: one job per (pair, method, seed) of a method that needs a teacher; inputs: the dataset, the
# teacher's weights and, for 'tas'-type methods, the pair's assistant.
# distill_student: one job per (student, method, seed) of a teacher-free method (scratch): its result
# depends only on the student, so every pair with that student shares the run; input: the dataset.
# The method constraints keep each method in exactly one of the two rules.


rule distill:
    input:
        inputs_of("distill"),
    output:
        **outputs("distill"),
    wildcard_constraints:
        **constraints_of("distill"),
    log:
        log_of("distill"),
    benchmark:
        benchmark_of("distill")
    params:
        cmd=command_of("distill"),
        hash=hash_of("distill"),
    threads: THREADS
    priority: PRIORITY["distill"]
    resources:
        gpu=gpus_of("distill"),
    shell:
        "{params.cmd} --threads {threads} > {log} 2>&1 && " + ECHO_RESULT


rule distill_student:
    input:
        inputs_of("distill_student"),
    output:
        **outputs("distill_student"),
    wildcard_constraints:
        **constraints_of("distill_student"),
    log:
        log_of("distill_student"),
    benchmark:
        benchmark_of("distill_student")
    params:
        cmd=command_of("distill_student"),
        hash=hash_of("distill_student"),
    threads: THREADS
    priority: PRIORITY["distill_student"]
    resources:
        gpu=gpus_of("distill_student"),
    shell:
        "{params.cmd} --threads {threads} > {log} 2>&1 && " + ECHO_RESULT
