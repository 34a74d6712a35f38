"""The pipeline's jobs: one module per CLI subcommand (`tas.jobs.<subcommand module>.run`; the names are in
tas.subcommands).

Each module imports only what its subcommand executes, so a job's code dependencies (tas.codedeps: the
import closure of its subcommand module, method, data source and table kind) are exactly the code it runs.
This package imports nothing itself: importing one subcommand's module must not import the others.
"""
