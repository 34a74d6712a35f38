"""The pipeline's subcommands and the modules of tas/jobs/ that run them: constants only, at the bottom of the
package, so that the CLI, the plan (tas.matrix) and the code closure (tas.codedeps) name them without
importing a job."""

# CLI subcommand -> module of tas/jobs/ that runs it.
SUBCOMMAND_MODULES = {
    "prepare-data": "prepare_data",
    "train-teacher": "train_teacher",
    "load-teacher": "train_teacher",  # a teacher used as given: the same job with 0 epochs
    "prepare-run": "prepare_run",
    "distill": "distill",
    "evaluate": "evaluate",
    "tables": "tables",
}
# A teacher trains as a student without a teacher would: through this method type's distiller.
TEACHER_METHOD_TYPE = "scratch"

__all__ = ["SUBCOMMAND_MODULES", "TEACHER_METHOD_TYPE"]
