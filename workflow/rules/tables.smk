# tables: one job per experiment; its tables/ and plots/ directories go into `snakemake --report`.

_TABLES = outputs("tables")


rule tables:
    input:
        inputs_of("tables"),
    output:
        tables=report(
            directory(_TABLES["tables"]),
            patterns=["{name}.csv"],
            caption="../report/tables.rst",
            category="Tables",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "table": "{name}"},
        ),
        plots=report(
            directory(_TABLES["plots"]),
            patterns=["{name}.png"],
            caption="../report/plots.rst",
            category="Plots",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "plot": "{name}"},
        ),
    log:
        log_of("tables"),
    benchmark:
        benchmark_of("tables")
    params:
        cmd=command_of("tables"),
        hash=hash_of("tables"),
    threads: 1
    shell:
        "{params.cmd} > {log} 2>&1"
