"""A changed parameter or input never yields an old result: real training jobs under real Snakemake and DVC.

A one-pair, one-epoch `mini` study in a temporary git + DVC repository (the project's code, Snakefile and
DVC settings; params.yaml cut down so the study takes about a minute). Each rerun must train again: a
resume checkpoint of the job's earlier version must not be resumed.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import study_runner

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SNAKEMAKE = shutil.which("snakemake", path=str(BIN))
DVC = shutil.which("dvc", path=str(BIN))

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(SNAKEMAKE is None or DVC is None, reason="snakemake and dvc are needed")]

RUN = "results/mini/runs/tiny_cnn-tiny_vit"


def small_params() -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["experiment"] = "mini"
    params["datasets"]["synthetic"].update(train_size=128, test_size=64)
    for recipe in ("mini", "mini_teacher"):
        params["recipes"][recipe].update(epochs=1, global_batch=32)
    params["experiments"] = {"mini": {**params["experiments"]["mini"], "seeds": [0],
                                      "teachers": {"tiny_cnn": {"recipe": "mini_teacher"}},
                                      "pairs": [{"teacher": "tiny_cnn", "student": "tiny_vit"}],
                                      "methods": ["kd", "tas"]}}
    return params


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "tas", root / "tas", ignore=ignore)
    shutil.copytree(ROOT / "workflow", root / "workflow", ignore=ignore)
    for name in ("Snakefile", ".dvcignore", ".gitignore"):
        shutil.copy2(ROOT / name, root / name)
    (root / "params.yaml").write_text(yaml.safe_dump(small_params(), sort_keys=False))
    run = study_runner(root)  # `python` in the jobs' commands is this interpreter
    run(sys.executable, "-m", "tas", "dvc-yaml")
    run("git", "init", "-q")
    run(DVC, "init", "-q")
    shutil.copy2(ROOT / ".dvc" / "config", root / ".dvc" / "config")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "study")
    run(SNAKEMAKE, "--cores", "2")
    return root, run


def metrics(root: Path, method: str) -> dict:
    return json.loads((root / RUN / method / "seed0" / "metrics.json").read_text())


def provenance(root: Path, method: str) -> dict:
    return json.loads((root / RUN / method / "seed0" / "provenance.json").read_text())


def params_hash(root: Path, method: str) -> str:
    return provenance(root, method)["params_hash"]


def history(root: Path, method: str) -> str:
    return (root / RUN / method / "seed0" / "history.csv").read_text()


def set_param(root: Path, dotted: str, value) -> None:
    path = root / "params.yaml"
    params = yaml.safe_load(path.read_text())
    node = params
    *parents, last = dotted.split(".")
    for key in parents:
        node = node[key]
    node[last] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def test_snakemake_after_the_study_has_nothing_to_do(project):
    root, run = project
    proc = run(SNAKEMAKE, "-n", "--cores", "2")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_deleted_teacher_model_is_rebuilt_byte_identical_and_nothing_after_it_runs(project):
    """Measured (issue 23): a deleted model.pt went unnoticed ("Nothing to be done"), and once rebuilt, its
    temp file's name in the archive made the bytes differ, so every run it taught trained again from scratch.
    Now Snakemake rebuilds it first (its job resumes from its complete checkpoint: the same bytes) and no run,
    evaluation or table runs again."""
    root, run = project
    teacher = root / "results/mini/teachers/tiny_cnn"
    before = {name: _sha(teacher / name) for name in ("model.pt", "metrics.json", "history.csv", "provenance.json")}
    downstream = {p: p.stat().st_mtime_ns for p in (root / "results/mini").rglob("*")
                  if p.is_file() and "teachers" not in p.parts}
    (teacher / "model.pt").unlink()
    proc = run(SNAKEMAKE, "--cores", "2")
    assert "results/mini/teachers/tiny_cnn/model.pt (train-teacher@mini/tiny_cnn) is missing" in proc.stderr
    assert {name: _sha(teacher / name) for name in before} == before
    assert "resumed from" in (teacher / "log.txt").read_text()
    assert {p: p.stat().st_mtime_ns for p in downstream} == downstream  # nothing after the teacher ran
    assert "Nothing to be done" in run(SNAKEMAKE, "-n", "--cores", "2").stdout


def test_a_changed_method_parameter_trains_again_instead_of_resuming(project):
    root, run = project
    before_kd = metrics(root, "kd")
    hash_before = params_hash(root, "tas")
    old_history = history(root, "tas")
    assert (root / RUN / "tas/seed0/ckpt/last.pt").is_file()  # the checkpoint a naive resume would take
    set_param(root, "methods.tas.w_nce", 0.5)
    run(SNAKEMAKE, "--cores", "2")
    assert params_hash(root, "tas") != hash_before
    log = (root / RUN / "tas/seed0/log.txt").read_text()
    assert "not resuming" in log and "params changed" in log
    assert "changed keys: methods.tas.w_nce: (not set) -> 0.5" in log  # the reason names the key (issue 23)
    assert "resumed from" not in log
    assert history(root, "tas") != old_history  # the loss of the new objective, not the old run's numbers
    assert metrics(root, "kd") == before_kd  # another method's run was not touched


def test_dvc_experiment_with_a_changed_parameter_trains_again(project):
    root, run = project
    # The documented routine after a Snakemake run: DVC adopts the outputs (and git-ignores the cached
    # ones), then git commits params, dvc.lock and the small results.
    run(DVC, "commit", "-f", "-q")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "w_nce 0.5")
    before, hash_before = metrics(root, "kd"), params_hash(root, "kd")
    old_history = history(root, "kd")
    # The preview: `dvc exp run --dry` fails in DVC 3.x for any pipeline whose stages read an earlier
    # stage's cached outputs (treeverse/dvc#10135: --dry runs in a temp copy without them), so
    # docs/pipeline.md shows `dvc repro --dry` on the edited params instead.
    set_param(root, "methods.kd.T", 2)
    dry = run(DVC, "repro", "--dry").stdout
    run("git", "checkout", "params.yaml")
    assert "Running stage 'distill--mini--tiny_cnn-tiny_vit--kd--seed0'" in dry
    assert "Running stage 'distill--mini--tiny_cnn-tiny_vit--tas--seed0'" not in dry
    assert metrics(root, "kd") == before  # a dry run trains nothing
    run(DVC, "exp", "run", "-S", "methods.kd.T=2")
    assert params_hash(root, "kd") != hash_before
    assert history(root, "kd") != old_history
    assert "not resuming" in (root / RUN / "kd/seed0/log.txt").read_text()
    # Issue 23: afterwards both tools agree, with no `snakemake --touch` (which wrote .snakemake_timestamp
    # into tables/ and plots/ and made `dvc status` report the tables stage).
    dry = run(SNAKEMAKE, "-n", "--cores", "2")
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-3000:] + dry.stderr[-3000:]
    assert json.loads(run(DVC, "status", "--json").stdout or "{}") == {}


def test_a_new_teacher_checkpoint_is_used_and_its_students_train_again(project):
    root, run = project
    teacher_dir = root / "results/mini/teachers/tiny_cnn"
    trained = torch.load(teacher_dir / "model.pt", weights_only=True)
    given = {k: (v + 1.0 if v.is_floating_point() else v) for k, v in trained.items()}  # not what training made
    torch.save(given, root / "given_teacher.pt")
    kd_inputs = provenance(root, "kd")["inputs_hash"]
    # Fine-tuned from the new checkpoint (the recipe's epoch): the old teacher's last.pt must not be resumed,
    # and the runs it teaches must not resume theirs either (their input, the teacher's weights, changed).
    set_param(root, "experiments.mini.teachers.tiny_cnn", {"recipe": "mini_teacher", "checkpoint": "given_teacher.pt"})
    run(SNAKEMAKE, "--cores", "2")
    teacher_log = (teacher_dir / "log.txt").read_text()
    assert "not resuming" in teacher_log and "(params, inputs changed)" in teacher_log  # its entry and checkpoint file
    assert json.loads((teacher_dir / "metrics.json").read_text())["checkpoint"] == "given_teacher.pt"
    kd_log = (root / RUN / "kd/seed0/log.txt").read_text()
    assert "not resuming" in kd_log and "inputs changed" in kd_log
    assert provenance(root, "kd")["inputs_hash"] != kd_inputs
    # Used as given (0 epochs): the teacher's weights are exactly the checkpoint's.
    set_param(root, "experiments.mini.teachers.tiny_cnn", {"recipe": "mini_teacher", "checkpoint": "given_teacher.pt",
                                                           "epochs": 0})
    run(SNAKEMAKE, "--cores", "2", "results/mini/teachers/tiny_cnn/model.pt")
    used = torch.load(teacher_dir / "model.pt", weights_only=True)
    assert used.keys() == given.keys()
    assert all(torch.equal(used[k], given[k]) for k in given)
