"""A dataset source and a table kind are one file each: the examples in docs/extending.md, added to a temporary copy of
the project, run end to end through the real CLI (prepare, train, distill, evaluate, tables); unknown
names stop config in one line."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tas import paths

ROOT = Path(__file__).resolve().parent.parent


def readme_example(marker: str) -> str:
    text = (ROOT / "docs" / "extending.md").read_text()
    start = text.index(f"<!-- {marker}: tests/test_plugin_sources_kinds.py runs this code -->")
    return re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)


def run(root: Path, *argv: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", **(env_extra or {}))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return subprocess.run([sys.executable, *argv], cwd=root, env=env, capture_output=True, text=True, timeout=600)


def imported_tas_files(stderr: str) -> set[str]:
    """tas files a process imported (PYTHONPROFILEIMPORTTIME's lines), repo-relative."""
    names = {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}
    return {("/".join(n.split(".")) + ".py") for n in names if n.startswith("tas.")}


def make_project(root: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "tas", root / "tas", ignore=ignore)
    shutil.copytree(ROOT / "workflow", root / "workflow", ignore=ignore)
    (root / "tas/data/sources/stripes.py").write_text(readme_example("example-source"))
    (root / "tas/report/kinds/compact.py").write_text(readme_example("example-table-kind"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["datasets"]["stripes"] = {"source": "stripes", "train_size": 96, "test_size": 48}
    params["protocols"]["mini"]["dataset"] = "stripes"
    for recipe in ("mini", "mini_teacher"):
        params["recipes"][recipe].update(epochs=1, global_batch=32)
    params["experiments"] = {"mini": {**params["experiments"]["mini"], "seeds": [0],
                                      "teachers": {"tiny_cnn": {"recipe": "mini_teacher"}},
                                      "pairs": [{"teacher": "tiny_cnn", "student": "tiny_vit"}],
                                      "methods": ["kd"], "table": {"kind": "compact", "paper": None}}}
    params["experiment"] = "mini"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.slow
def test_a_source_and_a_table_kind_added_as_one_file_each(tmp_path):
    make_project(tmp_path)
    imported = {}
    for argv in (["check"], ["prepare-data", "--dataset", "stripes"],
                 ["train-teacher", "--experiment", "mini", "--teacher", "tiny_cnn"],
                 ["distill", "--experiment", "mini", "--pair", "tiny_cnn-tiny_vit", "--method", "kd"],
                 ["evaluate", "--experiment", "mini", "--pair", "tiny_cnn-tiny_vit", "--method", "kd"],
                 ["tables", "--experiment", "mini"]):
        proc = run(tmp_path, "-m", "tas", *argv, env_extra={"PYTHONPROFILEIMPORTTIME": "1"})
        assert proc.returncode == 0, f"{argv}: {proc.stderr[-3000:]}"
        imported[argv[0]] = imported_tas_files(proc.stderr)

    meta = json.loads((tmp_path / "data/stripes/meta.json").read_text())
    assert meta["source"] == "stripes" and meta["num_classes"] == 4 and meta["n_train"] == 96
    assert meta["spec"]["version"] == 1  # the source's own fingerprint is recorded
    tables = tmp_path / "results/mini/tables"
    compact = pd.read_csv(tables / "compact.csv")
    assert list(compact.columns) == ["pair", "label", "kd"] and compact["pair"].tolist() == ["tiny_cnn-tiny_vit"]
    top1 = json.loads(paths.run_eval(tmp_path / "results", "mini", "tiny_cnn-tiny_vit", "kd", 0).read_text())["top1"]
    assert compact["kd"].iloc[0] == pytest.approx(top1)
    summary = json.loads((tables / "summary.json").read_text())
    assert summary["kind"] == "compact" and summary["cells"][0]["mean"] == pytest.approx(top1)
    assert "mean top-1" in (tables / "compact.md").read_text()

    # Each file is code of its own jobs only, and a job's code holds every tas file it really imported.
    proc = run(tmp_path, "-c", "import json; from tas import matrix; from tas.config import load_config; "
               "print(json.dumps({j.subcommand: list(j.code) for j in matrix.expand(load_config('params.yaml'))}))")
    assert proc.returncode == 0, proc.stderr
    code = {subcommand: set(files) for subcommand, files in json.loads(proc.stdout).items()}
    for subcommand in ("prepare-data", "train-teacher", "distill", "evaluate"):
        assert ("tas/data/sources/stripes.py" in code[subcommand]
                and "tas/data/sources/synthetic.py" not in code[subcommand])
    assert "tas/data/sources/stripes.py" not in code["tables"]
    assert "tas/report/kinds/compact.py" in code["tables"] and "tas/report/kinds/main.py" not in code["tables"]
    for subcommand in ("prepare-data", "train-teacher", "distill", "evaluate", "tables"):
        missing = {f for f in imported[subcommand] if (tmp_path / f).is_file()} - code[subcommand]
        assert not missing, (subcommand, missing)


@pytest.mark.parametrize("override,expected", [
    ("datasets.synthetic.source=nope",
     "unknown source 'nope'; use one of cifar100, imagefolder, imagenette, synthetic"),
    ("experiments.mini.table.kind=nope",
     "experiments.mini.table.kind: unknown table kind 'nope'; choose one of: ablation, main"),
])
def test_an_unknown_source_or_kind_stops_config_in_one_line(override, expected):
    proc = run(ROOT, "-m", "tas", "check", "--set", override)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and expected in proc.stderr, proc.stderr


def test_a_source_module_missing_a_declaration_is_named(tmp_path):
    shutil.copytree(ROOT / "tas", tmp_path / "tas", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "tas/data/sources/half.py").write_text("FOLDER = False\nNUM_CLASSES = 3\n")
    proc = run(tmp_path, "-c", "from tas.data.spec import DatasetSpec; DatasetSpec('h', 'half')")
    assert proc.returncode != 0
    assert "tas.data.sources.half does not declare IMAGE_SIZE" in proc.stderr
