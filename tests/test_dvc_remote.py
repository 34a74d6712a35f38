"""A team shares results through the project's DVC remote: push from one clone, pull into a fresh one.

The project's own `.dvc/config` is used as it is: its default remote `shared` is a folder beside the
checkout (`../tas-dvc-storage` of the clone), so two clones side by side in one folder share it, as on one
machine or an NFS cluster. A small study (one pair, KD and TAS, one epoch) runs in Alice's clone; she commits
it and pushes. Bob clones her repository, pulls, and must have the same results, data and teacher without
training anything, with both tools reporting nothing to do. A resume checkpoint written under other params
(Alice's, copied into Bob's clone) is never resumed.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SNAKEMAKE = shutil.which("snakemake", path=str(BIN))
DVC = shutil.which("dvc", path=str(BIN))

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(SNAKEMAKE is None or DVC is None or shutil.which("git") is None,
                                 reason="snakemake, dvc and git are needed")]

KD = "results/mini/runs/tiny_cnn-tiny_vit/kd/seed0"
TEACHER = "results/mini/teachers/tiny_cnn"
UP_TO_DATE = "Data and pipelines are up to date."


def small_params() -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["experiment"] = "mini"
    params["runtime"]["progress"] = False
    params["datasets"]["synthetic"].update(train_size=128, test_size=64)
    for recipe in ("mini", "mini_teacher"):
        params["recipes"][recipe].update(epochs=1, global_batch=32)
    params["experiments"] = {"mini": {**params["experiments"]["mini"], "seeds": [0],
                                      "teachers": {"tiny_cnn": {"recipe": "mini_teacher"}},
                                      "pairs": [{"teacher": "tiny_cnn", "student": "tiny_vit"}],
                                      "methods": ["kd", "tas"]}}
    return params


class Team:
    def __init__(self, top: Path):
        self.top, self.alice, self.bob = top, top / "alice", top / "bob"
        self.env = dict(os.environ, DVC_NO_ANALYTICS="1", PYTHONDONTWRITEBYTECODE="1", GIT_AUTHOR_NAME="t",
                        GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
        self.env["PATH"] = f"{BIN}{os.pathsep}{self.env['PATH']}"  # `python` in the jobs' commands is this one
        self.env.pop("CUDA_VISIBLE_DEVICES", None)

    def run(self, where: Path, *cmd, check=True) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(c) for c in cmd], cwd=where, env=self.env, capture_output=True, text=True,
                              timeout=600)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(map(str, cmd))} in {where.name} failed ({proc.returncode}):\n"
                                 f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        return proc


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    team = Team(tmp_path_factory.mktemp("team"))
    alice = team.alice
    alice.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "tas", alice / "tas", ignore=ignore)
    shutil.copytree(ROOT / "workflow", alice / "workflow", ignore=ignore)
    for name in ("Snakefile", ".dvcignore", ".gitignore"):
        shutil.copy2(ROOT / name, alice / name)
    (alice / "params.yaml").write_text(yaml.safe_dump(small_params(), sort_keys=False))
    team.run(alice, sys.executable, "-m", "tas", "dvc-yaml")
    team.run(alice, "git", "init", "-q")
    team.run(alice, DVC, "init", "-q")
    shutil.copy2(ROOT / ".dvc" / "config", alice / ".dvc" / "config")  # the project's remote, as committed
    team.run(alice, "git", "add", "-A")
    team.run(alice, "git", "commit", "-qm", "study")
    # Alice's study, then the documented routine: DVC adopts the outputs, git commits, DVC pushes.
    team.run(alice, SNAKEMAKE, "--cores", "2")
    team.run(alice, DVC, "commit", "-f", "-q")
    team.run(alice, "git", "add", "-A")
    team.run(alice, "git", "commit", "-qm", "results")
    team.run(alice, DVC, "push")
    # Bob: a fresh clone, side by side with Alice's.
    team.run(team.top, "git", "clone", "-q", str(alice), str(team.bob))
    team.pull = team.run(team.bob, DVC, "pull")
    return team


def _files(root: Path) -> dict[str, Path]:
    """results/ and data/ without resume state (ckpt/, never shared) and Snakemake's own bookkeeping."""
    found = {}
    for top in ("results", "data"):
        for path in (root / top).rglob("*"):
            rel = path.relative_to(root)
            if path.is_file() and "ckpt" not in rel.parts and path.name != ".snakemake_timestamp":
                found[rel.as_posix()] = path
    return found


def test_the_default_remote_is_a_folder_beside_the_clone(team):
    remotes = team.run(team.alice, DVC, "remote", "list").stdout.split()
    assert remotes[:2] == ["shared", str(team.top / "tas-dvc-storage")] and "(default)" in remotes
    assert any((team.top / "tas-dvc-storage").rglob("*")), "dvc push stored nothing in the default remote"


def test_pull_gives_the_same_results_data_and_teacher(team):
    alice, bob = _files(team.alice), _files(team.bob)
    assert sorted(alice) == sorted(bob)
    different = [rel for rel in alice if not filecmp.cmp(alice[rel], bob[rel], shallow=False)]
    assert different == []
    # What a team shares so each teacher is trained once: the prepared data, the teacher's weights, the
    # assistant, the students' weights (DVC cache); metrics, evaluations, tables (git).
    for rel in (f"{TEACHER}/model.pt", "data/synthetic/train_images.npy", "data/synthetic/meta.json",
                f"{KD}/model.pt", "results/mini/prepared/tiny_cnn-tiny_vit/tas.json",
                "results/mini/tables/main.csv"):
        assert rel in bob, rel
    assert team.run(team.bob, "git", "status", "--porcelain").stdout == ""


def test_after_pull_both_tools_have_nothing_to_do(team):
    bob = team.bob
    # Nothing of Alice's is missing or different for DVC: not her resume state either (ckpt/ is never shared).
    status = team.run(bob, DVC, "status")
    assert UP_TO_DATE in status.stdout, status.stdout
    # A fresh clone has no Snakemake records (.snakemake/) and every file carries the time git or DVC wrote
    # it, in no particular order; the Snakefile takes what dvc.lock vouches for as done (docs/pipeline.md,
    # "Mixing the two tools"), so no job is planned: not now, not in the run after.
    for _ in range(2):
        dry = team.run(bob, SNAKEMAKE, "-n", "--cores", "2")
        out = dry.stdout + dry.stderr
        assert "Nothing to be done" in out, out[-3000:]
    run = team.run(bob, SNAKEMAKE, "--cores", "2")
    assert "Nothing to be done" in run.stdout + run.stderr, (run.stdout + run.stderr)[-3000:]
    assert UP_TO_DATE in team.run(bob, DVC, "status").stdout
    test_pull_gives_the_same_results_data_and_teacher(team)  # and no content changed


def test_a_pulled_clone_never_resumes_a_checkpoint_of_other_params(team):
    bob = team.bob
    teacher_model = bob / TEACHER / "model.pt"
    teacher_before = (teacher_model.read_bytes(), teacher_model.stat().st_mtime_ns)
    alice_hash = json.loads((team.alice / KD / "provenance.json").read_text())["params_hash"]
    # Alice's resume state of the KD run reaches Bob's clone (copied: DVC never shares ckpt/) ...
    shutil.copytree(team.alice / KD / "ckpt", bob / KD / "ckpt")
    # ... and Bob changes the method's temperature: the same run folder is now another job.
    params = yaml.safe_load((bob / "params.yaml").read_text())
    params["methods"]["kd"]["T"] = 2.0
    (bob / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run = team.run(bob, SNAKEMAKE, "--cores", "2")
    out = run.stdout + run.stderr
    log = (bob / KD / "log.txt").read_text()
    assert "not resuming" in log and "params changed" in log, log
    assert "resumed from" not in log
    assert json.loads((bob / KD / "provenance.json").read_text())["params_hash"] != alice_hash
    # Only KD, its evaluation and the tables ran: the pulled data, teacher and assistant were used as they are.
    for rule in ("prepare_arrays", "train_teacher", "prepare_run", "evaluate_teacher"):
        assert f"rule {rule}:" not in out, rule
    assert "rule distill:" in out and "rule tables:" in out
    assert (teacher_model.read_bytes(), teacher_model.stat().st_mtime_ns) == teacher_before
