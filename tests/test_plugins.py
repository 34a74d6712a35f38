"""A method is one file: the example in docs/extending.md, added inside tas and from a separate installed package.

Both run end to end through the real CLI on a one-epoch study in a temporary copy of the project; the
entry-point package is a real dist-info folder on PYTHONPATH, found by importlib.metadata.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SNAKEMAKE = shutil.which("snakemake", path=str(BIN))

pytestmark = pytest.mark.slow


def readme_example(name: str = "example-method") -> str:
    text = (ROOT / "docs" / "extending.md").read_text()
    marker = text.index(f"<!-- {name}: tests/test_plugins.py runs this code -->")
    return re.search(r"```python\n(.*?)```", text[marker:], re.S).group(1)


def make_project(root: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "tas", root / "tas", ignore=ignore)
    shutil.copytree(ROOT / "workflow", root / "workflow", ignore=ignore)
    shutil.copy2(ROOT / "Snakefile", root / "Snakefile")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["datasets"]["synthetic"].update(train_size=96, test_size=48)
    for recipe in ("mini", "mini_teacher"):
        params["recipes"][recipe].update(epochs=1, global_batch=32)
    params["methods"]["logit_mse"] = {"type": "logit_mse", "name": "Logit MSE", "weight": 0.5}
    params["experiments"] = {"mini": {**params["experiments"]["mini"], "seeds": [0],
                                      "teachers": {"tiny_cnn": {"recipe": "mini_teacher"}},
                                      "pairs": [{"teacher": "tiny_cnn", "student": "tiny_vit"}],
                                      "methods": ["logit_mse"]}}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run(root: Path, *args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", **(env_extra or {}))
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return subprocess.run(list(args), cwd=root, env=env, capture_output=True, text=True, timeout=600)


def imported_tas_files(stderr: str) -> set[str]:
    """tas modules a process imported (PYTHONPROFILEIMPORTTIME's lines), as repo-relative files."""
    from tas import plugins

    names = {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}
    files = {plugins.module_file(n) for n in names if n == "tas" or n.startswith("tas.")}
    return {f.relative_to(plugins.ROOT).as_posix() for f in files if f is not None}


def train_with_the_method(root: Path, env_extra: dict | None = None) -> tuple[dict, dict]:
    """Runs the study's jobs; returns the run's metrics and, per job, the tas files it really imported."""
    tas = [sys.executable, "-m", "tas"]
    imported = {}
    env = {**(env_extra or {}), "PYTHONPROFILEIMPORTTIME": "1"}
    for argv in (["check"], ["prepare-data", "--dataset", "synthetic"],
                 ["train-teacher", "--experiment", "mini", "--teacher", "tiny_cnn"],
                 ["distill", "--experiment", "mini", "--pair", "tiny_cnn-tiny_vit", "--method", "logit_mse"]):
        proc = run(root, *tas, *argv, env_extra=env)
        assert proc.returncode == 0, f"{argv}: {proc.stderr[-3000:]}"
        imported[argv[0]] = imported_tas_files(proc.stderr)
    run_dir = root / "results/mini/runs/tiny_cnn-tiny_vit/logit_mse/seed0"
    assert "loss_mse" in (run_dir / "history.csv").read_text().splitlines()[0]
    return json.loads((run_dir / "metrics.json").read_text()), imported


def test_a_method_added_as_one_file_in_tas(tmp_path):
    make_project(tmp_path)
    (tmp_path / "tas/distillers/logit_mse.py").write_text(readme_example())
    metrics, imported = train_with_the_method(tmp_path)
    assert metrics["method_type"] == "logit_mse"
    # the file is code of its own runs only, and each job's code list holds every tas file the job imported
    code = run(tmp_path, sys.executable, "-c",
               "from tas import matrix; from tas.config import load_config; import json; "
               "cfg = load_config('params.yaml'); "
               "jobs = {j.subcommand: list(j.code) for j in matrix.expand(cfg)}; print(json.dumps(jobs))")
    code = json.loads(code.stdout)
    assert "tas/distillers/logit_mse.py" in code["distill"]
    assert "tas/distillers/logit_mse.py" not in code["train-teacher"]
    for subcommand in ("prepare-data", "train-teacher", "distill"):
        own = imported[subcommand]
        assert own and own <= set(code[subcommand]), (subcommand, own - set(code[subcommand]))
    if SNAKEMAKE:
        plan = run(tmp_path, SNAKEMAKE, "-n", "-p", "--cores", "1", "-F")
        assert plan.returncode == 0, plan.stderr[-3000:]
        assert "--method logit_mse" in plan.stdout


def test_a_method_from_an_installed_package_through_its_entry_point(tmp_path):
    project, site = tmp_path / "project", tmp_path / "site"
    make_project(project)
    package = site / "my_kd_methods"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "logit_mse.py").write_text(readme_example())
    dist_info = site / "my_kd_methods-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-kd-methods\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[tas.methods]\nlogit_mse = my_kd_methods.logit_mse:LogitMSE\n")
    env = {"PYTHONPATH": str(site)}
    metrics, _ = train_with_the_method(project, env)
    assert metrics["method_type"] == "logit_mse"
    # without the package the same params name an unknown type, in one line
    proc = run(project, sys.executable, "-m", "tas", "check")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "methods.logit_mse.type: unknown method type 'logit_mse'" in proc.stderr
    # its version and its files stand in for its code in the job hash; the tas modules it imports are code
    probe = ("from tas import matrix; from tas.config import load_config; "
             "job = matrix.find_job(load_config('params.yaml'), 'distill', "
             "{'experiment': 'mini', 'pair': 'tiny_cnn-tiny_vit', 'method': 'logit_mse', 'seed': 0}); "
             "print(job.code_version); print('tas/distillers/base.py' in job.code)")
    before = run(project, sys.executable, "-c", probe, env_extra=env)
    version, base_in_code = before.stdout.split()[-3:-1], before.stdout.split()[-1]
    assert version[0] == "my-kd-methods==0.1", before.stderr
    assert base_in_code == "True"
    module = package / "logit_mse.py"
    module.write_text(module.read_text() + "# an edit of an editable install, same version\n")
    after = run(project, sys.executable, "-c", probe, env_extra=env)
    assert after.stdout.split()[-3] == "my-kd-methods==0.1" and after.stdout.split()[-2] != version[1]


@pytest.mark.skipif(SNAKEMAKE is None, reason="snakemake is needed")
def test_a_method_that_builds_something_first_is_one_file_too(tmp_path):
    """docs/extending.md's second example: its own file and params.yaml are all that change; Snakemake plans and
    runs its prepare-run job before its run, the run reads the record, and a record it does not match stops it."""
    make_project(tmp_path)
    (tmp_path / "tas/distillers/feature_mse.py").write_text(readme_example("example-built-first"))
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    del params["methods"]["logit_mse"]  # the first example's method, not in this project
    params["methods"]["feature_mse"] = {"type": "feature_mse", "name": "Feature MSE"}
    params["experiments"]["mini"]["methods"] = ["feature_mse"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_dir = "results/mini/runs/tiny_cnn-tiny_vit/feature_mse/seed0"
    proc = run(tmp_path, SNAKEMAKE, "--cores", "2", f"{run_dir}/metrics.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    record_path = tmp_path / "results/mini/prepared/tiny_cnn-tiny_vit/feature_mse.json"
    record = json.loads(record_path.read_text())
    assert (record["built_first"], record["method"]) == ("projector", "feature_mse") and record["in_features"] > 0
    assert "prepare_run" in proc.stderr and "loss_feature" in (tmp_path / run_dir / "history.csv").read_text()
    # a run that does not match its prepared record stops in one line, before training
    record["in_features"] += 1
    record_path.write_text(json.dumps(record))
    proc = run(tmp_path, sys.executable, "-m", "tas", "distill", "--experiment", "mini", "--pair", "tiny_cnn-tiny_vit",
               "--method", "feature_mse")
    assert proc.returncode == 2 and "rerun prepare-run" in proc.stderr and "Traceback" not in proc.stderr
