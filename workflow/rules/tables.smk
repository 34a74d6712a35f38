# tables: one job per experiment; its tables/ and plots/ directories go into `snakemake --report`.
# Each table is listed twice there: the formatted .html (shown in the report) and the .csv of its numbers
# (a download); provenance.csv is the run-by-run record behind the cells.

_TABLES = outputs("tables")


rule tables:
    input:
        inputs_of("tables"),
    output:
        tables=report(
            directory(_TABLES["tables"]),
            patterns=["{name}.{format,(html|csv)}"],
            caption="../report/tables.rst",
            category="Tables",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "table": "{name}", "format": "{format}"},
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
