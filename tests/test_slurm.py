"""The pipeline on a real Slurm cluster: `snakemake --workflow-profile workflow/profiles/slurm`.

Needs a running cluster as `.ci/slurm/start.sh` sets one up (one node; partitions `cpu` and `gpu`, the
latter with stand-in GPUs; account `tas`; slurmdbd accounting, so `sacct` answers); skipped without one.
.ci/run starts it and runs this file in a step of its own (the main test command leaves it out).

A cut-down mini study (one pair, scratch/KD/TAS, a few small epochs: every rule of the study, a few minutes)
runs twice from one copy of the project: with the Slurm profile, and locally (`snakemake --cores 2`) as the
reference, both at once. While the Slurm run trains the teacher, its Slurm job is cancelled (`scancel`) after
the first epoch's checkpoint: the profile's retry must resume from that checkpoint and end with the numbers of
the uninterrupted local run.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SNAKEMAKE = shutil.which("snakemake", path=str(BIN))

pytestmark = [pytest.mark.slow, pytest.mark.skipif(SNAKEMAKE is None, reason="snakemake is needed")]

PROFILE = "workflow/profiles/slurm"
# The cluster of .ci/slurm/start.sh and what the profile reads from the environment for it
# (workflow/profiles/slurm/config.yaml; docs/pipeline.md, "A one-node Slurm cluster").
SLURM_ENV = {"TAS_SLURM_ACCOUNT": "tas", "TAS_SLURM_PARTITION": "cpu", "TAS_SLURM_GPU_PARTITION": "gpu",
             "TAS_SLURM_CPUS": "1"}
# The plugin waits 40 s before its first status check and longer after each one that finds nothing new:
# on a one-node cluster of minute-long jobs that waiting would be most of the run.
STATUS_FLAGS = ["--slurm-init-seconds-before-status-checks", "5"]
DEADLINE_S = 540  # both runs together; .ci/run's Slurm step must stay under 10 minutes
GPU_RULES = {"train_teacher", "load_teacher", "distill", "distill_student", "evaluate_teacher", "evaluate_run",
             "evaluate_student_run"}
TRAINING_RULES = {"train_teacher", "load_teacher", "distill", "distill_student"}
TEACHER = "results/mini/teachers/tiny_cnn"
START = "sudo bash .ci/slurm/start.sh"


def cluster_problem() -> str | None:
    """Why this machine cannot run the test, or None."""
    for tool in ("sinfo", "sbatch", "sacct", "scancel"):
        if shutil.which(tool) is None:
            return f"`{tool}` not found: no Slurm on this machine (a one-node cluster: `{START}`)"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm is not installed (pip install -r requirements.txt)"
    try:
        parts = subprocess.run(["sinfo", "-h", "-o", "%R %T"], capture_output=True, text=True, timeout=30)
        accounts = subprocess.run(["sacctmgr", "-n", "-P", "list", "account", "tas", "format=account"],
                                  capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return f"the Slurm controller does not answer (start the cluster: `{START}`)"
    states = dict(line.split() for line in parts.stdout.splitlines() if len(line.split()) == 2)
    ready = {"idle", "mixed", "allocated"}
    if parts.returncode != 0 or not {"cpu", "gpu"} <= {p for p, s in states.items() if s.rstrip("*~#") in ready}:
        return ("no Slurm cluster with ready partitions `cpu` and `gpu` (sinfo: "
                f"{parts.stdout.strip() or parts.stderr.strip()}); start one: `{START}`")
    if accounts.returncode != 0 or "tas" not in accounts.stdout.split():
        return f"Slurm accounting has no account `tas` (sacctmgr: {accounts.stderr.strip()}); run `{START}`"
    return None


def small_params() -> dict:
    """The mini study cut to one pair and every kind of job: data, a teacher (3 epochs, the one cancelled
    after its first), an assistant, a teacher-free run (scratch) and two distillations (KD, TAS) of one
    epoch each, their evaluations and the tables."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["experiment"] = "mini"
    params["runtime"]["progress"] = False
    params["datasets"]["synthetic"].update(train_size=640, test_size=200)
    params["recipes"]["mini"].update(epochs=1)
    params["recipes"]["mini_teacher"].update(epochs=3)
    params["experiments"] = {"mini": {**params["experiments"]["mini"], "seeds": [0],
                                      "teachers": {"tiny_cnn": {"recipe": "mini_teacher"}},
                                      "pairs": [{"teacher": "tiny_cnn", "student": "tiny_vit"}],
                                      "methods": ["scratch", "kd", "tas"]}}
    return params


def make_project(root: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "tas", root / "tas", ignore=ignore)
    shutil.copytree(ROOT / "workflow", root / "workflow", ignore=ignore)
    for name in ("Snakefile", ".gitignore"):
        shutil.copy2(ROOT / name, root / name)
    (root / "params.yaml").write_text(yaml.safe_dump(small_params(), sort_keys=False))


class Study:
    def __init__(self, top: Path):
        self.top = top
        self.local, self.slurm = top / "local", top / "slurm"
        self.env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", **SLURM_ENV)
        self.env["PATH"] = f"{BIN}{os.pathsep}{self.env['PATH']}"  # `python` in the jobs' commands is this one
        for name in ("CUDA_VISIBLE_DEVICES", "TAS_GPU_LOCK_DIR", "SNAKEMAKE_PROFILE"):
            self.env.pop(name, None)
        self.cancelled: str | None = None
        self.run_id: str | None = None
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S")

    def log(self, which: str) -> str:
        return (self.top / f"{which}.log").read_text(errors="replace")

    def slurm_cmd(self) -> list[str]:
        return [SNAKEMAKE, "--workflow-profile", PROFILE, *STATUS_FLAGS]

    def submissions(self, text: str | None = None) -> list[tuple[str, str]]:
        """(rule, Slurm job id) of every job the Slurm run submitted, from Snakemake's log."""
        text = self.log("slurm") if text is None else text
        found = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: \S*?/slurm_logs/rule_(\w+)/", text)
        return [(rule, jobid) for jobid, rule in found]

    def sacct(self) -> dict[str, dict]:
        """sacct's record of every job of the Slurm run (its jobs are named after the run's id)."""
        fields = ["JobIDRaw", "JobName", "State", "Partition", "Account", "AllocTRES", "Comment"]
        out = subprocess.run(["sacct", "-X", "-n", "-P", f"--format={','.join(fields)}", f"--name={self.run_id}",
                              f"--starttime={self.started}"], capture_output=True, text=True, check=True).stdout
        rows = [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line.strip()]
        return {row["JobIDRaw"]: row for row in rows}

    def run_both(self) -> None:
        """The Slurm run and the local reference at once; scancel the teacher's job after its first epoch."""
        with open(self.top / "local.log", "w") as local_log, open(self.top / "slurm.log", "w") as slurm_log:
            local = subprocess.Popen([SNAKEMAKE, "--cores", "2"], cwd=self.local, env=self.env, stdout=local_log,
                                     stderr=subprocess.STDOUT)
            slurm = subprocess.Popen(self.slurm_cmd(), cwd=self.slurm, env=self.env, stdout=slurm_log,
                                     stderr=subprocess.STDOUT)
            deadline = time.time() + DEADLINE_S
            try:
                first_checkpoint = self.slurm / TEACHER / "ckpt" / "last.pt"
                while slurm.poll() is None and time.time() < deadline:
                    text = self.log("slurm")
                    if self.run_id is None and (found := re.search(r"SLURM run ID: (\S+)", text)):
                        self.run_id = found.group(1)
                    teacher_jobs = [jobid for rule, jobid in self.submissions(text) if rule == "train_teacher"]
                    if self.cancelled is None and teacher_jobs and first_checkpoint.exists():
                        self.cancelled = teacher_jobs[0]
                        subprocess.run(["scancel", self.cancelled], check=True)
                    time.sleep(0.2)
                for proc in (slurm, local):
                    proc.wait(timeout=max(1.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
            finally:
                for proc in (slurm, local):
                    if proc.poll() is None:  # Snakemake cancels its Slurm jobs on an interrupt
                        proc.send_signal(signal.SIGINT)
                        try:
                            proc.wait(timeout=60)
                        except subprocess.TimeoutExpired:
                            proc.kill()
                if self.run_id:
                    subprocess.run(["scancel", f"--name={self.run_id}"], capture_output=True)
        assert time.time() < deadline, f"the two runs took more than {DEADLINE_S} s:\n{self.log('slurm')[-4000:]}"
        assert local.returncode == 0, f"local run failed:\n{self.log('local')[-4000:]}"
        assert slurm.returncode == 0, f"Slurm run failed:\n{self.log('slurm')[-6000:]}"
        assert self.run_id, "no SLURM run ID in Snakemake's log"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    problem = cluster_problem()
    if problem:
        pytest.skip(problem)
    top = tmp_path_factory.mktemp("slurm_study")
    base = top / "base"
    make_project(base)
    shutil.copytree(base, top / "local", symlinks=True)
    shutil.copytree(base, top / "slurm", symlinks=True)
    study = Study(top)
    t0 = time.time()
    study.run_both()
    print(f"local + Slurm runs: {time.time() - t0:.0f} s")
    return study


def local_job_counts(study: Study) -> Counter:
    """Snakemake's own job table of the local run ("job  count" rows), without the local target rule."""
    text = study.log("local")
    table = text[text.index("Job stats:"):].split("total")[0]
    counts = Counter({rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)\s*$", table, flags=re.M)})
    counts.pop("all", None)
    return counts


def test_every_job_is_a_slurm_job(study):
    submitted = study.submissions()
    expected = local_job_counts(study) + Counter({"train_teacher": 1})  # the cancelled attempt, then its retry
    assert Counter(rule for rule, _ in submitted) == expected
    accounted = study.sacct()
    for rule, jobid in submitted:
        row = accounted.get(jobid)
        assert row is not None, f"Slurm job {jobid} ({rule}) is not in sacct"
        assert row["JobName"] == study.run_id and row["Account"] == "tas"
        assert row["Comment"].startswith(f"rule_{rule}"), row
        want = "CANCELLED" if jobid == study.cancelled else "COMPLETED"
        assert row["State"].split()[0] == want, row
    # Nothing but the target rule ran on the submitting side.
    assert "localrule all:" in study.log("slurm")
    assert not re.search(r"^localrule (?!all:)", study.log("slurm"), flags=re.M)


def test_gpu_resource_maps_to_slurm_gpus_as_the_profile_says(study):
    accounted = study.sacct()
    for rule, jobid in study.submissions():
        tres = dict(item.split("=", 1) for item in accounted[jobid]["AllocTRES"].split(",") if "=" in item)
        partition = accounted[jobid]["Partition"]
        if rule in GPU_RULES:  # resources: gpu=1 -> sbatch --gpus=1, in TAS_SLURM_GPU_PARTITION
            assert tres.get("gres/gpu") == "1" and partition == "gpu", (rule, tres, partition)
        else:  # gpu=0: no GPU asked, TAS_SLURM_PARTITION
            assert "gres/gpu" not in tres and partition == "cpu", (rule, tres, partition)
        assert tres["cpu"] == SLURM_ENV["TAS_SLURM_CPUS"]  # set-threads = TAS_SLURM_CPUS (1 thread per job)
        # memory per CPU: 8000 MB for training jobs, 4000 MB for the rest
        assert tres["mem"] == ("8000M" if rule in TRAINING_RULES else "4000M"), (rule, tres)


def _csv_without(path: Path, drop: set[str]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(io.StringIO(path.read_text()))]


def test_tables_equal_the_local_run(study):
    local, slurm = study.local / "results/mini/tables", study.slurm / "results/mini/tables"
    names = sorted(p.name for p in local.iterdir() if not p.name.startswith("."))
    assert names == sorted(p.name for p in slurm.iterdir() if not p.name.startswith("."))
    assert {"main.csv", "main.md", "provenance.csv", "summary.json"} <= set(names)
    for name in names:
        if name == "provenance.csv":  # wall time differs; hashes, checksum, device and top-1 must not
            assert _csv_without(local / name, {"wall_time_s"}) == _csv_without(slurm / name, {"wall_time_s"})
        elif name == "summary.json":  # teachers' measured throughput differs
            a, b = (json.loads((d / name).read_text()) for d in (local, slurm))
            for summary in (a, b):
                for row in summary.get("teachers", []):
                    row.pop("images_per_s", None)
            assert a == b
        else:
            assert (local / name).read_bytes() == (slurm / name).read_bytes(), name


def test_cancelled_training_job_resumed_from_its_checkpoint_to_the_same_numbers(study):
    assert study.cancelled, "the teacher's Slurm job was never cancelled"
    assert study.sacct()[study.cancelled]["State"].startswith("CANCELLED")
    log = (study.slurm / TEACHER / "log.txt").read_text()
    assert "resumed from" in log and "at epoch 1" in log, log
    assert "not resuming" not in log
    local, slurm = study.local / TEACHER, study.slurm / TEACHER
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (local, slurm)]
    for m in metrics:
        m.pop("wall_time_s")
    assert metrics[0] == metrics[1]
    timing = {"images_per_s", "time_s"}
    assert _csv_without(local / "history.csv", timing) == _csv_without(slurm / "history.csv", timing)
    a, b = (torch.load(d / "model.pt", weights_only=True) for d in (local, slurm))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_second_call_has_nothing_to_do(study):
    proc = subprocess.run(study.slurm_cmd(), cwd=study.slurm, env=study.env, capture_output=True, text=True,
                          timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Nothing to be done" in out
    assert "submitted with SLURM jobid" not in out
