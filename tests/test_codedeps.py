"""tas.codedeps: each job's code list is the import closure of what it runs, and planning imports no torch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tas import codedeps, matrix
from tas.config import load_config
from tas.distillers import registry
from tas.subcommands import SUBCOMMAND_MODULES

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SNAKEMAKE = shutil.which("snakemake", path=str(BIN))
HEAVY = ("torch", "timm", "numpy")


def _python(code: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_a_method_file_is_code_of_its_runs_only():
    tas_code = codedeps.job_code("distill", "tas")
    kd_code = codedeps.job_code("distill", "kd")
    assert "tas/distillers/tas.py" in tas_code and "tas/distillers/tas.py" not in kd_code
    assert "tas/models/assistant.py" in tas_code and "tas/models/assistant.py" not in kd_code
    for subcommand in ("prepare-data", "train-teacher", "evaluate"):
        assert not any(f.startswith("tas/distillers/") and f.endswith(("tas.py", "kd.py"))
                       for f in codedeps.job_code(subcommand))


def test_losses_and_the_report_are_code_of_the_jobs_that_use_them():
    assert "tas/losses.py" in codedeps.job_code("distill", "kd")
    assert "tas/losses.py" not in codedeps.job_code("distill", "scratch")
    assert "tas/losses.py" not in codedeps.job_code("train-teacher", matrix.TEACHER_METHOD_TYPE)
    report = {f for f in codedeps.job_code("tables") if f.startswith("tas/report/")}
    assert "tas/report/paper_values.yaml" in report and "tas/report/tables.py" in report
    for subcommand in ("prepare-data", "train-teacher", "prepare-run", "distill", "evaluate"):
        assert not any(f.startswith("tas/report/") for f in codedeps.job_code(subcommand, "tas"))


def test_a_dataset_source_file_is_code_of_its_own_datas_jobs_only():
    synthetic = set(codedeps.job_code("distill", "kd", "synthetic"))
    cifar = set(codedeps.job_code("distill", "kd", "cifar100"))
    assert "tas/data/sources/synthetic.py" in synthetic and "tas/data/synthetic.py" in synthetic
    assert not {"tas/data/sources/synthetic.py", "tas/data/synthetic.py"} & cifar
    assert "tas/data/sources/cifar100.py" in cifar and "tas/data/cifar.py" in cifar
    assert not {"tas/data/sources/cifar100.py", "tas/data/cifar.py"} & synthetic
    prepare = set(codedeps.job_code("prepare-data", None, "imagenette"))
    # imagenette is an image folder: the folder source's fingerprint is its code too
    assert {"tas/data/sources/imagenette.py", "tas/data/imagenette.py", "tas/data/sources/imagefolder.py"} <= prepare
    for subcommand in ("prepare-run", "tables"):  # jobs that read no data hold no source
        assert not any(f.startswith("tas/data/sources/") and not f.endswith("__init__.py")
                       for f in codedeps.job_code(subcommand))


def test_a_table_kind_file_is_code_of_its_tables_jobs_only():
    main, ablation = (set(codedeps.job_code("tables", table_kind="main")),
                      set(codedeps.job_code("tables", table_kind="ablation")))
    assert "tas/report/kinds/main.py" in main and "tas/report/kinds/main.py" not in ablation
    assert "tas/report/kinds/ablation.py" in ablation and "tas/report/kinds/ablation.py" not in main
    assert not any(f.startswith("tas/report/") for f in codedeps.job_code("distill", "kd", "synthetic"))


def test_the_plan_gives_each_job_its_own_source_and_kind():
    cfg = load_config(ROOT / "params.yaml")
    for job in matrix.expand(cfg, list(cfg.experiments)):
        sources = {f for f in job.code if f.startswith("tas/data/sources/") and not f.endswith("__init__.py")}
        kinds = {f for f in job.code if f.startswith("tas/report/kinds/") and not f.endswith("__init__.py")}
        if job.experiment is not None:
            exp = cfg.experiment(job.experiment)
            own_source, own_kind = cfg.protocol_of(exp).dataset.source, exp.table_kind
        else:  # a prepare-data job: its dataset
            own_source, own_kind = cfg.datasets[job.wildcards["dataset"]].source, None
        # prepare-run reads its dataset's class count (the record's head size)
        if job.subcommand in ("prepare-data", "train-teacher", "load-teacher", "prepare-run", "distill", "evaluate"):
            assert f"tas/data/sources/{own_source}.py" in sources, job.name
            sources.discard("tas/data/sources/imagefolder.py" if own_source == "imagenette" else "")
            assert sources == {f"tas/data/sources/{own_source}.py"}, job.name
        else:
            assert not sources, job.name
        assert kinds == ({f"tas/report/kinds/{own_kind}.py"} if job.subcommand == "tables" else set()), job.name


def test_every_job_reads_the_schema_it_validates_against():
    for subcommand in SUBCOMMAND_MODULES:
        assert "tas/params.schema.yaml" in codedeps.job_code(subcommand)


def test_every_data_file_of_the_package_is_declared():
    data = {p.relative_to(ROOT).as_posix() for p in (ROOT / "tas").rglob("*") if p.suffix in (".yaml", ".yml", ".json")}
    declared = {f for files in codedeps.DATA_FILES.values() for f in files}
    assert data <= declared, data - declared


# A fresh interpreter per job, without paying torch's and timm's import (seconds of CPU) each time: one process
# imports the third-party libraries the jobs use (after `import tas`, as every job starts, for its torchvision
# guard), then forks a child per job that imports that job's modules and prints which tas modules it then holds.
# What the parent preloads holds no tas module but those `import tas` brings, which every closure has (checked
# below), so a child lists exactly the tas modules the job imports.
_FORK_IMPORTER = """
import importlib, json, os, sys
import tas
import numpy, PIL.Image, torch, torchvision, timm, timm.data, timm.loss, timm.optim, timm.scheduler, timm.utils
preloaded = sorted(m for m in sys.modules if m == 'tas' or m.startswith('tas.'))
print(json.dumps(preloaded), flush=True)
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        try:
            for m in json.loads(line):
                importlib.import_module(m)
            out = sorted(m for m in sys.modules if m == 'tas' or m.startswith('tas.'))
        except BaseException as err:
            out = {'error': repr(err)}
        sys.stdout.write(json.dumps(out) + '\\n')
        sys.stdout.flush()
        os._exit(0)
    os.waitpid(pid, 0)
"""


@pytest.fixture(scope="module")
def fork_importer():
    """`imports(modules)`: the tas modules a fresh process holds after importing `modules` (see _FORK_IMPORTER)."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.Popen([sys.executable, "-c", _FORK_IMPORTER], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    preloaded = set(json.loads(proc.stdout.readline()))

    def imports(modules: list[str]) -> tuple[set[str], set[str]]:
        proc.stdin.write(json.dumps(modules) + "\n")
        proc.stdin.flush()
        out = json.loads(proc.stdout.readline())
        assert not isinstance(out, dict), out["error"]
        return set(out), preloaded

    yield imports
    proc.stdin.close()
    proc.wait(timeout=60)


@pytest.mark.parametrize("subcommand,method,source,kind", [
    ("prepare-data", None, "synthetic", None), ("prepare-data", None, "cifar100", None),
    ("prepare-data", None, "imagenette", None), ("train-teacher", "scratch", "imagefolder", None),
    ("prepare-run", "tas", None, None), ("distill", "kd", "cifar100", None), ("distill", "tas", "synthetic", None),
    ("distill", "ofa", "synthetic", None), ("evaluate", None, "synthetic", None), ("tables", None, None, "main"),
    ("tables", None, None, "ablation")])
def test_the_closure_holds_every_tas_module_the_job_really_imports(subcommand, method, source, kind, fork_importer):
    """Run the job's imports for real (the CLI, its subcommand's module, its method, dataset source and table kind)
    and compare with the closure."""
    roots = codedeps.subcommand_roots(subcommand, method, source, kind)
    modules = [m for m in roots if m != "tas.__main__"]  # __main__ would run the CLI
    imported, preloaded = fork_importer(modules)
    closure = codedeps.closure(modules, module_level_only=("tas.cli",))
    assert preloaded <= closure, preloaded - closure  # what every job imports first: no module of another job
    assert imported <= closure, imported - closure


def test_method_declarations_equal_the_classes():
    for name in registry.method_types():
        declared = registry.declaration(name)
        cls = registry.distiller_class(name)
        assert declared.needs_teacher == cls.needs_teacher, name
        assert declared.defaults == cls.defaults, name
        assert declared.module == cls.__module__, name
        assert declared.rules == cls.rules, name
        assert (declared.built_first, declared.auxiliaries) == (cls.built_first, tuple(cls.auxiliaries)), name


def test_the_schemas_enums_are_the_registries():
    """One list per kind of plugin. Model families: the schema's enum equals the code's. Method types,
    dataset sources and table kinds have none, so that a plugin is one file: their registries (the
    folders) are the list, which tas.config checks (tests/test_plugin_sources_kinds.py: one line)."""
    import yaml

    from tas.config import FAMILIES
    from tas.data import sources
    from tas.report import kinds

    schema = yaml.safe_load((ROOT / "tas/params.schema.yaml").read_text())["properties"]
    item = lambda section: schema[section]["additionalProperties"]["properties"]  # noqa: E731
    assert tuple(item("models")["family"]["enum"]) == FAMILIES
    assert "enum" not in item("methods")["type"]
    table = item("experiments")["table"]["properties"]
    for name, declared, registered in (("source", item("datasets")["source"], sources.names()),
                                       ("kind", table["kind"], kinds.names())):
        assert "enum" not in declared, name
        # the description names the shipped ones for a reader of the schema: every one of them
        assert all(n in declared["description"] for n in registered), name


@pytest.mark.parametrize("argv",
                         [["check"], ["check", "--experiment", "cifar100"], ["dvc-yaml", "--output", "{tmp}/dvc.yaml"]])
def test_planning_commands_import_no_torch(argv, tmp_path):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code = ("import contextlib, io, sys\n"
            "from tas.cli import main\n"
            f"with contextlib.redirect_stdout(io.StringIO()): rc = main({argv!r})\n"
            f"print(rc, [m for m in {HEAVY!r} if m in sys.modules])")
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[-2] == "0 []", proc.stdout


def test_expanding_every_experiment_imports_no_torch():
    code = ("import sys\nfrom tas import matrix, dvcyaml\nfrom tas.config import load_config\n"
            "cfg = load_config('params.yaml')\n"
            "matrix.expand(cfg, list(cfg.experiments))\n"
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.skipif(SNAKEMAKE is None, reason="snakemake is not installed")
def test_snakemakes_parse_of_the_snakefile_imports_no_torch():
    env = dict(os.environ, PYTHONPROFILEIMPORTTIME="1")
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    proc = subprocess.run([SNAKEMAKE, "-n", "--cores", "1", "--config", "experiment=cifar100"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    # Snakemake itself imports pandas and with it numpy; torch and timm would come only from tas.
    assert not imported & {"torch", "timm"}, imported & {"torch", "timm"}
    assert "tas.matrix" in imported  # the parse did load the pipeline


def test_a_job_hash_changes_with_its_code_only(tmp_path):
    cfg = load_config(ROOT / "params.yaml", experiments=["mini"])
    jobs = {job.name: job for job in matrix.expand(cfg)}
    tas_run = next(j for n, j in jobs.items() if n.startswith("distill@") and "/tas/" in n)
    kd_run = next(j for n, j in jobs.items() if n.startswith("distill@") and "/kd/" in n)
    assert tas_run.code_hash != kd_run.code_hash
    assert "tas/distillers/tas.py" in tas_run.code and "tas/distillers/tas.py" not in kd_run.code
