"""The pipeline's jobs: one module per CLI subcommand (`tas.jobs.<subcommand module>.run`).

Each module imports only what its subcommand executes, so a job's code dependencies (tas.codedeps: the
import closure of its subcommand module, method, data source and table kind) are exactly the code it runs.
This package imports nothing itself: importing one subcommand's module must not import the others.
"""

# CLI subcommand -> module of this package that runs it.
SUBCOMMAND_MODULES = {
    "prepare-data": "prepare_data",
    "train-teacher": "train_teacher",
    "load-teacher": "train_teacher",  # a teacher used as given: the same job with 0 epochs
    "build-assistant": "build_assistant",
    "distill": "distill",
    "evaluate": "evaluate",
    "tables": "tables",
}
# A teacher trains as a student without a teacher would: through this method type's distiller.
TEACHER_METHOD_TYPE = "scratch"
