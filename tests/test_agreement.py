"""What is on disk is what both tools say is done (issue 23), asked of real Snakemake and real DVC.

The `mini` study in a temporary git + DVC repository: data preparation is the real job (64 synthetic
images); every other job is a stand-in `python` that writes the job's declared outputs from the content of
its inputs, like a real job (a deterministic function of what it reads: a training job rerun on its complete
checkpoint writes the same bytes, tests/test_reliability.py). A job's output changes only when its inputs
do, or when a test gives it a salt (`fake_salt.json`): then it writes different bytes, as a retrained model
would. Every job that runs is logged (`fake_ran.txt`), so a test sees exactly what reran.

Each test leaves the study clean for both tools, and asserts it; a test that changes what the study holds
(a retrained teacher) works on a copy of its own (`own_study`) instead of rebuilding the old content after.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from conftest import study_runner
from tas import matrix
from tas.config import load_config

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SNAKEMAKE = shutil.which("snakemake", path=str(BIN))
DVC = shutil.which("dvc", path=str(BIN))

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(SNAKEMAKE is None or DVC is None, reason="snakemake and dvc are needed")]

FAKE_PYTHON = """#!{python}
import hashlib, json, os, shlex, sys, zipfile
argv = sys.argv[1:]
if argv[:2] == ["-m", "tas"] and argv[2] != "prepare-data":
    import yaml
if argv[:2] != ["-m", "tas"] or argv[2] == "prepare-data":  # data preparation is the real job
    os.execv({python!r}, [{python!r}, *argv])
if "--threads" in argv:
    i = argv.index("--threads")
    argv = argv[:i] + argv[i + 2:]
cmd = shlex.join(["python", *argv])
job = json.load(open("jobs.json"))[cmd]
salts = json.load(open("fake_salt.json")) if os.path.exists("fake_salt.json") else {{}}
params = yaml.safe_load(open("params.yaml"))
def value(dotted):
    node = params
    for part in dotted.split("."):
        node = node[part]
    return node
picked = json.dumps({{key: value(key) for key in job["params"]}}, sort_keys=True, default=str)
digest = hashlib.sha256(cmd.encode() + salts.get(job["name"], "").encode() + picked.encode())
for dep in job["inputs"]:
    with open(dep, "rb") as fh:
        digest.update(dep.encode() + hashlib.sha256(fh.read()).digest())
value = digest.hexdigest()
with open("fake_ran.txt", "a") as log:
    log.write(job["name"] + "\\n")
for d in job["persist"]:
    os.makedirs(d, exist_ok=True)
for out in job["outs"]:
    if out in job["directories"]:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "main.csv"), "w") as fh:
            fh.write("digest\\n" + value + "\\n")
        continue
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    tmp = out + ".fake-tmp"
    if out.endswith(".pt"):
        with zipfile.ZipFile(tmp, "w") as archive:
            info = zipfile.ZipInfo("archive/data.pkl", date_time=(2020, 1, 1, 0, 0, 0))
            archive.writestr(info, value)
    else:
        with open(tmp, "w") as fh:
            fh.write(json.dumps({{"top1": 1.0, "digest": value}}) if out.endswith(".json") else value + "\\n")
    os.replace(tmp, out)
"""


def _small_params() -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["experiment"] = "mini"
    params["datasets"]["synthetic"].update(train_size=64, test_size=32)
    return params


def _runner(root: Path):
    """`run(*cmd)` in the study's folder, with its stand-in `python` first on PATH."""
    return study_runner(root, path_first=[root / "fakebin"])


def build_study(root: Path) -> None:
    """The study, run by Snakemake and adopted by DVC, committed: what every test starts from."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "tas", root / "tas", ignore=ignore)
    shutil.copytree(ROOT / "workflow", root / "workflow", ignore=ignore)
    for name in ("Snakefile", ".dvcignore"):
        shutil.copy2(ROOT / name, root / name)
    (root / "params.yaml").write_text(yaml.safe_dump(_small_params(), sort_keys=False))
    (root / ".gitignore").write_text((ROOT / ".gitignore").read_text()
                                     + "/fakebin/\n/jobs.json\n/fake_ran.txt\n/fake_salt.json\n")
    cfg = load_config(root / "params.yaml")
    jobs = {job.shell: {"name": job.name, "inputs": job.inputs, "outs": list(job.outs), "persist": list(job.persist),
                        "directories": list(job.directories), "params": list(job.params)} for job in matrix.expand(cfg)}
    (root / "jobs.json").write_text(json.dumps(jobs))
    fakebin = root / "fakebin"
    fakebin.mkdir()
    (fakebin / "python").write_text(FAKE_PYTHON.format(python=sys.executable))
    (fakebin / "python").chmod(0o755)
    run = _runner(root)
    run(sys.executable, "-m", "tas", "dvc-yaml")
    run("git", "init", "-q")
    run(DVC, "init", "-q")
    shutil.copy2(ROOT / ".dvc" / "config", root / ".dvc" / "config")  # the project's cache settings
    run("git", "add", "-A")
    run("git", "commit", "-qm", "study")
    run(SNAKEMAKE, "--cores", "2")
    run(DVC, "commit", "-f", "-q")  # the documented routine: DVC adopts what Snakemake made
    run("git", "add", "-A")
    run("git", "commit", "-qm", "results")
    ran(root)


def study_copy(shared_build) -> tuple[Path, object]:
    """A copy of its own of the study, built once per test session (tests/conftest.py: shared_build) for this
    file and tests/test_agreement_exp.py, which would otherwise each run it."""
    root = shared_build("agreement", build_study)
    ran(root)  # each test sees only what it ran
    return root, _runner(root)


@pytest.fixture(scope="module")
def study(shared_build):
    return study_copy(shared_build)


@pytest.fixture
def own_study(shared_build):
    """A copy for one test alone: what it changes is never seen by another test, so it need not be undone."""
    return study_copy(shared_build)


def ran(root: Path) -> list[str]:
    """Jobs the stand-in ran since the last call (and forget them)."""
    log = root / "fake_ran.txt"
    names = log.read_text().split() if log.exists() else []
    log.unlink(missing_ok=True)
    return names


def planned(run) -> set[str]:
    proc = run(SNAKEMAKE, "-n", "--cores", "2", "--quiet", "rules")
    text = proc.stdout + proc.stderr
    if "Nothing to be done" in text:
        return set()
    return {line.split()[0] for line in text.splitlines() if line.strip() and line.split()[0] in matrix.RULES}


def dvc_changed(run) -> set[str]:
    return set(json.loads(run(DVC, "status", "--json").stdout or "{}"))


def assert_clean(run) -> None:
    assert planned(run) == set()
    assert dvc_changed(run) == set()


def sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


TEACHER_MODEL = "results/mini/teachers/tiny_cnn/model.pt"
ARRAY = "data/synthetic/train_images.npy"


def test_after_snakemake_and_dvc_commit_both_tools_are_clean(study):
    """`dvc commit` with copies re-stamps every cached output's mtime: Snakemake compares them by checksum."""
    root, run = study
    ran(root)
    assert_clean(run)


def test_a_deleted_teacher_model_is_rebuilt_and_nothing_after_it_reruns(study):
    """Measured: "Nothing to be done" while `dvc status` reported it deleted. Now its job runs again, writes the
    same bytes (as a real job on its complete checkpoint does) and no dependent reruns."""
    root, run = study
    before = sha(root / TEACHER_MODEL)
    (root / TEACHER_MODEL).unlink()
    assert dvc_changed(run)  # DVC sees it
    proc = run(SNAKEMAKE, "--cores", "2")
    assert "is missing" in proc.stderr and TEACHER_MODEL in proc.stderr
    assert ran(root) == ["train-teacher@mini/tiny_cnn"]
    assert sha(root / TEACHER_MODEL) == before
    assert_clean(run)


def test_a_rebuilt_teacher_with_other_content_reruns_exactly_what_depends_on_it(own_study):
    root, run = own_study
    (root / TEACHER_MODEL).unlink()
    (root / "fake_salt.json").write_text(json.dumps({"train-teacher@mini/tiny_cnn": "retrained"}))
    run(SNAKEMAKE, "--cores", "2")
    reran = ran(root)
    assert reran[0] == "train-teacher@mini/tiny_cnn"
    cfg = load_config(root / "params.yaml")
    index = matrix.index(cfg)
    expected = {"train-teacher@mini/tiny_cnn"}
    frontier = {TEACHER_MODEL, "results/mini/teachers/tiny_cnn/metrics.json"}
    changed = True
    while changed:  # every job downstream of the teacher's outputs
        changed = False
        for job in index.jobs:
            if job.name not in expected and frontier & set(job.inputs):
                expected.add(job.name)
                frontier |= set(job.outs)
                changed = True
    assert set(reran) == expected
    assert not any(name.startswith("distill@mini/tiny_vit-") for name in reran)  # the other teacher's runs stay
    run(DVC, "commit", "-f", "-q")
    assert_clean(run)


def test_a_truncated_data_array_is_rebuilt_before_anything_is_deleted(study):
    """Measured: a truncated array passed the preflight and Snakemake then deleted both trained teachers'
    outputs before their jobs failed. Now it is verified against meta.json, re-prepared (same bytes), and no
    teacher or run is touched."""
    root, run = study
    array = root / ARRAY
    before = sha(array)
    teacher_mtime = (root / TEACHER_MODEL).stat().st_mtime_ns
    data = array.read_bytes()
    array.write_bytes(data[: len(data) // 2])
    proc = run(SNAKEMAKE, "--cores", "2")
    assert "damaged" in proc.stderr and ARRAY in proc.stderr
    assert ran(root) == []  # only the (real) data preparation ran
    assert sha(array) == before
    assert (root / TEACHER_MODEL).stat().st_mtime_ns == teacher_mtime
    assert_clean(run)
