"""`python -m tas <subcommand>`: the one command per pipeline job that Snakemake and DVC both run."""

from __future__ import annotations

import argparse
import atexit
import importlib
import json
import os
import subprocess
import sys
import time
from contextlib import nullcontext
from typing import Sequence

# Module level: the modules every job runs through (tas.codedeps follows this file's top-level imports
# only; the subcommand's own module is imported by name in `_job`). All light: none imports torch.
from tas.config import load_config
from tas.engine.gpu_slots import acquire_gpus
from tas.errors import TasError
from tas.gcpause import imports_without_gc
from tas.subcommands import SUBCOMMAND_MODULES
from tas.runs import experiment_runs, resolve
from tas.sanity import check as check_sanity, check_threads

SUBCOMMANDS = {
    "check": "validate params.yaml and print the resolved experiment(s)",
    "describe": "cost of every method of an experiment on one pair, without training: extra parameters, "
                "training GFLOPs, TAS's assistant",
    "prepare-data": "verify/convert a dataset into data/<dataset>/ (synthetic data is generated)",
    "train-teacher": "train or fine-tune one teacher of an experiment",
    "load-teacher": "load a teacher used as given (0 epochs: its checkpoint, downloaded once, or pretrained weights)",
    "prepare-run": "build what a method needs before its runs, for one pair (TAS: its assistant), and record it",
    "distill": "train a pair's student with a method and seed (a teacher-free method: once per student)",
    "evaluate": "top-1/top-5, params, FLOPs and images/s of a teacher or a trained student",
    "tables": "write an experiment's tables (CSV, Markdown, LaTeX, HTML) and plots from its evaluations",
    "dvc-yaml": "regenerate dvc.yaml from params.yaml (the same jobs as the Snakefile)",
    "bench": "measure training-step and data-path throughput; write JSON under results/bench/",
}


TEACHER_FREE_NOTE = (
    "A method that needs no teacher (scratch) depends only on the student, so it runs once per student "
    "(results/<experiment>/runs/<student>/<method>/seed<k>/): name it with --student S, or with --pair T-S, "
    "which means the same run. A method that needs a teacher takes --pair."
)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override a params.yaml value (YAML-typed), repeatable: --set recipes.mini.epochs=2")


EXPERIMENT_HELP = "experiment id from params.yaml `experiments`"
SEED_HELP = "seed (default: the experiment's first)"


def _threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: runtime.threads)")


def _sentence(text: str) -> str:
    """The help line as a description; str.capitalize() would lower-case the acronyms (FLOPs, JSON, TAS)."""
    return text[:1].upper() + text[1:] + "."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tas",
                                     description="Cross-architecture knowledge distillation with a hybrid assistant "
                                                 "(TAS) and its baselines, as a reproducible pipeline.")
    sub = parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
    parsers = {name: sub.add_parser(name, help=text, description=_sentence(text)) for name, text in SUBCOMMANDS.items()}
    for p in parsers.values():
        _common(p)

    parsers["check"].add_argument("--experiment", action="append",
                                  help="experiment to resolve (default: params.yaml's `experiment`)")
    p = parsers["describe"]
    p.add_argument("--experiment", required=True, help=EXPERIMENT_HELP)
    p.add_argument("--pair", required=True, help="pair id <teacher>-<student>")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parsers["prepare-data"].add_argument("--dataset", required=True, help="dataset id from params.yaml `datasets`")
    parsers["prepare-data"].add_argument("--download", action="store_true",
                                         help="download the official archive (MD5-checked) when absent")

    for name in ("train-teacher", "load-teacher"):
        p = parsers[name]
        p.add_argument("--experiment", required=True, help=EXPERIMENT_HELP)
        p.add_argument("--teacher", required=True, help="teacher model id of the experiment")
        _threads(p)

    p = parsers["prepare-run"]
    p.add_argument("--experiment", required=True, help=EXPERIMENT_HELP)
    p.add_argument("--pair", required=True, help="pair id <teacher>-<student>")
    p.add_argument("--method", required=True, help="method id (one whose type declares `built_first`, e.g. `tas`)")
    _threads(p)

    p = parsers["distill"]
    p.epilog = TEACHER_FREE_NOTE
    p.add_argument("--experiment", required=True, help=EXPERIMENT_HELP)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--pair", help="pair id <teacher>-<student>")
    target.add_argument("--student", help="student model id, for a method that needs no teacher (scratch)")
    p.add_argument("--method", required=True, help="method id from params.yaml `methods`")
    p.add_argument("--seed", type=int, default=None, help=SEED_HELP)
    _threads(p)

    p = parsers["evaluate"]
    p.epilog = TEACHER_FREE_NOTE
    p.add_argument("--experiment", required=True, help=EXPERIMENT_HELP)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--teacher", help="evaluate this teacher")
    target.add_argument("--pair", help="evaluate the student of this pair (with --method)")
    target.add_argument("--student", help="evaluate this student's run of a teacher-free method (with --method)")
    p.add_argument("--method", help="method id from params.yaml `methods` (with --pair or --student)")
    p.add_argument("--seed", type=int, default=None, help=SEED_HELP)
    _threads(p)

    parsers["tables"].add_argument("--experiment", required=True, help=EXPERIMENT_HELP)
    parsers["dvc-yaml"].add_argument("--output", default="dvc.yaml", help="where to write (default: dvc.yaml)")

    p = parsers["bench"]
    p.add_argument("--experiment", default=None, help="experiment whose protocol and first pair to measure")
    p.add_argument("--pair", default=None, help="pair id <teacher>-<student> (default: the experiment's first)")
    p.add_argument("--what", choices=["step", "data", "pipeline", "all"], default="step",
                   help="what to measure: the training step, the data path, the pipeline, or all (default: step)")
    p.add_argument("--methods", default="scratch,kd,dkd,ofa,rsd,tas",
                   help="comma-separated method ids of the step benchmark")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default: the student recipe's)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per window")
    p.add_argument("--windows", type=int, default=3, help="timed windows (images/s is their median)")
    p.add_argument("--output-dir", default="results/bench", help="where the JSON results go (default: results/bench)")
    _threads(p)
    return parser


TRAINING_SUBCOMMANDS = ("train-teacher", "load-teacher", "distill")


def _under_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _relaunch_with_torchrun(gpus: int, argv: Sequence[str]) -> int:
    """Run this same command as `gpus` DDP processes on the slots this process holds."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
           "-m", "tas", *argv]
    return subprocess.call(cmd)


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:

    experiments = getattr(args, "experiment", None)
    if isinstance(experiments, str):
        experiments = [experiments]
    check_threads(getattr(args, "threads", None))
    cfg = load_config(args.params, args.overrides, experiments=experiments if args.subcommand != "bench" else None)
    if args.subcommand not in ("bench", "dvc-yaml"):
        check_sanity(cfg, args.params)  # settings the schema passes but that would give nonsense (tas.sanity)

    subcommand = args.subcommand
    if subcommand == "check":
        print(json.dumps(_resolved(cfg), indent=2))
        return 0
    if subcommand == "describe":
        from tas.describe import describe, render

        result = describe(cfg, args.experiment, args.pair)
        print(json.dumps(result, indent=2) if args.json else render(result))
        return 0
    if subcommand == "prepare-data":
        print(_job(subcommand).prepare_data(cfg, args.dataset, download=args.download))
        return 0
    if subcommand == "dvc-yaml":
        from tas.dvcyaml import write_dvc_yaml

        write_dvc_yaml(cfg, args.output, params_file=args.params)
        print(args.output)
        return 0
    if subcommand == "tables":
        for path in _job(subcommand).tables(cfg, args.experiment):
            print(path)
        return 0
    if subcommand == "prepare-run":
        record = _job(subcommand).prepare_run(cfg, args.experiment, args.pair, args.method, args.threads)
        print(json.dumps({k: v for k, v in record.items() if not isinstance(v, dict)}, indent=2))
        return 0
    if subcommand == "bench":
        from tas.bench import run_bench

        for path in run_bench(cfg, args):
            print(path)
        return 0
    seed = getattr(args, "seed", None)
    exp = cfg.experiment(args.experiment)
    seed = exp.seeds[0] if seed is None else seed
    # Resolved before taking GPU slots, so bad ids stop before anything is written.
    names_a_run = subcommand == "distill" or (subcommand == "evaluate" and not args.teacher)
    run_ref = _named_run(cfg, args, seed) if names_a_run else None
    gpus = exp.gpus_per_job if subcommand in TRAINING_SUBCOMMANDS else 1
    # Slots first: nothing may touch CUDA before CUDA_VISIBLE_DEVICES is set. Under torchrun the
    # launching process already holds them for all ranks.
    slots = nullcontext() if _under_torchrun() else acquire_gpus(gpus)
    with slots:
        if gpus > 1 and not _under_torchrun():
            return _relaunch_with_torchrun(gpus, argv)
        if subcommand in ("train-teacher", "load-teacher"):
            result = _job(subcommand).train_teacher(cfg, args.experiment, args.teacher, args.threads,
                                                    load_only=subcommand == "load-teacher")
        elif subcommand == "distill":
            result = _job(subcommand).distill(cfg, run_ref, args.threads)
        elif args.teacher:
            result = _job(subcommand).evaluate_teacher(cfg, args.experiment, args.teacher, args.threads)
        else:
            result = _job(subcommand).evaluate_run(cfg, run_ref, args.threads)
    print(json.dumps({k: v for k, v in result.items() if k != "provenance"}, indent=2, default=str))
    return 0


def _job(subcommand: str):
    """The module that runs `subcommand`, imported by name so that a job loads (and depends on) only its own
    subcommand's code (tas.codedeps follows this file's top-level imports only)."""
    before = time.process_time()
    with imports_without_gc():  # torch and timm (tas.gcpause)
        module = importlib.import_module(f"tas.jobs.{SUBCOMMAND_MODULES[subcommand]}")
    _CPU["job_import_s"] += time.process_time() - before
    return module


# Where a command's CPU goes, for benchmarks/daily_loop.py: with TAS_CPU_LOG=FILE set, each command appends one
# JSON line (its arguments; CPU seconds of the interpreter's start and tas.cli's import, of the subcommand
# module's import, and in all).
CPU_LOG_ENV = "TAS_CPU_LOG"
_CPU = {"job_import_s": 0.0}


def _log_cpu(argv: Sequence[str], start_s: float) -> None:
    path = os.environ.get(CPU_LOG_ENV)
    if not path:
        return
    line = {"argv": list(argv), "start_s": round(start_s, 3), "job_import_s": round(_CPU["job_import_s"], 3),
            "total_s": round(time.process_time(), 3)}
    with open(path, "a") as fh:  # one short line per process: appends of concurrent jobs do not interleave
        fh.write(json.dumps(line) + "\n")


def _named_run(cfg, args: argparse.Namespace, seed: int):
    """The run that --pair or --student with --method names (`--pair T-S` of a teacher-free method
    resolves to the student's shared run)."""
    if not args.method:
        raise TasError(f"{args.subcommand} --pair/--student needs --method (and optionally --seed)")
    return resolve(cfg, args.experiment, args.method, seed, pair=args.pair, student=args.student)


def _resolved(cfg) -> dict:
    out = {}
    for experiment_id in cfg.selected:
        exp = cfg.experiment(experiment_id)
        protocol = cfg.protocol_of(exp)
        out[experiment_id] = {
            "protocol": protocol.id, "dataset": protocol.dataset.id, "image_size": protocol.augment.image_size,
            "seeds": list(exp.seeds),
            "teachers": {t: {"model": cfg.model(t).timm, "recipe": spec.recipe, "checkpoint": spec.checkpoint}
                         for t, spec in exp.teachers.items()},
            "pairs": [p.id for p in exp.pairs],
            "methods": {m: cfg.method(m).type for m in exp.methods},
            "student_recipes": dict(exp.student_recipes),
            "runs": len(experiment_runs(cfg, exp)),  # teacher-free runs once per student
        }
    return out


def console() -> None:
    """`python -m tas` and the `tas` script: `main`, then exit without tearing the interpreter down.

    Freeing every module of torch, timm and tas at exit costs 0.8-1.6 CPU-seconds per process (measured on
    this project's 2-core CI machine), paid by each of a study's jobs for nothing. Exit hooks still run
    (logging flushes and closes its files, multiprocessing ends loader workers, weakref finalizers), every
    output was written and closed by then, and the standard streams are flushed; only the teardown is skipped.
    """
    code = main()
    atexit._run_exitfuncs()  # what interpreter exit would run first; the os._exit below skips it
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that went away (`| head`), or a closed stream
            pass
    os._exit(code or 0)


def main(argv: Sequence[str] | None = None) -> int:
    start_s = time.process_time()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        return run(args, argv)
    except TasError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
    finally:
        _log_cpu(argv, start_s)
